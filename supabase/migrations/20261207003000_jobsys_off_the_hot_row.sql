-- jobsys: issue 22, off the hot job row. Claims and finishes hold their jobs FOR SHARE and
-- count their runs in job_run_counts (one row per job and worker session) instead of
-- updating the job row, so the runs of one job on many workers no longer queue on it.
-- Readers add the two up (jobsys.counted); the job_progress throttle moves to
-- job_progress_marks; the finish that meets the target completes the job when no other claim
-- or finish of it is in flight, else the next upkeep (settle_jobs) does.

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

create table jobsys.job_progress_marks (
  job_id uuid primary key references jobsys.jobs (id) on delete cascade,
  notified_at timestamptz not null default '-infinity'
);
comment on table jobsys.job_progress_marks is
  'When the last job_progress event of each job went out, for the per-job throttle (progress_event_interval_ms).';
insert into jobsys.job_progress_marks (job_id, notified_at) select id, progress_notified_at from jobsys.jobs;

alter table jobsys.job_run_counts enable row level security;
alter table jobsys.job_progress_marks enable row level security;  -- no policy: the throttle's bookkeeping
create policy job_run_counts_operator_read on jobsys.job_run_counts for select to authenticated
  using (jobsys.is_staff());
grant select on jobsys.job_run_counts, jobsys.job_progress_marks to authenticated;
grant all on jobsys.job_run_counts, jobsys.job_progress_marks to service_role;

-- A part of the counters alone may now be below zero (a run claimed into job_run_counts,
-- rescued on the row): the bounds hold for the sums, which the tests check.
alter table jobsys.jobs drop constraint jobs_counters_check;
comment on table jobsys.jobs is
  'Device jobs: open a URL on all, a percentage or a number of the healthy devices for duration_sec. The exact counters are these plus the job''s job_run_counts (jobsys.counted), changed in the transaction of each transition.';

-- job_json and progress_json take the row as stored and count it themselves (a parameter
-- cannot be renamed in place).
drop function jobsys.job_json(jobsys.jobs);
drop function jobsys.progress_json(jobsys.jobs);

create or replace function jobsys.counted(p_job jobsys.jobs) returns jobsys.jobs
  language plpgsql stable
  set search_path = jobsys, pg_temp
  as $$
declare
  v_runs record;
begin
  select coalesce(sum(r.running), 0) as running, coalesce(sum(r.completed), 0) as completed,
         coalesce(sum(r.failed), 0) as failed, coalesce(sum(r.cancelled), 0) as cancelled,
         max(r.changed_at) as changed_at
    into v_runs
  from jobsys.job_run_counts r where r.job_id = p_job.id;
  p_job.running_count := p_job.running_count + v_runs.running;
  p_job.completed_count := p_job.completed_count + v_runs.completed;
  p_job.failed_count := p_job.failed_count + v_runs.failed;
  p_job.cancelled_count := p_job.cancelled_count + v_runs.cancelled;
  p_job.updated_at := greatest(p_job.updated_at, v_runs.changed_at);
  return p_job;
end
$$;
comment on function jobsys.counted(jobsys.jobs) is
  'A job with its exact counters: the stored row plus its job_run_counts (what claims and finishes changed). Give it the row as stored.';

create or replace function jobsys.notify_progress(p_job jobsys.jobs, p_force boolean) returns void
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_now timestamptz := clock_timestamp();
begin
  if p_force then
    insert into jobsys.job_progress_marks as m (job_id, notified_at) values (p_job.id, v_now)
    on conflict (job_id) do update set notified_at = v_now;
  else
    -- Settings are read inline (not through jobsys.setting()): a plan cached with the
    -- function is far cheaper per call than a SQL function re-planned in every transaction.
    update jobsys.job_progress_marks m set notified_at = v_now
    where m.job_id = (select d.job_id from jobsys.job_progress_marks d
                      where d.job_id = p_job.id and d.notified_at <= v_now - make_interval(
                        secs => (select s.value from jobsys.settings s
                                 where s.key = 'progress_event_interval_ms') / 1000.0)
                      for no key update skip locked);
    if not found then
      return;
    end if;
  end if;
  perform jobsys.emit('jobsys:dashboard', 'job_progress', jobsys.progress_json(p_job));
end
$$;
comment on function jobsys.notify_progress(jobsys.jobs, boolean) is
  'Sends job_progress for a job: always when forced, else at most every progress_event_interval_ms per job (the job that is due is taken with SKIP LOCKED, so concurrent finishes never wait on it).';

create or replace function jobsys.job_json(p_job jobsys.jobs) returns jsonb
  language sql stable
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
  from jobsys.counted(p_job) j
$$;
comment on function jobsys.job_json(jobsys.jobs) is
  'The JSON shape of a job in the API, with its exact counters (jobsys.counted: give it the row as stored). waiting_for_devices: short by N while an active job waits out its top-up grace; start_at: when a scheduled job starts.';

create or replace function jobsys.progress_json(p_job jobsys.jobs) returns jsonb
  language sql stable
  as $$
  select jsonb_build_object(
    'job_id', j.id, 'status', j.status, 'end_reason', j.end_reason, 'target_count', j.target_count,
    'assigned_count', j.assigned_count, 'running_count', j.running_count,
    'completed_count', j.completed_count, 'failed_count', j.failed_count,
    'cancelled_count', j.cancelled_count,
    'waiting_for_devices', case when j.status = 'active' and j.waiting_since is not null
                                then greatest(j.target_count - j.completed_count, 0) end)
  from jobsys.counted(p_job) j
$$;
comment on function jobsys.progress_json(jobsys.jobs) is
  'The payload of the job_progress event: the job status, its end reason and exact counters (give it the row as stored), and how many devices it waits for.';

create or replace function jobsys.apply_counts(
  p_job_id uuid, p_assigned integer, p_running integer, p_completed integer,
  p_failed integer, p_cancelled integer, p_force_event boolean default false)
  returns jobsys.jobs
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
  v_exact jobsys.jobs;
  v_completes boolean;
  v_leftover integer;
begin
  update jobsys.jobs j set
    assigned_count = j.assigned_count + p_assigned,
    running_count = j.running_count + p_running,
    completed_count = j.completed_count + p_completed,
    failed_count = j.failed_count + p_failed,
    cancelled_count = j.cancelled_count + p_cancelled,
    -- New runs end a wait for devices (jobsys.settle_jobs starts it again if they all end short).
    waiting_since = case when p_assigned > 0 then null else j.waiting_since end,
    updated_at = clock_timestamp()
  where j.id = p_job_id
  returning j.* into v_job;

  v_exact := jobsys.counted(v_job);
  v_completes := v_job.status in ('active', 'paused') and v_exact.target_count > 0
    and v_exact.completed_count >= v_exact.target_count;
  if v_completes then
    with leftover as (
      update jobsys.job_assignments a set status = 'cancelled', finished_at = now(),
        error = 'job completed before this run was needed'
      where a.job_id = p_job_id and a.status in ('pending', 'paused')
      returning 1)
    select count(*) into v_leftover from leftover;
    update jobsys.jobs j set status = 'completed', finished_at = now(), waiting_since = null,
      cancelled_count = j.cancelled_count + v_leftover
    where j.id = p_job_id
    returning j.* into v_job;
  end if;
  perform jobsys.notify_progress(v_job, p_force_event or v_completes);
  return v_job;
end
$$;
comment on function jobsys.apply_counts(uuid, integer, integer, integer, integer, integer, boolean) is
  'Changes the counters of the job row (the caller holds the job row lock; claims and finishes use jobsys.count_runs). Completes the job when its exact completed count meets the target, cancelling what is still queued, ends a wait for devices when runs are added, and emits job_progress, throttled per job.';

create or replace function jobsys.count_runs(p_job_id uuid, p_worker_id uuid, p_running integer,
  p_completed integer, p_failed integer, p_cancelled integer)
  returns void
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
  v_exact jobsys.jobs;
begin
  insert into jobsys.job_run_counts as r (job_id, worker_id, running, completed, failed, cancelled)
  values (p_job_id, p_worker_id, p_running, p_completed, p_failed, p_cancelled)
  on conflict (job_id, worker_id) do update set
    running = r.running + excluded.running, completed = r.completed + excluded.completed,
    failed = r.failed + excluded.failed, cancelled = r.cancelled + excluded.cancelled,
    changed_at = excluded.changed_at;
  select * into v_job from jobsys.jobs j where j.id = p_job_id;
  if p_completed > 0 and v_job.status in ('active', 'paused') then
    v_exact := jobsys.counted(v_job);
    if v_exact.target_count > 0 and v_exact.completed_count >= v_exact.target_count then
      perform 1 from jobsys.jobs j where j.id = p_job_id for no key update skip locked;
      if found then
        perform jobsys.apply_counts(p_job_id, 0, 0, 0, 0, 0);
        return;
      end if;
    end if;
  end if;
  perform jobsys.notify_progress(v_job, false);
end
$$;
comment on function jobsys.count_runs(uuid, uuid, integer, integer, integer, integer) is
  'Claims and finishes count their runs in the row of their job and worker session (the caller holds the job row FOR SHARE), so the runs of one job on many workers never queue on one row. Completes the job when the target is met and no other claim or finish of it is in flight (else the next upkeep does), and emits job_progress, throttled.';

create or replace function jobsys.top_up(p_job_id uuid default null) returns integer
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
  v_added integer;
  v_total integer := 0;
begin
  for v_job in
    select c.* from jobsys.jobs j cross join lateral jobsys.counted(j) c
    where j.status = 'active' and (p_job_id is null or j.id = p_job_id)
      and c.assigned_count - c.failed_count - c.cancelled_count < c.target_count
    order by j.id
  loop
    -- Re-read under the lock: another top-up may have filled it meanwhile. A claim or
    -- finish of it in flight holds it FOR SHARE: the next upkeep tops it up.
    select * into v_job from jobsys.jobs j where j.id = v_job.id and j.status = 'active'
      for no key update skip locked;
    continue when not found;
    v_job := jobsys.counted(v_job);
    v_added := jobsys.assign_devices(v_job.id,
      v_job.target_count - (v_job.assigned_count - v_job.failed_count - v_job.cancelled_count));
    if v_added > 0 then
      perform jobsys.apply_counts(v_job.id, v_added, 0, 0, 0, 0);
      v_total := v_total + v_added;
    end if;
  end loop;
  return v_total;
end
$$;
comment on function jobsys.top_up(uuid) is
  'While an active job has fewer live or completed assignments than its target, assigns newly eligible devices; a null p_job_id means every short active job.';

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
  perform jobsys.audit('resume', 'job', p_job_id::text);
  if v_job.start_at is not null and v_job.assigned_count = 0 then  -- assigned: the row's alone
    if v_job.start_at > now() then
      update jobsys.jobs set status = 'scheduled', paused_at = null where id = p_job_id;
      v_job := jobsys.apply_counts(p_job_id, 0, 0, 0, 0, 0, true);
    else
      v_job := jobsys.start_job(p_job_id);
    end if;
    return jobsys.job_json(v_job);
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
  v_job := jobsys.counted(v_job);
  perform jobsys.emit_to_job_workers(p_job_id, 'job_resumed', jsonb_build_object('job_id', p_job_id));
  -- Devices may have come or gone while paused.
  v_added := jobsys.assign_devices(p_job_id,
    v_job.target_count - (v_job.assigned_count - v_job.failed_count - v_job.cancelled_count));
  v_job := jobsys.apply_counts(p_job_id, v_added, 0, 0, 0, 0, true);
  return jobsys.job_json(v_job);
end
$$;
comment on function jobsys.resume_job(uuid) is
  'Operators: resume a paused job. Its runs are pending again (their devices queue floors come down to them) and devices that came while it was paused are assigned. A job paused before its start_at is scheduled again (or starts, if start_at has passed).';

create or replace function jobsys.delete_job(p_job_id uuid) returns void
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
begin
  perform jobsys.require_operator();
  v_job := jobsys.lock_job(p_job_id);
  v_job := jobsys.counted(v_job);
  perform jobsys.audit('delete', 'job', p_job_id::text, jsonb_build_object(
    'title', v_job.title, 'status', v_job.status, 'completed', v_job.completed_count, 'failed', v_job.failed_count));
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
      jsonb_build_object('job_id', p_job_id, 'status', v_job.status, 'transition', 'retry'));
  end if;
  if (jobsys.counted(v_job)).failed_count = 0 then
    perform jobsys.raise_error('JS409', 'nothing to retry: no run of this job failed',
      jsonb_build_object('job_id', p_job_id, 'status', v_job.status, 'transition', 'retry'));
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
    and (p_device_ids is null or d.id = any(p_device_ids))
    and (d.reboot_requested_at is null or d.reboot_requested_at < now() - interval '10 minutes');
  if v_jobs is null then
    return;
  end if;
  perform 1 from jobsys.jobs j where j.id = any(v_jobs) and j.status = 'active'
    order by j.id for share;

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
        -- a phone about to reboot takes nothing new (request_device_reboot; the worker answers)
        and (d.reboot_requested_at is null or d.reboot_requested_at < now() - interval '10 minutes')
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
  'Workers: claim for each free online device of the worker (or those listed) its oldest pending assignment, from the device queue floor up; p_start starts the runs at once. Holds the jobs FOR SHARE first, then SKIP LOCKED on assignments and devices, so a claim never waits on another claim.';

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
  -- Lock order: the runs' jobs first, in id order; FOR SHARE, as a claim (count_runs).
  perform 1 from jobsys.jobs j
  where j.id = any(array(select a.job_id from jobsys.job_assignments a where a.id = any(v_ids)))
  order by j.id for share;

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
    perform jobsys.count_runs(v_row.job_id, p_worker_id, -v_row.n, v_row.completed, v_row.failed,
                              v_row.cancelled);
    if v_row.failed > 0 then
      perform jobsys.top_up(v_row.job_id);  -- other devices replace the failed runs (or the next upkeep)
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
  'Finishes runs of one worker in one transaction, with one counter update per job (jobsys.count_runs). Compare-and-set on worker, status and attempt, so a late report after a rescue never counts twice: it comes back as stale. Counts failures in a row per device and quarantines the flaky ones (jobsys.quarantine_flaky).';

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
  -- Trailing job_progress for jobs whose last change fell inside a throttle window.
  for v_job in
    select j.* from jobsys.jobs j join jobsys.job_progress_marks m on m.job_id = j.id
    where j.status in ('active', 'paused')
      and (j.updated_at > m.notified_at
           or exists (select 1 from jobsys.job_run_counts r where r.job_id = j.id and r.changed_at > m.notified_at))
    for no key update of m skip locked
  loop
    update jobsys.job_progress_marks set notified_at = clock_timestamp() where job_id = v_job.id;
    perform jobsys.emit('jobsys:dashboard', 'job_progress', jobsys.progress_json(v_job));
  end loop;
  return jsonb_build_object('ran', true, 'rescued', v_rescued, 'offline_devices', v_stale,
                            'started_jobs', v_started, 'topped_up', v_topped, 'ended_jobs', v_ended,
                            'refit_devices', v_refit, 'purged', v_purged);
end
$$;
comment on function jobsys.maintain(boolean) is
  'Periodic upkeep (lease rescue, stale marking, starting scheduled jobs at their start_at, top-up, ending jobs past their time limit or top-up grace, ending quarantines and drains, retention at most once a minute, trailing job_progress), run from every worker heartbeat and claim loop; an advisory lock and maintenance_interval_ms make it run once per interval however many call it.';

create or replace function jobsys.metrics_snapshot() returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz := jobsys.healthy_cutoff();
begin
  perform jobsys.require_viewer();
  return jsonb_build_object(
    'jobs', coalesce((select jsonb_object_agg(x.status, x.n) from (
               select status, count(*) as n from jobsys.jobs group by status) x), '{}'),
    -- The jobs' rows plus their job_run_counts (jobsys.counted), summed apart.
    'runs', (select jsonb_build_object(
               'queued', j.assigned - j.running - j.completed - j.failed - j.cancelled
                         - r.running - r.completed - r.failed - r.cancelled,
               'running', j.running + r.running, 'completed', j.completed + r.completed,
               'failed', j.failed + r.failed, 'cancelled', j.cancelled + r.cancelled)
             from (select coalesce(sum(assigned_count), 0) as assigned, coalesce(sum(running_count), 0) as running,
                          coalesce(sum(completed_count), 0) as completed, coalesce(sum(failed_count), 0) as failed,
                          coalesce(sum(cancelled_count), 0) as cancelled from jobsys.jobs) j,
                  (select coalesce(sum(running), 0) as running, coalesce(sum(completed), 0) as completed,
                          coalesce(sum(failed), 0) as failed, coalesce(sum(cancelled), 0) as cancelled
                   from jobsys.job_run_counts) r),
    'devices', coalesce((select jsonb_agg(jsonb_build_object('pc', x.pc, 'status', x.status, 'n', x.n)) from (
               select coalesce(w.name, '') as pc, jobsys.device_status(d, v_cutoff) as status, count(*) as n
               from jobsys.devices d left join jobsys.workers w on w.id = d.worker_id
               group by 1, 2) x), '[]'),
    'vitals', coalesce((select jsonb_agg(jsonb_build_object('serial', x.serial, 'pc', x.pc,
                          'battery_pct', x.vitals -> 'battery_pct', 'temperature_c', x.vitals -> 'temperature_c')) from (
               select d.serial, coalesce(w.name, '') as pc, d.vitals
               from jobsys.devices d left join jobsys.workers w on w.id = d.worker_id
               where d.vitals is not null and d.last_heartbeat_at > v_cutoff
               order by d.serial limit jobsys.setting('metrics_device_series')::integer) x), '[]'),
    'workers', coalesce((select jsonb_agg(jsonb_build_object('name', w.name, 'push', w.meta ->> 'push'))
               from jobsys.workers w where w.status = 'online' and w.last_heartbeat_at > v_cutoff), '[]'),
    'background_jobs', coalesce((select jsonb_object_agg(x.status, x.n) from (
               select status, count(*) as n from jobsys.background_jobs group by status) x), '{}'),
    'background_items', (select jsonb_build_object(
               'pending', coalesce(sum(total_items - running_items - completed_items - failed_items
                                       - cancelled_items), 0),
               'running', coalesce(sum(running_items), 0), 'completed', coalesce(sum(completed_items), 0),
               'failed', coalesce(sum(failed_items), 0), 'cancelled', coalesce(sum(cancelled_items), 0))
             from jobsys.background_jobs));
end
$$;
comment on function jobsys.metrics_snapshot() is
  'Operators: what GET /metrics exposes from the database in one snapshot: jobs, runs, devices (by status and PC), battery and temperature of at most metrics_device_series devices, live workers'' push state, AI batches and items. Bounded label sets.';

alter table jobsys.jobs drop column progress_notified_at;

revoke execute on function jobsys.counted(jobsys.jobs), jobsys.notify_progress(jobsys.jobs, boolean),
  jobsys.job_json(jobsys.jobs), jobsys.progress_json(jobsys.jobs),
  jobsys.count_runs(uuid, uuid, integer, integer, integer, integer) from public;
