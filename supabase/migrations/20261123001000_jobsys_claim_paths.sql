-- jobsys: each device's queue starts at its floor, and the worker's calls look rows up by
-- key instead of hashing whole tables.
--
-- A claim takes a device's oldest pending run from the (device_id, id) index of live runs.
-- Every status change of a run is a new row version with new index entries (status is in
-- the index's predicate), so the index keeps the entries of the device's finished runs,
-- oldest first, until vacuum removes them; under concurrent claims the scan cannot mark
-- them dead either (their leaf pages keep changing). Each claim walked all of them, twice.
-- devices.queue_floor is the id of the run the device claimed last: the runs below it are
-- finished, or were made pending again by a path that lowers the floor (a resumed job
-- does). A run re-queued by rescue, retry or release is the device's last claim, at the
-- floor itself. The one exception is a fan-out or top-up that committed after a claim
-- of a newer run: a claim looks below the floor only when nothing is pending above it,
-- so such a run waits at most until the device has drained the newer ones.
--
-- Lookups by key. With the picks in arrays, every statement of a claim or a finish should
-- be an index lookup per run. Their plans (in perf, and in EXPLAIN of the generic plans,
-- which guess ten elements per array) instead read all of jobs and devices into a hash
-- table whenever those tables are small enough, on every call. A correlated subquery, a LATERAL with
-- OFFSET 0, and = any(array(...)) leave the planner nothing to hash. In an A/B in one
-- process this took Postgres CPU per run of the Procrastinate-shaped burn from 3.5 to 2.9 ms
-- and per cycle of lifecycle at 32 clients from 602 to 541 µs.

alter table jobsys.devices add column queue_floor bigint not null default 0;

-- Claim ------------------------------------------------------------------------------
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
    (select a.job_id from jobsys.job_assignments a
     where a.device_id = d.id and a.status = 'pending' and a.id >= d.queue_floor
     order by a.id limit 1)
    union all  -- below the floor only when nothing is above it (see the top of this file)
    (select a.job_id from jobsys.job_assignments a
     where a.device_id = d.id and a.status = 'pending' and a.id < d.queue_floor
     order by a.id limit 1)
    limit 1) q
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
      select d.id, d.queue_floor from jobsys.devices d
      where d.worker_id = p_worker_id and d.state = 'online' and d.running_assignment_id is null
        and (p_device_ids is null or d.id = any(p_device_ids))
      for no key update skip locked
    ) f
    cross join lateral (
      (select above.id from (
         select a.id from jobsys.job_assignments a
         where a.device_id = f.id and a.status = 'pending' and a.job_id = any(v_jobs)
           and a.id >= f.queue_floor
         order by a.id limit 1
         for no key update skip locked) above)
      union all
      (select below.id from (
         select a.id from jobsys.job_assignments a
         where a.device_id = f.id and a.status = 'pending' and a.job_id = any(v_jobs)
           and a.id < f.queue_floor
         order by a.id limit 1
         for no key update skip locked) below)
      limit 1) q
    limit coalesce(p_limit, 2147483647)
  ) p;
  if v_claimed is null then
    return;
  end if;

  update jobsys.devices d set running_assignment_id = x.assignment_id, queue_floor = x.assignment_id
  from unnest(v_devices, v_claimed) as x(device_id, assignment_id)
  where d.id = any(v_devices) and d.id = x.device_id;
  update jobsys.job_assignments a set status = 'running', worker_id = p_worker_id,
    claimed_at = now(), started_at = case when p_start then now() end,
    lease_expires_at = now() + make_interval(
      secs => case when p_start
                   then (select j.duration_sec from jobsys.jobs j where j.id = a.job_id) + v_grace
                   else v_claim_lease end)
  where a.id = any(v_claimed);

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
  cross join lateral (select j.action, j.target_url, j.duration_sec from jobsys.jobs j
                      where j.id = a.job_id offset 0) j
  cross join lateral (select d.serial from jobsys.devices d where d.id = a.device_id offset 0) d
  where a.id = any(v_claimed)
  order by a.id;
end
$$;

-- Resume -------------------------------------------------------------------------------
create or replace function jobsys.resume_job(p_job_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
  v_added integer;
begin
  perform jobsys.require_operator();
  v_job := jobsys.lock_job(p_job_id);
  if v_job.status <> 'paused' then
    perform jobsys.illegal_move(v_job, 'resume');
  end if;
  -- The resumed runs may lie below their devices' queue floors: lower those floors, taking
  -- the device rows in id order as a finish does.
  with resumed as (
    update jobsys.job_assignments set status = 'pending' where job_id = p_job_id and status = 'paused'
    returning id, device_id
  ), lowered as (
    select d.id, r.id as floor from jobsys.devices d join resumed r on r.device_id = d.id
    where d.queue_floor > r.id order by d.id for no key update of d
  )
  update jobsys.devices d set queue_floor = l.floor from lowered l where d.id = l.id;
  update jobsys.jobs set status = 'active', paused_at = null where id = p_job_id
    returning * into v_job;
  perform jobsys.emit_to_job_workers(p_job_id, 'job_resumed', jsonb_build_object('job_id', p_job_id));
  -- Devices may have come or gone while paused.
  v_added := jobsys.assign_devices(p_job_id,
    v_job.target_count - (v_job.assigned_count - v_job.failed_count - v_job.cancelled_count));
  v_job := jobsys.apply_counts(p_job_id, v_added, 0, 0, 0, 0, true);
  return jobsys.job_json(v_job);
end
$$;

-- Finish -------------------------------------------------------------------------------
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
