-- jobsys: issue 19, fleet management.
--
-- * Devices: operator labels (operator_labels; a job's device_labels match the worker's
--   labels and the operator's), vitals (battery, charging, temperature, screen, adb state)
--   with a history for 24 hours (device_vitals), a history of state changes and reboots
--   (device_events), the reason a device takes no work (state_reason) and since when.
-- * States: draining (its run finishes, then disabled), quarantined (its last
--   quarantine_after_failures runs failed; quarantine_cooldown_sec), low_battery and
--   overheated (vitals outside min_battery_pct / max_battery_temp_c); disable now stops the
--   running run (requeue_device_run, shared with release_device); unauthorized shows as such.
-- * Jobs: device_labels (create_job's p_device_labels): only matching devices run the job,
--   its target counts among them, top-up follows the filter.
-- * Reboot: request_device_reboot (operators) -> device_reboot push / heartbeat's reboot
--   list -> device_rebooted (the worker's answer).
-- * Reads: get_device (vitals, events, last 50 runs), fleet_labels (the dialog's choices).

insert into jobsys.settings (key, value, description) values
  ('quarantine_after_failures', 3,
   'a device whose last this many runs failed in a row is quarantined (takes no new runs); 0 turns it off'),
  ('quarantine_cooldown_sec', 1800, 'a quarantined device takes work again after this long (or when an operator enables it)'),
  ('min_battery_pct', 15, 'a phone whose battery is below this takes no new runs until it recovers'),
  ('max_battery_temp_c', 45, 'a phone whose battery is hotter than this takes no new runs until it cools down');

alter table jobsys.devices drop constraint devices_state_check;
alter table jobsys.devices add constraint devices_state_check
    check (state in ('online', 'offline', 'error', 'unauthorized', 'disabled', 'draining', 'quarantined',
                     'low_battery', 'overheated'));
alter table jobsys.devices
  add column operator_labels jsonb not null default '{}',
  add column failure_streak integer not null default 0,
  add column quarantined_until timestamptz,
  add column vitals jsonb,
  add column vitals_at timestamptz,
  add column reboot_requested_at timestamptz,
  add column rebooted_at timestamptz,
  add column state_reason text,
  add column state_changed_at timestamptz not null default now();
alter table jobsys.jobs add column device_labels jsonb not null default '{}';

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

-- Labels --------------------------------------------------------------------------------
-- What is wrong with a label object, or null: at most 32 labels; keys 1-64 characters of
-- letters, digits and _ . : / -; values strings of at most 256 characters; at most 4096
-- bytes as JSON. jobsys.models.check_labels checks the same bounds.
create or replace function jobsys.label_problem(p_labels jsonb) returns text
  language sql immutable
  as $$
  select case
    when jsonb_typeof(p_labels) is distinct from 'object' then 'labels_object'
    when (select count(*) from jsonb_object_keys(p_labels)) > 32 then 'labels_count'
    when exists (select 1 from jsonb_object_keys(p_labels) k where k !~ '^[A-Za-z0-9_.:/-]{1,64}$')
      then 'label_key'
    when exists (select 1 from jsonb_each(p_labels) v
                 where jsonb_typeof(v.value) <> 'string' or length(v.value #>> '{}') > 256)
      then 'label_value'
    when octet_length(p_labels::text) > 4096 then 'labels_size'
  end
$$;
comment on function jobsys.label_problem(jsonb) is
  'What is wrong with a label object (labels_object, labels_count, label_key, label_value, labels_size), or null when it is within the bounds: at most 32 labels, keys 1-64 characters of A-Z a-z 0-9 _ . : / -, string values of at most 256 characters, at most 4096 bytes.';

create or replace function jobsys.label_rule_message(p_rule text) returns text
  language sql immutable
  as $$
  select case p_rule
    when 'labels_object' then 'labels must be a JSON object'
    when 'labels_count' then 'at most 32 labels'
    when 'label_key' then 'label keys must be 1-64 characters of letters, digits and _ . : / -'
    when 'label_value' then 'label values must be strings of at most 256 characters'
    else 'labels must be at most 4096 bytes as JSON' end
$$;
comment on function jobsys.label_rule_message(text) is
  'The operator-facing message for a rule of jobsys.label_problem.';

-- What is wrong with a worker's vitals reading, or null. Every field is optional.
create or replace function jobsys.vitals_problem(p_vitals jsonb) returns text
  language sql immutable
  as $$
  select case
    when p_vitals is null or jsonb_typeof(p_vitals) = 'null' then null
    when jsonb_typeof(p_vitals) <> 'object' then 'vitals must be a JSON object'
    when exists (select 1 from jsonb_object_keys(p_vitals) k
                 where k not in ('battery_pct', 'charging', 'temperature_c', 'screen_on', 'adb_state'))
      then 'vitals may carry battery_pct, charging, temperature_c, screen_on and adb_state only'
    when jsonb_typeof(p_vitals -> 'battery_pct') not in ('number', 'null')
         or (p_vitals ->> 'battery_pct') !~ '^(100|[1-9]?[0-9])$'
      then 'battery_pct must be a whole number from 0 to 100'
    when jsonb_typeof(p_vitals -> 'temperature_c') not in ('number', 'null')
         or (p_vitals ->> 'temperature_c')::numeric not between -40 and 150
      then 'temperature_c must be a number from -40 to 150'
    when jsonb_typeof(p_vitals -> 'charging') not in ('boolean', 'null')
         or jsonb_typeof(p_vitals -> 'screen_on') not in ('boolean', 'null')
      then 'charging and screen_on must be true or false'
    when jsonb_typeof(p_vitals -> 'adb_state') not in ('string', 'null')
         or length(p_vitals ->> 'adb_state') > 32
      then 'adb_state must be a string of at most 32 characters'
  end
$$;
comment on function jobsys.vitals_problem(jsonb) is
  'What is wrong with the vitals of a device report (battery_pct 0-100, charging, temperature_c -40..150, screen_on, adb_state), or null. jobsys.models.DeviceVitals checks the same bounds.';

-- Fitness -------------------------------------------------------------------------------
-- The state of a device from what its worker reports: online unless its vitals are outside
-- the settings (low_battery below min_battery_pct, overheated above max_battery_temp_c),
-- with the reason in words. p_labels: the worker's labels (the reason of an error).
create or replace function jobsys.fitness(p_reported text, p_vitals jsonb, p_labels jsonb,
  out state text, out reason text)
  language sql stable
  set search_path = jobsys, pg_temp
  as $$
  select case
      when p_reported <> 'online' then p_reported
      when (p_vitals ->> 'battery_pct')::numeric < jobsys.setting('min_battery_pct') then 'low_battery'
      when (p_vitals ->> 'temperature_c')::numeric > jobsys.setting('max_battery_temp_c') then 'overheated'
      else 'online' end,
    case
      when p_reported = 'unauthorized' and p_vitals ->> 'adb_state' like 'no permissions%'
        then 'adb: no permissions (on Linux: the udev rule for this phone; then plug it in again)'
      when p_reported = 'unauthorized' then 'adb: unauthorized: allow USB debugging on the phone'
      when p_reported = 'error' then coalesce(p_labels ->> 'error', 'the worker reports an error')
      when p_reported <> 'online' then null
      when (p_vitals ->> 'battery_pct')::numeric < jobsys.setting('min_battery_pct')
        then format('battery %s %% (below %s %%)', p_vitals ->> 'battery_pct', jobsys.setting('min_battery_pct'))
      when (p_vitals ->> 'temperature_c')::numeric > jobsys.setting('max_battery_temp_c')
        then format('battery %s °C (above %s °C)', p_vitals ->> 'temperature_c', jobsys.setting('max_battery_temp_c'))
    end
$$;
comment on function jobsys.fitness(text, jsonb, jsonb) is
  'The state of a device from its worker''s report: low_battery or overheated when its vitals are outside min_battery_pct / max_battery_temp_c, else what the worker reported, with the reason in words (unauthorized: what to do on the phone).';

-- States only an operator (or quarantine's cool-down) ends: a worker's report keeps them.
create or replace function jobsys.sticky_state(p_state text) returns boolean
  language sql immutable
  as $$
  select p_state in ('disabled', 'draining', 'quarantined')
$$;
comment on function jobsys.sticky_state(text) is
  'Whether a device state outlives its worker''s reports: disabled, draining and quarantined end only by an operator (or quarantine''s cool-down).';

-- A device's history: every state change is logged with its reason. A change that sets no
-- new reason clears the old one (offline needs no reason; quarantine and battery set theirs).
create or replace function jobsys.devices_log_state() returns trigger
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
begin
  if new.state is distinct from old.state then
    if new.state_reason is not distinct from old.state_reason then
      new.state_reason := null;
    end if;
    new.state_changed_at := now();
    insert into jobsys.device_events (device_id, event, state, detail)
    values (new.id, 'state', new.state, new.state_reason);
  end if;
  return new;
end
$$;
comment on function jobsys.devices_log_state() is
  'Trigger: logs each device state change with its reason in device_events and stamps state_changed_at; a change that sets no new reason clears the old one.';

create trigger devices_log_state before update of state on jobsys.devices
  for each row when (new.state is distinct from old.state) execute function jobsys.devices_log_state();

-- Quarantine ------------------------------------------------------------------------------
-- Devices among p_device_ids (each with the error of its last failure, p_errors) whose
-- last quarantine_after_failures runs failed in a row take no new runs until
-- quarantine_cooldown_sec has passed or an operator enables them. The caller holds their
-- rows (finish_runs); their queues move at the next upkeep.
create or replace function jobsys.quarantine_flaky(p_device_ids uuid[], p_errors text[]) returns integer
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_after integer := jobsys.setting('quarantine_after_failures');
  v_n integer;
begin
  if v_after <= 0 then
    return 0;
  end if;
  update jobsys.devices d set state = 'quarantined',
    state_reason = left(format('%s runs failed in a row (last: %s)', d.failure_streak, e.error), 2000),
    quarantined_until = now() + make_interval(secs => jobsys.setting('quarantine_cooldown_sec')::double precision)
  from (select distinct on (x.device_id) x.device_id, x.error
        from unnest(p_device_ids, p_errors) with ordinality as x(device_id, error, i)
        order by x.device_id, x.i desc) e
  where d.id = e.device_id and d.failure_streak >= v_after and not jobsys.sticky_state(d.state);
  get diagnostics v_n = row_count;
  if v_n > 0 then
    perform jobsys.emit('jobsys:dashboard', 'device_status', jsonb_build_object('quarantined', v_n));
  end if;
  return v_n;
end
$$;
comment on function jobsys.quarantine_flaky(uuid[], text[]) is
  'Quarantines the listed devices whose last quarantine_after_failures runs failed in a row (no new runs until quarantine_cooldown_sec has passed or an operator enables them), the last error in the reason. The caller holds their rows.';

-- Upkeep of device states (run by maintain): a quarantine past its cool-down ends (back to
-- what the worker reports, offline without a live session), a draining device without a
-- run is disabled, and the history older than its retention goes. A disabled device still
-- running a run (claimed in the instant it was disabled: set_device_state cannot lock the
-- device before the job) gives it back. SKIP LOCKED throughout.
create or replace function jobsys.refit_devices() returns integer
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz := jobsys.healthy_cutoff();
  v_n integer;
  v_held record;
begin
  for v_held in
    select d.id, a.job_id from jobsys.devices d join jobsys.job_assignments a on a.id = d.running_assignment_id
    where d.state = 'disabled'
    order by a.job_id
  loop
    perform 1 from jobsys.jobs where id = v_held.job_id for no key update skip locked;
    continue when not found;
    perform jobsys.requeue_device_run(v_held.id, false, 'device disabled by an operator');
  end loop;
  with due as (
    select d.id,
           case when d.state = 'draining' then 'disabled' when live.yes then f.state else 'offline' end as state,
           case when d.state = 'draining' then 'drained: disabled by an operator' when live.yes then f.reason end
             as reason
    from jobsys.devices d
    cross join lateral (select exists (select 1 from jobsys.workers w where w.id = d.worker_id
                                       and w.status = 'online' and w.last_heartbeat_at > v_cutoff) as yes) live
    cross join lateral jobsys.fitness(d.reported_state, d.vitals, d.labels) f
    where (d.state = 'quarantined' and d.quarantined_until <= now())
       or (d.state = 'draining' and d.running_assignment_id is null)
    order by d.id
    for no key update of d skip locked
  ), changed as (
    update jobsys.devices d set failure_streak = 0, quarantined_until = null,
      state = due.state, state_reason = due.reason
    from due
    where d.id = due.id
    returning 1)
  select count(*) into v_n from changed;
  if v_n > 0 then
    perform jobsys.emit('jobsys:dashboard', 'device_status', jsonb_build_object('refit', v_n));
  end if;
  delete from jobsys.device_vitals where at < now() - interval '24 hours';
  delete from jobsys.device_events where at < now() - interval '7 days';
  return v_n;
end
$$;
comment on function jobsys.refit_devices() is
  'Upkeep (run by maintain): ends quarantines past their cool-down, disables drained devices, takes back a run a disabled device still runs, and drops vitals older than 24 hours and device events older than 7 days.';

-- Operators -------------------------------------------------------------------------------
-- Set the operator labels of a device (replacing them). A key its worker reports is the
-- worker's: refused, so a worker label shown to operators is always what the phone says.
create or replace function jobsys.set_device_labels(p_device_id uuid, p_labels jsonb) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_rule text := jobsys.label_problem(p_labels);
  v_device jobsys.devices;
  v_key text;
begin
  perform jobsys.require_operator();
  if v_rule is not null then
    perform jobsys.raise_error('JS400', jobsys.label_rule_message(v_rule),
      jsonb_build_object('field', 'labels', 'rule', v_rule));
  end if;
  select * into v_device from jobsys.devices where id = p_device_id for no key update;
  if not found then
    perform jobsys.raise_error('JS404', 'device not found', jsonb_build_object('device_id', p_device_id));
  end if;
  select k into v_key from jsonb_object_keys(p_labels) k where v_device.labels ? k order by k limit 1;
  if found then
    perform jobsys.raise_error('JS400', format('label %s is reported by the device''s worker and cannot be set', v_key),
      jsonb_build_object('field', 'labels', 'rule', 'worker_label', 'key', v_key));
  end if;
  update jobsys.devices set operator_labels = p_labels where id = p_device_id returning * into v_device;
  perform jobsys.emit('jobsys:dashboard', 'device_status', jsonb_build_object('device_id', p_device_id));
  perform jobsys.top_up();  -- jobs targeting these labels may now have a device
  return jobsys.device_json(v_device, jobsys.healthy_cutoff());
end
$$;
comment on function jobsys.set_device_labels(uuid, jsonb) is
  'Operators: replace a device''s operator labels (bounded as worker labels; a key its worker reports is refused). Jobs targeting labels see the change at once.';

-- Ask the worker to reboot a phone. Refused (JS409) while the phone runs a run (drain it
-- first) or when no live worker session holds it. The worker is pushed device_reboot; the
-- heartbeat lists pending requests (the polling path) for 10 minutes.
create or replace function jobsys.request_device_reboot(p_device_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_device jobsys.devices;
begin
  perform jobsys.require_operator();
  select * into v_device from jobsys.devices where id = p_device_id for no key update;
  if not found then
    perform jobsys.raise_error('JS404', 'device not found', jsonb_build_object('device_id', p_device_id));
  end if;
  if v_device.running_assignment_id is not null then
    perform jobsys.raise_error('JS409', 'the device is running a run: drain it first, then reboot',
      jsonb_build_object('device_id', p_device_id, 'reason', 'busy'));
  end if;
  if v_device.reported_state = 'offline' or not exists (
       select 1 from jobsys.workers w where w.id = v_device.worker_id and w.status = 'online'
       and w.last_heartbeat_at > jobsys.healthy_cutoff()) then
    perform jobsys.raise_error('JS409', 'no worker holds the device now, so none can reboot it',
      jsonb_build_object('device_id', p_device_id, 'reason', 'offline'));
  end if;
  update jobsys.devices set reboot_requested_at = now() where id = p_device_id returning * into v_device;
  insert into jobsys.device_events (device_id, event, state) values (p_device_id, 'reboot_requested', v_device.state);
  perform jobsys.emit(jobsys.worker_topic(v_device.worker_id), 'device_reboot',
    jsonb_build_object('device_id', p_device_id, 'serial', v_device.serial));
  perform jobsys.emit('jobsys:dashboard', 'device_status', jsonb_build_object('device_id', p_device_id));
  return jobsys.device_json(v_device, jobsys.healthy_cutoff());
end
$$;
comment on function jobsys.request_device_reboot(uuid) is
  'Operators: ask the device''s worker to reboot it (pushed device_reboot; listed by heartbeat for 10 minutes). JS409 while it runs a run or when no live worker holds it.';

-- The worker's answer: the phone rebooted and is back (p_error null), or why not.
create or replace function jobsys.device_rebooted(p_worker_id uuid, p_device_id uuid, p_error text default null)
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_device jobsys.devices;
begin
  perform jobsys.require_worker(p_worker_id);
  update jobsys.devices d set reboot_requested_at = null,
    rebooted_at = case when p_error is null then now() else d.rebooted_at end
  where d.id = p_device_id and d.worker_id = p_worker_id
  returning * into v_device;
  if not found then
    perform jobsys.raise_error('JS404', 'device not found in this worker session',
      jsonb_build_object('device_id', p_device_id, 'worker_id', p_worker_id));
  end if;
  insert into jobsys.device_events (device_id, event, state, detail)
  values (p_device_id, case when p_error is null then 'rebooted' else 'reboot_failed' end, v_device.state,
          left(p_error, 2000));
  perform jobsys.emit('jobsys:dashboard', 'device_status', jsonb_build_object('device_id', p_device_id));
  return jsonb_build_object('device_id', p_device_id, 'rebooted_at', v_device.rebooted_at);
end
$$;
comment on function jobsys.device_rebooted(uuid, uuid, text) is
  'Workers: the answer to a reboot request for a device of this session: back (p_error null) or why not. Logged in the device''s history.';

-- Reads -----------------------------------------------------------------------------------
-- One device with its history: the last 24 hours of vitals, the last 100 events, the last
-- 50 runs (job title, status, attempt, times, error, result).
create or replace function jobsys.get_device(p_device_id uuid) returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_device jobsys.devices;
begin
  perform jobsys.require_operator();
  select * into v_device from jobsys.devices where id = p_device_id;
  if not found then
    perform jobsys.raise_error('JS404', 'device not found', jsonb_build_object('device_id', p_device_id));
  end if;
  return jobsys.device_json(v_device, jobsys.healthy_cutoff()) || jsonb_build_object(
    'vitals_history', coalesce((select jsonb_agg(jsonb_build_object('at', v.at, 'battery_pct', v.battery_pct,
                                  'temperature_c', v.temperature_c, 'charging', v.charging) order by v.at)
                                from jobsys.device_vitals v
                                where v.device_id = p_device_id and v.at > now() - interval '24 hours'), '[]'),
    'events', coalesce((select jsonb_agg(jsonb_build_object('id', e.id, 'at', e.at, 'event', e.event,
                          'state', e.state, 'detail', e.detail) order by e.id desc)
                        from (select * from jobsys.device_events e where e.device_id = p_device_id
                              order by e.id desc limit 100) e), '[]'),
    'runs', coalesce((select jsonb_agg(jsonb_build_object('id', a.id, 'job_id', a.job_id, 'job_title', j.title,
                        'status', a.status, 'attempt', a.attempt, 'started_at', a.started_at,
                        'finished_at', a.finished_at, 'error', a.error, 'result', a.result) order by a.id desc)
                      from (select * from jobsys.job_assignments a where a.device_id = p_device_id
                            order by a.id desc limit 50) a
                      join jobsys.jobs j on j.id = a.job_id), '[]'));
end
$$;
comment on function jobsys.get_device(uuid) is
  'Operators: one device with its last 24 hours of vitals, its last 100 events (state changes, reboots) and its last 50 runs.';

-- The label pairs of the fleet with how many devices carry each (all, and healthy = may take
-- a run now), among the devices matching p_labels; and how many healthy devices match
-- p_labels: what the new-job dialog shows ("rack=A: 12대").
create or replace function jobsys.fleet_labels(p_labels jsonb default '{}') returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_rule text := jobsys.label_problem(coalesce(p_labels, '{}'));
  v_cutoff timestamptz := jobsys.healthy_cutoff();
begin
  perform jobsys.require_operator();
  if v_rule is not null then
    perform jobsys.raise_error('JS400', jobsys.label_rule_message(v_rule),
      jsonb_build_object('field', 'labels', 'rule', v_rule));
  end if;
  return (
    with matching as (
      select d.labels || d.operator_labels as labels,
             d.state = 'online' and d.last_heartbeat_at > v_cutoff and d.worker_id is not null as healthy
      from jobsys.devices d
      where d.labels || d.operator_labels @> coalesce(p_labels, '{}')
    ), pairs as (
      select p.key, p.value #>> '{}' as value, count(*) as total, count(*) filter (where m.healthy) as healthy
      from matching m cross join lateral jsonb_each(m.labels) p
      where p.key not in ('error', 'probe', 'adb_serial', 'transport_id')
      group by 1, 2
    )
    select jsonb_build_object(
      'healthy', (select count(*) filter (where m.healthy) from matching m),
      'total', (select count(*) from matching m),
      'labels', coalesce((select jsonb_agg(jsonb_build_object('key', p.key, 'value', p.value,
                            'total', p.total, 'healthy', p.healthy) order by p.key, p.value)
                          from (select * from pairs order by key, value limit 1000) p), '[]')));
end
$$;
comment on function jobsys.fleet_labels(jsonb) is
  'Operators: the label pairs of the devices matching p_labels, each with how many devices carry it (total, and healthy: may take a run now), and how many healthy devices match: the choices and live counts of the new-job dialog.';

drop function jobsys.create_job(text, integer, text, integer, text, text, integer, integer, integer,
  timestamp with time zone);

create or replace function jobsys.job_json(j jobsys.jobs) returns jsonb
  language sql immutable
  as $$
  select jsonb_build_object(
    'id', j.id, 'title', j.title, 'action', j.action, 'target_url', j.target_url,
    'duration_sec', j.duration_sec, 'target_type', j.target_type, 'target_value', j.target_value,
    'target_count', j.target_count, 'status', j.status, 'max_attempts', j.max_attempts,
    'assigned_count', j.assigned_count, 'running_count', j.running_count,
    'completed_count', j.completed_count, 'failed_count', j.failed_count,
    'cancelled_count', j.cancelled_count, 'created_by', j.created_by,
    'created_at', j.created_at, 'updated_at', j.updated_at, 'paused_at', j.paused_at,
    'finished_at', j.finished_at, 'ended_at', j.finished_at, 'end_reason', j.end_reason,
    'timeout_sec', j.timeout_sec, 'topup_grace_sec', j.topup_grace_sec, 'start_at', j.start_at,
    'device_labels', j.device_labels,
    'waiting_for_devices', case when j.status = 'active' and j.waiting_since is not null
                                then greatest(j.target_count - j.completed_count, 0) end,
    'waiting_since', case when j.status = 'active' then j.waiting_since end)
$$;
comment on function jobsys.job_json(jobsys.jobs) is
  'The JSON shape of a job in the API (waiting_for_devices: short by N while an active job waits out its top-up grace; start_at: when a scheduled job starts).';

create or replace function jobsys.assign_devices(p_job_id uuid, p_limit integer, p_eligible integer default null)
  returns integer
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz := jobsys.healthy_cutoff();  -- once, not once per device row
  v_eligible integer := p_eligible;
  v_assigned integer;
  v_labels jsonb := (select j.device_labels from jobsys.jobs j where j.id = p_job_id);
begin
  if p_limit <= 0 then
    return 0;
  end if;
  if v_eligible is null then
    select count(*) into v_eligible
    from jobsys.devices d
    where d.state = 'online' and d.last_heartbeat_at > v_cutoff and d.worker_id is not null
      and d.labels || d.operator_labels @> v_labels
      and not exists (select 1 from jobsys.job_assignments a where a.job_id = p_job_id and a.device_id = d.id);
  end if;

  if v_eligible <= p_limit then
    -- Every eligible device is chosen, so there is nothing to rank. Rows go in in device
    -- order, which keeps the index inserts close together.
    with chosen as (
      select d.id, d.worker_id
      from jobsys.devices d
      where d.state = 'online' and d.last_heartbeat_at > v_cutoff and d.worker_id is not null
        and d.labels || d.operator_labels @> v_labels
        and not exists (select 1 from jobsys.job_assignments a
                        where a.job_id = p_job_id and a.device_id = d.id)
      order by d.id
      limit p_limit
    ), inserted as (
      insert into jobsys.job_assignments (job_id, device_id)
      select p_job_id, c.id from chosen c
    ), per_worker as (
      select c.worker_id, count(*) as n from chosen c group by c.worker_id
    ), pushed as (
      select jobsys.emit(jobsys.worker_topic(p.worker_id), 'assignment',
                         jsonb_build_object('job_id', p_job_id, 'count', p.n))
      from per_worker p
    )
    select coalesce(sum(p.n), 0)::integer into v_assigned
    from per_worker p, (select count(*) from pushed) as force_push;
    return v_assigned;
  end if;

  with eligible as (
    select d.id, d.worker_id, d.running_assignment_id is not null as busy
    from jobsys.devices d
    where d.state = 'online' and d.last_heartbeat_at > v_cutoff and d.worker_id is not null
      and d.labels || d.operator_labels @> v_labels
      and not exists (select 1 from jobsys.job_assignments a
                      where a.job_id = p_job_id and a.device_id = d.id)
  ), load as (
    select a.device_id, count(*) as queued
    from jobsys.job_assignments a
    where a.status in ('pending', 'paused', 'running')
      and a.device_id in (select e.id from eligible e)
    group by a.device_id
  ), ranked as (
    select e.id, e.worker_id
    from eligible e left join load l on l.device_id = e.id
    order by e.busy, coalesce(l.queued, 0), random()
    limit p_limit
  ), chosen as (
    select r.id, r.worker_id from ranked r order by r.id
  ), inserted as (
    insert into jobsys.job_assignments (job_id, device_id)
    select p_job_id, c.id from chosen c
  ), per_worker as (
    select c.worker_id, count(*) as n from chosen c group by c.worker_id
  ), pushed as (
    select jobsys.emit(jobsys.worker_topic(p.worker_id), 'assignment',
                       jsonb_build_object('job_id', p_job_id, 'count', p.n))
    from per_worker p
  )
  select coalesce(sum(p.n), 0)::integer into v_assigned
  from per_worker p, (select count(*) from pushed) as force_push;
  return v_assigned;
end
$$;
comment on function jobsys.assign_devices(uuid, integer, integer) is
  'Fans a job out to up to p_limit eligible devices (healthy, carrying the job''s device_labels, never tried for this job), idle first, then the least loaded, with one push per worker. The caller holds the job row lock and applies the counters.';

create or replace function jobsys.start_job(p_job_id uuid) returns jobsys.jobs
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
  v_healthy integer;
  v_target integer;
  v_assigned integer;
begin
  select * into v_job from jobsys.jobs where id = p_job_id;
  select count(*) into v_healthy from jobsys.devices d
  where d.state = 'online' and d.last_heartbeat_at > jobsys.healthy_cutoff() and d.worker_id is not null
    and d.labels || d.operator_labels @> v_job.device_labels;
  v_target := case v_job.target_type
    when 'all_devices' then v_healthy
    when 'percentage' then ceil(v_healthy * v_job.target_value / 100.0)::integer
    else v_job.target_value end;
  if v_target = 0 then
    update jobsys.jobs set status = 'incomplete', end_reason = 'no_eligible_devices',
      finished_at = now(), paused_at = null, waiting_since = null
    where id = p_job_id;
    return jobsys.apply_counts(p_job_id, 0, 0, 0, 0, 0, true);
  end if;
  update jobsys.jobs set status = 'active', target_count = v_target, paused_at = null
  where id = p_job_id;
  v_assigned := jobsys.assign_devices(p_job_id, v_target, v_healthy);
  return jobsys.apply_counts(p_job_id, v_assigned, 0, 0, 0, 0, true);
end
$$;
comment on function jobsys.start_job(uuid) is
  'Starts a job now: resolves its target against the healthy devices and distributes it (one push per worker); no healthy device for a percentage / all_devices target ends it incomplete / no_eligible_devices. The caller holds the job row lock.';

create or replace function jobsys.create_job(
  p_target_url text, p_duration_sec integer, p_target_type text,
  p_target_value integer default null, p_title text default null,
  p_action text default 'open_url', p_max_attempts integer default null,
  p_timeout_sec integer default null, p_topup_grace_sec integer default null,
  p_start_at timestamptz default null, p_device_labels jsonb default null)
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz;
  v_healthy integer;
  v_target integer;
  v_job jobsys.jobs;
  v_assigned integer;
  v_title text;
  v_target_value integer := p_target_value;
  v_scheduled boolean := p_start_at is not null and p_start_at > now();
  v_labels jsonb := coalesce(p_device_labels, '{}');
  v_rule text := jobsys.label_problem(coalesce(p_device_labels, '{}'));
begin
  perform jobsys.require_operator();
  perform jobsys.check_target_url(p_target_url);
  if p_duration_sec is null or p_duration_sec not between 1 and 86400 then
    perform jobsys.raise_error('JS400', 'duration_sec must be between 1 and 86400', '{"field": "duration_sec"}');
  end if;
  if p_action is distinct from 'open_url' then
    perform jobsys.raise_error('JS400', 'action must be open_url', '{"field": "action"}');
  end if;
  if p_target_type is null or p_target_type not in ('all_devices', 'percentage', 'device_count') then
    perform jobsys.raise_error('JS400', 'target_type must be all_devices, percentage or device_count',
      '{"field": "target_type"}');
  end if;
  -- all_devices: a target_value (the original plan sends 100) is accepted within 1-100 and ignored.
  if p_target_type = 'all_devices' and p_target_value is not null and p_target_value not between 1 and 100 then
    perform jobsys.raise_error('JS400', 'target_value must be empty or between 1 and 100 for all_devices (it is ignored)',
      '{"field": "target_value"}');
  elsif p_target_type = 'percentage' and (p_target_value is null or p_target_value not between 1 and 100) then
    perform jobsys.raise_error('JS400', 'percentage must be between 1 and 100', '{"field": "target_value"}');
  elsif p_target_type = 'device_count' and (p_target_value is null or p_target_value not between 1 and 100000) then
    perform jobsys.raise_error('JS400', 'device_count must be between 1 and 100000', '{"field": "target_value"}');
  end if;
  if p_target_type = 'all_devices' then
    v_target_value := null;
  end if;
  if p_max_attempts is not null and p_max_attempts not between 1 and 100 then
    perform jobsys.raise_error('JS400', 'max_attempts must be between 1 and 100', '{"field": "max_attempts"}');
  end if;
  if p_timeout_sec is not null and p_timeout_sec not between 1 and 604800 then
    perform jobsys.raise_error('JS400', 'timeout_sec must be between 1 and 604800', '{"field": "timeout_sec"}');
  end if;
  if p_topup_grace_sec is not null and p_topup_grace_sec not between 0 and 86400 then
    perform jobsys.raise_error('JS400', 'topup_grace_sec must be between 0 and 86400', '{"field": "topup_grace_sec"}');
  end if;
  if p_start_at is not null and (p_start_at > now() + interval '365 days' or not isfinite(p_start_at)) then
    perform jobsys.raise_error('JS400', 'start_at must be at most 365 days ahead', '{"field": "start_at"}');
  end if;
  if v_rule is not null then
    perform jobsys.raise_error('JS400', 'device_labels: ' || jobsys.label_rule_message(v_rule),
      jsonb_build_object('field', 'device_labels', 'rule', v_rule));
  end if;
  v_title := jobsys.check_title(coalesce(nullif(btrim(p_title), ''), jobsys.title_from_url(p_target_url)));

  v_cutoff := jobsys.healthy_cutoff();  -- once, not once per device row
  select count(*) into v_healthy from jobsys.devices d
  where d.state = 'online' and d.last_heartbeat_at > v_cutoff and d.worker_id is not null
    and d.labels || d.operator_labels @> v_labels;
  v_target := case p_target_type
    when 'all_devices' then v_healthy
    when 'percentage' then ceil(v_healthy * p_target_value / 100.0)::integer
    else p_target_value end;
  -- A scheduled job needs no device now: its target is resolved again when it starts.
  if v_target = 0 and not v_scheduled then
    perform jobsys.raise_error('JS409', case when v_labels = '{}' then 'no healthy device is connected to run this job on'
                                             else 'no healthy device carries the labels this job asks for' end,
      jsonb_build_object('healthy_devices', 0, 'reason', 'no_devices', 'device_labels', v_labels));
  end if;

  insert into jobsys.jobs (title, action, target_url, duration_sec, target_type, target_value,
                           target_count, max_attempts, created_by, timeout_sec, topup_grace_sec,
                           status, start_at, device_labels)
  values (v_title, p_action, p_target_url, p_duration_sec, p_target_type, v_target_value, v_target,
          coalesce(p_max_attempts, jobsys.setting('max_attempts')::integer), auth.uid(),
          p_timeout_sec, p_topup_grace_sec,
          case when v_scheduled then 'scheduled' else 'active' end, p_start_at, v_labels)
  returning * into v_job;

  if v_scheduled then
    -- No runs until start_at (jobsys.release_scheduled_jobs distributes it then).
    v_job := jobsys.apply_counts(v_job.id, 0, 0, 0, 0, 0, true);
    return jsonb_build_object('job', jobsys.job_json(v_job), 'assigned', 0);
  end if;
  -- A new job has no assignments yet, so every healthy device is eligible.
  v_assigned := jobsys.assign_devices(v_job.id, v_target, v_healthy);
  v_job := jobsys.apply_counts(v_job.id, v_assigned, 0, 0, 0, 0, true);
  return jsonb_build_object('job', jobsys.job_json(v_job), 'assigned', v_assigned);
end
$$;
comment on function jobsys.create_job(text, integer, text, integer, text, text, integer, integer, integer, timestamp with time zone, jsonb) is
  'Operators: create a device job and distribute it to the healthy devices in the same transaction; JS409 when no healthy device is connected. Optional time limit (timeout_sec), top-up grace (topup_grace_sec, else the setting), start time (start_at, at most 365 days ahead: the job is scheduled, with no runs, until then) and device_labels (only devices carrying every pair run it; its target counts among them).';

create or replace function jobsys.clone_job(p_job_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
begin
  perform jobsys.require_operator();
  select * into v_job from jobsys.jobs where id = p_job_id;
  if not found then
    perform jobsys.raise_error('JS404', 'job not found', jsonb_build_object('job_id', p_job_id));
  end if;
  return jobsys.create_job(v_job.target_url, v_job.duration_sec, v_job.target_type, v_job.target_value,
    v_job.title, v_job.action, v_job.max_attempts, v_job.timeout_sec, v_job.topup_grace_sec, null,
    v_job.device_labels);
end
$$;
comment on function jobsys.clone_job(uuid) is
  'Operators: create a new job with the settings of another (URL, duration, target, device labels, title, attempts, time limit, grace), distributed now.';

create or replace function jobsys.device_status(d jobsys.devices, p_cutoff timestamptz) returns text
  language sql stable
  set search_path = jobsys, pg_temp
  as $$
  select case
    when d.state in ('disabled', 'draining', 'quarantined', 'unauthorized', 'error') then d.state
    when d.state = 'offline' or d.worker_id is null or d.last_heartbeat_at <= p_cutoff then 'offline'
    when d.running_assignment_id is not null then 'busy'
    when d.state in ('low_battery', 'overheated') then d.state
    else 'idle' end
$$;
comment on function jobsys.device_status(jobsys.devices, timestamp with time zone) is
  'The status the dashboard shows for a device: disabled, draining, quarantined, unauthorized, error, offline, busy, low_battery, overheated or idle. p_cutoff is jobsys.healthy_cutoff(), computed once by the caller.';

create or replace function jobsys.list_devices() returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz := jobsys.healthy_cutoff();
begin
  perform jobsys.require_operator();
  return (
    with rows as (
      select jobsys.device_json(d, v_cutoff) as device, w.name as worker_name
      from jobsys.devices d
      left join jobsys.workers w on w.id = d.worker_id
    )
    select jsonb_build_object(
      'devices', coalesce(jsonb_agg(r.device order by r.worker_name, r.device ->> 'serial'), '[]'),
      'summary', jsonb_build_object(
        'total', count(*),
        'connected', count(*) filter (where r.device ->> 'status' in ('idle', 'busy')),
        'idle', count(*) filter (where r.device ->> 'status' = 'idle'),
        'busy', count(*) filter (where r.device ->> 'status' = 'busy'),
        'offline', count(*) filter (where r.device ->> 'status' = 'offline'),
        'error', count(*) filter (where r.device ->> 'status' = 'error'),
        'unauthorized', count(*) filter (where r.device ->> 'status' = 'unauthorized'),
        'disabled', count(*) filter (where r.device ->> 'status' = 'disabled'),
        'draining', count(*) filter (where r.device ->> 'status' = 'draining'),
        'quarantined', count(*) filter (where r.device ->> 'status' = 'quarantined'),
        'low_battery', count(*) filter (where r.device ->> 'status' = 'low_battery'),
        'overheated', count(*) filter (where r.device ->> 'status' = 'overheated')))
    from rows r);
end
$$;
comment on function jobsys.list_devices() is
  'Operators: every device (jobsys.device_json: status and why, labels, vitals, worker, current job, the last session refused it) with counts per status.';

create or replace function jobsys.check_device_reports(p_devices jsonb) returns void
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_bad record;
begin
  if jsonb_typeof(p_devices) is distinct from 'array' then
    perform jobsys.raise_error('JS400', 'devices must be a JSON array', '{"field": "devices"}');
  end if;
  select e.i, e.d, left(e.d ->> 'serial', 200) as serial, r.rule into v_bad
  from jsonb_array_elements(p_devices) with ordinality as e(d, i)
  cross join lateral (select case
      when jsonb_typeof(e.d) <> 'object' or jsonb_typeof(e.d -> 'serial') is distinct from 'string'
           or length(e.d ->> 'serial') not between 1 and 200 then 'serial'
      when e.d ->> 'state' = 'disabled' then 'state_disabled'
      when jsonb_typeof(coalesce(e.d -> 'state', '"online"')) <> 'string'
           or coalesce(e.d ->> 'state', 'online') not in ('online', 'offline', 'error', 'unauthorized')
        then 'state'
      when jsonb_typeof(coalesce(e.d -> 'labels', 'null')) <> 'null'
           and jobsys.label_problem(e.d -> 'labels') is not null then jobsys.label_problem(e.d -> 'labels')
      when jobsys.vitals_problem(e.d -> 'vitals') is not null then 'vitals'
    end as rule) r
  where r.rule is not null
  order by e.i
  limit 1;
  if found then
    perform jobsys.raise_error('JS400',
      format('device %s: %s', coalesce(v_bad.serial, '#' || (v_bad.i - 1)), case v_bad.rule
        when 'serial' then 'each device must be a JSON object with a serial of 1-200 characters'
        when 'state_disabled' then 'a worker may not report a device as disabled: disabling is an operator''s '
                                   'decision (report online, offline, error or unauthorized)'
        when 'state' then 'state must be online, offline, error or unauthorized'
        when 'vitals' then jobsys.vitals_problem(v_bad.d -> 'vitals')
        else jobsys.label_rule_message(v_bad.rule) end),
      jsonb_build_object('field', 'devices', 'index', v_bad.i - 1, 'serial', v_bad.serial, 'rule', v_bad.rule));
  end if;
  select e.d ->> 'serial' as serial into v_bad
  from jsonb_array_elements(p_devices) e(d)
  group by e.d ->> 'serial' having count(*) > 1
  limit 1;
  if found then
    perform jobsys.raise_error('JS400', format('device %s: each serial at most once per report', v_bad.serial),
      jsonb_build_object('field', 'devices', 'serial', v_bad.serial, 'rule', 'serial_repeated'));
  end if;
end
$$;
comment on function jobsys.check_device_reports(jsonb) is
  'Checks a worker device report (serial, a state the worker may report: online, offline, error or unauthorized, never disabled; labels as jobsys.label_problem; vitals as jobsys.vitals_problem) and raises JS400 naming the serial and the rule before anything changes.';

create or replace function jobsys.sync_devices(p_worker_id uuid, p_devices jsonb) returns jsonb
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_user uuid := (select w.user_id from jobsys.workers w where w.id = p_worker_id);
  v_cutoff timestamptz := jobsys.healthy_cutoff();  -- once, not once per row
  v_serials text[];
  v_job_id uuid;
  v_moved record;
  v_released bigint[] := '{}';
  v_bound text[];
  v_refused text[];
begin
  perform jobsys.check_device_reports(p_devices);
  v_serials := array(select e ->> 'serial' from jsonb_array_elements(p_devices) e);

  -- Runs held by an earlier session on these devices go back to the queue now (not on a
  -- device held against this account: that serial is refused below).
  for v_job_id in
    select distinct a.job_id
    from jobsys.devices d join jobsys.job_assignments a on a.id = d.running_assignment_id
    where d.serial = any(v_serials) and d.worker_id is distinct from p_worker_id
      and not jobsys.device_held(d, v_user, v_cutoff)
    order by a.job_id
  loop
    -- A job deleted meanwhile took its runs with it: nothing to move (and no error).
    perform 1 from jobsys.jobs where id = v_job_id for no key update;
    continue when not found;
    with moved as (
      update jobsys.job_assignments a set
        status = jobsys.requeue_status(j.status, a.attempt, j.max_attempts),
        attempt = case when jobsys.requeue_status(j.status, a.attempt, j.max_attempts) in ('pending', 'paused')
                       then a.attempt + 1 else a.attempt end,
        finished_at = case when jobsys.requeue_status(j.status, a.attempt, j.max_attempts) in ('failed', 'cancelled')
                           then now() end,
        lease_expires_at = null, error = 'device re-registered by a new worker session'
      from jobsys.devices d, jobsys.jobs j
      where a.job_id = v_job_id and j.id = v_job_id and a.status = 'running'
        and d.running_assignment_id = a.id and d.worker_id is distinct from p_worker_id
        and d.serial = any(v_serials) and not jobsys.device_held(d, v_user, v_cutoff)
      returning a.id, a.status)
    select count(*)::integer as n, count(*) filter (where m.status = 'failed')::integer as failed,
           count(*) filter (where m.status = 'cancelled')::integer as cancelled,
           coalesce(array_agg(m.id), '{}') as ids
      into v_moved
    from moved m;
    continue when v_moved.n = 0;
    v_released := v_released || v_moved.ids;
    perform jobsys.apply_counts(v_job_id, 0, -v_moved.n, 0, v_moved.failed, v_moved.cancelled);
  end loop;

  perform 1 from jobsys.devices d
  where d.serial = any(v_serials) or d.worker_id = p_worker_id
  order by d.id
  for no key update;

  -- A report without vitals keeps the last reading; the state follows the vitals
  -- (jobsys.fitness) unless an operator's decision or a quarantine holds it (sticky_state).
  with reported as (
    select e ->> 'serial' as serial, coalesce(e ->> 'state', 'online') as state,
           left(coalesce(e ->> 'model', ''), 200) as model,
           coalesce((e ->> 'simulated')::boolean, false) as simulated,
           case when jsonb_typeof(e -> 'labels') = 'object' then e -> 'labels' else '{}' end as labels,
           case when jsonb_typeof(e -> 'vitals') = 'object' then jsonb_strip_nulls(e -> 'vitals') end as vitals
    from jsonb_array_elements(p_devices) e
  ), fitted as (
    select r.*, coalesce(r.vitals, old.vitals) as kept_vitals,
           case when r.vitals is not null then now() else old.vitals_at end as vitals_at, f.state as fit_state,
           f.reason as fit_reason
    from reported r
    left join jobsys.devices old on old.serial = r.serial
    cross join lateral jobsys.fitness(r.state, coalesce(r.vitals, old.vitals), r.labels) f
  ), upserted as (
    insert into jobsys.devices as d (serial, worker_id, model, simulated, labels, state, state_reason,
                                     reported_state, vitals, vitals_at, last_heartbeat_at, running_assignment_id)
    select r.serial, p_worker_id, r.model, r.simulated, r.labels, r.fit_state, r.fit_reason, r.state,
           r.kept_vitals, r.vitals_at, now(), null
    from fitted r
    on conflict (serial) do update set
      worker_id = excluded.worker_id, model = excluded.model, simulated = excluded.simulated,
      labels = excluded.labels, last_heartbeat_at = now(), vitals = excluded.vitals,
      vitals_at = excluded.vitals_at,
      state = case when jobsys.sticky_state(d.state) then d.state else excluded.state end,
      state_reason = case when jobsys.sticky_state(d.state) then d.state_reason else excluded.state_reason end,
      reported_state = excluded.reported_state,
      -- A recorded conflict is history once the device moves to another session.
      conflict_worker_id = case when d.worker_id = excluded.worker_id then d.conflict_worker_id end,
      conflict_at = case when d.worker_id = excluded.worker_id then d.conflict_at end,
      -- Only the runs released above free their device. A run the old session claimed
      -- after that (its claim committed while this call waited for a job lock) keeps its
      -- device until it ends or its lease expires, so no device ever runs two.
      running_assignment_id = case when d.running_assignment_id = any(v_released)
                                   then null else d.running_assignment_id end
    where not jobsys.device_held(d, v_user, v_cutoff)
    returning d.id, d.serial, d.vitals, d.vitals_at
  ), sampled as (  -- the chart's history: at most one sample a minute per device
    insert into jobsys.device_vitals (device_id, at, battery_pct, temperature_c, charging)
    select u.id, u.vitals_at, (u.vitals ->> 'battery_pct')::smallint, (u.vitals ->> 'temperature_c')::real,
           (u.vitals ->> 'charging')::boolean
    from upserted u
    where u.vitals_at = now() and not exists (
      select 1 from jobsys.device_vitals v where v.device_id = u.id and v.at > now() - interval '55 seconds')
    on conflict do nothing
  )
  select array_agg(u.serial) into v_bound from upserted u;

  -- Held against this account: refused, recorded for operators. A run released above on a
  -- device a live session took meanwhile no longer holds it.
  v_refused := array(select s from unnest(v_serials) s where s <> all(coalesce(v_bound, '{}')) order by s);
  if cardinality(v_refused) > 0 then
    update jobsys.devices d set conflict_worker_id = p_worker_id, conflict_at = now(),
      running_assignment_id = case when d.running_assignment_id = any(v_released)
                                   then null else d.running_assignment_id end
    where d.serial = any(v_refused);
  end if;

  -- What this session no longer reports is offline (and no longer listed: see device_held).
  update jobsys.devices d set state = case when jobsys.sticky_state(d.state) then d.state else 'offline' end,
    reported_state = 'offline'
  where d.worker_id = p_worker_id and d.serial <> all(v_serials)
    and ((d.state <> 'offline' and not jobsys.sticky_state(d.state)) or d.reported_state <> 'offline');

  perform jobsys.emit('jobsys:dashboard', 'device_status',
    jsonb_build_object('worker_id', p_worker_id, 'devices', jsonb_array_length(p_devices),
                       'refused', cardinality(v_refused)));
  perform jobsys.release_unhealthy_queues();
  perform jobsys.top_up();
  return coalesce((select jsonb_agg(jsonb_build_object(
                            'serial', s, 'code', 'JS423',
                            'reason', 'held by a live session of another worker account') order by s)
                   from unnest(v_refused) s), '[]');
end
$$;
comment on function jobsys.sync_devices(uuid, jsonb) is
  'Brings the worker device list in line with what it reports and returns the refused serials (JS423: held by a live session of another worker account; the device records the conflict and stays). Runs an earlier session held on the devices that move go back to the queue by the attempt rule of lease rescue (failed after max_attempts), and only those free their device, so no device ever runs two.';

create or replace function jobsys.finish_runs(p_worker_id uuid, p_reports jsonb) returns jsonb
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  -- The ids first, so that every statement below finds its runs through the primary key
  -- (given a set-returning JSON function, the planner guesses 100 rows and hashes the table).
  v_ids bigint[] := (select array_agg((e.r ->> 'assignment_id')::bigint) from jsonb_array_elements(p_reports) e(r));
  v_finished jsonb;
  v_devices uuid[];
  v_failed_devices uuid[];  -- a failure on the device (failed, retry): its streak grows
  v_failed_errors text[];
  v_done_devices uuid[];  -- a completed run: its streak ends
  v_row record;
begin
  -- Lock order: the runs' jobs first, in id order.
  perform 1 from jobsys.jobs j
  where j.id = any(array(select a.job_id from jobsys.job_assignments a where a.id = any(v_ids)))
  order by j.id for no key update;

  with report as (
    select x.assignment_id, x.attempt, x.outcome, x.result, left(x.error, 2000) as error
    from jsonb_to_recordset(p_reports) as x(assignment_id bigint, attempt integer, outcome text,
                                            result jsonb, error text)
  ), target as (
    select r.*, case r.outcome
        when 'completed' then 'completed'
        when 'failed' then 'failed'
        when 'retry' then jobsys.requeue_status(j.status, r.attempt, j.max_attempts)
        else jobsys.requeue_status(j.status, 0, 1) end as new_status
    from jobsys.job_assignments a
    join report r on r.assignment_id = a.id
    join jobsys.jobs j on j.id = a.job_id
    where a.id = any(v_ids)
  ), finished as (
    update jobsys.job_assignments a set
      status = t.new_status,
      attempt = case when t.new_status in ('pending', 'paused') then a.attempt + 1 else a.attempt end,
      finished_at = case when t.new_status in ('completed', 'failed', 'cancelled') then now() end,
      lease_expires_at = null,
      result = coalesce(t.result, a.result),
      error = t.error
    from target t
    where a.id = any(v_ids) and a.id = t.assignment_id and a.attempt = t.attempt and a.status = 'running'
      and a.worker_id = p_worker_id
    returning a.id, a.job_id, a.device_id, a.status, a.attempt, t.outcome, t.error
  )
  select coalesce(jsonb_agg(jsonb_build_object('assignment_id', f.id, 'job_id', f.job_id,
           'device_id', f.device_id, 'status', f.status, 'attempt', f.attempt)), '[]'),
         array_agg(f.device_id),
         array_agg(f.device_id) filter (where f.outcome in ('failed', 'retry')),
         array_agg(f.error) filter (where f.outcome in ('failed', 'retry')),
         array_agg(f.device_id) filter (where f.outcome = 'completed')
    into v_finished, v_devices, v_failed_devices, v_failed_errors, v_done_devices
  from finished f;

  -- A device is free again when the run it holds is one of those finished. The device rows
  -- in id order (lock order), however the update would meet them. Its run of failures
  -- grows with a failure and ends with a success (quarantine_flaky reads it).
  update jobsys.devices d set running_assignment_id = null,
    failure_streak = case when d.id = any(v_failed_devices) then d.failure_streak + 1
                          when d.id = any(v_done_devices) then 0 else d.failure_streak end
  where d.id in (select d2.id from jobsys.devices d2
                 where d2.id = any(v_devices) and d2.running_assignment_id = any(v_ids)
                 order by d2.id for no key update);
  if v_failed_devices is not null then
    perform jobsys.quarantine_flaky(v_failed_devices, v_failed_errors);
  end if;

  for v_row in
    select f.job_id, count(*)::integer as n,
           count(*) filter (where f.status = 'completed')::integer as completed,
           count(*) filter (where f.status = 'failed')::integer as failed,
           count(*) filter (where f.status = 'cancelled')::integer as cancelled
    from jsonb_to_recordset(v_finished) as f(job_id uuid, status text)
    group by f.job_id order by f.job_id
  loop
    perform jobsys.apply_counts(v_row.job_id, 0, -v_row.n, v_row.completed, v_row.failed, v_row.cancelled);
    if v_row.failed > 0 then
      perform jobsys.top_up(v_row.job_id);  -- other devices replace the failed runs
    end if;
  end loop;

  return (
    select jsonb_agg(coalesce(f.run || '{"stale": false}',
                              jsonb_build_object('assignment_id', (e.r ->> 'assignment_id')::bigint,
                                                 'attempt', (e.r ->> 'attempt')::integer, 'stale', true))
                     order by e.i)
    from jsonb_array_elements(p_reports) with ordinality as e(r, i)
    left join jsonb_array_elements(v_finished) as f(run)
      on (f.run ->> 'assignment_id')::bigint = (e.r ->> 'assignment_id')::bigint);
end
$$;
comment on function jobsys.finish_runs(uuid, jsonb) is
  'Finishes runs of one worker in one transaction, with one counter update per job. Compare-and-set on worker, status and attempt, so a late report after a rescue never counts twice: it comes back as stale. Counts failures in a row per device and quarantines the flaky ones (jobsys.quarantine_flaky).';

create or replace function jobsys.mark_stale() returns integer
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz := jobsys.healthy_cutoff();  -- once, not once per row
  v_devices integer;
begin
  perform jobsys.require_signed_in();
  update jobsys.workers w set status = 'offline'
  where w.id in (select id from jobsys.workers
                 where status = 'online' and last_heartbeat_at <= v_cutoff
                 for no key update skip locked);
  with stale as (
    update jobsys.devices d set state = 'offline'
    where d.id in (select id from jobsys.devices
                   where state in ('online', 'low_battery', 'overheated') and last_heartbeat_at <= v_cutoff
                   for no key update skip locked)
    returning 1)
  select count(*) into v_devices from stale;
  if v_devices > 0 then
    perform jobsys.emit('jobsys:dashboard', 'device_status', jsonb_build_object('offline', v_devices));
  end if;
  perform jobsys.release_unhealthy_queues();
  return v_devices;
end
$$;
comment on function jobsys.mark_stale() is
  'Workers and devices whose heartbeat is older than stale_after_sec become offline.';

create or replace function jobsys.heartbeat(p_worker_id uuid, p_devices jsonb default null,
  p_running bigint[] default null, p_meta jsonb default null)
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_stop bigint[];
  v_refused jsonb := '[]';
begin
  perform jobsys.require_worker(p_worker_id);
  if p_meta is not null and (jsonb_typeof(p_meta) <> 'object' or length(p_meta::text) > 2000) then
    perform jobsys.raise_error('JS400', 'meta must be a JSON object of at most 2000 characters',
      '{"field": "meta"}');
  end if;
  update jobsys.workers set last_heartbeat_at = now(), status = 'online',
    meta = case when p_meta is null then meta else meta || p_meta end
  where id = p_worker_id;
  if not found then
    perform jobsys.raise_error('JS404', 'worker session not found; register again',
      jsonb_build_object('worker_id', p_worker_id));
  end if;
  if p_meta is not null then  -- sent when it changes: the PC page shows it
    perform jobsys.emit('jobsys:dashboard', 'device_status', jsonb_build_object('worker_id', p_worker_id));
  end if;

  if p_devices is not null then
    v_refused := jobsys.sync_devices(p_worker_id, p_devices);
  else
    update jobsys.devices d set last_heartbeat_at = now()
    where d.id in (select id from jobsys.devices where worker_id = p_worker_id
                   for no key update skip locked);
  end if;

  -- The leases of the runs this session holds, after the device report and not before: the
  -- report may lock jobs and takes its device rows, and the lock order is jobs -> runs ->
  -- devices. (Extending first, a heartbeat held run 2 and waited for device 1, which
  -- cancel_job had taken with run 1 and held while it waited for run 2: a deadlock.)
  -- A run the worker does not list (p_running) is one it never heard of: the answer to its
  -- claim was lost on the way (a cut link, a hub killed mid-call). Its lease ends now, so
  -- the next rescue puts it back in the queue, instead of being extended forever.
  update jobsys.job_assignments a set lease_expires_at = case
      when p_running is null or a.id = any(p_running) then greatest(a.lease_expires_at,
        now() + make_interval(secs => jobsys.setting('heartbeat_lease_sec')::double precision))
      else least(a.lease_expires_at, now()) end
  where a.id in (select a2.id from jobsys.job_assignments a2
                 join jobsys.devices d on d.running_assignment_id = a2.id
                 where d.worker_id = p_worker_id and a2.worker_id = p_worker_id and a2.status = 'running'
                 for no key update of a2 skip locked);

  select array_agg(r.id order by r.id) into v_stop
  from unnest(coalesce(p_running, '{}')) as r(id)
  where not exists (select 1 from jobsys.job_assignments a
                    join jobsys.devices d on d.id = a.device_id
                    where a.id = r.id and a.status = 'running' and d.worker_id = p_worker_id);
  return jsonb_build_object('stop', coalesce(to_jsonb(v_stop), '[]'), 'refused', v_refused,
    'reboot', coalesce((select jsonb_agg(d.id order by d.id) from jobsys.devices d
                        where d.worker_id = p_worker_id
                          and d.reboot_requested_at > now() - interval '10 minutes'), '[]'),
    'maintenance', jobsys.maintain());
end
$$;
comment on function jobsys.heartbeat(uuid, jsonb, bigint[], jsonb) is
  'Workers: the worker and its devices are alive, the leases of the running runs it lists are extended (one it does not list is unknown to it, a lost claim answer: its lease ends now and rescue requeues it), and maintenance runs; p_meta (version, push state) is merged into the session''s meta. Returns the runs the worker must stop (the polling path for cancellation when push is down), the devices an operator asked to reboot in the last 10 minutes, and, with a device report, the serials refused to it.';

create or replace function jobsys.maintain(p_force boolean default false) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_rescued integer;
  v_stale integer;
  v_started integer;
  v_topped integer;
  v_ended integer;
  v_refit integer;
  v_job jobsys.jobs;
begin
  perform jobsys.require_signed_in();
  if not pg_try_advisory_xact_lock(hashtext('jobsys.maintain')) then
    return jsonb_build_object('ran', false);
  end if;
  update jobsys.maintenance_state set last_run_at = clock_timestamp()
  where p_force or last_run_at < clock_timestamp()
    - make_interval(secs => jobsys.setting('maintenance_interval_ms') / 1000.0);
  if not found then
    return jsonb_build_object('ran', false);
  end if;
  v_rescued := jobsys.rescue_expired_leases();
  v_stale := jobsys.mark_stale();
  v_started := jobsys.release_scheduled_jobs();
  v_topped := jobsys.top_up();
  v_ended := jobsys.settle_jobs();
  v_refit := jobsys.refit_devices();
  -- Trailing job_progress for jobs whose last change fell inside a throttle window.
  for v_job in
    select * from jobsys.jobs
    where status in ('active', 'paused') and updated_at > progress_notified_at
    for no key update skip locked
  loop
    update jobsys.jobs set progress_notified_at = v_job.updated_at where id = v_job.id;
    perform jobsys.emit('jobsys:dashboard', 'job_progress', jobsys.progress_json(v_job));
  end loop;
  return jsonb_build_object('ran', true, 'rescued', v_rescued, 'offline_devices', v_stale,
                            'started_jobs', v_started, 'topped_up', v_topped, 'ended_jobs', v_ended,
                            'refit_devices', v_refit);
end
$$;
comment on function jobsys.maintain(boolean) is
  'Periodic upkeep (lease rescue, stale marking, starting scheduled jobs at their start_at, top-up, ending jobs past their time limit or top-up grace, ending quarantines and drains, trailing job_progress), run from every worker heartbeat and claim loop; an advisory lock and maintenance_interval_ms make it run once per interval however many call it.';

create or replace function jobsys.device_json(d jobsys.devices, p_cutoff timestamptz) returns jsonb
  language sql stable
  set search_path = jobsys, pg_temp
  as $$
  select jsonb_build_object(
    'id', d.id, 'serial', d.serial, 'model', d.model, 'simulated', d.simulated,
    'labels', d.labels, 'operator_labels', d.operator_labels,
    'state', d.state, 'status', jobsys.device_status(d, p_cutoff), 'state_reason', d.state_reason,
    'state_changed_at', d.state_changed_at, 'quarantined_until', d.quarantined_until,
    'failure_streak', d.failure_streak, 'vitals', d.vitals, 'vitals_at', d.vitals_at,
    'reboot_requested_at', d.reboot_requested_at, 'rebooted_at', d.rebooted_at,
    'worker_id', d.worker_id,
    'worker_name', (select w.name from jobsys.workers w where w.id = d.worker_id),
    'current_job_id', (select a.job_id from jobsys.job_assignments a where a.id = d.running_assignment_id),
    'last_heartbeat_at', d.last_heartbeat_at,
    'conflict_worker_id', d.conflict_worker_id, 'conflict_at', d.conflict_at)
$$;
comment on function jobsys.device_json(jobsys.devices, timestamp with time zone) is
  'One device as operators see it, the shape of the list_devices entries; p_cutoff is jobsys.healthy_cutoff().';

create or replace function jobsys.stop_worker(p_worker_id uuid) returns void
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform jobsys.require_worker(p_worker_id);
  update jobsys.workers set status = 'stopped' where id = p_worker_id;
  if not found then
    perform jobsys.raise_error('JS404', 'worker session not found', jsonb_build_object('worker_id', p_worker_id));
  end if;
  perform 1 from jobsys.devices d where d.worker_id = p_worker_id order by d.id for no key update;
  update jobsys.devices set state = case when jobsys.sticky_state(state) then state else 'offline' end,
    reported_state = 'offline'
  where worker_id = p_worker_id and ((state <> 'offline' and not jobsys.sticky_state(state)) or reported_state <> 'offline');
  perform jobsys.emit('jobsys:dashboard', 'device_status', jsonb_build_object('worker_id', p_worker_id));
  perform jobsys.release_unhealthy_queues();
  perform jobsys.top_up();
end
$$;
comment on function jobsys.stop_worker(uuid) is
  'Workers: a clean stop. The devices go offline (no longer listed by the session) and their queues move elsewhere.';

create or replace function jobsys.requeue_device_run(p_device_id uuid, p_count_attempt boolean, p_error text)
  returns jobsys.job_assignments
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
  v_run jobsys.job_assignments;
  v_worker uuid;
begin
  select j.* into v_job from jobsys.jobs j
  where j.id = (select a.job_id from jobsys.job_assignments a
                where a.id = (select d.running_assignment_id from jobsys.devices d where d.id = p_device_id))
  for no key update;
  if not found then
    return null;
  end if;
  update jobsys.job_assignments a set
    status = jobsys.requeue_status(v_job.status, case when p_count_attempt then a.attempt else 0 end,
                                   case when p_count_attempt then v_job.max_attempts else 1 end),
    attempt = case when jobsys.requeue_status(v_job.status, case when p_count_attempt then a.attempt else 0 end,
                                              case when p_count_attempt then v_job.max_attempts else 1 end)
                        in ('pending', 'paused') then a.attempt + 1 else a.attempt end,
    finished_at = case when jobsys.requeue_status(v_job.status, case when p_count_attempt then a.attempt else 0 end,
                                                  case when p_count_attempt then v_job.max_attempts else 1 end)
                           in ('failed', 'cancelled') then now() end,
    lease_expires_at = null, error = p_error
  where a.id = (select d.running_assignment_id from jobsys.devices d where d.id = p_device_id)
    and a.job_id = v_job.id and a.status = 'running'
  returning * into v_run;
  if not found then
    return null;
  end if;
  update jobsys.devices d set running_assignment_id = null
  where d.id = p_device_id and d.running_assignment_id = v_run.id
  returning d.worker_id into v_worker;
  perform jobsys.apply_counts(v_job.id, 0, -1, 0, (v_run.status = 'failed')::integer,
                              (v_run.status = 'cancelled')::integer);
  if v_worker is not null then
    perform jobsys.emit(jobsys.worker_topic(v_worker), 'run_stopped',
      jsonb_build_object('assignment_id', v_run.id, 'job_id', v_run.job_id, 'reason', p_error));
  end if;
  return v_run;
end
$$;
comment on function jobsys.requeue_device_run(uuid, boolean, text) is
  'Puts the run a device is running back in the queue (attempt + 1; by the attempt rule of lease expiry when p_count_attempt), frees the device and tells its worker to stop it (run_stopped). Locks the job, the run, then the device.';

create or replace function jobsys.set_device_state(p_device_id uuid, p_state text) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz := jobsys.healthy_cutoff();
  v_device jobsys.devices;
begin
  perform jobsys.require_operator();
  if p_state is null or p_state not in ('disabled', 'draining', 'enabled') then
    perform jobsys.raise_error('JS400', 'state must be disabled, draining or enabled', '{"field": "state"}');
  end if;
  perform 1 from jobsys.devices where id = p_device_id;
  if not found then
    perform jobsys.raise_error('JS404', 'device not found', jsonb_build_object('device_id', p_device_id));
  end if;
  if p_state = 'disabled' then
    perform jobsys.requeue_device_run(p_device_id, false, 'device disabled by an operator');
  end if;
  update jobsys.devices d set
    state = case
      when p_state = 'disabled' then 'disabled'
      when p_state = 'draining' then case when d.state = 'disabled' or d.running_assignment_id is null
                                          then 'disabled' else 'draining' end
      when not jobsys.sticky_state(d.state) then d.state
      when live.yes then f.state
      else 'offline' end,
    state_reason = case
      when p_state = 'disabled' then 'disabled by an operator'
      when p_state = 'draining' and d.state = 'disabled' then d.state_reason
      when p_state = 'draining' and d.running_assignment_id is null then 'drained: disabled by an operator'
      when p_state = 'draining' then 'draining: its run finishes, then it is disabled'
      when not jobsys.sticky_state(d.state) then d.state_reason
      when live.yes then f.reason end,
    failure_streak = case when p_state = 'enabled' then 0 else d.failure_streak end,
    quarantined_until = case when p_state = 'enabled' then null else d.quarantined_until end
  from (select exists (select 1 from jobsys.workers w
                       join jobsys.devices x on x.worker_id = w.id
                       where x.id = p_device_id and w.status = 'online' and w.last_heartbeat_at > v_cutoff) as yes) live
  cross join lateral (select f.state, f.reason from jobsys.devices x
                      cross join lateral jobsys.fitness(x.reported_state, x.vitals, x.labels) f
                      where x.id = p_device_id) f
  where d.id = p_device_id
  returning d.* into v_device;
  perform jobsys.emit('jobsys:dashboard', 'device_status',
    jsonb_build_object('device_id', p_device_id, 'state', v_device.state));
  perform jobsys.release_unhealthy_queues();
  perform jobsys.top_up();
  return jobsys.device_json(v_device, v_cutoff);
end
$$;
comment on function jobsys.set_device_state(uuid, text) is
  'Operators: disable a device (no new runs; its running run goes back to the queue, its queue to other devices), drain it (its running run finishes, then it is disabled) or enable it again (back to what its worker reports; ends a quarantine). Workers cannot disable, drain or enable.';

create or replace function jobsys.release_device(p_device_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_device jobsys.devices;
begin
  perform jobsys.require_operator();
  perform 1 from jobsys.devices where id = p_device_id;
  if not found then
    perform jobsys.raise_error('JS404', 'device not found', jsonb_build_object('device_id', p_device_id));
  end if;
  perform jobsys.requeue_device_run(p_device_id, true, 'device released by an operator');
  update jobsys.devices d set worker_id = null,
    state = case when jobsys.sticky_state(d.state) then d.state else 'offline' end,
    reported_state = 'offline', conflict_worker_id = null, conflict_at = null
  where d.id = p_device_id
  returning * into v_device;
  perform jobsys.emit('jobsys:dashboard', 'device_status',
    jsonb_build_object('device_id', p_device_id, 'released', true));
  perform jobsys.release_unhealthy_queues();  -- its queue moves to other devices
  perform jobsys.top_up();
  return jobsys.device_json(v_device, jobsys.healthy_cutoff());
end
$$;
comment on function jobsys.release_device(uuid) is
  'Operators: unbind a device from its worker session. Its running run goes back to the queue by the rule of lease expiry (failed after the last attempt), its worker is told to stop it, and the next registration by anyone takes the device.';

create or replace function jobsys.revoke_worker_account(p_name text) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_account jobsys.worker_accounts;
  v_sessions uuid[];
begin
  perform jobsys.require_operator();
  update jobsys.worker_accounts set revoked_at = now()
  where name = btrim(coalesce(p_name, '')) and revoked_at is null
  returning * into v_account;
  if v_account.id is null then
    perform jobsys.raise_error('JS404', 'no active PC by that name', jsonb_build_object('name', p_name));
  end if;
  with stopped as (
    update jobsys.workers set status = 'stopped'
    where user_id = v_account.id and status <> 'stopped'
    returning id)
  select coalesce(array_agg(id order by id), '{}') into v_sessions from stopped;
  perform 1 from jobsys.devices d where d.worker_id = any(v_sessions) order by d.id for no key update;
  update jobsys.devices set state = case when jobsys.sticky_state(state) then state else 'offline' end,
    reported_state = 'offline'
  where worker_id = any(v_sessions) and ((state <> 'offline' and not jobsys.sticky_state(state)) or reported_state <> 'offline');
  perform jobsys.emit('jobsys:hub', 'account_revoked', jsonb_build_object('account_id', v_account.id));
  perform jobsys.emit('jobsys:dashboard', 'device_status', jsonb_build_object('account_id', v_account.id));
  perform jobsys.release_unhealthy_queues();
  perform jobsys.top_up();
  return jobsys.worker_account_json(v_account);
end
$$;
comment on function jobsys.revoke_worker_account(text) is
  'Operators: revoke the active worker account named p_name. Its token is refused from then on, its sessions stop, its devices go offline and their queues move elsewhere; runs it was running follow the lease rules. Hubs close its push sockets (event account_revoked on jobsys:hub).';

alter table jobsys.device_events enable row level security;
alter table jobsys.device_vitals enable row level security;
create policy device_events_operator_read on jobsys.device_events for select to authenticated
  using (jobsys.caller_role() = 'operator');
create policy device_vitals_operator_read on jobsys.device_vitals for select to authenticated
  using (jobsys.caller_role() = 'operator');
grant select on jobsys.device_events, jobsys.device_vitals to authenticated;
grant all on jobsys.device_events, jobsys.device_vitals to service_role;

revoke execute on function jobsys.label_problem(jsonb), jobsys.label_rule_message(text),
  jobsys.vitals_problem(jsonb), jobsys.fitness(text, jsonb, jsonb), jobsys.sticky_state(text),
  jobsys.devices_log_state(), jobsys.quarantine_flaky(uuid[], text[]), jobsys.refit_devices(),
  jobsys.set_device_labels(uuid, jsonb), jobsys.request_device_reboot(uuid),
  jobsys.device_rebooted(uuid, uuid, text), jobsys.get_device(uuid), jobsys.fleet_labels(jsonb),
  jobsys.requeue_device_run(uuid, boolean, text),
  jobsys.create_job(text, integer, text, integer, text, text, integer, integer, integer,
                    timestamp with time zone, jsonb) from public;
grant execute on function
  jobsys.create_job(text, integer, text, integer, text, text, integer, integer, integer,
                    timestamp with time zone, jsonb),
  jobsys.set_device_labels(uuid, jsonb), jobsys.request_device_reboot(uuid), jobsys.get_device(uuid),
  jobsys.fleet_labels(jsonb), jobsys.device_rebooted(uuid, uuid, text)
to authenticated, service_role;
