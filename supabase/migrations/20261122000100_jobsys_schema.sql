-- jobsys: schema, tables and indexes for device jobs.
--
-- Everything lives in the `jobsys` schema so a project's own `jobs` table is never
-- touched. The same file applies to a Supabase project and to plain Postgres: the
-- first block creates, on plain Postgres only, the roles and `auth` helpers that
-- Supabase already has.

-- Supabase roles and auth helpers, created only where missing ------------------------
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
end
$$;

create schema if not exists auth;

do $$
begin
  -- PostgREST sets request.jwt.claims; older versions set request.jwt.claim.
  if to_regprocedure('auth.jwt()') is null then
    create function auth.jwt() returns jsonb
      language sql stable
      as $f$
        select coalesce(
          nullif(current_setting('request.jwt.claims', true), ''),
          nullif(current_setting('request.jwt.claim', true), ''),
          '{}')::jsonb
      $f$;
  end if;
  if to_regprocedure('auth.uid()') is null then
    create function auth.uid() returns uuid
      language sql stable
      as $f$ select nullif(auth.jwt() ->> 'sub', '')::uuid $f$;
  end if;
  -- Ours only where we created them; Supabase grants its own.
  if (select nspowner = (select oid from pg_roles where rolname = current_user)
      from pg_namespace where nspname = 'auth') then
    grant usage on schema auth to anon, authenticated, service_role;
    grant execute on function auth.jwt(), auth.uid() to anon, authenticated, service_role;
  end if;
end
$$;

create schema if not exists jobsys;

-- Tunables. Tests shorten them; operators rarely need to. ----------------------------
create table jobsys.settings (
  key text primary key,
  value numeric not null,
  description text not null
);

insert into jobsys.settings (key, value, description) values
  ('stale_after_sec', 30, 'a device or worker without a heartbeat for this long is offline'),
  ('claim_lease_sec', 30, 'lease of a claimed assignment until the worker starts it'),
  ('lease_grace_sec', 30, 'added to duration_sec for the lease of a started assignment'),
  ('heartbeat_lease_sec', 30, 'each heartbeat extends running leases to at least now + this'),
  ('max_attempts', 3, 'runs of one assignment before it fails (lease expiries count)'),
  ('maintenance_interval_ms', 1000, 'rescue / stale marking / top-up run at most this often'),
  ('progress_event_interval_ms', 100, 'job_progress events per job are at most this frequent (the last one is always sent)');

create function jobsys.setting(p_key text) returns numeric
  language sql stable
  set search_path = jobsys, pg_temp
  as $$ select value from jobsys.settings where key = p_key $$;

-- Maintenance bookkeeping: one row, so periodic work runs once however many workers call it.
create table jobsys.maintenance_state (
  id boolean primary key default true check (id),
  last_run_at timestamptz not null default '-infinity'
);
insert into jobsys.maintenance_state default values;

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
create index workers_user_id_idx on jobsys.workers (user_id);

-- Devices: stable by serial, re-bound to whichever worker session registers them -------
create table jobsys.devices (
  id uuid primary key default gen_random_uuid(),
  serial text not null unique check (length(serial) between 1 and 200),
  worker_id uuid references jobsys.workers (id) on delete set null,
  model text not null default '' check (length(model) <= 200),
  labels jsonb not null default '{}',
  simulated boolean not null default false,
  state text not null default 'online' check (state in ('online', 'offline', 'error', 'disabled')),
  -- The device row is the per-device mutex: claim sets this under the row lock, so a
  -- device never runs two assignments at once.
  running_assignment_id bigint,
  last_heartbeat_at timestamptz not null default now(),
  registered_at timestamptz not null default now()
);
create index devices_worker_id_idx on jobsys.devices (worker_id);

-- Jobs --------------------------------------------------------------------------------
create table jobsys.jobs (
  id uuid primary key default gen_random_uuid(),
  title text not null check (length(title) between 1 and 200),
  action text not null default 'open_url' check (action in ('open_url')),
  target_url text not null check (length(target_url) <= 2048 and target_url ~* '^https?://[^[:space:]/?#]+'),
  duration_sec integer not null check (duration_sec between 1 and 86400),
  target_type text not null check (target_type in ('all_devices', 'percentage', 'device_count')),
  target_value integer check (
    (target_type = 'all_devices' and target_value is null)
    or (target_type = 'percentage' and target_value between 1 and 100)
    or (target_type = 'device_count' and target_value between 1 and 100000)),
  target_count integer not null check (target_count >= 0),
  status text not null default 'active' check (status in ('active', 'paused', 'completed', 'cancelled')),
  max_attempts integer not null check (max_attempts between 1 and 100),
  -- Exact counters, kept in the transaction of every transition. assigned = rows of any
  -- status; pending + paused = assigned - running - completed - failed - cancelled.
  assigned_count integer not null default 0 check (assigned_count >= 0),
  running_count integer not null default 0 check (running_count >= 0),
  completed_count integer not null default 0 check (completed_count >= 0),
  failed_count integer not null default 0 check (failed_count >= 0),
  cancelled_count integer not null default 0 check (cancelled_count >= 0),
  created_by uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  paused_at timestamptz,
  finished_at timestamptz,
  progress_notified_at timestamptz not null default '-infinity'
);
create index jobs_status_created_idx on jobsys.jobs (status, created_at desc);
create index jobs_created_idx on jobsys.jobs (created_at desc);

-- Assignments: one run of one job on one device ---------------------------------------
create table jobsys.job_assignments (
  id bigint generated always as identity primary key,
  job_id uuid not null references jobsys.jobs (id) on delete cascade,
  device_id uuid not null references jobsys.devices (id) on delete cascade,
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
  unique (job_id, device_id)
);
-- Claims (oldest pending of a device), load per device, releasing a device's queue.
create index job_assignments_device_live_idx on jobsys.job_assignments (device_id, id)
  where status in ('pending', 'paused', 'running');
-- Lease rescue.
create index job_assignments_lease_idx on jobsys.job_assignments (lease_expires_at)
  where status = 'running';

alter table jobsys.devices
  add constraint devices_running_assignment_fk foreign key (running_assignment_id)
  references jobsys.job_assignments (id) on delete set null;
create index devices_running_assignment_idx on jobsys.devices (running_assignment_id)
  where running_assignment_id is not null;
