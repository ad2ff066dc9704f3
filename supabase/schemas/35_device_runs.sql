-- jobsys declarative schema: device jobs, the worker side. Claim, start and finish runs,
-- lease rescue and upkeep, worker sessions and their devices. Lock order as in
-- 30_device_jobs.sql: jobs (in id order) -> job_assignments -> devices.
--
-- Batched transitions. A worker with N free devices would spend 2N + 1 transactions per
-- round on single-run calls: one claim, then a start and a finish per run, each finish
-- taking the job's counter row lock. Instead
--   * claim_assignments(..., p_start => true) claims and starts in one call (the worker
--     starts a device as soon as it has the run, so a separate start only cost a round
--     trip), and
--   * finish_assignments() finishes many runs of one worker in one transaction, with one
--     counter update per job, however many runs of that job it carries.
-- The single-run calls (start/complete/fail/release_assignment) stay, on the same code.
--
-- Off the job row. Claims and finishes hold their jobs FOR SHARE (job-level transitions,
-- which take the row FOR NO KEY UPDATE, wait for them; they do not wait for each other;
-- a claim takes them with SKIP LOCKED, after its devices and runs, so it never waits) and
-- count their runs in job_run_counts, one row per job and worker session
-- (jobsys.count_runs, 30_device_jobs.sql). With the counters on the job row, the ten claims
-- of one new job by ten workers ran one after another, each holding the row until commit.
--
-- Each device's queue starts at its floor. A claim takes a device's oldest pending run from
-- the (device_id, id) index of live runs. Every status change of a run is a new row version
-- with new index entries (status is in the index's predicate), so the index keeps the
-- entries of the device's finished runs, oldest first, until vacuum removes them; under
-- concurrent claims the scan cannot mark them dead either (their leaf pages keep changing).
-- Without a floor, each claim would walk all of them, twice.
-- devices.queue_floor is the id of the run the device claimed last: the runs below it are
-- finished, or were made pending again by a path that lowers the floor (a resumed job
-- does). A run re-queued by rescue, retry or release is the device's last claim, at the
-- floor itself. The one exception is a fan-out or top-up that committed after a claim
-- of a newer run: a claim looks below the floor only when nothing is pending above it,
-- so such a run waits at most until the device has drained the newer ones.
--
-- Lookups by key. With the picks in arrays, every statement of a claim or a finish should
-- be an index lookup per run. Written as plain joins, their plans (in perf, and in EXPLAIN
-- of the generic plans, which guess ten elements per array) read all of jobs and devices
-- into a hash table whenever those tables are small enough, on every call. A correlated
-- subquery, a LATERAL with OFFSET 0, and = any(array(...)) leave the planner nothing to
-- hash. In an A/B in one process this took Postgres CPU per run of the Procrastinate-shaped
-- burn from 3.5 to 2.9 ms and per cycle of lifecycle at 32 clients from 602 to 541 µs.

-- Assignment-level transitions (workers) ------------------------------------------------
-- Where an assignment goes when its run ends without a result: back to the queue while
-- attempts remain (paused if the job is paused), failed after the last attempt.
create or replace function jobsys.requeue_status(p_job_status text, p_attempt integer, p_max_attempts integer)
  returns text
  language sql immutable
  as $$
  select case
    when p_job_status not in ('active', 'paused') then 'cancelled'
    when p_attempt >= p_max_attempts then 'failed'
    when p_job_status = 'paused' then 'paused'
    else 'pending' end
$$;
comment on function jobsys.requeue_status(text, integer, integer) is
  'Where an assignment goes when its run ends without a result: back to the queue while attempts remain (paused if the job is paused), failed after the last attempt, cancelled if the job is over.';

-- Claim ------------------------------------------------------------------------------
-- For each free online device of the worker (or those listed), its next pending assignment:
-- of the highest priority, then the oldest. Priority 0 (nearly every run) from the device's
-- queue floor up; the others from their own partial index (job_assignments_device_priority_idx,
-- "priority <> 0" written out so the planner matches it), an empty range when there are none.
-- Everything with SKIP LOCKED (devices and runs, then their jobs FOR SHARE), so a claim never
-- waits, on another claim or on a job-level transition. p_start: the runs start now (lease:
-- duration + grace) rather than holding the short claim lease until start_assignment.
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

-- Look up an assignment for a worker-side transition and check the caller may touch it.
create or replace function jobsys.assignment_for_worker(p_assignment_id bigint) returns jobsys.job_assignments
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_a jobsys.job_assignments;
begin
  select * into v_a from jobsys.job_assignments where id = p_assignment_id;
  if not found then
    perform jobsys.raise_error('JS404', 'assignment not found',
      jsonb_build_object('assignment_id', p_assignment_id));
  end if;
  perform jobsys.require_worker(coalesce(v_a.worker_id, '00000000-0000-0000-0000-000000000000'));
  return v_a;
end
$$;
comment on function jobsys.assignment_for_worker(bigint) is
  'Looks up an assignment for a worker-side transition and checks that the caller may act as the worker that holds it.';

-- The run this worker holds has moved on (lease expired and re-queued, job cancelled...).
create or replace function jobsys.raise_stale(p_assignment_id bigint, p_attempt integer) returns void
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_a jobsys.job_assignments;
begin
  select * into v_a from jobsys.job_assignments where id = p_assignment_id;
  perform jobsys.raise_error('JS410', 'this run of the assignment is no longer current',
    jsonb_build_object('assignment_id', p_assignment_id, 'attempt', p_attempt,
                       'current_attempt', v_a.attempt, 'status', coalesce(v_a.status, 'deleted')));
end
$$;
comment on function jobsys.raise_stale(bigint, integer) is
  'Raises JS410: the run this worker holds has moved on (lease expired and re-queued, job cancelled or deleted).';

-- Start: the device began the action; the lease now covers its duration plus grace. The
-- update goes first and the caller is checked on the row it returns (a refusal rolls it
-- back): one statement fewer on the hot path than looking the run up first.
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

-- Finish many runs ----------------------------------------------------------------------
-- p_reports: a JSON array of {"assignment_id", "attempt", "outcome", "result", "error"};
-- outcome: completed | failed | retry (re-queue while attempts remain) | release (back to
-- the queue, e.g. the worker shuts down); error is required for failed and retry. Bad
-- input rejects the whole call before anything changes.
create or replace function jobsys.check_run_reports(p_reports jsonb) returns void
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
comment on function jobsys.check_run_reports(jsonb) is
  'Checks a batch of run reports for finish_assignments (shape, outcome, an error for failed and retry) and raises JS400 before anything changes.';

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

create or replace function jobsys.finish_assignments(p_worker_id uuid, p_reports jsonb) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform jobsys.require_worker(p_worker_id);
  perform jobsys.check_run_reports(p_reports);
  return jobsys.finish_runs(p_worker_id, p_reports);
end
$$;
comment on function jobsys.finish_assignments(uuid, jsonb) is
  'Workers: finish many runs in one call (completed, failed, retry or release), in one transaction with one counter update per job.';

-- The single-run fail and release calls on the same code (complete_assignment has its own
-- path): a stale run raises here (JS410). p_outcome: failed | retry (re-queue while attempts
-- remain) | release (back to the queue, e.g. the worker shuts down).
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

create or replace function jobsys.run_json(a jobsys.job_assignments) returns jsonb
  language sql immutable
  as $$
  select jsonb_build_object('assignment_id', a.id, 'job_id', a.job_id, 'device_id', a.device_id,
    'status', a.status, 'attempt', a.attempt)
$$;
comment on function jobsys.run_json(jobsys.job_assignments) is
  'The JSON shape of one run returned to workers.';

-- A run completed: the single-run path workers call most, written out rather than through
-- finish_run (a JSON report, finish_runs and a second read of the run), with the same
-- effect as finish_runs for a completed report: the job FOR SHARE first (lock order), the
-- run by compare-and-set (the caller is checked on the row it returns; a refusal rolls the
-- update back), its device freed with its failure streak ended, the run counted.
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

-- Fail a run. p_retry: re-queue on the same device while attempts remain.
create or replace function jobsys.fail_assignment(
  p_assignment_id bigint, p_attempt integer, p_error text, p_retry boolean default false,
  p_result jsonb default null)
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_a jobsys.job_assignments;
begin
  if p_error is null or btrim(p_error) = '' then
    perform jobsys.raise_error('JS400', 'error must say why the run failed', '{"field": "error"}');
  end if;
  v_a := jobsys.finish_run(p_assignment_id, p_attempt,
    case when p_retry then 'retry' else 'failed' end, p_result, left(p_error, 2000));
  return jobsys.run_json(v_a);
end
$$;
comment on function jobsys.fail_assignment(bigint, integer, text, boolean, jsonb) is
  'Workers: a run failed; p_retry re-queues it on the same device while attempts remain.';

-- Release runs a worker will not finish (graceful shutdown): back to the queue.
create or replace function jobsys.release_assignment(p_assignment_id bigint, p_attempt integer,
  p_reason text default 'released by worker')
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_a jobsys.job_assignments := jobsys.finish_run(p_assignment_id, p_attempt, 'release', null,
    left(coalesce(p_reason, 'released by worker'), 2000));
begin
  return jobsys.run_json(v_a);
end
$$;
comment on function jobsys.release_assignment(bigint, integer, text) is
  'Workers: hand back a run the worker will not finish (graceful shutdown); it goes back to the queue.';

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

-- Unhealthy devices give up their queue -------------------------------------------------
-- Pending and paused runs on devices that are not healthy, or that no longer carry their
-- job's device_labels (an operator or the worker changed them), are released (removed) so
-- that top-up can place them on eligible devices; the device may be chosen again later.
create or replace function jobsys.release_unhealthy_queues() returns integer
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz := jobsys.healthy_cutoff();  -- once, not once per row
  v_job_id uuid;
  v_n integer;
  v_total integer := 0;
begin
  for v_job_id in
    select distinct a.job_id
    from jobsys.job_assignments a join jobsys.devices d on d.id = a.device_id
    where a.status in ('pending', 'paused')
      and (d.state <> 'online' or d.last_heartbeat_at <= v_cutoff or d.worker_id is null
           or exists (select 1 from jobsys.jobs j where j.id = a.job_id and j.device_labels <> '{}'
                      and not d.labels || d.operator_labels @> j.device_labels))
    order by a.job_id
  loop
    perform 1 from jobsys.jobs where id = v_job_id for no key update skip locked;
    continue when not found;
    with released as (
      delete from jobsys.job_assignments a
      using jobsys.devices d, jobsys.jobs j
      where a.job_id = v_job_id and j.id = v_job_id and d.id = a.device_id and a.status in ('pending', 'paused')
        and (d.state <> 'online' or d.last_heartbeat_at <= v_cutoff or d.worker_id is null
             or (j.device_labels <> '{}' and not d.labels || d.operator_labels @> j.device_labels))
      returning 1)
    select count(*) into v_n from released;
    continue when v_n = 0;
    perform jobsys.apply_counts(v_job_id, -v_n, 0, 0, 0, 0);
    v_total := v_total + v_n;
  end loop;
  return v_total;
end
$$;
comment on function jobsys.release_unhealthy_queues() is
  'Pending and paused runs on unhealthy devices, or on devices that no longer carry their job''s device_labels, are removed so that top-up can place them on eligible devices; a device may be chosen again later.';

-- Workers and devices whose heartbeat is older than stale_after_sec become offline.
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

-- Scheduled jobs whose start_at has come start now (jobsys.start_job: target resolved,
-- runs distributed, workers pushed). Run by maintain(). Jobs are taken in id order with
-- SKIP LOCKED: one in a transition (pause, cancel) is released next round.
create or replace function jobsys.release_scheduled_jobs() returns integer
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
  v_started integer := 0;
begin
  for v_job in
    select * from jobsys.jobs j
    where j.status = 'scheduled' and j.start_at <= now()
    order by j.id
    for no key update skip locked
  loop
    perform jobsys.start_job(v_job.id);
    v_started := v_started + 1;
  end loop;
  return v_started;
end
$$;
comment on function jobsys.release_scheduled_jobs() is
  'Starts the scheduled jobs whose start_at has come (run by maintain): target resolved, runs distributed, workers pushed. Returns how many started.';

-- Every job ends. Run by maintain(), never scheduled by a user:
--   * time limit: an active or paused job past its start (start_at, or created_at when it
--     started at once) + timeout_sec ends now (jobsys.end_job: queued runs cancelled, running
--     ones stopped): completed if its target is met, else incomplete / timed_out;
--   * grace for top-up: an active job with no live run (none pending, paused or running)
--     that is still short starts waiting (waiting_since); new runs end the wait
--     (apply_counts); once the grace (jobs.topup_grace_sec, else the topup_grace_sec setting)
--     has passed it ends incomplete: max_attempts when its failed runs are the shortfall
--     (failed >= short), else no_eligible_devices.
-- Jobs are taken in id order with SKIP LOCKED: a job in a transition is settled next round.
create or replace function jobsys.settle_jobs() returns integer
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_grace numeric := jobsys.setting('topup_grace_sec');
  v_job jobsys.jobs;
  v_ended integer := 0;
begin
  -- Target met by finishes that ran side by side (none could take the job row to complete
  -- it: jobsys.count_runs).
  for v_job in
    select j.* from jobsys.jobs j cross join lateral jobsys.counted(j) c
    where j.status in ('active', 'paused') and c.target_count > 0 and c.completed_count >= c.target_count
    order by j.id
    for no key update of j skip locked
  loop
    perform jobsys.apply_counts(v_job.id, 0, 0, 0, 0, 0);
    v_ended := v_ended + 1;
  end loop;

  for v_job in
    select c.* from jobsys.jobs j cross join lateral jobsys.counted(j) c
    where j.status in ('active', 'paused') and j.timeout_sec is not null
      and greatest(j.created_at, coalesce(j.start_at, j.created_at))
          + make_interval(secs => j.timeout_sec) <= now()
    order by j.id
    for no key update of j skip locked
  loop
    -- Counted again under the lock: a finish may have committed since the loop's snapshot.
    select c.* into v_job from jobsys.jobs j cross join lateral jobsys.counted(j) c where j.id = v_job.id;
    perform jobsys.end_job(v_job.id,
      case when v_job.completed_count >= v_job.target_count then 'completed' else 'incomplete' end,
      case when v_job.completed_count >= v_job.target_count then null else 'timed_out' end,
      'job timed out');
    v_ended := v_ended + 1;
  end loop;

  for v_job in
    select c.* from jobsys.jobs j cross join lateral jobsys.counted(j) c
    where j.status = 'active' and c.completed_count < c.target_count
      and c.assigned_count = c.completed_count + c.failed_count + c.cancelled_count
    order by j.id
    for no key update of j skip locked
  loop
    -- Counted again under the lock (a top-up may have committed since the loop's snapshot).
    select c.* into v_job from jobsys.jobs j cross join lateral jobsys.counted(j) c where j.id = v_job.id;
    continue when v_job.status <> 'active' or v_job.completed_count >= v_job.target_count
      or v_job.assigned_count <> v_job.completed_count + v_job.failed_count + v_job.cancelled_count;
    if v_job.waiting_since is null then
      update jobsys.jobs set waiting_since = now() where id = v_job.id;
      perform jobsys.apply_counts(v_job.id, 0, 0, 0, 0, 0, true);
    elsif v_job.waiting_since + make_interval(secs => coalesce(v_job.topup_grace_sec, v_grace)) <= now() then
      update jobsys.jobs set status = 'incomplete', finished_at = now(), waiting_since = null,
        end_reason = case when v_job.failed_count > 0
                               and v_job.failed_count >= v_job.target_count - v_job.completed_count
                          then 'max_attempts' else 'no_eligible_devices' end
      where id = v_job.id;
      perform jobsys.apply_counts(v_job.id, 0, 0, 0, 0, 0, true);
      v_ended := v_ended + 1;
    end if;
  end loop;
  return v_ended;
end
$$;
comment on function jobsys.settle_jobs() is
  'Ends jobs that cannot go on (run by maintain): completes those whose target finishes met side by side, those past their time limit counted from their start (completed or incomplete/timed_out, running runs stopped), or with no live run, still short, after the top-up grace (incomplete/no_eligible_devices or max_attempts). Returns how many ended.';

-- Periodic work, run from every worker's heartbeat and claim loop; the advisory lock
-- and the interval make it run once per interval however many call it.
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
  v_purged integer := 0;
  v_job jobsys.jobs;
  v_payload jsonb;
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
  update jobsys.maintenance_state set last_purge_at = clock_timestamp()
  where last_purge_at < clock_timestamp() - interval '1 minute';
  if found then
    v_purged := jobsys.purge_expired();
  end if;
  -- Trailing job_progress: a job that differs from its last event (a change inside a throttle
  -- window, or a finish that was in flight when another transaction sent). Compared by
  -- content: no timestamp says when a transaction in flight will commit.
  for v_job in
    select j.* from jobsys.jobs j where j.status in ('active', 'paused')
  loop
    v_payload := jobsys.progress_json(v_job);
    update jobsys.job_progress_marks m set notified_at = clock_timestamp(), sent = v_payload
    where m.job_id = (select k.job_id from jobsys.job_progress_marks k
                      where k.job_id = v_job.id and k.sent is distinct from v_payload
                      for no key update skip locked);
    if found then
      perform jobsys.emit('jobsys:dashboard', 'job_progress', v_payload);
    end if;
  end loop;
  return jsonb_build_object('ran', true, 'rescued', v_rescued, 'offline_devices', v_stale,
                            'started_jobs', v_started, 'topped_up', v_topped, 'ended_jobs', v_ended,
                            'refit_devices', v_refit, 'purged', v_purged);
end
$$;
comment on function jobsys.maintain(boolean) is
  'Periodic upkeep (lease rescue, stale marking, starting scheduled jobs at their start_at, top-up, ending jobs past their time limit or top-up grace, ending quarantines and drains, retention at most once a minute, trailing job_progress), run from every worker heartbeat and claim loop; an advisory lock and maintenance_interval_ms make it run once per interval however many call it.';

-- Workers and devices -------------------------------------------------------------------
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

-- A worker's device report: [{"serial", "state"?, "model"?, "simulated"?, "labels"?, "vitals"?}].
-- state is what the worker sees: online, offline, error or unauthorized (adb lists the phone,
-- but this PC may not use it). disabled is an operator's decision (set_device_state), never
-- a worker's. labels: as jobsys.label_problem; vitals: as jobsys.vitals_problem. The first
-- bad device rejects the whole report with JS400 naming its serial and the rule, before
-- anything changes. DeviceReport in jobsys/models.py checks the same bounds.
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

-- Operators: devices -------------------------------------------------------------------
-- One device as operators see it (the shape of list_devices' entries). p_cutoff:
-- jobsys.healthy_cutoff().
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

-- Put the run a device is running back in the queue (as a release: attempt + 1, or by
-- the attempt rule of lease expiry when p_count_attempt), free the device and tell its
-- worker to stop the run (run_stopped; the heartbeat's stop list is the polling path).
-- Returns the run, or null when the device runs none. Lock order: the job of the run,
-- the run, then the device; under the job lock the run cannot end, so a run still
-- running is still the device's.
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

-- What an operator decides about a device. p_state:
--   disabled: no new runs; the run it is running stops (back to the queue, not counted as
--     a failure) and its queue moves to other devices (top-up);
--   draining: no new runs and its queue moves on, but the run it is running finishes; then
--     it is disabled (by maintain, or at once when it runs nothing);
--   enabled: back to what its worker reports (the vitals rules apply), offline without a
--     live session; ends a quarantine and its count of failures.
-- Workers cannot: a device report never changes these states (jobsys.sticky_state).
create or replace function jobsys.set_device_state(p_device_id uuid, p_state text) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz := jobsys.healthy_cutoff();
  v_device jobsys.devices;
begin
  perform jobsys.require_admin();
  if p_state is null or p_state not in ('disabled', 'draining', 'enabled') then
    perform jobsys.raise_error('JS400', 'state must be disabled, draining or enabled', '{"field": "state"}');
  end if;
  perform 1 from jobsys.devices where id = p_device_id;
  if not found then
    perform jobsys.raise_error('JS404', 'device not found', jsonb_build_object('device_id', p_device_id));
  end if;
  perform jobsys.audit(case p_state when 'disabled' then 'disable' when 'draining' then 'drain' else 'enable' end,
                       'device', p_device_id::text,
                       jsonb_build_object('serial', (select d.serial from jobsys.devices d where d.id = p_device_id)));
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
  'Admins: disable a device (no new runs; its running run goes back to the queue, its queue to other devices), drain it (its running run finishes, then it is disabled) or enable it again (back to what its worker reports; ends a quarantine). Workers cannot disable, drain or enable.';

-- Unbind a device from its worker session, e.g. a phone moved to another PC while the old
-- session still lists it. Its running run goes back to the queue by the rule of lease
-- expiry (failed after the last attempt), the old worker is told to stop it, and the next
-- registration by anyone takes the device. A run the old session claimed after this
-- keeps its device; the next registration releases it, as it releases the runs of any
-- device that arrives from another session.
create or replace function jobsys.release_device(p_device_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_device jobsys.devices;
begin
  perform jobsys.require_admin();
  perform 1 from jobsys.devices where id = p_device_id;
  if not found then
    perform jobsys.raise_error('JS404', 'device not found', jsonb_build_object('device_id', p_device_id));
  end if;
  perform jobsys.audit('release', 'device', p_device_id::text,
                       jsonb_build_object('serial', (select d.serial from jobsys.devices d where d.id = p_device_id)));
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
  'Admins: unbind a device from its worker session. Its running run goes back to the queue by the rule of lease expiry (failed after the last attempt), its worker is told to stop it, and the next registration by anyone takes the device.';

-- The devices bound to this worker session, so it can claim by device id.
create or replace function jobsys.worker_devices(p_worker_id uuid) returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform jobsys.require_worker(p_worker_id);
  return coalesce((select jsonb_agg(jsonb_build_object('id', d.id, 'serial', d.serial, 'state', d.state)
                                    order by d.serial)
                   from jobsys.devices d where d.worker_id = p_worker_id), '[]');
end
$$;
comment on function jobsys.worker_devices(uuid) is
  'Workers: the devices bound to this worker session, so it can claim by device id.';
