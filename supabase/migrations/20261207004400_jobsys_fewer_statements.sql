-- jobsys: issue 22, fewer statements per call on the workers' hot path. complete_assignment
-- and start_assignment update first and check the caller on the row they return;
-- finish_runs builds its answer in the statement that finishes the runs; claim_assignments
-- takes the runs' jobs from its pick, reads its settings in one statement and returns the
-- runs from the statement that claims them; count_runs counts, reads what completion needs
-- and whether a progress event is due in one statement; finish_run serves fail and release only.


create or replace function jobsys.count_runs(p_job_id uuid, p_worker_id uuid, p_running integer,
  p_completed integer, p_failed integer, p_cancelled integer)
  returns void
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_status text;
  v_target integer;
  v_completed bigint;
  v_due boolean;
begin
  -- The exact completed count is jobsys.counted's sum: the job row, the other sessions' rows
  -- as this statement sees them, and this session's row as the upsert left it.
  with mine as (
    insert into jobsys.job_run_counts as r (job_id, worker_id, running, completed, failed, cancelled)
    values (p_job_id, p_worker_id, p_running, p_completed, p_failed, p_cancelled)
    on conflict (job_id, worker_id) do update set
      running = r.running + excluded.running, completed = r.completed + excluded.completed,
      failed = r.failed + excluded.failed, cancelled = r.cancelled + excluded.cancelled,
      changed_at = excluded.changed_at
    returning r.completed)
  select j.status, j.target_count,
         j.completed_count + mine.completed
           + coalesce((select sum(r.completed) from jobsys.job_run_counts r
                       where r.job_id = p_job_id and r.worker_id <> p_worker_id), 0),
         exists (select 1 from jobsys.job_progress_marks m
                 where m.job_id = p_job_id and m.notified_at <= clock_timestamp() - make_interval(
                   secs => (select s.value from jobsys.settings s
                            where s.key = 'progress_event_interval_ms') / 1000.0))
    into v_status, v_target, v_completed, v_due
  from mine
  left join lateral (select j.status, j.target_count, j.completed_count from jobsys.jobs j
                     where j.id = p_job_id and p_completed > 0) j on true;
  if v_status in ('active', 'paused') and v_target > 0 and v_completed >= v_target then
    perform 1 from jobsys.jobs j where j.id = p_job_id for no key update skip locked;
    if found then
      perform jobsys.apply_counts(p_job_id, 0, 0, 0, 0, 0);
      return;
    end if;
  end if;
  if v_due then
    perform jobsys.notify_progress(p_job_id, false);
  end if;
end
$$;
comment on function jobsys.count_runs(uuid, uuid, integer, integer, integer, integer) is
  'Claims and finishes count their runs in the row of their job and worker session (the caller holds the job row FOR SHARE), so the runs of one job on many workers never queue on one row. Completes the job when the target is met and no other claim or finish of it is in flight (else the next upkeep does), and emits job_progress, throttled.';

create or replace function jobsys.start_assignment(p_assignment_id bigint, p_attempt integer) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_worker uuid;
  v_lease timestamptz;
begin
  update jobsys.job_assignments a set started_at = now(),
    lease_expires_at = now() + make_interval(
      secs => (j.duration_sec + (select s.value from jobsys.settings s where s.key = 'lease_grace_sec'))::double precision)
  from jobsys.jobs j
  where a.id = p_assignment_id and a.attempt = p_attempt and a.status = 'running' and j.id = a.job_id
  returning a.worker_id, a.lease_expires_at into v_worker, v_lease;
  if not found then
    perform jobsys.assignment_for_worker(p_assignment_id);  -- not found (JS404), not yours (JS403)
    perform jobsys.raise_stale(p_assignment_id, p_attempt);
  end if;
  perform jobsys.require_worker(v_worker);
  return jsonb_build_object('assignment_id', p_assignment_id, 'lease_expires_at', v_lease);
end
$$;
comment on function jobsys.start_assignment(bigint, integer) is
  'Workers: the device began the action; the lease now covers its duration plus lease_grace_sec.';

create or replace function jobsys.finish_runs(p_worker_id uuid, p_reports jsonb) returns jsonb
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  -- The ids first, so that every statement below finds its runs through the primary key
  -- (given a set-returning JSON function, the planner guesses 100 rows and hashes the table).
  v_ids bigint[] := (select array_agg((e.r ->> 'assignment_id')::bigint) from jsonb_array_elements(p_reports) e(r));
  v_finished jsonb;
  v_answer jsonb;
  v_devices uuid[];
  v_failed_devices uuid[];  -- a failure on the device (failed, retry): its streak grows
  v_failed_errors text[];
  v_done_devices uuid[];  -- a completed run: its streak ends
  v_row record;
begin
  -- Lock order: the runs' jobs first, in id order; FOR SHARE, as a claim (count_runs).
  perform 1 from jobsys.jobs j
  where j.id = any(array(select a.job_id from jobsys.job_assignments a where a.id = any(v_ids)))
  order by j.id for share;

  with report as (
    select x.assignment_id, x.attempt, x.outcome, x.result, left(x.error, 2000) as error, x.i
    from rows from (jsonb_to_recordset(p_reports) as (assignment_id bigint, attempt integer, outcome text,
                                                       result jsonb, error text))
      with ordinality as x(assignment_id, attempt, outcome, result, error, i)
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
  select coalesce(jsonb_agg(jsonb_build_object('job_id', f.job_id, 'status', f.status)) filter (where f.id is not null), '[]'),
         jsonb_agg(case when f.id is null
                     then jsonb_build_object('assignment_id', r.assignment_id, 'attempt', r.attempt, 'stale', true)
                     else jsonb_build_object('assignment_id', f.id, 'job_id', f.job_id, 'device_id', f.device_id,
                                             'status', f.status, 'attempt', f.attempt, 'stale', false) end
                   order by r.i),
         array_agg(f.device_id) filter (where f.id is not null),
         array_agg(f.device_id) filter (where f.outcome in ('failed', 'retry')),
         array_agg(f.error) filter (where f.outcome in ('failed', 'retry')),
         array_agg(f.device_id) filter (where f.outcome = 'completed')
    into v_finished, v_answer, v_devices, v_failed_devices, v_failed_errors, v_done_devices
  from report r left join finished f on f.id = r.assignment_id;

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
    perform jobsys.count_runs(v_row.job_id, p_worker_id, -v_row.n, v_row.completed, v_row.failed,
                              v_row.cancelled);
    if v_row.failed > 0 then
      perform jobsys.top_up(v_row.job_id);  -- other devices replace the failed runs (or the next upkeep)
    end if;
  end loop;

  return v_answer;
end
$$;
comment on function jobsys.finish_runs(uuid, jsonb) is
  'Finishes runs of one worker in one transaction, with one counter update per job (jobsys.count_runs). Compare-and-set on worker, status and attempt, so a late report after a rescue never counts twice: it comes back as stale. Counts failures in a row per device and quarantines the flaky ones (jobsys.quarantine_flaky).';

create or replace function jobsys.complete_assignment(
  p_assignment_id bigint, p_attempt integer, p_result jsonb default '{}')
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_a jobsys.job_assignments;
begin
  perform 1 from jobsys.jobs j
  where j.id = (select a.job_id from jobsys.job_assignments a where a.id = p_assignment_id)
  for share;
  update jobsys.job_assignments a set status = 'completed', finished_at = now(), lease_expires_at = null,
    result = coalesce(p_result, a.result), error = null
  where a.id = p_assignment_id and a.attempt = p_attempt and a.status = 'running' and a.worker_id is not null
  returning a.* into v_a;
  if not found then
    perform jobsys.assignment_for_worker(p_assignment_id);  -- not found (JS404), not yours (JS403)
    perform jobsys.raise_stale(p_assignment_id, p_attempt);
  end if;
  perform jobsys.require_worker(v_a.worker_id);
  update jobsys.devices d set running_assignment_id = null, failure_streak = 0
  where d.id = v_a.device_id and d.running_assignment_id = p_assignment_id;
  perform jobsys.count_runs(v_a.job_id, v_a.worker_id, -1, 1, 0, 0);
  return jobsys.run_json(v_a);
end
$$;
comment on function jobsys.complete_assignment(bigint, integer, jsonb) is
  'Workers: a run completed (the effect of a completed report to finish_runs, in fewer statements).';

create or replace function jobsys.claim_assignments(
  p_worker_id uuid, p_device_ids uuid[] default null, p_limit integer default null,
  p_start boolean default false)
  returns table (assignment_id bigint, attempt integer, job_id uuid, device_id uuid, serial text,
                 action text, target_url text, duration_sec integer, lease_expires_at timestamptz,
                 started boolean)
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_locked uuid[];
  v_claimed bigint[];
  v_devices uuid[];
  v_floors bigint[];
  v_jobs uuid[];  -- the job of each claimed run, in the same order
  v_row record;
  v_claim_lease double precision;
  v_grace double precision;
begin
  perform jobsys.require_worker(p_worker_id);
  if p_limit is not null and p_limit < 1 then
    perform jobsys.raise_error('JS400', 'limit must be at least 1', jsonb_build_object('limit', p_limit));
  end if;
  -- Pick and lock first, then update by primary key: with the picks in arrays every
  -- statement below is an index lookup per run, however large the tables.
  -- The device's new queue floor: the run claimed, when it is of priority 0; a run of
  -- another priority comes from its own index and leaves the floor where it was (else older
  -- runs of priority 0 would fall below it and wait behind newer ones).
  select array_agg(p.assignment_id), array_agg(p.device_id), array_agg(p.floor), array_agg(p.job_id)
    into v_claimed, v_devices, v_floors, v_jobs
  from (
    select q.id as assignment_id, f.id as device_id, case when q.floor then q.id else f.queue_floor end as floor,
           q.job_id
    from (
      select d.id, d.queue_floor from jobsys.devices d
      where d.worker_id = p_worker_id and d.state = 'online' and d.running_assignment_id is null
        and (p_device_ids is null or d.id = any(p_device_ids))
        -- a phone about to reboot takes nothing new (request_device_reboot; the worker answers)
        and (d.reboot_requested_at is null or d.reboot_requested_at < now() - interval '10 minutes')
      for no key update skip locked
    ) f
    cross join lateral (
      (select first.id, first.job_id, false as floor from (
         select a.id, a.job_id from jobsys.job_assignments a
         where a.device_id = f.id and a.status = 'pending'
           and a.priority <> 0 and a.priority > 0
         order by a.priority desc, a.id limit 1
         for no key update skip locked) first)
      union all
      (select above.id, above.job_id, true from (
         select a.id, a.job_id from jobsys.job_assignments a
         where a.device_id = f.id and a.status = 'pending'
           and a.id >= f.queue_floor and a.priority = 0
         order by a.id limit 1
         for no key update skip locked) above)
      union all
      (select below.id, below.job_id, true from (
         select a.id, a.job_id from jobsys.job_assignments a
         where a.device_id = f.id and a.status = 'pending'
           and a.id < f.queue_floor and a.priority = 0
         order by a.id limit 1
         for no key update skip locked) below)
      union all
      (select last.id, last.job_id, false from (
         select a.id, a.job_id from jobsys.job_assignments a
         where a.device_id = f.id and a.status = 'pending'
           and a.priority <> 0 and a.priority < 0
         order by a.priority desc, a.id limit 1
         for no key update skip locked) last)
      limit 1) q
    limit coalesce(p_limit, 2147483647)
  ) p;
  if v_claimed is null then
    return;
  end if;
  -- Their jobs FOR SHARE (count_runs), SKIP LOCKED: a job a pause, cancel or completion holds
  -- right now is left out of this claim (its picks stay pending), so the claim, which already
  -- holds devices and runs, never waits for a job and cannot close a cycle with one.
  v_locked := array(select j.id from jobsys.jobs j where j.id = any(v_jobs) and j.status = 'active'
                    order by j.id for share skip locked);
  if exists (select 1 from unnest(v_jobs) x(job_id) where x.job_id <> all(v_locked)) then
    select array_agg(x.assignment_id), array_agg(x.device_id), array_agg(x.floor), array_agg(x.job_id)
      into v_claimed, v_devices, v_floors, v_jobs
    from unnest(v_claimed, v_devices, v_floors, v_jobs) as x(assignment_id, device_id, floor, job_id)
    where x.job_id = any(v_locked);
    if v_claimed is null then
      return;
    end if;
  end if;

  update jobsys.devices d set running_assignment_id = x.assignment_id, queue_floor = x.floor
  from unnest(v_devices, v_claimed, v_floors) as x(device_id, assignment_id, floor)
  where d.id = any(v_devices) and d.id = x.device_id;
  select max(s.value) filter (where s.key = 'claim_lease_sec'), max(s.value) filter (where s.key = 'lease_grace_sec')
    into v_claim_lease, v_grace
  from jobsys.settings s where s.key in ('claim_lease_sec', 'lease_grace_sec');
  -- The runs and what the worker needs of them in one statement.
  return query
  with claimed as (
    update jobsys.job_assignments a set status = 'running', worker_id = p_worker_id,
      claimed_at = now(), started_at = case when p_start then now() end,
      lease_expires_at = now() + make_interval(
        secs => case when p_start
                     then (select j.duration_sec from jobsys.jobs j where j.id = a.job_id) + v_grace
                     else v_claim_lease end)
    where a.id = any(v_claimed)
    returning a.id, a.attempt, a.job_id, a.device_id, a.lease_expires_at)
  select c.id, c.attempt, c.job_id, c.device_id, d.serial, j.action, j.target_url, j.duration_sec,
         c.lease_expires_at, p_start
  from claimed c
  cross join lateral (select j.action, j.target_url, j.duration_sec from jobsys.jobs j
                      where j.id = c.job_id offset 0) j
  cross join lateral (select d.serial from jobsys.devices d where d.id = c.device_id offset 0) d
  order by c.id;

  for v_row in
    select x.job_id as id, count(*) as n from unnest(v_jobs) x(job_id) group by x.job_id order by x.job_id
  loop
    perform jobsys.count_runs(v_row.id, p_worker_id, v_row.n::integer, 0, 0, 0);
  end loop;
end
$$;
comment on function jobsys.claim_assignments(uuid, uuid[], integer, boolean) is
  'Workers: claim for each free online device of the worker (or those listed) its next pending assignment, the highest priority first, then the oldest (from the device queue floor up); p_start starts the runs at once. Devices and runs with SKIP LOCKED, then their jobs FOR SHARE SKIP LOCKED (a job in a pause, cancel or completion is left out), so a claim never waits.';

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
  if p_outcome is null or p_outcome not in ('failed', 'retry', 'release') then
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
comment on function jobsys.finish_run(bigint, integer, text, jsonb, text) is
  'The single-run fail and release calls on the code of finish_runs; a run that has moved on raises JS410 here.';

