-- Issue 16, the worker side: who may take a device, device states, bounded labels,
-- re-registration attempts, and the lock order of cancel_job and heartbeat.
--
-- * A serial bound to a live session of another worker account (heartbeat fresh, the device
--   still reported there) is refused to register_worker / heartbeat, per serial ("refused":
--   JS423), not moved; the device records the conflict (conflict_worker_id, conflict_at).
--   Operators release a device with release_device(). Same account or the service: as before.
-- * Workers report online, offline, error or unauthorized; a report of disabled is refused
--   (JS400). Only operators disable and enable (set_device_state); reported_state keeps what
--   the worker last reported, so enabling returns to it.
-- * Device labels: at most 32, keys 1-64 characters of A-Z a-z 0-9 _ . : / -, values strings
--   of at most 256 characters, at most 4096 bytes (check_device_reports).
-- * A re-registration re-queues the old session's running runs by the attempt rule of lease
--   rescue: after max_attempts the run fails and top-up replaces it.
-- * Lock order jobs -> runs -> devices (in id order), everywhere: cancel_job and delete_job
--   lock their running runs, then those devices in id order, before changing any (cancel_job
--   against a heartbeat deadlocked); heartbeat extends leases after its device report;
--   sync_devices, stop_worker and finish_runs take their device rows in id order; lease
--   rescue, run from heartbeats, takes devices with SKIP LOCKED as it does jobs and runs.

alter table jobsys.devices
  drop constraint devices_state_check,
  add constraint devices_state_check
    check (state in ('online', 'offline', 'error', 'unauthorized', 'disabled')),
  add column reported_state text not null default 'online'
    check (reported_state in ('online', 'offline', 'error', 'unauthorized')),
  add column conflict_worker_id uuid references jobsys.workers (id) on delete set null,
  add column conflict_at timestamptz;
-- What the worker last reported, where the row still says it; a disabled device's is not
-- known, so online (the default): enabling it lets its worker's next report correct that.
update jobsys.devices set reported_state = state where state in ('offline', 'error');

comment on table jobsys.devices is
  'Android devices, stable by serial, re-bound to the worker session that registers them unless a live session of another worker account holds them. The row is the per-device mutex: a claim sets running_assignment_id under its lock.';

-- sync_devices returns the refused serials now (jsonb, was integer): a new function.
drop function jobsys.sync_devices(uuid, jsonb);

-- Device jobs, operator side (supabase/schemas/30_device_jobs.sql) -------------------------

-- Cancel: everything not finished is cancelled now; workers stop what is running.
-- Lock order: the job, then all its live runs (in id order), then the devices of the running
-- ones (in id order). One statement that updated each run and freed its device in turn took
-- run 1, device 1, run 2, ... and deadlocked with a heartbeat that held run 2 (its lease)
-- and waited for device 1 (its device report).
create or replace function jobsys.cancel_job(p_job_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
  v_live bigint[];
  v_devices uuid[];
  v_running integer;
begin
  perform jobsys.require_operator();
  v_job := jobsys.lock_job(p_job_id);
  if v_job.status not in ('active', 'paused') then
    perform jobsys.illegal_move(v_job, 'cancel');
  end if;
  select coalesce(array_agg(l.id), '{}'),
         coalesce(array_agg(l.device_id) filter (where l.status = 'running'), '{}'),
         count(*) filter (where l.status = 'running')
    into v_live, v_devices, v_running
  from (select a.id, a.device_id, a.status from jobsys.job_assignments a
        where a.job_id = p_job_id and a.status in ('pending', 'paused', 'running')
        order by a.id
        for no key update) l;
  perform 1 from jobsys.devices d where d.id = any(v_devices) order by d.id for no key update;
  update jobsys.job_assignments a set status = 'cancelled', finished_at = now(),
    lease_expires_at = null, error = 'job cancelled'
  where a.id = any(v_live);
  update jobsys.devices d set running_assignment_id = null
  where d.id = any(v_devices) and d.running_assignment_id = any(v_live);
  update jobsys.jobs set status = 'cancelled', finished_at = now() where id = p_job_id;
  v_job := jobsys.apply_counts(p_job_id, 0, -v_running, 0, 0, cardinality(v_live), true);
  perform jobsys.emit_to_job_workers(p_job_id, 'job_cancelled',
    jsonb_build_object('job_id', p_job_id, 'reason', 'cancelled'));
  return jobsys.job_json(v_job);
end
$$;
comment on function jobsys.cancel_job(uuid) is
  'Operators: cancel a job. Everything not finished is cancelled now and the workers stop what is running. Locks the job, its live runs, then their devices, each in id order.';

create or replace function jobsys.delete_job(p_job_id uuid) returns void
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform jobsys.require_operator();
  perform jobsys.lock_job(p_job_id);
  -- Tell workers before the rows that name them are gone; delivered at commit.
  perform jobsys.emit_to_job_workers(p_job_id, 'job_cancelled',
    jsonb_build_object('job_id', p_job_id, 'reason', 'deleted'));
  -- Lock order: the running runs, then their devices in id order, before the cascade frees
  -- the devices in whatever order it meets them (a heartbeat taking its devices in id order
  -- deadlocked with it).
  perform 1 from jobsys.devices d
  where d.id = any(array(select a.device_id from jobsys.job_assignments a
                         where a.job_id = p_job_id and a.status = 'running'
                         order by a.id for no key update))
  order by d.id
  for no key update;
  delete from jobsys.jobs where id = p_job_id;  -- assignments cascade; devices are freed
  perform jobsys.emit('jobsys:dashboard', 'job_deleted', jsonb_build_object('job_id', p_job_id));
end
$$;
comment on function jobsys.delete_job(uuid) is
  'Operators: delete a job and its assignments; workers are told before the rows that name them are gone.';

-- p_cutoff: jobsys.healthy_cutoff(), computed once by the caller rather than once per device.
-- unauthorized (adb lists the phone, but this PC may not use it) shows as error: a person
-- has to act on the phone.
create or replace function jobsys.device_status(d jobsys.devices, p_cutoff timestamptz) returns text
  language sql stable
  set search_path = jobsys, pg_temp
  as $$
  select case
    when d.state = 'disabled' then 'disabled'
    when d.state in ('error', 'unauthorized') then 'error'
    when d.state = 'offline' or d.worker_id is null or d.last_heartbeat_at <= p_cutoff then 'offline'
    when d.running_assignment_id is not null then 'busy'
    else 'idle' end
$$;
comment on function jobsys.device_status(jobsys.devices, timestamp with time zone) is
  'The status the dashboard shows for a device: disabled, error (state error or unauthorized), offline, busy or idle. p_cutoff is jobsys.healthy_cutoff(), computed once by the caller.';

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
      select d.*, jobsys.device_status(d, v_cutoff) as status, w.name as worker_name, a.job_id as current_job_id
      from jobsys.devices d
      left join jobsys.workers w on w.id = d.worker_id
      left join jobsys.job_assignments a on a.id = d.running_assignment_id
    )
    select jsonb_build_object(
      'devices', coalesce(jsonb_agg(jsonb_build_object(
        'id', r.id, 'serial', r.serial, 'model', r.model, 'simulated', r.simulated,
        'labels', r.labels, 'state', r.state, 'status', r.status,
        'worker_id', r.worker_id, 'worker_name', r.worker_name,
        'current_job_id', r.current_job_id, 'last_heartbeat_at', r.last_heartbeat_at,
        'conflict_worker_id', r.conflict_worker_id, 'conflict_at', r.conflict_at)
        order by r.worker_name, r.serial), '[]'),
      'summary', jsonb_build_object(
        'total', count(r.id),
        'connected', count(r.id) filter (where r.status in ('idle', 'busy')),
        'idle', count(r.id) filter (where r.status = 'idle'),
        'busy', count(r.id) filter (where r.status = 'busy'),
        'offline', count(r.id) filter (where r.status = 'offline'),
        'error', count(r.id) filter (where r.status = 'error'),
        'disabled', count(r.id) filter (where r.status = 'disabled')))
    from rows r);
end
$$;
comment on function jobsys.list_devices() is
  'Operators: every device with its status, worker and current job, and the last worker session refused it (conflict_worker_id, conflict_at), with counts per status.';

-- Device jobs, worker side (supabase/schemas/35_device_runs.sql) -----------------------------

-- The work of finishing, for a caller already checked to act as p_worker_id, with reports
-- already checked (check_run_reports, or the single-run calls' typed arguments). Each run
-- finishes with compare-and-set on its worker, status and attempt, so a late report after
-- a rescue never counts twice; a run that has moved on comes back as {"stale": true}
-- instead of failing the other reports. Returns one entry per report, in order.
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
    returning a.id, a.job_id, a.device_id, a.status, a.attempt
  )
  select coalesce(jsonb_agg(jsonb_build_object('assignment_id', f.id, 'job_id', f.job_id,
           'device_id', f.device_id, 'status', f.status, 'attempt', f.attempt)), '[]'),
         array_agg(f.device_id)
    into v_finished, v_devices
  from finished f;

  -- A device is free again when the run it holds is one of those finished. The device rows
  -- in id order (lock order), however the update would meet them.
  update jobsys.devices d set running_assignment_id = null
  where d.id in (select d2.id from jobsys.devices d2
                 where d2.id = any(v_devices) and d2.running_assignment_id = any(v_ids)
                 order by d2.id for no key update);

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
  'Finishes runs of one worker in one transaction, with one counter update per job. Compare-and-set on worker, status and attempt, so a late report after a rescue never counts twice: it comes back as stale.';

-- Lease rescue --------------------------------------------------------------------------
-- An expired lease returns the run to the queue with attempt + 1 (failed after the last
-- attempt; top-up then replaces it). Compare-and-set on status + attempt. Background work:
-- jobs, runs and their devices (in id order) all with SKIP LOCKED, so a heartbeat that
-- runs it while holding its own device rows never waits here; a run whose job, row or
-- device is busy is rescued on the next round.
create or replace function jobsys.rescue_expired_leases() returns integer
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job_id uuid;
  v_job jobsys.jobs;
  v_n integer;
  v_failed integer;
  v_cancelled integer;
  v_total integer := 0;
begin
  perform jobsys.require_signed_in();
  for v_job_id in
    select distinct a.job_id from jobsys.job_assignments a
    where a.status = 'running' and a.lease_expires_at < now()
    order by a.job_id
  loop
    select * into v_job from jobsys.jobs where id = v_job_id for no key update skip locked;
    continue when not found;
    with expired as (
      select a.id, a.attempt, a.device_id from jobsys.job_assignments a
      where a.job_id = v_job_id and a.status = 'running' and a.lease_expires_at < now()
      for no key update skip locked
    ), held as (
      select d.id from jobsys.devices d where d.id in (select e.device_id from expired e)
      order by d.id
      for no key update skip locked
    ), rescued as (
      update jobsys.job_assignments a set
        status = jobsys.requeue_status(v_job.status, e.attempt, v_job.max_attempts),
        attempt = a.attempt + 1,
        lease_expires_at = null,
        error = 'lease expired (worker lost or too slow)',
        finished_at = case when jobsys.requeue_status(v_job.status, e.attempt, v_job.max_attempts)
                           in ('failed', 'cancelled') then now() end
      from expired e
      where a.id = e.id and a.attempt = e.attempt and a.status = 'running'
        and e.device_id in (select h.id from held h)
      returning a.id, a.device_id, a.status
    ), freed as (
      update jobsys.devices d set running_assignment_id = null
      from rescued r where d.id = r.device_id and d.running_assignment_id = r.id
      returning 1
    )
    select count(*), count(*) filter (where r.status = 'failed'),
           count(*) filter (where r.status = 'cancelled')
      into v_n, v_failed, v_cancelled
    from rescued r, (select count(*) from freed) as force_freed;
    continue when v_n = 0;
    perform jobsys.apply_counts(v_job_id, 0, -v_n, 0, v_failed, v_cancelled);
    if v_failed > 0 then
      perform jobsys.top_up(v_job_id);  -- another device replaces each failed run
    end if;
    if v_job.status = 'active' then
      perform jobsys.emit_to_job_workers(v_job_id, 'assignment', jsonb_build_object('job_id', v_job_id));
    end if;
    v_total := v_total + v_n;
  end loop;
  return v_total;
end
$$;
comment on function jobsys.rescue_expired_leases() is
  'An expired lease returns the run to the queue with attempt + 1 (failed after the last attempt, then replaced by top-up). Compare-and-set on status and attempt; jobs, runs and devices with SKIP LOCKED (background work never waits).';

-- A serial belongs to the worker account whose live session lists it. Held against p_user:
-- the device is bound to a session of another account that is live (status online, heartbeat
-- fresh) and still lists it (its last report was not offline). Such a serial is refused to
-- p_user, not moved: a phone that really moved (unplugged there, plugged in here) moves once
-- the old session goes stale or stops listing it, or an operator releases it. Sessions
-- without a user (the service, embedded mode) are one account.
create or replace function jobsys.device_held(d jobsys.devices, p_user uuid, p_cutoff timestamptz)
  returns boolean
  language sql stable
  set search_path = jobsys, pg_temp
  as $$
  select d.reported_state <> 'offline' and exists (
    select 1 from jobsys.workers w
    where w.id = d.worker_id and w.status = 'online' and w.last_heartbeat_at > p_cutoff
      and w.user_id is distinct from p_user)
$$;
comment on function jobsys.device_held(jobsys.devices, uuid, timestamp with time zone) is
  'Whether a device is held against the worker account p_user: bound to a live session (online, heartbeat after p_cutoff) of another account that still lists it. Such a serial is refused, not moved. Sessions without a user are one account.';

-- A worker's device report: [{"serial", "state"?, "model"?, "simulated"?, "labels"?}].
-- state is what the worker sees: online, offline, error or unauthorized (adb lists the phone,
-- but this PC may not use it). disabled is an operator's decision (set_device_state), never
-- a worker's. labels: at most 32; keys 1-64 characters of letters, digits and _ . : / -;
-- values strings of at most 256 characters; at most 4096 bytes as JSON. The first bad
-- device rejects the whole report with JS400 naming its serial and the rule, before anything
-- changes. DeviceReport in jobsys/models.py checks the same bounds.
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
  select e.i, left(e.d ->> 'serial', 200) as serial, r.rule into v_bad
  from jsonb_array_elements(p_devices) with ordinality as e(d, i)
  cross join lateral (select case when jsonb_typeof(e.d -> 'labels') = 'object'
                                  then e.d -> 'labels' else '{}' end as labels) l
  cross join lateral (select case
      when jsonb_typeof(e.d) <> 'object' or jsonb_typeof(e.d -> 'serial') is distinct from 'string'
           or length(e.d ->> 'serial') not between 1 and 200 then 'serial'
      when e.d ->> 'state' = 'disabled' then 'state_disabled'
      when jsonb_typeof(coalesce(e.d -> 'state', '"online"')) <> 'string'
           or coalesce(e.d ->> 'state', 'online') not in ('online', 'offline', 'error', 'unauthorized')
        then 'state'
      when jsonb_typeof(coalesce(e.d -> 'labels', 'null')) not in ('object', 'null') then 'labels_object'
      when (select count(*) from jsonb_object_keys(l.labels)) > 32 then 'labels_count'
      when exists (select 1 from jsonb_object_keys(l.labels) k where k !~ '^[A-Za-z0-9_.:/-]{1,64}$')
        then 'label_key'
      when exists (select 1 from jsonb_each(l.labels) v
                   where jsonb_typeof(v.value) <> 'string' or length(v.value #>> '{}') > 256)
        then 'label_value'
      when octet_length(l.labels::text) > 4096 then 'labels_size'
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
        when 'labels_object' then 'labels must be a JSON object'
        when 'labels_count' then 'at most 32 labels per device'
        when 'label_key' then 'label keys must be 1-64 characters of letters, digits and _ . : / -'
        when 'label_value' then 'label values must be strings of at most 256 characters'
        else 'labels must be at most 4096 bytes as JSON' end),
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
  'Checks a worker device report (serial, a state the worker may report: online, offline, error or unauthorized, never disabled; at most 32 labels, keys 1-64 characters of A-Z a-z 0-9 _ . : / -, values strings of at most 256 characters, at most 4096 bytes) and raises JS400 naming the serial and the rule before anything changes.';

-- Bring the worker's device list in line with what it reports (check_device_reports).
-- Returns the refused serials: [{"serial", "code": "JS423", "reason"}], those held by a live
-- session of another worker account (device_held); the device row records the conflict
-- (conflict_worker_id, conflict_at) and stays where it is. Every other reported device is
-- bound to this session. A device that arrives from another session releases at once what
-- that session was running on it, by the attempt rule of lease rescue: back to the queue
-- with attempt + 1, failed after the last attempt (top-up replaces it), so a run that keeps
-- crashing its worker does not run forever. Devices of this session it no longer reports
-- are offline.
-- Only the runs released here free their device: a run the old session claimed after the
-- release (its claim committed while this call waited for a job lock) keeps its device, so
-- no device ever runs two (a race found by the storm test with worker restarts). A job
-- deleted meanwhile took its runs with it: nothing to move, and no error.
-- Lock order: jobs (id order) -> job_assignments -> devices (id order, all of them before
-- the upsert, which would take them in report order).
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

  with reported as (
    select e ->> 'serial' as serial, coalesce(e ->> 'state', 'online') as state,
           left(coalesce(e ->> 'model', ''), 200) as model,
           coalesce((e ->> 'simulated')::boolean, false) as simulated,
           case when jsonb_typeof(e -> 'labels') = 'object' then e -> 'labels' else '{}' end as labels
    from jsonb_array_elements(p_devices) e
  ), upserted as (
    insert into jobsys.devices as d (serial, worker_id, model, simulated, labels, state, reported_state,
                                     last_heartbeat_at, running_assignment_id)
    select r.serial, p_worker_id, r.model, r.simulated, r.labels, r.state, r.state, now(), null from reported r
    on conflict (serial) do update set
      worker_id = excluded.worker_id, model = excluded.model, simulated = excluded.simulated,
      labels = excluded.labels, last_heartbeat_at = now(),
      -- Disabled stays disabled: only an operator enables it (set_device_state).
      state = case when d.state = 'disabled' then 'disabled' else excluded.state end,
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
    returning d.serial
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
  update jobsys.devices d set state = case when d.state = 'disabled' then 'disabled' else 'offline' end,
    reported_state = 'offline'
  where d.worker_id = p_worker_id and d.serial <> all(v_serials)
    and (d.state not in ('offline', 'disabled') or d.reported_state <> 'offline');

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

create or replace function jobsys.register_worker(p_name text, p_hostname text default '',
  p_devices jsonb default '[]')
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_worker jobsys.workers;
  v_role text := jobsys.caller_role();
  v_refused jsonb;
begin
  if v_role not in ('service', 'worker') then
    perform jobsys.raise_error('JS403', 'worker role required');
  end if;
  if p_name is null or length(btrim(p_name)) not between 1 and 200 or p_name ~ '[[:cntrl:]]' then
    perform jobsys.raise_error('JS400', 'worker name must be 1-200 printable characters', '{"field": "name"}');
  end if;
  insert into jobsys.workers (name, hostname, user_id)
  values (btrim(p_name), left(coalesce(p_hostname, ''), 255), auth.uid())
  returning * into v_worker;
  v_refused := jobsys.sync_devices(v_worker.id, coalesce(p_devices, '[]'));
  return jsonb_build_object(
    'worker_id', v_worker.id,
    'topic', jobsys.worker_topic(v_worker.id),
    'devices', coalesce((select jsonb_agg(jsonb_build_object('id', d.id, 'serial', d.serial,
                                                             'state', d.state) order by d.serial)
                         from jobsys.devices d where d.worker_id = v_worker.id), '[]'),
    'refused', v_refused);
end
$$;
comment on function jobsys.register_worker(text, text, jsonb) is
  'Workers: start a worker session (as the signed-in worker user) and register its devices; "refused" lists the serials held by a live session of another worker account.';

-- Heartbeat: the worker and its devices are alive; running leases are extended. Returns
-- the runs in p_running that the worker must stop (cancelled, deleted or moved on): the
-- polling path for cancellation when push is down; and, when it reports its devices, the
-- serials refused to it (as register_worker).
create or replace function jobsys.heartbeat(p_worker_id uuid, p_devices jsonb default null,
  p_running bigint[] default null)
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_stop bigint[];
  v_refused jsonb := '[]';
begin
  perform jobsys.require_worker(p_worker_id);
  update jobsys.workers set last_heartbeat_at = now(), status = 'online' where id = p_worker_id;
  if not found then
    perform jobsys.raise_error('JS404', 'worker session not found; register again',
      jsonb_build_object('worker_id', p_worker_id));
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
  update jobsys.job_assignments a set lease_expires_at = greatest(a.lease_expires_at,
      now() + make_interval(secs => jobsys.setting('heartbeat_lease_sec')::double precision))
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
                            'maintenance', jobsys.maintain());
end
$$;
comment on function jobsys.heartbeat(uuid, jsonb, bigint[]) is
  'Workers: the worker and its devices are alive, running leases are extended, and maintenance runs. Returns the runs the worker must stop (the polling path for cancellation when push is down) and, with a device report, the serials refused to it.';

-- A worker stopping cleanly: its devices go offline and their queues move elsewhere.
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
  update jobsys.devices set state = case when state = 'disabled' then 'disabled' else 'offline' end,
    reported_state = 'offline'
  where worker_id = p_worker_id and (state not in ('offline', 'disabled') or reported_state <> 'offline');
  perform jobsys.emit('jobsys:dashboard', 'device_status', jsonb_build_object('worker_id', p_worker_id));
  perform jobsys.release_unhealthy_queues();
  perform jobsys.top_up();
end
$$;
comment on function jobsys.stop_worker(uuid) is
  'Workers: a clean stop. The devices go offline (no longer listed by the session) and their queues move elsewhere.';

-- One device as operators see it (the shape of list_devices' entries). p_cutoff:
-- jobsys.healthy_cutoff().
create or replace function jobsys.device_json(d jobsys.devices, p_cutoff timestamptz) returns jsonb
  language sql stable
  set search_path = jobsys, pg_temp
  as $$
  select jsonb_build_object(
    'id', d.id, 'serial', d.serial, 'model', d.model, 'simulated', d.simulated,
    'labels', d.labels, 'state', d.state, 'status', jobsys.device_status(d, p_cutoff),
    'worker_id', d.worker_id,
    'worker_name', (select w.name from jobsys.workers w where w.id = d.worker_id),
    'current_job_id', (select a.job_id from jobsys.job_assignments a where a.id = d.running_assignment_id),
    'last_heartbeat_at', d.last_heartbeat_at,
    'conflict_worker_id', d.conflict_worker_id, 'conflict_at', d.conflict_at)
$$;
comment on function jobsys.device_json(jobsys.devices, timestamp with time zone) is
  'One device as operators see it, the shape of the list_devices entries; p_cutoff is jobsys.healthy_cutoff().';

-- Disable or enable a device. Disabled is an operator's decision: the device takes no new
-- runs (its queue moves to other devices; a running run finishes) whatever its worker
-- reports, until an operator enables it. Enabling returns it to what its worker last
-- reported, or offline when no live session lists it. p_state: disabled | enabled.
create or replace function jobsys.set_device_state(p_device_id uuid, p_state text) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz := jobsys.healthy_cutoff();
  v_device jobsys.devices;
begin
  perform jobsys.require_operator();
  if p_state is null or p_state not in ('disabled', 'enabled') then
    perform jobsys.raise_error('JS400', 'state must be disabled or enabled', '{"field": "state"}');
  end if;
  update jobsys.devices d set state = case
      when p_state = 'disabled' then 'disabled'
      when d.state <> 'disabled' then d.state
      when exists (select 1 from jobsys.workers w where w.id = d.worker_id and w.status = 'online'
                   and w.last_heartbeat_at > v_cutoff) then d.reported_state
      else 'offline' end
  where d.id = p_device_id
  returning * into v_device;
  if not found then
    perform jobsys.raise_error('JS404', 'device not found', jsonb_build_object('device_id', p_device_id));
  end if;
  perform jobsys.emit('jobsys:dashboard', 'device_status',
    jsonb_build_object('device_id', p_device_id, 'state', v_device.state));
  perform jobsys.release_unhealthy_queues();
  perform jobsys.top_up();
  return jobsys.device_json(v_device, v_cutoff);
end
$$;
comment on function jobsys.set_device_state(uuid, text) is
  'Operators: disable a device (it takes no new runs, its queue moves elsewhere, whatever its worker reports) or enable it again (back to what its worker last reported). Workers cannot disable or enable.';

-- Unbind a device from its worker session, e.g. a phone moved to another PC while the old
-- session still lists it. Its running run goes back to the queue by the rule of lease
-- expiry (failed after the last attempt), the old worker is told to stop it (heartbeat
-- "stop"), and the next registration by anyone takes the device. Lock order: the job of
-- the device's run, the run, then the device. Under the job lock the run cannot end, so a
-- run still running is still the device's. A run the old session claimed between the read
-- and the job lock keeps its device; the next registration releases it, as it releases the
-- runs of any device that arrives from another session.
create or replace function jobsys.release_device(p_device_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_device jobsys.devices;
  v_job jobsys.jobs;
  v_run jobsys.job_assignments;
begin
  perform jobsys.require_operator();
  select * into v_device from jobsys.devices where id = p_device_id;
  if not found then
    perform jobsys.raise_error('JS404', 'device not found', jsonb_build_object('device_id', p_device_id));
  end if;
  select j.* into v_job from jobsys.jobs j
  where j.id = (select a.job_id from jobsys.job_assignments a where a.id = v_device.running_assignment_id)
  for no key update;
  if found then
    update jobsys.job_assignments a set
      status = jobsys.requeue_status(v_job.status, a.attempt, v_job.max_attempts),
      attempt = case when jobsys.requeue_status(v_job.status, a.attempt, v_job.max_attempts) in ('pending', 'paused')
                     then a.attempt + 1 else a.attempt end,
      finished_at = case when jobsys.requeue_status(v_job.status, a.attempt, v_job.max_attempts)
                             in ('failed', 'cancelled') then now() end,
      lease_expires_at = null, error = 'device released by an operator'
    where a.id = v_device.running_assignment_id and a.job_id = v_job.id and a.status = 'running'
    returning * into v_run;
    if found then
      perform jobsys.apply_counts(v_job.id, 0, -1, 0, (v_run.status = 'failed')::integer,
                                  (v_run.status = 'cancelled')::integer);
    end if;
  end if;
  update jobsys.devices d set worker_id = null,
    state = case when d.state = 'disabled' then 'disabled' else 'offline' end,
    reported_state = 'offline', conflict_worker_id = null, conflict_at = null,
    running_assignment_id = case when d.running_assignment_id = v_run.id then null else d.running_assignment_id end
  where d.id = p_device_id
  returning * into v_device;
  if not found then
    perform jobsys.raise_error('JS404', 'device not found', jsonb_build_object('device_id', p_device_id));
  end if;
  perform jobsys.emit('jobsys:dashboard', 'device_status',
    jsonb_build_object('device_id', p_device_id, 'released', true));
  perform jobsys.release_unhealthy_queues();  -- its queue moves to other devices
  perform jobsys.top_up();
  return jobsys.device_json(v_device, jobsys.healthy_cutoff());
end
$$;
comment on function jobsys.release_device(uuid) is
  'Operators: unbind a device from its worker session. Its running run goes back to the queue by the rule of lease expiry (failed after the last attempt) and the next registration by anyone takes the device.';

-- Access (supabase/schemas/50_access.sql): the helpers run inside the definer functions; the
-- two operator calls are the API.
revoke execute on function
  jobsys.device_held(jobsys.devices, uuid, timestamptz), jobsys.check_device_reports(jsonb),
  jobsys.sync_devices(uuid, jsonb), jobsys.device_json(jobsys.devices, timestamptz),
  jobsys.set_device_state(uuid, text), jobsys.release_device(uuid)
from public;
grant execute on function jobsys.set_device_state(uuid, text), jobsys.release_device(uuid)
to authenticated, service_role;
