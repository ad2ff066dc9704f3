-- jobsys declarative schema: the fleet. Which devices may take work and why not (vitals,
-- quarantine, an operator's decision), their labels, reboots, and each device's history.
-- Only state 'online' takes runs; every other state says why not (devices.state_reason).
-- Lock order as in 30_device_jobs.sql: jobs (in id order) -> job_assignments -> devices.

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
-- device before the job) gives it back. The rows it changes are taken with SKIP LOCKED; the
-- takeback skips a locked job and then waits for its run and device, as a transition does.
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
  perform jobsys.require_admin();
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
  perform jobsys.audit('label', 'device', p_device_id::text, jsonb_build_object(
    'serial', v_device.serial, 'before', v_device.operator_labels, 'after', p_labels));
  update jobsys.devices set operator_labels = p_labels where id = p_device_id returning * into v_device;
  perform jobsys.emit('jobsys:dashboard', 'device_status', jsonb_build_object('device_id', p_device_id));
  perform jobsys.release_unhealthy_queues();  -- runs queued for labels it no longer carries move on
  perform jobsys.top_up();  -- jobs targeting these labels may now have a device
  return jobsys.device_json(v_device, jobsys.healthy_cutoff());
end
$$;
comment on function jobsys.set_device_labels(uuid, jsonb) is
  'Admins: replace a device''s operator labels (bounded as worker labels; a key its worker reports is refused). Jobs targeting labels see the change at once: runs queued for labels it no longer carries move to other devices, jobs it now matches may get it.';

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
  perform jobsys.require_admin();
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
  perform jobsys.audit('reboot', 'device', p_device_id::text, jsonb_build_object('serial', v_device.serial));
  update jobsys.devices set reboot_requested_at = now() where id = p_device_id returning * into v_device;
  insert into jobsys.device_events (device_id, event, state) values (p_device_id, 'reboot_requested', v_device.state);
  perform jobsys.emit(jobsys.worker_topic(v_device.worker_id), 'device_reboot',
    jsonb_build_object('device_id', p_device_id, 'serial', v_device.serial));
  perform jobsys.emit('jobsys:dashboard', 'device_status', jsonb_build_object('device_id', p_device_id));
  return jobsys.device_json(v_device, jobsys.healthy_cutoff());
end
$$;
comment on function jobsys.request_device_reboot(uuid) is
  'Admins: ask the device''s worker to reboot it (pushed device_reboot; listed by heartbeat for 10 minutes). JS409 while it runs a run or when no live worker holds it.';

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
  perform jobsys.require_viewer();
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
  perform jobsys.require_viewer();
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
      where p.key not in ('error', 'probe', 'reboot', 'adb_serial', 'transport_id')  -- the worker's notes, not choices
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


-- Devices at scale (issue 20) -------------------------------------------------------------
-- The device list a page at a time, and its counts per PC from one aggregate, so a screen
-- never reads a fleet of 10,000 phones whole. Pages walk the fleet by serial: it is unique,
-- and unlike a worker's name it does not change when a phone moves to another PC, so a walk
-- meets each device once. Filters: p_status a device_status value or 'connected' (idle or
-- busy); p_worker_id one worker session (the nil UUID: devices no worker holds) or p_pc a
-- worker's name; p_labels pairs that must all match (the operator's label winning on a
-- shared key); p_q a serial substring as typed (case-insensitive; % and _ not wildcards).
create or replace function jobsys.device_filter_problem(p_status text, p_labels jsonb, p_q text) returns jsonb
  language sql immutable
  as $$
  select case
    when p_status is not null and p_status not in ('connected', 'idle', 'busy', 'offline', 'error', 'unauthorized',
                                                   'disabled', 'draining', 'quarantined', 'low_battery', 'overheated')
      then jsonb_build_object('message', 'state must be connected, idle, busy, offline, error, unauthorized, '
                              || 'disabled, draining, quarantined, low_battery or overheated', 'field', 'state')
    when jobsys.label_problem(coalesce(p_labels, '{}')) is not null
      then jsonb_build_object('message', jobsys.label_rule_message(jobsys.label_problem(p_labels)),
                              'field', 'label', 'rule', jobsys.label_problem(p_labels))
    when length(p_q) > 200 then jsonb_build_object('message', 'q must be at most 200 characters', 'field', 'q')
  end
$$;
comment on function jobsys.device_filter_problem(text, jsonb, text) is
  'What is wrong with a device list filter (state, labels, serial search) as {message, field, rule}, or null when it is fine.';

-- p_counts: {status: number of devices}; the answer has every status (0 when absent).
create or replace function jobsys.device_summary_json(p_counts jsonb) returns jsonb
  language sql immutable
  as $$
  select jsonb_build_object(
    'total', (select coalesce(sum(e.value::bigint), 0) from jsonb_each_text(p_counts) e),
    'connected', coalesce((p_counts ->> 'idle')::bigint, 0) + coalesce((p_counts ->> 'busy')::bigint, 0))
    || (select jsonb_object_agg(s, coalesce((p_counts ->> s)::bigint, 0))
        from unnest(array['idle', 'busy', 'offline', 'error', 'unauthorized', 'disabled', 'draining',
                          'quarantined', 'low_battery', 'overheated']) s)
$$;
comment on function jobsys.device_summary_json(jsonb) is
  'The devices'' counts per status (as list_devices'' summary: total, connected, one per status) from {status: count}.';

create or replace function jobsys.list_devices_page(p_status text default null, p_worker_id uuid default null,
  p_pc text default null, p_labels jsonb default '{}', p_q text default null, p_after text default null,
  p_limit integer default 100, p_with_counts boolean default true)
  returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz := jobsys.healthy_cutoff();  -- once, not once per device row
  v_problem jsonb := jobsys.device_filter_problem(p_status, p_labels, p_q);
  v_labels jsonb := coalesce(p_labels, '{}');
  v_q text := lower(nullif(p_q, ''));
  -- $1 cutoff, $2 status, $3 worker, $4 pc name, $5 labels, $6 search
  v_where constant text := $w$
    ($3::uuid is null or d.worker_id = $3
     or ($3 = '00000000-0000-0000-0000-000000000000' and d.worker_id is null))
    and ($4::text is null or d.worker_id in (select w.id from jobsys.workers w where w.name = $4))
    and ($5::jsonb = '{}' or d.labels || d.operator_labels @> $5)
    and ($6::text is null or strpos(lower(d.serial), $6) > 0)
    and ($2::text is null
         or case when $2 = 'connected'
                 then jobsys.device_status_of(d.state, d.worker_id, d.last_heartbeat_at, d.running_assignment_id, $1)
                      in ('idle', 'busy')
                 else jobsys.device_status_of(d.state, d.worker_id, d.last_heartbeat_at, d.running_assignment_id, $1)
                      = $2 end)$w$;
  v_page jsonb;
  v_next text;
  v_total bigint;
  v_summary jsonb;
begin
  perform jobsys.require_viewer();
  if v_problem is not null then
    perform jobsys.raise_error('JS400', v_problem ->> 'message', v_problem - 'message');
  end if;
  if p_limit is null or p_limit not between 1 and 1000 then
    perform jobsys.raise_error('JS400', 'limit must be 1-1000', '{"field": "limit"}');
  end if;
  if length(p_after) not between 1 and 200 then
    perform jobsys.raise_error('JS400', 'cursor is not one this list gave', '{"field": "cursor"}');
  end if;
  -- EXECUTE plans with the arguments' values: an unused filter drops out, and a PC's page is a
  -- range scan of devices_worker_serial_idx (a cached generic plan could not choose it). One
  -- row more than asked says whether a next page exists without counting the rest.
  execute 'select coalesce(jsonb_agg(jobsys.device_json(p.d, $1) order by (p.d).serial)
                    filter (where p.n <= $8), ''[]''),
                  case when count(*) > $8 then max((p.d).serial) filter (where p.n <= $8) end
           from (select s.d, row_number() over (order by (s.d).serial) as n
                 from (select d from jobsys.devices d
                       where ($7::text is null or d.serial > $7) and ' || v_where || '
                       order by d.serial limit $8 + 1) s) p'
    into v_page, v_next
    using v_cutoff, p_status, p_worker_id, p_pc, v_labels, v_q, p_after, p_limit;
  if p_with_counts then
    execute 'select count(*) from jobsys.devices d where ' || v_where
      into v_total using v_cutoff, p_status, p_worker_id, p_pc, v_labels, v_q;
    select jobsys.device_summary_json(coalesce(jsonb_object_agg(c.status, c.n), '{}')) into v_summary
    from (select jobsys.device_status_of(d.state, d.worker_id, d.last_heartbeat_at, d.running_assignment_id, v_cutoff)
                   as status, count(*) as n
          from jobsys.devices d group by 1) c;
  end if;
  return jsonb_build_object('devices', v_page, 'next_cursor', v_next, 'total', v_total, 'summary', v_summary);
end
$$;
comment on function jobsys.list_devices_page(text, uuid, text, jsonb, text, text, integer, boolean) is
  'Operators: up to p_limit (1-1000) devices (as list_devices'' entries) after the serial p_after that pass the filters, by serial; next_cursor: the serial to pass for the next page, null on the last. With p_with_counts, total (matching devices) and summary (the fleet''s counts per status).';

create or replace function jobsys.device_groups(p_status text default null, p_labels jsonb default '{}',
  p_q text default null)
  returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz := jobsys.healthy_cutoff();
  v_problem jsonb := jobsys.device_filter_problem(p_status, p_labels, p_q);
  v_labels jsonb := coalesce(p_labels, '{}');
  v_q text := lower(nullif(p_q, ''));
begin
  perform jobsys.require_viewer();
  if v_problem is not null then
    perform jobsys.raise_error('JS400', v_problem ->> 'message', v_problem - 'message');
  end if;
  return (
    with counted as (  -- one pass over the devices: per worker and status, all and matching
      select d.worker_id,
             jobsys.device_status_of(d.state, d.worker_id, d.last_heartbeat_at, d.running_assignment_id, v_cutoff)
               as status, count(*) as n,
             count(*) filter (where (v_labels = '{}' or d.labels || d.operator_labels @> v_labels)
                                and (v_q is null or strpos(lower(d.serial), v_q) > 0)) as searched
      from jobsys.devices d group by 1, 2
    ), groups as (
      select c.worker_id, sum(c.n) as total, jsonb_object_agg(c.status, c.n) as counts,
             sum(c.searched) filter (where p_status is null or c.status = p_status
                                     or (p_status = 'connected' and c.status in ('idle', 'busy'))) as matching
      from counted c group by 1
    )
    select jsonb_build_object(
      'groups', coalesce((select jsonb_agg(jsonb_build_object('worker_id', g.worker_id, 'worker_name', w.name,
                           'total', g.total, 'matching', coalesce(g.matching, 0),
                           'summary', jobsys.device_summary_json(g.counts))
                           order by w.name nulls last, g.worker_id nulls last)
                         from groups g left join jobsys.workers w on w.id = g.worker_id), '[]'),
      'summary', jobsys.device_summary_json(coalesce(
        (select jsonb_object_agg(s.status, s.n) from (select c.status, sum(c.n) as n from counted c group by 1) s),
        '{}'))));
end
$$;
comment on function jobsys.device_groups(text, jsonb, text) is
  'Operators: the devices'' counts per worker session (the PC; worker_id null: held by none) from one aggregate: summary per status, total, and matching (passing the filters of list_devices_page), with the fleet''s summary; no device rows. The Devices page and the header count read it.';
