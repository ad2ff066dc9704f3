-- jobsys: review of issue 22 and 17. A claimed run of a priority other than 0 leaves the
-- device's queue floor where it was (older runs of priority 0 kept their turn); the trailing
-- job_progress is decided by content (job_progress_marks.sent), not by timestamps, so a
-- finish in flight while another transaction sent is never left out; settle_jobs counts a job
-- again once it holds it; a refused retry says why (reason nothing_failed / timed_out).

alter table jobsys.job_progress_marks add column sent jsonb;

create or replace function jobsys.notify_progress(p_job jobsys.jobs, p_force boolean) returns void
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_now timestamptz := clock_timestamp();
  v_payload jsonb;
begin
  if p_force then
    v_payload := jobsys.progress_json(p_job);
    insert into jobsys.job_progress_marks as m (job_id, notified_at, sent) values (p_job.id, v_now, v_payload)
    on conflict (job_id) do update set notified_at = v_now, sent = v_payload;
  else
    -- Settings are read inline (not through jobsys.setting()): a plan cached with the
    -- function is far cheaper per call than a SQL function re-planned in every transaction.
    update jobsys.job_progress_marks m set notified_at = v_now, sent = jobsys.progress_json(p_job)
    where m.job_id = (select d.job_id from jobsys.job_progress_marks d
                      where d.job_id = p_job.id and d.notified_at <= v_now - make_interval(
                        secs => (select s.value from jobsys.settings s
                                 where s.key = 'progress_event_interval_ms') / 1000.0)
                      for no key update skip locked)
    returning m.sent into v_payload;
    if not found then
      return;
    end if;
  end if;
  perform jobsys.emit('jobsys:dashboard', 'job_progress', v_payload);
end
$$;
comment on function jobsys.notify_progress(jobsys.jobs, boolean) is
  'Sends job_progress for a job: always when forced, else at most every progress_event_interval_ms per job (the job that is due is taken with SKIP LOCKED, so concurrent finishes never wait on it).';

create or replace function jobsys.retry_job(p_job_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
  v_retried integer;
begin
  perform jobsys.require_operator();
  v_job := jobsys.lock_job(p_job_id);
  if v_job.status not in ('active', 'paused', 'incomplete') then
    perform jobsys.illegal_move(v_job, 'retry');
  end if;
  -- Re-opened past its time limit, the job would end again at the next upkeep.
  if v_job.end_reason = 'timed_out' then
    perform jobsys.raise_error('JS409', 'the job''s time limit has passed: run it again as a new job (clone)',
      jsonb_build_object('job_id', p_job_id, 'status', v_job.status, 'transition', 'retry', 'reason', 'timed_out'));
  end if;
  if (jobsys.counted(v_job)).failed_count = 0 then
    perform jobsys.raise_error('JS409', 'nothing to retry: no run of this job failed',
      jsonb_build_object('job_id', p_job_id, 'status', v_job.status, 'transition', 'retry', 'reason', 'nothing_failed'));
  end if;
  with retried as (
    update jobsys.job_assignments a
    set status = case when v_job.status = 'paused' then 'paused' else 'pending' end,
      attempt = 1, error = null, result = null, lease_expires_at = null, claimed_at = null,
      started_at = null, finished_at = null
    where a.id = any(array(select f.id from jobsys.job_assignments f
                           where f.job_id = p_job_id and f.status = 'failed'
                           order by f.id for no key update))
    returning a.id, a.device_id
  ), lowered as (
    select d.id, min(r.id) as floor from jobsys.devices d join retried r on r.device_id = d.id
    group by d.id
  ), locked as (
    select d.id, l.floor from jobsys.devices d join lowered l on l.id = d.id
    where d.queue_floor > l.floor order by d.id for no key update of d
  ), moved as (
    update jobsys.devices d set queue_floor = k.floor from locked k where d.id = k.id
  )
  select count(*) into v_retried from retried;
  perform jobsys.audit('retry', 'job', p_job_id::text, jsonb_build_object('retried', v_retried));
  if v_job.status = 'incomplete' then
    update jobsys.jobs set status = 'active', end_reason = null, finished_at = null, waiting_since = null
    where id = p_job_id;
  end if;
  v_job := jobsys.apply_counts(p_job_id, 0, 0, 0, -v_retried, 0, true);
  perform jobsys.emit(jobsys.worker_topic(w.worker_id), 'assignment',
                      jsonb_build_object('job_id', p_job_id, 'count', w.n))
  from (select d.worker_id, count(*) as n from jobsys.job_assignments a
        join jobsys.devices d on d.id = a.device_id
        where a.job_id = p_job_id and a.status = 'pending' and d.worker_id is not null
        group by d.worker_id) w;
  return jsonb_build_object('job', jobsys.job_json(v_job), 'retried', v_retried);
end
$$;
comment on function jobsys.retry_job(uuid) is
  'Operators: re-queue the failed runs of a job (attempt series restarts at 1) and re-open an incomplete job as active; JS409 when nothing failed, or when the job ended at its time limit (clone it instead).';

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
  v_locked uuid[];
  v_claimed bigint[];
  v_devices uuid[];
  v_floors bigint[];
  v_row record;
  v_claim_lease double precision := (select s.value from jobsys.settings s where s.key = 'claim_lease_sec');
  v_grace double precision := (select s.value from jobsys.settings s where s.key = 'lease_grace_sec');
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
  select array_agg(p.assignment_id), array_agg(p.device_id), array_agg(p.floor)
    into v_claimed, v_devices, v_floors
  from (
    select q.id as assignment_id, f.id as device_id, case when q.floor then q.id else f.queue_floor end as floor
    from (
      select d.id, d.queue_floor from jobsys.devices d
      where d.worker_id = p_worker_id and d.state = 'online' and d.running_assignment_id is null
        and (p_device_ids is null or d.id = any(p_device_ids))
        -- a phone about to reboot takes nothing new (request_device_reboot; the worker answers)
        and (d.reboot_requested_at is null or d.reboot_requested_at < now() - interval '10 minutes')
      for no key update skip locked
    ) f
    cross join lateral (
      (select first.id, false as floor from (
         select a.id from jobsys.job_assignments a
         where a.device_id = f.id and a.status = 'pending'
           and a.priority <> 0 and a.priority > 0
         order by a.priority desc, a.id limit 1
         for no key update skip locked) first)
      union all
      (select above.id, true from (
         select a.id from jobsys.job_assignments a
         where a.device_id = f.id and a.status = 'pending'
           and a.id >= f.queue_floor and a.priority = 0
         order by a.id limit 1
         for no key update skip locked) above)
      union all
      (select below.id, true from (
         select a.id from jobsys.job_assignments a
         where a.device_id = f.id and a.status = 'pending'
           and a.id < f.queue_floor and a.priority = 0
         order by a.id limit 1
         for no key update skip locked) below)
      union all
      (select last.id, false from (
         select a.id from jobsys.job_assignments a
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
  v_jobs := array(select distinct a.job_id from jobsys.job_assignments a where a.id = any(v_claimed));
  v_locked := array(select j.id from jobsys.jobs j where j.id = any(v_jobs) and j.status = 'active'
                    order by j.id for share skip locked);
  if cardinality(v_locked) < cardinality(v_jobs) then
    select array_agg(x.assignment_id), array_agg(x.device_id), array_agg(x.floor)
      into v_claimed, v_devices, v_floors
    from unnest(v_claimed, v_devices, v_floors) as x(assignment_id, device_id, floor)
    where (select a.job_id from jobsys.job_assignments a where a.id = x.assignment_id) = any(v_locked);
    if v_claimed is null then
      return;
    end if;
  end if;

  update jobsys.devices d set running_assignment_id = x.assignment_id, queue_floor = x.floor
  from unnest(v_devices, v_claimed, v_floors) as x(device_id, assignment_id, floor)
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
    perform jobsys.count_runs(v_row.id, p_worker_id, v_row.n::integer, 0, 0, 0);
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
comment on function jobsys.claim_assignments(uuid, uuid[], integer, boolean) is
  'Workers: claim for each free online device of the worker (or those listed) its next pending assignment, the highest priority first, then the oldest (from the device queue floor up); p_start starts the runs at once. Devices and runs with SKIP LOCKED, then their jobs FOR SHARE SKIP LOCKED (a job in a pause, cancel or completion is left out), so a claim never waits.';

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

