-- jobsys declarative schema: every table, its constraints and indexes, and the seed rows.
--
-- job_assignments.job_id / .device_id and devices.running_assignment_id are references
-- kept by triggers instead of declared foreign keys: 15_referential_integrity.sql.
-- Row level security, policies and grants: 50_access.sql.

-- Tunables. Tests shorten them; operators rarely need to. ----------------------------
create table jobsys.settings (
  key text primary key,
  value numeric not null,
  description text not null
);
comment on table jobsys.settings is
  'Tunables read by the functions (units in the key names). Tests shorten them; operators rarely need to.';

insert into jobsys.settings (key, value, description) values
  ('stale_after_sec', 30, 'a device or worker without a heartbeat for this long is offline'),
  ('claim_lease_sec', 30, 'lease of a claimed assignment until the worker starts it'),
  ('lease_grace_sec', 30, 'added to duration_sec for the lease of a started assignment'),
  ('heartbeat_lease_sec', 30, 'each heartbeat extends running leases to at least now + this'),
  ('max_attempts', 3, 'runs of one assignment before it fails (lease expiries count)'),
  ('maintenance_interval_ms', 1000, 'rescue / stale marking / top-up run at most this often'),
  ('progress_event_interval_ms', 100, 'job_progress events per job are at most this frequent (the last one is always sent)'),
  ('batch_lease_sec', 30,
   'a batch runner holds a claimed job this long past its last heartbeat; then another runner may take it over'),
  ('topup_grace_sec', 120,
   'a job whose runs all ended short waits this long for new eligible devices, then ends incomplete'),
  ('quarantine_after_failures', 3,
   'a device whose last this many runs failed in a row is quarantined (takes no new runs); 0 turns it off'),
  ('quarantine_cooldown_sec', 1800, 'a quarantined device takes work again after this long (or when an operator enables it)'),
  ('min_battery_pct', 15, 'a phone whose battery is below this takes no new runs until it recovers'),
  ('max_battery_temp_c', 45, 'a phone whose battery is hotter than this takes no new runs until it cools down'),
  ('retention_days', 30,
   'finished jobs and AI batches older than this are purged by upkeep, a few at a time (0 keeps them)'),
  ('metrics_device_series', 200,
   'GET /metrics gives per-device battery and temperature series for at most this many devices');

-- Maintenance bookkeeping: one row, so periodic work runs once however many workers call it.
create table jobsys.maintenance_state (
  id boolean primary key default true check (id),
  last_run_at timestamptz not null default '-infinity',
  last_purge_at timestamptz not null default '-infinity'  -- retention runs at most once a minute
);
comment on table jobsys.maintenance_state is
  'One row: when jobsys.maintain() last ran, so periodic work runs once per interval however many workers call it.';
insert into jobsys.maintenance_state default values;

-- Device jobs ==========================================================================

-- Workers: one row per worker process session -----------------------------------------
create table jobsys.workers (
  id uuid primary key default gen_random_uuid(),
  name text not null check (length(name) between 1 and 200),
  hostname text not null default '' check (length(hostname) <= 255),
  user_id uuid,  -- the Supabase Auth user this worker signed in as (null on plain Postgres)
  status text not null default 'online' check (status in ('online', 'offline', 'stopped')),
  started_at timestamptz not null default now(),
  last_heartbeat_at timestamptz not null default now(),
  meta jsonb not null default '{}'
);
comment on table jobsys.workers is
  'One row per worker process session: every registration starts a new session, and a worker acts only as a session it registered.';
create index workers_user_id_idx on jobsys.workers (user_id);

-- Worker accounts: one per PC that joins the hub with its own token. The account id is the
-- `sub` the hub puts in the claims it runs that PC's calls with, so workers.user_id (and
-- every ownership rule) means the same as for a Supabase Auth user. Only the token's
-- SHA-256 digest is stored; a revoked account keeps its row for the record.
create table jobsys.worker_accounts (
  id uuid primary key default gen_random_uuid(),
  name text not null check (length(name) between 1 and 64 and name = btrim(name) and name !~ '[[:cntrl:]]'),
  token_hash text not null unique check (token_hash ~ '^[0-9a-f]{64}$'),
  created_at timestamptz not null default now(),
  last_seen_at timestamptz,
  revoked_at timestamptz
);
comment on table jobsys.worker_accounts is
  'One account per PC joining the hub (jobsys workers add): its name, the SHA-256 digest of its token (never the token), when it was last seen and whether it was revoked.';
create unique index worker_accounts_active_name_idx on jobsys.worker_accounts (name) where revoked_at is null;

-- Operator accounts of embedded mode (jobsys accounts add): a name, a role and the SHA-256
-- digest of the account's token. Supabase mode takes the same roles from app_metadata.
create table jobsys.operator_accounts (
  id uuid primary key default gen_random_uuid(),
  name text not null check (length(name) between 1 and 64 and name = btrim(name) and name !~ '[[:cntrl:]]'),
  role text not null check (role in ('viewer', 'operator', 'admin')),
  token_hash text not null unique check (token_hash ~ '^[0-9a-f]{64}$'),
  created_at timestamptz not null default now(),
  last_seen_at timestamptz,
  revoked_at timestamptz
);
comment on table jobsys.operator_accounts is
  'Named operator accounts of embedded mode (viewer, operator, admin), each with the SHA-256 digest of its token (never the token); a revoked account keeps its row for the record.';
create unique index operator_accounts_active_name_idx on jobsys.operator_accounts (name) where revoked_at is null;

-- Devices: stable by serial, re-bound to the session that registers them (35_device_runs.sql)
create table jobsys.devices (
  id uuid primary key default gen_random_uuid(),
  serial text not null unique check (length(serial) between 1 and 200),
  worker_id uuid references jobsys.workers (id) on delete set null,
  model text not null default '' check (length(model) <= 200),
  labels jsonb not null default '{}',
  simulated boolean not null default false,
  -- What the device is (only online takes runs): what its worker last reported (online,
  -- offline, error, unauthorized), low_battery / overheated (online, but its vitals are
  -- outside the settings: jobsys.fitness), quarantined (its last runs failed in a row), or
  -- what an operator decided (disabled; draining: finishes its run, then disabled).
  state text not null default 'online'
    check (state in ('online', 'offline', 'error', 'unauthorized', 'disabled', 'draining', 'quarantined',
                     'low_battery', 'overheated')),
  -- The device row is the per-device mutex: claim sets this under the row lock, so a
  -- device never runs two assignments at once. References one of this device's own
  -- assignments (on delete set null); kept by the triggers in 15_referential_integrity.sql.
  running_assignment_id bigint,
  last_heartbeat_at timestamptz not null default now(),
  registered_at timestamptz not null default now(),
  -- The id of the run the device claimed last: its queue starts here (claim_assignments
  -- looks below it only when nothing is pending above). See 35_device_runs.sql.
  queue_floor bigint not null default 0,
  -- What the worker last reported, kept while the device is disabled: enabling returns to it.
  reported_state text not null default 'online'
    check (reported_state in ('online', 'offline', 'error', 'unauthorized')),
  -- The last worker session refused this serial because a live session of another worker
  -- account holds it (sync_devices), for operators to see; cleared when the device moves.
  conflict_worker_id uuid references jobsys.workers (id) on delete set null,
  conflict_at timestamptz,
  -- Labels an operator set (rack=A); `labels` are the worker's (model, android_version, pc).
  -- A job's device_labels match against both, the operator's winning on a shared key.
  operator_labels jsonb not null default '{}',
  failure_streak integer not null default 0,  -- runs failed in a row on it; quarantine at the setting
  quarantined_until timestamptz,
  vitals jsonb,  -- the worker's last reading: battery_pct, charging, temperature_c, screen_on, adb_state
  vitals_at timestamptz,
  reboot_requested_at timestamptz,  -- an operator asked; cleared by the worker's answer (device_rebooted)
  rebooted_at timestamptz,
  state_reason text,  -- why it takes no work, in words (quarantine, battery, an operator)
  state_changed_at timestamptz not null default now()
) with (fillfactor = 70);  -- heartbeats, claims and completions update rows in place (HOT)
comment on table jobsys.devices is
  'Android devices, stable by serial, re-bound to the worker session that registers them unless a live session of another worker account holds them. The row is the per-device mutex: a claim sets running_assignment_id under its lock.';
-- A PC's devices by serial: the Devices page's pages of one PC are a range scan of it (33_fleet.sql).
create index devices_worker_serial_idx on jobsys.devices (worker_id, serial);

-- What happened to a device, for its page: state changes (with the reason) and reboots.
create table jobsys.device_events (
  id bigint generated always as identity primary key,
  device_id uuid not null references jobsys.devices (id) on delete cascade,
  at timestamptz not null default now(),
  event text not null check (event in ('state', 'reboot_requested', 'rebooted', 'reboot_failed')),
  state text not null,
  detail text check (length(detail) <= 2000)
);
comment on table jobsys.device_events is
  'A device''s history for its page: each state change with its reason, reboot requests and their outcome. Kept 7 days (jobsys.maintain).';
create index device_events_device_idx on jobsys.device_events (device_id, id desc);
create index device_events_at_idx on jobsys.device_events (at);

-- Battery and temperature over time, at most one sample a minute per device.
create table jobsys.device_vitals (
  device_id uuid not null references jobsys.devices (id) on delete cascade,
  at timestamptz not null default now(),
  battery_pct smallint,
  temperature_c real,
  charging boolean,
  primary key (device_id, at)
);
comment on table jobsys.device_vitals is
  'Battery level, temperature and charging as the worker read them, at most one sample a minute per device, kept 24 hours (jobsys.maintain), for the device page''s chart.';
create index device_vitals_at_idx on jobsys.device_vitals (at);

-- Jobs --------------------------------------------------------------------------------
create table jobsys.jobs (
  id uuid primary key default gen_random_uuid(),
  title text not null,
  action text not null default 'open_url',
  target_url text not null,
  duration_sec integer not null,
  target_type text not null,
  target_value integer,
  target_count integer not null,
  status text not null default 'active',
  max_attempts integer not null,
  -- Counters. Exact are these plus the job's rows in job_run_counts (jobsys.counted), each
  -- kept in the transaction of every transition: claims and finishes change job_run_counts,
  -- everything else these. assigned = rows of any status; pending + paused = assigned -
  -- running - completed - failed - cancelled. A part alone may be below zero (a run claimed
  -- into job_run_counts, rescued here), so the bounds are the sums', checked by the tests.
  assigned_count integer not null default 0,
  running_count integer not null default 0,
  completed_count integer not null default 0,
  failed_count integer not null default 0,
  cancelled_count integer not null default 0,
  created_by uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  paused_at timestamptz,
  finished_at timestamptz,
  -- Why an incomplete job ended (jobsys.settle_jobs): no_eligible_devices, timed_out, max_attempts.
  end_reason text,
  timeout_sec integer,  -- optional time limit from the start (start_at, else created_at; jobsys.settle_jobs ends the job)
  topup_grace_sec integer,  -- per job; null: the topup_grace_sec setting
  -- Since when an active job with no live run, still short, waits for new devices.
  waiting_since timestamptz,
  start_at timestamptz,  -- when the job starts; until then it is scheduled, with no runs
  -- Only devices carrying every one of these label pairs (worker's or operator's) run it.
  device_labels jsonb not null default '{}',
  -- A device claims the highest priority first, then the oldest (-10..10).
  priority integer not null default 0 constraint jobs_priority_check check (priority between -10 and 10),
  constraint jobs_status_check check (
    status in ('scheduled', 'active', 'paused', 'completed', 'incomplete', 'cancelled')
    and (end_reason is not null) = (status = 'incomplete')
    and (end_reason is null or end_reason in ('no_eligible_devices', 'timed_out', 'max_attempts'))
    and (status <> 'scheduled' or start_at is not null)),
  -- Few, wide CHECK constraints on the rows every claim and finish updates. Postgres
  -- reads each constraint's stored expression again for every UPDATE statement, so one
  -- constraint per column cost more than the counter update it guarded. Grouped: what an
  -- operator gives (input), the status (above), and the counters.
  constraint jobs_input_check check (
    length(title) between 1 and 200
    and action = 'open_url'
    and length(target_url) <= 2048 and target_url ~* '^https?://[^[:space:]/?#]+'
    and duration_sec between 1 and 86400
    and ((target_type = 'all_devices' and target_value is null)
         or (target_type = 'percentage' and target_value between 1 and 100)
         or (target_type = 'device_count' and target_value between 1 and 100000))
    and target_count >= 0
    and max_attempts between 1 and 100
    and (timeout_sec is null or timeout_sec between 1 and 604800)
    and (topup_grace_sec is null or topup_grace_sec between 0 and 86400))
);
comment on table jobsys.jobs is
  'Device jobs: open a URL on all, a percentage or a number of the healthy devices for duration_sec. The exact counters are these plus the job''s job_run_counts (jobsys.counted), changed in the transaction of each transition.';
create index jobs_status_created_idx on jobsys.jobs (status, created_at desc);
create index jobs_created_idx on jobsys.jobs (created_at desc);
-- maintain() looks for due scheduled jobs every second.
create index jobs_scheduled_idx on jobsys.jobs (start_at) where status = 'scheduled';

-- Assignments: one run of one job on one device ---------------------------------------
create table jobsys.job_assignments (
  id bigint generated always as identity primary key,
  -- References jobs (on delete cascade) and devices (on delete cascade), kept by the
  -- triggers in 15_referential_integrity.sql.
  job_id uuid not null,
  device_id uuid not null,
  worker_id uuid,  -- the worker session that last claimed it
  status text not null default 'pending'
    check (status in ('pending', 'paused', 'running', 'completed', 'failed', 'cancelled')),
  attempt integer not null default 1 check (attempt >= 1),
  lease_expires_at timestamptz,
  created_at timestamptz not null default now(),
  claimed_at timestamptz,
  started_at timestamptz,
  finished_at timestamptz,
  result jsonb,
  error text,
  priority integer not null default 0,  -- the job's, so that a claim orders a device's queue by it
  unique (job_id, device_id)
) with (fillfactor = 90);  -- room for start and lease extensions to update in place (HOT)
comment on table jobsys.job_assignments is
  'One run of one job on one device, leased to the worker that claimed it. job_id and device_id are references kept by statement-level triggers, not declared foreign keys.';
-- Claims (oldest pending of a device), load per device, releasing a device's queue.
create index job_assignments_device_live_idx on jobsys.job_assignments (device_id, id)
  where status in ('pending', 'paused', 'running');
-- Lease rescue scans the running runs (at most one per device). Keyed on job_id, not on
-- lease_expires_at: start and every heartbeat move the lease, and an indexed lease would
-- turn each of those into a new row version plus an entry in every index.
create index job_assignments_running_idx on jobsys.job_assignments (job_id)
  where status = 'running';
-- Claims take a device's pending runs of a non-zero priority from here, highest first (see
-- 35_device_runs.sql); without any, a probe of an empty range.
create index job_assignments_device_priority_idx on jobsys.job_assignments (device_id, priority desc, id)
  where status = 'pending' and priority <> 0;

-- Run counters per job and worker session ------------------------------------------------
-- What claims and finishes change (jobsys.count_runs), so that the runs of one job on many
-- workers never queue on one row: each worker changes its own. Readers add them to the job
-- row (jobsys.counted): at most one row per PC that ran the job.
create table jobsys.job_run_counts (
  job_id uuid not null references jobsys.jobs (id) on delete cascade,
  worker_id uuid not null,
  running integer not null default 0,
  completed integer not null default 0,
  failed integer not null default 0,
  cancelled integer not null default 0,
  changed_at timestamptz not null default now(),
  primary key (job_id, worker_id)
);
comment on table jobsys.job_run_counts is
  'The run counters claims and finishes change, one row per job and worker session; a job''s exact counters are its row plus these (jobsys.counted).';

-- When each job's last job_progress event went out (jobsys.notify_progress): apart from the
-- job row, which claims and finishes hold FOR SHARE, so the one that is due takes it with
-- SKIP LOCKED and the others never wait.
create table jobsys.job_progress_marks (
  job_id uuid primary key references jobsys.jobs (id) on delete cascade,
  notified_at timestamptz not null default '-infinity',
  sent jsonb  -- the payload of that event (maintain sends a trailing one when the job differs)
);
comment on table jobsys.job_progress_marks is
  'When the last job_progress event of each job went out, for the per-job throttle (progress_event_interval_ms).';

-- Background AI batch jobs =============================================================

create table jobsys.background_jobs (
  id uuid primary key default gen_random_uuid(),
  type text not null default 'ai_batch' check (type in ('ai_batch')),
  title text not null check (length(title) between 1 and 200),
  status text not null default 'pending'
    check (status in ('pending', 'running', 'completed', 'failed', 'cancelled')),
  -- ai_batch: template, model, system_instruction, temperature, max_output_tokens, provider,
  -- placeholders. The items live in background_job_items.
  payload jsonb not null,
  result jsonb not null default '{}',  -- {"providers": [...]}: which providers produced outputs
  concurrency integer not null default 5 check (concurrency between 1 and 64),
  total_items integer not null check (total_items between 1 and 10000),
  running_items integer not null default 0 check (running_items >= 0),
  completed_items integer not null default 0 check (completed_items >= 0),
  failed_items integer not null default 0 check (failed_items >= 0),
  cancelled_items integer not null default 0 check (cancelled_items >= 0),
  progress_percent smallint generated always as
    (((completed_items + failed_items) * 100 / total_items)::smallint) stored,
  retry_count integer not null default 0 check (retry_count >= 0),  -- operator retries of failed items
  max_retries integer not null default 3 check (max_retries between 0 and 10),  -- per item, per run
  error_message text,
  created_by uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  started_at timestamptz,
  completed_at timestamptz,
  lease_owner text,  -- the runner that holds (or last held) the job
  lease_token uuid,  -- new on every claim; items claimed under it carry it
  lease_expires_at timestamptz,
  progress_notified_at timestamptz not null default '-infinity',
  usage jsonb not null default '{}',  -- tokens over every attempt (input, output, thinking, and the retries' part)
  check (running_items + completed_items + failed_items + cancelled_items <= total_items)
);
comment on table jobsys.background_jobs is
  'AI batch jobs: one prompt template over up to 10,000 items, held by one runner at a time under a lease. The counters change only in jobsys.apply_background_counts.';
-- The dashboard: all / per status, newest first.
create index background_jobs_created_idx on jobsys.background_jobs (created_at desc);
create index background_jobs_status_created_idx on jobsys.background_jobs (status, created_at desc);
-- Claims: the oldest pending job; running jobs whose lease expired.
create index background_jobs_pending_idx on jobsys.background_jobs (created_at) where status = 'pending';
create index background_jobs_lease_idx on jobsys.background_jobs (lease_expires_at) where status = 'running';
create unique index background_jobs_lease_token_idx on jobsys.background_jobs (lease_token)
  where lease_token is not null;

create table jobsys.background_job_items (
  job_id uuid not null references jobsys.background_jobs (id) on delete cascade,
  idx integer not null check (idx >= 0),
  input jsonb not null,
  status text not null default 'pending'
    check (status in ('pending', 'running', 'completed', 'failed', 'cancelled')),
  output text,
  error text,
  attempts integer not null default 0 check (attempts >= 0),  -- provider calls made, over all runs
  tokens_in integer,
  tokens_out integer,
  latency_ms integer,
  provider text,  -- 'gemini' or 'offline' (offline outputs are placeholders, never model text)
  runner_id text,
  lease_token uuid,
  started_at timestamptz,
  finished_at timestamptz,
  tokens_thinking integer,
  primary key (job_id, idx)
);
comment on table jobsys.background_job_items is
  'The items of a background job, claimed in batches under the job lease token; a result counts only while the item is running under that token.';
-- Claims (pending in index order) and the items page's status filter.
create index background_job_items_status_idx on jobsys.background_job_items (job_id, status, idx);
comment on column jobsys.background_jobs.usage is
  'Tokens over every attempt of every run: input, output, thinking, and retry_input / retry_output / retry_thinking, the part spent on attempts whose output was not kept (retries, invalid structured outputs, failed items). Cost is priced from it by jobsys/batch/pricing.py.';
comment on column jobsys.background_job_items.tokens_thinking is
  'Thinking tokens (usage_metadata.thoughts_token_count); with tokens_in and tokens_out, summed over the attempts of the item''s last run.';

-- Runners and what they can run, registered by claim_runnable_background_job and kept fresh
-- by their heartbeats: a job no runner up can run shows why it waits.
create table jobsys.background_runners (
  runner_id text primary key check (length(runner_id) between 1 and 200),
  providers text[] not null default '{}',
  seen_at timestamptz not null default now()
);
comment on table jobsys.background_runners is
  'Batch runners and the providers each can run (gemini, offline, openai_compatible), refreshed by every claim and heartbeat; read for the wait reason of pending jobs. Rows older than an hour are dropped.';

create table jobsys.background_job_logs (
  id bigint generated always as identity primary key,
  job_id uuid not null references jobsys.background_jobs (id) on delete cascade,
  level text not null check (level in ('info', 'warning', 'error')),
  message text not null check (length(message) between 1 and 4000),
  metadata jsonb not null default '{}',
  created_at timestamptz not null default now()
);
comment on table jobsys.background_job_logs is
  'Insert-only log of a background job (created, claimed, taken over, failed items, finished), read newest first.';
create index background_job_logs_job_idx on jobsys.background_job_logs (job_id, id desc);

-- The audit log ========================================================================
-- Every operator action, written by the SQL function that performs it, in its transaction.
create table jobsys.audit_log (
  id bigint generated always as identity primary key,
  at timestamptz not null default now(),
  actor_role text not null,  -- jobsys.caller_role(): operator, service...
  actor_id uuid,  -- auth.uid(): the operator's account (null for the service)
  actor_name text check (length(actor_name) <= 320),  -- the account's email, when its token says
  action text not null check (action ~ '^[a-z_]{1,40}$'),
  object_type text not null check (object_type in ('job', 'device', 'worker_account', 'operator_account',
                                                   'background_job', 'system')),
  object_id text check (length(object_id) <= 200),
  detail jsonb not null default '{}' check (octet_length(detail::text) <= 8192)
);
comment on table jobsys.audit_log is
  'Insert-only record of every operator action (who, when, what, in brief), written by the function that performs it; never a token or a secret. Outlives what it names (a deleted job).';
create index audit_log_at_idx on jobsys.audit_log (at desc);
create index audit_log_object_idx on jobsys.audit_log (object_type, object_id, id desc);

-- One rate limit across runners (issue 23): Gemini's quotas are per project, not per
-- process, so runners with --rpm / --tpm draw from one budget per provider and model here. A
-- grant is a row (a sliding window, as the per-runner limiter keeps it), a 429's cooldown is shared.
create table jobsys.batch_rate_limits (
  key text primary key check (length(key) between 1 and 200),  -- provider:model, e.g. gemini:gemini-2.5-flash
  cooldown_until timestamptz not null default '-infinity',  -- a 429's delay, held by every runner
  updated_at timestamptz not null default now(),
  rpm integer,  -- the last --rpm / --tpm a runner gave (one given without the other keeps it), shown by the new-batch dialog
  tpm integer
);
comment on table jobsys.batch_rate_limits is
  'One row per shared rate limit, keyed provider:model: the lock that serialises its grants, the 429 cooldown every runner honours, and the last rpm and tpm the runners asked with.';
create table jobsys.batch_rate_grants (
  id bigint generated always as identity primary key,
  key text not null references jobsys.batch_rate_limits (key) on delete cascade,
  at timestamptz not null default clock_timestamp(),
  tokens integer not null default 0 check (tokens >= 0)  -- the estimate, corrected once usage is known
);
comment on table jobsys.batch_rate_grants is
  'Calls granted under a shared rate limit in the current window (older rows are deleted by the next grant): requests and prompt tokens per window, counted over every runner.';
create index batch_rate_grants_key_at_idx on jobsys.batch_rate_grants (key, at);
