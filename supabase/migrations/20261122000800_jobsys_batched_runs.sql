-- jobsys: batched worker transitions, fewer CHECK constraints on jobs, and a fix to
-- re-registration (sync_devices).
--
-- A worker with N free devices used to spend 2N + 1 transactions per round: one claim,
-- then a start and a finish per run, each finish taking the job's counter row lock. Here
--   * claim_assignments(..., p_start => true) claims and starts in one call (the worker
--     starts a device as soon as it has the run, so a separate start only cost a round
--     trip), and
--   * finish_assignments() finishes many runs of one worker in one transaction, with one
--     counter update per job, however many runs of that job it carries.
-- The single-run calls (start/complete/fail/release_assignment) stay, now on the same code.

-- Claim, optionally starting the runs --------------------------------------------------
drop function jobsys.claim_assignments(uuid, uuid[], integer);

-- For each free online device of the worker (or those listed), its oldest pending
-- assignment. Locks the jobs first, then SKIP LOCKED on assignments and devices, so a
-- claim never waits on another claim's rows. p_start: the runs start now (lease: duration
-- + grace) rather than holding the short claim lease until start_assignment.
create function jobsys.claim_assignments(
  p_worker_id uuid, p_device_ids uuid[] default null, p_limit integer default null,
  p_start boolean default false)
  returns table (assignment_id bigint, attempt integer, job_id uuid, device_id uuid, serial text,
                 action text, target_url text, duration_sec integer, lease_expires_at timestamptz,
                 started boolean)
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_jobs uuid[];
  v_claimed bigint[];
  v_devices uuid[];
  v_row record;
  v_claim_lease double precision := (select s.value from jobsys.settings s where s.key = 'claim_lease_sec');
  v_grace double precision := (select s.value from jobsys.settings s where s.key = 'lease_grace_sec');
begin
  perform jobsys.require_worker(p_worker_id);
  if p_limit is not null and p_limit < 1 then
    perform jobsys.raise_error('JS400', 'limit must be at least 1', jsonb_build_object('limit', p_limit));
  end if;
  select array_agg(distinct q.job_id) into v_jobs
  from jobsys.devices d
  cross join lateral (
    select a.job_id from jobsys.job_assignments a
    where a.device_id = d.id and a.status = 'pending'
    order by a.id limit 1) q
  where d.worker_id = p_worker_id and d.state = 'online' and d.running_assignment_id is null
    and (p_device_ids is null or d.id = any(p_device_ids));
  if v_jobs is null then
    return;
  end if;
  perform 1 from jobsys.jobs j where j.id = any(v_jobs) and j.status = 'active'
    order by j.id for no key update;

  -- Pick and lock first, then update by primary key: with the picks in arrays every
  -- statement below is an index lookup per run, however large the tables.
  select array_agg(p.assignment_id), array_agg(p.device_id)
    into v_claimed, v_devices
  from (
    select q.id as assignment_id, f.id as device_id
    from (
      select d.id from jobsys.devices d
      where d.worker_id = p_worker_id and d.state = 'online' and d.running_assignment_id is null
        and (p_device_ids is null or d.id = any(p_device_ids))
      for no key update skip locked
    ) f
    cross join lateral (
      select a.id from jobsys.job_assignments a
      where a.device_id = f.id and a.status = 'pending' and a.job_id = any(v_jobs)
      order by a.id limit 1
      for no key update skip locked) q
    limit coalesce(p_limit, 2147483647)
  ) p;
  if v_claimed is null then
    return;
  end if;

  update jobsys.devices d set running_assignment_id = x.assignment_id
  from unnest(v_devices, v_claimed) as x(device_id, assignment_id)
  where d.id = any(v_devices) and d.id = x.device_id;
  update jobsys.job_assignments a set status = 'running', worker_id = p_worker_id,
    claimed_at = now(), started_at = case when p_start then now() end,
    lease_expires_at = now() + make_interval(
      secs => case when p_start then j.duration_sec + v_grace else v_claim_lease end)
  from jobsys.jobs j
  where a.id = any(v_claimed) and j.id = a.job_id;

  for v_row in
    select a.job_id as id, count(*) as n from jobsys.job_assignments a
    where a.id = any(v_claimed) group by a.job_id order by a.job_id
  loop
    perform jobsys.apply_counts(v_row.id, 0, v_row.n::integer, 0, 0, 0);
  end loop;

  return query
  select a.id, a.attempt, a.job_id, a.device_id, d.serial, j.action, j.target_url, j.duration_sec,
         a.lease_expires_at, p_start
  from jobsys.job_assignments a
  join jobsys.jobs j on j.id = a.job_id
  join jobsys.devices d on d.id = a.device_id
  where a.id = any(v_claimed)
  order by a.id;
end
$$;

-- Finish many runs ----------------------------------------------------------------------
-- p_reports: a JSON array of {"assignment_id", "attempt", "outcome", "result", "error"};
-- outcome: completed | failed | retry (re-queue while attempts remain) | release (back to
-- the queue, e.g. the worker shuts down); error is required for failed and retry. Bad
-- input rejects the whole call before anything changes.
create function jobsys.check_run_reports(p_reports jsonb) returns void
  language plpgsql
  as $$
declare
  v_bad record;
begin
  if jsonb_typeof(p_reports) is distinct from 'array' then
    perform jobsys.raise_error('JS400', 'reports must be a JSON array', '{"field": "reports"}');
  end if;
  if jsonb_array_length(p_reports) not between 1 and 1000 then
    perform jobsys.raise_error('JS400', 'between 1 and 1000 reports per call',
      jsonb_build_object('field', 'reports', 'count', jsonb_array_length(p_reports)));
  end if;
  select e.i, m.message into v_bad
  from jsonb_array_elements(p_reports) with ordinality as e(r, i)
  cross join lateral (select case
      when jsonb_typeof(e.r) <> 'object' then 'each report must be a JSON object'
      when coalesce(e.r ->> 'assignment_id', '') !~ '^[1-9][0-9]{0,17}$' then 'assignment_id must be a positive integer'
      when coalesce(e.r ->> 'attempt', '') !~ '^[1-9][0-9]{0,8}$' then 'attempt must be a positive integer'
      when coalesce(e.r ->> 'outcome', '') not in ('completed', 'failed', 'retry', 'release')
        then 'outcome must be one of completed, failed, retry, release'
      when jsonb_typeof(coalesce(e.r -> 'result', 'null')) not in ('object', 'null') then 'result must be a JSON object'
      when jsonb_typeof(coalesce(e.r -> 'error', 'null')) not in ('string', 'null') then 'error must be a string'
      when e.r ->> 'outcome' in ('failed', 'retry') and coalesce(btrim(e.r ->> 'error'), '') = ''
        then 'error must say why the run failed'
    end as message) m
  where m.message is not null
  order by e.i
  limit 1;
  if found then
    perform jobsys.raise_error('JS400', v_bad.message, jsonb_build_object('field', 'reports', 'index', v_bad.i - 1));
  end if;
  if (select count(distinct e.r ->> 'assignment_id') from jsonb_array_elements(p_reports) e(r))
     < jsonb_array_length(p_reports) then
    perform jobsys.raise_error('JS400', 'each run may be reported once per call', '{"field": "reports"}');
  end if;
end
$$;

-- The work of finishing, for a caller already checked to act as p_worker_id, with reports
-- already checked (check_run_reports, or the single-run calls' typed arguments). Each run
-- finishes with compare-and-set on its worker, status and attempt, so a late report after
-- a rescue never counts twice; a run that has moved on comes back as {"stale": true}
-- instead of failing the other reports. Returns one entry per report, in order.
create function jobsys.finish_runs(p_worker_id uuid, p_reports jsonb) returns jsonb
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
  where j.id in (select a.job_id from jobsys.job_assignments a where a.id = any(v_ids))
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

  -- A device is free again when the run it holds is one of those finished.
  update jobsys.devices d set running_assignment_id = null
  where d.id = any(v_devices) and d.running_assignment_id = any(v_ids);

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

create function jobsys.finish_assignments(p_worker_id uuid, p_reports jsonb) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform jobsys.require_worker(p_worker_id);
  perform jobsys.check_run_reports(p_reports);
  return jobsys.finish_runs(p_worker_id, p_reports);
end
$$;

-- The single-run calls on the same code: a stale run raises here (JS410), as before.
create or replace function jobsys.finish_run(
  p_assignment_id bigint, p_attempt integer, p_outcome text, p_result jsonb, p_error text)
  returns jobsys.job_assignments
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_a jobsys.job_assignments := jobsys.assignment_for_worker(p_assignment_id);
  v_outcome jsonb;
begin
  if p_outcome is null or p_outcome not in ('completed', 'failed', 'retry', 'release') then
    perform jobsys.raise_error('JS400', 'unknown outcome', jsonb_build_object('outcome', p_outcome));
  end if;
  v_outcome := jobsys.finish_runs(v_a.worker_id, jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
    'assignment_id', p_assignment_id, 'attempt', p_attempt, 'outcome', p_outcome,
    'result', p_result, 'error', p_error))));
  if (v_outcome -> 0 ->> 'stale')::boolean then
    perform jobsys.raise_stale(p_assignment_id, p_attempt);
  end if;
  select * into v_a from jobsys.job_assignments where id = p_assignment_id;
  return v_a;
end
$$;

revoke execute on function
  jobsys.claim_assignments(uuid, uuid[], integer, boolean), jobsys.check_run_reports(jsonb),
  jobsys.finish_runs(uuid, jsonb), jobsys.finish_assignments(uuid, jsonb)
from public;
grant execute on function
  jobsys.claim_assignments(uuid, uuid[], integer, boolean), jobsys.finish_assignments(uuid, jsonb)
to authenticated, service_role;

-- Fewer, wider CHECK constraints on the rows every claim and finish updates. Postgres
-- reads each constraint's stored expression again for every UPDATE statement, so the
-- fourteen on jobs cost more than the counter update they guarded. Same rules, grouped:
-- what an operator gives (input), the status, and the counters.
alter table jobsys.jobs
  drop constraint jobs_action_check, drop constraint jobs_check, drop constraint jobs_duration_sec_check,
  drop constraint jobs_max_attempts_check, drop constraint jobs_target_count_check,
  drop constraint jobs_target_type_check, drop constraint jobs_target_url_check, drop constraint jobs_title_check,
  drop constraint jobs_assigned_count_check, drop constraint jobs_running_count_check,
  drop constraint jobs_completed_count_check, drop constraint jobs_failed_count_check,
  drop constraint jobs_cancelled_count_check,
  add constraint jobs_input_check check (
    length(title) between 1 and 200
    and action = 'open_url'
    and length(target_url) <= 2048 and target_url ~* '^https?://[^[:space:]/?#]+'
    and duration_sec between 1 and 86400
    and ((target_type = 'all_devices' and target_value is null)
         or (target_type = 'percentage' and target_value between 1 and 100)
         or (target_type = 'device_count' and target_value between 1 and 100000))
    and target_count >= 0
    and max_attempts between 1 and 100),
  add constraint jobs_counters_check check (
    assigned_count >= 0 and running_count >= 0 and completed_count >= 0 and failed_count >= 0
    and cancelled_count >= 0
    and running_count + completed_count + failed_count + cancelled_count <= assigned_count);

-- Re-registration race (found by the storm test with worker restarts): sync_devices used to
-- clear the device mutex of every device it handed to a new session, including one the old
-- session had claimed a run on between the release of its runs and the hand-over. That run
-- stayed running without its mutex and the device could be given a second run. Also, a
-- job deleted while a worker re-registered made the registration fail with JS404.
create or replace function jobsys.sync_devices(p_worker_id uuid, p_devices jsonb) returns integer
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job_id uuid;
  v_n integer;
  v_changed integer;
  v_released bigint[] := '{}';
begin
  if jsonb_typeof(p_devices) is distinct from 'array' then
    perform jobsys.raise_error('JS400', 'devices must be a JSON array', '{"field": "devices"}');
  end if;
  if exists (select 1 from jsonb_array_elements(p_devices) e
             where jsonb_typeof(e) <> 'object' or jsonb_typeof(e -> 'serial') is distinct from 'string'
                or length(e ->> 'serial') not between 1 and 200
                or coalesce(e ->> 'state', 'online') not in ('online', 'offline', 'error', 'disabled')) then
    perform jobsys.raise_error('JS400',
      'each device needs a serial (1-200 characters) and a state of online, offline, error or disabled',
      '{"field": "devices"}');
  end if;

  -- Runs held by an earlier session on these devices go back to the queue now.
  for v_job_id in
    select distinct a.job_id
    from jobsys.devices d join jobsys.job_assignments a on a.id = d.running_assignment_id
    where d.serial in (select e ->> 'serial' from jsonb_array_elements(p_devices) e)
      and d.worker_id is distinct from p_worker_id
    order by a.job_id
  loop
    -- A job deleted meanwhile took its runs with it: nothing to move (and no error).
    perform 1 from jobsys.jobs where id = v_job_id for no key update;
    continue when not found;
    with moved as (
      update jobsys.job_assignments a set
        status = jobsys.requeue_status(j.status, 0, 1), attempt = a.attempt + 1,
        lease_expires_at = null, error = 'device re-registered by a new worker session'
      from jobsys.devices d, jobsys.jobs j
      where a.job_id = v_job_id and j.id = v_job_id and a.status = 'running'
        and d.running_assignment_id = a.id and d.worker_id is distinct from p_worker_id
        and d.serial in (select e ->> 'serial' from jsonb_array_elements(p_devices) e)
      returning a.id, a.status)
    select count(*), v_released || coalesce(array_agg(moved.id), '{}') into v_n, v_released from moved;
    perform jobsys.apply_counts(v_job_id, 0, -v_n, 0, 0, 0);
  end loop;

  with reported as (
    select e ->> 'serial' as serial, coalesce(e ->> 'state', 'online') as state,
           left(coalesce(e ->> 'model', ''), 200) as model,
           coalesce((e ->> 'simulated')::boolean, false) as simulated,
           coalesce(e -> 'labels', '{}') as labels
    from jsonb_array_elements(p_devices) e
  ), upserted as (
    insert into jobsys.devices as d (serial, worker_id, model, simulated, labels, state,
                                     last_heartbeat_at, running_assignment_id)
    select r.serial, p_worker_id, r.model, r.simulated, r.labels, r.state, now(), null from reported r
    on conflict (serial) do update set
      worker_id = excluded.worker_id, model = excluded.model, simulated = excluded.simulated,
      labels = excluded.labels, last_heartbeat_at = now(),
      state = case when d.state = 'disabled' then 'disabled' else excluded.state end,
      -- Only the runs released above free their device. A run the old session claimed
      -- after that (its claim committed while this call waited for a job lock) keeps its
      -- device until it ends or its lease expires, so no device ever runs two.
      running_assignment_id = case when d.running_assignment_id = any(v_released)
                                   then null else d.running_assignment_id end
    returning 1
  ), gone as (
    update jobsys.devices d set state = 'offline'
    where d.worker_id = p_worker_id and d.state = 'online'
      and d.serial not in (select serial from reported)
    returning 1
  )
  select (select count(*) from upserted) + (select count(*) from gone) into v_changed;
  perform jobsys.emit('jobsys:dashboard', 'device_status',
    jsonb_build_object('worker_id', p_worker_id, 'devices', jsonb_array_length(p_devices)));
  perform jobsys.release_unhealthy_queues();
  perform jobsys.top_up();
  return v_changed;
end
$$;

-- Fan-out without a row lock per device. The insert trigger used to lock every referenced
-- device FOR KEY SHARE, as a foreign key does, so that no device could be deleted under a
-- new assignment: for a 10,000-device job that is 10,000 row locks, each a write to the
-- device's row. jobsys itself never deletes devices (an administrator may), so the delete
-- side now waits instead: deleting devices takes a lock on job_assignments that conflicts
-- with any transaction inserting assignments (SHARE ROW EXCLUSIVE vs ROW EXCLUSIVE), then
-- cascades with a fresh snapshot, so it sees, and deletes, assignments committed meanwhile;
-- an insert that starts after the delete commits finds the device missing and fails as a
-- foreign key would (23503). Jobs keep their FOR KEY SHARE lock (one row per statement).
create or replace function jobsys.assignments_check_parents() returns trigger
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_jobs uuid[];
  v_locked bigint;
  v_missing text;
begin
  select array_agg(g.job_id) into v_jobs from (select n.job_id from new_rows n group by n.job_id) g;
  perform 1 from jobsys.jobs j where j.id = any(v_jobs) for key share;
  get diagnostics v_locked = row_count;
  if v_locked < coalesce(cardinality(v_jobs), 0) then
    select n.job_id::text into v_missing from new_rows n
    where not exists (select 1 from jobsys.jobs j where j.id = n.job_id) limit 1;
    perform jobsys.raise_missing_reference('job_assignments', 'job_assignments_job_id_fkey', 'job_id',
      v_missing, 'jobs');
  end if;
  select n.device_id::text into v_missing from new_rows n
  where not exists (select 1 from jobsys.devices d where d.id = n.device_id) limit 1;
  if found then
    perform jobsys.raise_missing_reference('job_assignments', 'job_assignments_device_id_fkey', 'device_id',
      v_missing, 'devices');
  end if;
  return null;
end
$$;

create or replace function jobsys.devices_cascade_delete() returns trigger
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  lock table jobsys.job_assignments in share row exclusive mode;
  delete from jobsys.job_assignments a using old_rows o where a.device_id = o.id;
  return null;
end
$$;
