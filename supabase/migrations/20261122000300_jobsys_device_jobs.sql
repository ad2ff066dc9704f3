-- jobsys: the device-job state machine. One function per transition.
--
-- Lock order, followed by every function so none can deadlock another:
--   jobs (in id order) -> job_assignments -> devices.
-- Functions that run in the background (heartbeat, maintenance) take their locks with
-- SKIP LOCKED, so they never wait on a transition in flight; the row is simply handled
-- on the next round.

-- JSON shapes ---------------------------------------------------------------------------
create function jobsys.job_json(j jobsys.jobs) returns jsonb
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
    'finished_at', j.finished_at)
$$;

create function jobsys.progress_json(j jobsys.jobs) returns jsonb
  language sql immutable
  as $$
  select jsonb_build_object(
    'job_id', j.id, 'status', j.status, 'target_count', j.target_count,
    'assigned_count', j.assigned_count, 'running_count', j.running_count,
    'completed_count', j.completed_count, 'failed_count', j.failed_count,
    'cancelled_count', j.cancelled_count)
$$;

-- Workers that hold any assignment of a job (to tell them about pause/cancel/delete).
create function jobsys.job_workers(p_job_id uuid) returns setof uuid
  language sql stable
  set search_path = jobsys, pg_temp
  as $$
  select distinct d.worker_id
  from jobsys.job_assignments a join jobsys.devices d on d.id = a.device_id
  where a.job_id = p_job_id and d.worker_id is not null
$$;

create function jobsys.emit_to_job_workers(p_job_id uuid, p_event text, p_payload jsonb) returns void
  language sql
  set search_path = jobsys, pg_temp
  as $$
  select jobsys.emit(jobsys.worker_topic(w), p_event, p_payload) from jobsys.job_workers(p_job_id) w
$$;

-- Counters ------------------------------------------------------------------------------
-- The one place job counters change. The caller holds the job row lock. Completes the
-- job when completed reaches target (cancelling what is still queued), and emits
-- job_progress, throttled per job; maintain() sends the trailing event.
create function jobsys.apply_counts(
  p_job_id uuid, p_assigned integer, p_running integer, p_completed integer,
  p_failed integer, p_cancelled integer, p_force_event boolean default false)
  returns jobsys.jobs
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_now timestamptz := clock_timestamp();
  v_job jobsys.jobs;
  v_completes boolean;
  v_leftover integer;
begin
  update jobsys.jobs j set
    assigned_count = j.assigned_count + p_assigned,
    running_count = j.running_count + p_running,
    completed_count = j.completed_count + p_completed,
    failed_count = j.failed_count + p_failed,
    cancelled_count = j.cancelled_count + p_cancelled,
    updated_at = v_now
  where j.id = p_job_id
  returning j.* into v_job;

  v_completes := v_job.status in ('active', 'paused') and v_job.target_count > 0
    and v_job.completed_count >= v_job.target_count;
  if v_completes then
    with leftover as (
      update jobsys.job_assignments a set status = 'cancelled', finished_at = now(),
        error = 'job completed before this run was needed'
      where a.job_id = p_job_id and a.status in ('pending', 'paused')
      returning 1)
    select count(*) into v_leftover from leftover;
    update jobsys.jobs j set status = 'completed', finished_at = now(),
      cancelled_count = j.cancelled_count + v_leftover
    where j.id = p_job_id
    returning j.* into v_job;
  end if;

  -- Settings are read inline (not through jobsys.setting()): a plan cached with the
  -- function is far cheaper per call than a SQL function re-planned in every transaction.
  if p_force_event or v_completes or v_now - v_job.progress_notified_at >= make_interval(
       secs => (select s.value from jobsys.settings s where s.key = 'progress_event_interval_ms') / 1000.0) then
    update jobsys.jobs j set progress_notified_at = v_now where j.id = p_job_id;
    perform jobsys.emit('jobsys:dashboard', 'job_progress', jobsys.progress_json(v_job));
  end if;
  return v_job;
end
$$;

-- Distribution --------------------------------------------------------------------------
-- Assign up to p_limit eligible devices (healthy, never tried for this job), preferring
-- idle devices, then the least loaded. Set-based; one push per worker, not per
-- assignment. The caller holds the job row lock and applies the counters; that lock is
-- also why no insert here can meet an existing (job, device) row: the eligibility check
-- and the insert are one statement, run by the only transaction assigning this job.
-- p_eligible: how many devices are eligible, when the caller has just counted them.
create function jobsys.assign_devices(p_job_id uuid, p_limit integer, p_eligible integer default null)
  returns integer
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz := jobsys.healthy_cutoff();  -- once, not once per device row
  v_eligible integer := p_eligible;
  v_assigned integer;
begin
  if p_limit <= 0 then
    return 0;
  end if;
  if v_eligible is null then
    select count(*) into v_eligible
    from jobsys.devices d
    where d.state = 'online' and d.last_heartbeat_at > v_cutoff and d.worker_id is not null
      and not exists (select 1 from jobsys.job_assignments a where a.job_id = p_job_id and a.device_id = d.id);
  end if;

  if v_eligible <= p_limit then
    -- Every eligible device is chosen, so there is nothing to rank. Rows go in in device
    -- order, which keeps the index inserts close together.
    with chosen as (
      select d.id, d.worker_id
      from jobsys.devices d
      where d.state = 'online' and d.last_heartbeat_at > v_cutoff and d.worker_id is not null
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

-- Top-up: while an active job has fewer live-or-completed assignments than its target,
-- assign newly eligible devices. p_job_id null = every short active job.
create function jobsys.top_up(p_job_id uuid default null) returns integer
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
  v_added integer;
  v_total integer := 0;
begin
  for v_job in
    select * from jobsys.jobs j
    where j.status = 'active' and (p_job_id is null or j.id = p_job_id)
      and j.assigned_count - j.failed_count - j.cancelled_count < j.target_count
    order by j.id
  loop
    -- Re-read under the lock: another top-up may have filled it meanwhile.
    select * into v_job from jobsys.jobs j where j.id = v_job.id and j.status = 'active'
      for no key update skip locked;
    continue when not found;
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

-- Input checks shared by create and edit ------------------------------------------------
create function jobsys.check_title(p_title text) returns text
  language plpgsql immutable
  as $$
begin
  if p_title is null or btrim(p_title) = '' then
    perform jobsys.raise_error('JS400', 'title must not be empty', '{"field": "title"}');
  end if;
  if length(btrim(p_title)) > 200 then
    perform jobsys.raise_error('JS400', 'title must be at most 200 characters', '{"field": "title"}');
  end if;
  if p_title ~ '[[:cntrl:]]' then
    perform jobsys.raise_error('JS400', 'title must not contain control characters', '{"field": "title"}');
  end if;
  return btrim(p_title);
end
$$;

-- Default title: host and path of the URL, at most 200 characters.
create function jobsys.title_from_url(p_url text) returns text
  language sql immutable
  as $$
  select left(rtrim(coalesce(substring(p_url from '^[A-Za-z]+://([^?#]*)'), p_url), '/'), 200)
$$;

-- Create + distribute -------------------------------------------------------------------
create function jobsys.create_job(
  p_target_url text, p_duration_sec integer, p_target_type text,
  p_target_value integer default null, p_title text default null,
  p_action text default 'open_url', p_max_attempts integer default null)
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
begin
  perform jobsys.require_operator();
  if p_target_url is null or length(p_target_url) > 2048
     or p_target_url !~* '^https?://[^[:space:]/?#@]+' or p_target_url ~ '[[:space:][:cntrl:]]' then
    perform jobsys.raise_error('JS400', 'target_url must be an http or https URL of at most 2048 characters',
      '{"field": "target_url"}');
  end if;
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
  if p_target_type = 'all_devices' and p_target_value is not null then
    perform jobsys.raise_error('JS400', 'target_value must be empty for all_devices', '{"field": "target_value"}');
  elsif p_target_type = 'percentage' and (p_target_value is null or p_target_value not between 1 and 100) then
    perform jobsys.raise_error('JS400', 'percentage must be between 1 and 100', '{"field": "target_value"}');
  elsif p_target_type = 'device_count' and (p_target_value is null or p_target_value not between 1 and 100000) then
    perform jobsys.raise_error('JS400', 'device_count must be between 1 and 100000', '{"field": "target_value"}');
  end if;
  if p_max_attempts is not null and p_max_attempts not between 1 and 100 then
    perform jobsys.raise_error('JS400', 'max_attempts must be between 1 and 100', '{"field": "max_attempts"}');
  end if;
  v_title := jobsys.check_title(coalesce(nullif(btrim(p_title), ''), jobsys.title_from_url(p_target_url)));

  v_cutoff := jobsys.healthy_cutoff();  -- once, not once per device row
  select count(*) into v_healthy from jobsys.devices d
  where d.state = 'online' and d.last_heartbeat_at > v_cutoff and d.worker_id is not null;
  v_target := case p_target_type
    when 'all_devices' then v_healthy
    when 'percentage' then ceil(v_healthy * p_target_value / 100.0)::integer
    else p_target_value end;
  if v_target = 0 then
    perform jobsys.raise_error('JS409', 'no healthy device is connected to run this job on',
      jsonb_build_object('healthy_devices', 0, 'reason', 'no_devices'));
  end if;

  insert into jobsys.jobs (title, action, target_url, duration_sec, target_type, target_value,
                           target_count, max_attempts, created_by)
  values (v_title, p_action, p_target_url, p_duration_sec, p_target_type, p_target_value, v_target,
          coalesce(p_max_attempts, jobsys.setting('max_attempts')::integer), auth.uid())
  returning * into v_job;

  -- A new job has no assignments yet, so every healthy device is eligible.
  v_assigned := jobsys.assign_devices(v_job.id, v_target, v_healthy);
  v_job := jobsys.apply_counts(v_job.id, v_assigned, 0, 0, 0, 0, true);
  return jsonb_build_object('job', jobsys.job_json(v_job), 'assigned', v_assigned);
end
$$;

-- Job-level transitions -----------------------------------------------------------------
create function jobsys.lock_job(p_job_id uuid) returns jobsys.jobs
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
begin
  select * into v_job from jobsys.jobs where id = p_job_id for no key update;
  if not found then
    perform jobsys.raise_error('JS404', 'job not found', jsonb_build_object('job_id', p_job_id));
  end if;
  return v_job;
end
$$;

create function jobsys.illegal_move(p_job jobsys.jobs, p_move text) returns void
  language plpgsql
  as $$
begin
  perform jobsys.raise_error('JS409', format('cannot %s a job that is %s', p_move, p_job.status),
    jsonb_build_object('job_id', p_job.id, 'status', p_job.status, 'transition', p_move));
end
$$;

-- Pause: queued runs wait; running ones finish.
create function jobsys.pause_job(p_job_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
begin
  perform jobsys.require_operator();
  v_job := jobsys.lock_job(p_job_id);
  if v_job.status <> 'active' then
    perform jobsys.illegal_move(v_job, 'pause');
  end if;
  update jobsys.job_assignments set status = 'paused' where job_id = p_job_id and status = 'pending';
  update jobsys.jobs set status = 'paused', paused_at = now() where id = p_job_id;
  v_job := jobsys.apply_counts(p_job_id, 0, 0, 0, 0, 0, true);
  perform jobsys.emit_to_job_workers(p_job_id, 'job_paused', jsonb_build_object('job_id', p_job_id));
  return jobsys.job_json(v_job);
end
$$;

create function jobsys.resume_job(p_job_id uuid) returns jsonb
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
  update jobsys.job_assignments set status = 'pending' where job_id = p_job_id and status = 'paused';
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

-- Cancel: everything not finished is cancelled now; workers stop what is running.
create function jobsys.cancel_job(p_job_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
  v_cancelled integer;
  v_running integer;
begin
  perform jobsys.require_operator();
  v_job := jobsys.lock_job(p_job_id);
  if v_job.status not in ('active', 'paused') then
    perform jobsys.illegal_move(v_job, 'cancel');
  end if;
  with stopped as (
    update jobsys.job_assignments a set status = 'cancelled', finished_at = now(),
      lease_expires_at = null, error = 'job cancelled'
    from (select id, status as old_status from jobsys.job_assignments
          where job_id = p_job_id and status in ('pending', 'paused', 'running')) old
    where a.id = old.id
    returning a.id, a.device_id, old.old_status
  ), freed as (
    update jobsys.devices d set running_assignment_id = null
    from stopped s where d.id = s.device_id and d.running_assignment_id = s.id
    returning 1
  )
  select count(*), count(*) filter (where old_status = 'running')
    into v_cancelled, v_running
  from stopped, (select count(*) from freed) as force_freed;
  update jobsys.jobs set status = 'cancelled', finished_at = now() where id = p_job_id;
  v_job := jobsys.apply_counts(p_job_id, 0, -v_running, 0, 0, v_cancelled, true);
  perform jobsys.emit_to_job_workers(p_job_id, 'job_cancelled',
    jsonb_build_object('job_id', p_job_id, 'reason', 'cancelled'));
  return jobsys.job_json(v_job);
end
$$;

create function jobsys.delete_job(p_job_id uuid) returns void
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform jobsys.require_operator();
  perform jobsys.lock_job(p_job_id);
  -- Tell workers before the rows that name them are gone; delivered at commit.
  perform jobsys.emit_to_job_workers(p_job_id, 'job_cancelled',
    jsonb_build_object('job_id', p_job_id, 'reason', 'deleted'));
  delete from jobsys.jobs where id = p_job_id;  -- assignments cascade; devices are freed
  perform jobsys.emit('jobsys:dashboard', 'job_deleted', jsonb_build_object('job_id', p_job_id));
end
$$;

create function jobsys.update_job_title(p_job_id uuid, p_title text) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_title text := jobsys.check_title(p_title);
begin
  perform jobsys.require_operator();
  perform jobsys.lock_job(p_job_id);
  update jobsys.jobs set title = v_title where id = p_job_id;
  return jobsys.job_json(jobsys.apply_counts(p_job_id, 0, 0, 0, 0, 0, true));
end
$$;

-- Assignment-level transitions (workers) ------------------------------------------------
-- Where an assignment goes when its run ends without a result: back to the queue while
-- attempts remain (paused if the job is paused), failed after the last attempt.
create function jobsys.requeue_status(p_job_status text, p_attempt integer, p_max_attempts integer)
  returns text
  language sql immutable
  as $$
  select case
    when p_job_status not in ('active', 'paused') then 'cancelled'
    when p_attempt >= p_max_attempts then 'failed'
    when p_job_status = 'paused' then 'paused'
    else 'pending' end
$$;

-- Claim: for each free online device of the worker (or those listed), its oldest pending
-- assignment. Locks the jobs first, then SKIP LOCKED on assignments and devices, so a
-- claim never waits on another claim's rows.
create function jobsys.claim_assignments(
  p_worker_id uuid, p_device_ids uuid[] default null, p_limit integer default null)
  returns table (assignment_id bigint, attempt integer, job_id uuid, device_id uuid, serial text,
                 action text, target_url text, duration_sec integer, lease_expires_at timestamptz)
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_jobs uuid[];
  v_claimed bigint[];
  v_row record;
begin
  perform jobsys.require_worker(p_worker_id);
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

  with free as (
    select d.id from jobsys.devices d
    where d.worker_id = p_worker_id and d.state = 'online' and d.running_assignment_id is null
      and (p_device_ids is null or d.id = any(p_device_ids))
    for no key update skip locked
  ), picked as (
    select q.id, f.id as device_id
    from free f
    cross join lateral (
      select a.id from jobsys.job_assignments a
      where a.device_id = f.id and a.status = 'pending' and a.job_id = any(v_jobs)
      order by a.id limit 1
      for no key update skip locked) q
    limit coalesce(p_limit, 2147483647)
  ), devices_taken as (
    update jobsys.devices d set running_assignment_id = p.id
    from picked p where d.id = p.device_id
    returning d.id
  ), claimed as (
    update jobsys.job_assignments a set status = 'running', worker_id = p_worker_id,
      claimed_at = now(), started_at = null,
      lease_expires_at = now() + make_interval(
        secs => (select s.value from jobsys.settings s where s.key = 'claim_lease_sec')::double precision)
    from picked p where a.id = p.id
    returning a.id
  )
  select array_agg(c.id) into v_claimed from claimed c, (select count(*) from devices_taken) as force_taken;
  if v_claimed is null then
    return;
  end if;

  for v_row in
    select a.job_id as id, count(*) as n from jobsys.job_assignments a
    where a.id = any(v_claimed) group by a.job_id order by a.job_id
  loop
    perform jobsys.apply_counts(v_row.id, 0, v_row.n::integer, 0, 0, 0);
  end loop;

  return query
  select a.id, a.attempt, a.job_id, a.device_id, d.serial, j.action, j.target_url, j.duration_sec,
         a.lease_expires_at
  from jobsys.job_assignments a
  join jobsys.jobs j on j.id = a.job_id
  join jobsys.devices d on d.id = a.device_id
  where a.id = any(v_claimed)
  order by a.id;
end
$$;

-- Look up an assignment for a worker-side transition and check the caller may touch it.
create function jobsys.assignment_for_worker(p_assignment_id bigint) returns jobsys.job_assignments
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

-- The run this worker holds has moved on (lease expired and re-queued, job cancelled...).
create function jobsys.raise_stale(p_assignment_id bigint, p_attempt integer) returns void
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

-- Start: the device began the action; the lease now covers its duration plus grace.
create function jobsys.start_assignment(p_assignment_id bigint, p_attempt integer) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_lease timestamptz;
begin
  perform jobsys.assignment_for_worker(p_assignment_id);
  update jobsys.job_assignments a set started_at = now(),
    lease_expires_at = now() + make_interval(
      secs => (j.duration_sec + (select s.value from jobsys.settings s where s.key = 'lease_grace_sec'))::double precision)
  from jobsys.jobs j
  where a.id = p_assignment_id and a.attempt = p_attempt and a.status = 'running' and j.id = a.job_id
  returning a.lease_expires_at into v_lease;
  if not found then
    perform jobsys.raise_stale(p_assignment_id, p_attempt);
  end if;
  return jsonb_build_object('assignment_id', p_assignment_id, 'lease_expires_at', v_lease);
end
$$;

-- Finish a run with compare-and-set on status + attempt, so a late report after a rescue
-- never counts twice. p_outcome: completed | failed | retry (re-queue while attempts
-- remain) | release (back to the queue, e.g. the worker shuts down).
create function jobsys.finish_run(
  p_assignment_id bigint, p_attempt integer, p_outcome text, p_result jsonb, p_error text)
  returns jobsys.job_assignments
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_a jobsys.job_assignments := jobsys.assignment_for_worker(p_assignment_id);
  v_job jobsys.jobs := jobsys.lock_job(v_a.job_id);
  v_status text;
begin
  v_status := case p_outcome
    when 'completed' then 'completed'
    when 'failed' then 'failed'
    when 'retry' then jobsys.requeue_status(v_job.status, p_attempt, v_job.max_attempts)
    when 'release' then jobsys.requeue_status(v_job.status, 0, 1)
  end;
  if v_status is null then
    perform jobsys.raise_error('JS400', 'unknown outcome', jsonb_build_object('outcome', p_outcome));
  end if;
  update jobsys.job_assignments a set
    status = v_status,
    attempt = case when v_status in ('pending', 'paused') then a.attempt + 1 else a.attempt end,
    finished_at = case when v_status in ('completed', 'failed', 'cancelled') then now() end,
    lease_expires_at = null,
    result = coalesce(p_result, a.result),
    error = p_error
  where a.id = p_assignment_id and a.attempt = p_attempt and a.status = 'running'
  returning a.* into v_a;
  if not found then
    perform jobsys.raise_stale(p_assignment_id, p_attempt);
  end if;
  update jobsys.devices set running_assignment_id = null
  where id = v_a.device_id and running_assignment_id = v_a.id;
  perform jobsys.apply_counts(v_job.id, 0, -1, (v_status = 'completed')::integer,
    (v_status = 'failed')::integer, (v_status = 'cancelled')::integer);
  if v_status = 'failed' then
    perform jobsys.top_up(v_job.id);  -- another device replaces the failed run
  end if;
  return v_a;
end
$$;

create function jobsys.run_json(a jobsys.job_assignments) returns jsonb
  language sql immutable
  as $$
  select jsonb_build_object('assignment_id', a.id, 'job_id', a.job_id, 'device_id', a.device_id,
    'status', a.status, 'attempt', a.attempt)
$$;

-- plpgsql rather than SQL: a SQL-language security definer function is parsed and planned
-- again in every transaction; plpgsql keeps its plans for the session. The run is held in a
-- variable so that run_json() can be inlined (it cannot be around a volatile call).
create function jobsys.complete_assignment(
  p_assignment_id bigint, p_attempt integer, p_result jsonb default '{}')
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_a jobsys.job_assignments := jobsys.finish_run(p_assignment_id, p_attempt, 'completed', p_result, null);
begin
  return jobsys.run_json(v_a);
end
$$;

-- Fail a run. p_retry: re-queue on the same device while attempts remain.
create function jobsys.fail_assignment(
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

-- Release runs a worker will not finish (graceful shutdown): back to the queue.
create function jobsys.release_assignment(p_assignment_id bigint, p_attempt integer,
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

-- Lease rescue --------------------------------------------------------------------------
-- An expired lease returns the run to the queue with attempt + 1 (failed after the last
-- attempt; top-up then replaces it). Compare-and-set on status + attempt.
create function jobsys.rescue_expired_leases() returns integer
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
      select a.id, a.attempt from jobsys.job_assignments a
      where a.job_id = v_job_id and a.status = 'running' and a.lease_expires_at < now()
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

-- Unhealthy devices give up their queue -------------------------------------------------
-- Pending and paused runs on devices that are not healthy are released (removed) so that
-- top-up can place them on healthy devices; the device may be chosen again once healthy.
create function jobsys.release_unhealthy_queues() returns integer
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
      and (d.state <> 'online' or d.last_heartbeat_at <= v_cutoff or d.worker_id is null)
    order by a.job_id
  loop
    perform 1 from jobsys.jobs where id = v_job_id for no key update skip locked;
    continue when not found;
    with released as (
      delete from jobsys.job_assignments a
      using jobsys.devices d
      where a.job_id = v_job_id and d.id = a.device_id and a.status in ('pending', 'paused')
        and (d.state <> 'online' or d.last_heartbeat_at <= v_cutoff or d.worker_id is null)
      returning 1)
    select count(*) into v_n from released;
    continue when v_n = 0;
    perform jobsys.apply_counts(v_job_id, -v_n, 0, 0, 0, 0);
    v_total := v_total + v_n;
  end loop;
  return v_total;
end
$$;

-- Workers and devices whose heartbeat is older than stale_after_sec become offline.
create function jobsys.mark_stale() returns integer
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
                   where state = 'online' and last_heartbeat_at <= v_cutoff
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

-- Periodic work, run from every worker's heartbeat and claim loop; the advisory lock
-- and the interval make it run once per interval however many call it.
create function jobsys.maintain(p_force boolean default false) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_rescued integer;
  v_stale integer;
  v_topped integer;
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
  v_topped := jobsys.top_up();
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
                            'topped_up', v_topped);
end
$$;

-- Workers and devices -------------------------------------------------------------------
-- Bring the worker's device list in line with what it reports: p_devices is
-- [{"serial", "state"?, "model"?, "simulated"?, "labels"?}]. A device that arrives from
-- another worker session releases at once what that session was running on it.
-- Devices of this worker that are not reported become offline.
create function jobsys.sync_devices(p_worker_id uuid, p_devices jsonb) returns integer
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job_id uuid;
  v_n integer;
  v_changed integer;
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
    perform jobsys.lock_job(v_job_id);
    with moved as (
      update jobsys.job_assignments a set
        status = jobsys.requeue_status(j.status, 0, 1), attempt = a.attempt + 1,
        lease_expires_at = null, error = 'device re-registered by a new worker session'
      from jobsys.devices d, jobsys.jobs j
      where a.job_id = v_job_id and j.id = v_job_id and a.status = 'running'
        and d.running_assignment_id = a.id and d.worker_id is distinct from p_worker_id
        and d.serial in (select e ->> 'serial' from jsonb_array_elements(p_devices) e)
      returning a.status)
    select count(*) into v_n from moved;
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
      running_assignment_id = case when d.worker_id is distinct from excluded.worker_id
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

create function jobsys.register_worker(p_name text, p_hostname text default '',
  p_devices jsonb default '[]')
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_worker jobsys.workers;
  v_role text := jobsys.caller_role();
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
  perform jobsys.sync_devices(v_worker.id, coalesce(p_devices, '[]'));
  return jsonb_build_object(
    'worker_id', v_worker.id,
    'topic', jobsys.worker_topic(v_worker.id),
    'devices', coalesce((select jsonb_agg(jsonb_build_object('id', d.id, 'serial', d.serial,
                                                             'state', d.state) order by d.serial)
                         from jobsys.devices d where d.worker_id = v_worker.id), '[]'));
end
$$;

-- Heartbeat: the worker and its devices are alive; running leases are extended. Returns
-- the runs in p_running that the worker must stop (cancelled, deleted or moved on): the
-- polling path for cancellation when push is down.
create function jobsys.heartbeat(p_worker_id uuid, p_devices jsonb default null,
  p_running bigint[] default null)
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_stop bigint[];
begin
  perform jobsys.require_worker(p_worker_id);
  update jobsys.workers set last_heartbeat_at = now(), status = 'online' where id = p_worker_id;
  if not found then
    perform jobsys.raise_error('JS404', 'worker session not found; register again',
      jsonb_build_object('worker_id', p_worker_id));
  end if;

  update jobsys.job_assignments a set lease_expires_at = greatest(a.lease_expires_at,
      now() + make_interval(secs => jobsys.setting('heartbeat_lease_sec')::double precision))
  where a.id in (select a2.id from jobsys.job_assignments a2
                 join jobsys.devices d on d.running_assignment_id = a2.id
                 where d.worker_id = p_worker_id and a2.status = 'running'
                 for no key update of a2 skip locked);

  if p_devices is not null then
    perform jobsys.sync_devices(p_worker_id, p_devices);
  else
    update jobsys.devices d set last_heartbeat_at = now()
    where d.id in (select id from jobsys.devices where worker_id = p_worker_id
                   for no key update skip locked);
  end if;

  select array_agg(r.id order by r.id) into v_stop
  from unnest(coalesce(p_running, '{}')) as r(id)
  where not exists (select 1 from jobsys.job_assignments a
                    join jobsys.devices d on d.id = a.device_id
                    where a.id = r.id and a.status = 'running' and d.worker_id = p_worker_id);
  return jsonb_build_object('stop', coalesce(to_jsonb(v_stop), '[]'),
                            'maintenance', jobsys.maintain());
end
$$;

-- A worker stopping cleanly: its devices go offline and their queues move elsewhere.
create function jobsys.stop_worker(p_worker_id uuid) returns void
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform jobsys.require_worker(p_worker_id);
  update jobsys.workers set status = 'stopped' where id = p_worker_id;
  if not found then
    perform jobsys.raise_error('JS404', 'worker session not found', jsonb_build_object('worker_id', p_worker_id));
  end if;
  update jobsys.devices set state = 'offline' where worker_id = p_worker_id and state = 'online';
  perform jobsys.emit('jobsys:dashboard', 'device_status', jsonb_build_object('worker_id', p_worker_id));
  perform jobsys.release_unhealthy_queues();
  perform jobsys.top_up();
end
$$;

-- Reads for the dashboard and API -------------------------------------------------------
-- p_cutoff: jobsys.healthy_cutoff(), computed once by the caller rather than once per device.
create function jobsys.device_status(d jobsys.devices, p_cutoff timestamptz) returns text
  language sql stable
  set search_path = jobsys, pg_temp
  as $$
  select case
    when d.state = 'disabled' then 'disabled'
    when d.state = 'error' then 'error'
    when d.state = 'offline' or d.worker_id is null or d.last_heartbeat_at <= p_cutoff then 'offline'
    when d.running_assignment_id is not null then 'busy'
    else 'idle' end
$$;

create function jobsys.list_jobs(p_status text default null, p_q text default null,
  p_limit integer default 100, p_offset integer default 0)
  returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform jobsys.require_operator();
  if p_status is not null and p_status not in ('active', 'paused', 'completed', 'cancelled') then
    perform jobsys.raise_error('JS400', 'status must be active, paused, completed or cancelled', '{"field": "status"}');
  end if;
  if p_limit is null or p_limit not between 1 and 1000 or p_offset is null or p_offset < 0 then
    perform jobsys.raise_error('JS400', 'limit must be 1-1000 and offset at least 0', '{"field": "limit"}');
  end if;
  return (
    select jsonb_build_object(
      'jobs', coalesce((select jsonb_agg(jobsys.job_json(j) order by j.created_at desc, j.id)
                        from (select * from jobsys.jobs j
                              where (p_status is null or j.status = p_status)
                                and (p_q is null or j.title ilike '%' || p_q || '%' or j.target_url ilike '%' || p_q || '%')
                              order by j.created_at desc, j.id
                              limit p_limit offset p_offset) j), '[]'),
      'summary', (select jsonb_build_object(
                    'total', count(*),
                    'active', count(*) filter (where status = 'active'),
                    'paused', count(*) filter (where status = 'paused'),
                    'completed', count(*) filter (where status = 'completed'),
                    'cancelled', count(*) filter (where status = 'cancelled'))
                  from jobsys.jobs)));
end
$$;

create function jobsys.get_job(p_job_id uuid) returns jsonb
  language plpgsql stable security definer
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
  return jobsys.job_json(v_job) || jsonb_build_object('assignments', coalesce((
    select jsonb_agg(jsonb_build_object(
      'id', a.id, 'device_id', a.device_id, 'serial', d.serial, 'worker_id', d.worker_id,
      'status', a.status, 'attempt', a.attempt, 'lease_expires_at', a.lease_expires_at,
      'created_at', a.created_at, 'started_at', a.started_at, 'finished_at', a.finished_at,
      'result', a.result, 'error', a.error) order by d.serial)
    from jobsys.job_assignments a join jobsys.devices d on d.id = a.device_id
    where a.job_id = p_job_id), '[]'));
end
$$;

create function jobsys.list_devices() returns jsonb
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
        'current_job_id', r.current_job_id, 'last_heartbeat_at', r.last_heartbeat_at)
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
