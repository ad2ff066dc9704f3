-- jobsys: issue 17, device jobs that always end and say why.
--
-- * Job status incomplete with end_reason (no_eligible_devices, timed_out, max_attempts);
--   jobs.finished_at is the end time (ended_at in the API).
-- * Grace for top-up: an active job whose runs have all ended and that is still short waits
--   (waiting_since) for new eligible devices for jobs.topup_grace_sec, else the setting
--   topup_grace_sec (120 s), then ends incomplete (jobsys.settle_jobs, run by maintain()).
-- * Time limit: jobs.timeout_sec; at the limit the job ends (jobsys.end_job, shared with
--   cancel_job) completed or incomplete/timed_out.
-- * create_job takes p_timeout_sec and p_topup_grace_sec, and accepts a target_value of
--   1-100 with all_devices and ignores it (the original plan sends 100).
-- * retry_job re-queues failed runs (attempt 1) and re-opens an incomplete job; clone_job.
-- * get_job names the worker of each run (worker_name); list_jobs counts incomplete jobs.

alter table jobsys.jobs
  add column end_reason text,
  add column timeout_sec integer,
  add column topup_grace_sec integer,
  add column waiting_since timestamptz;
alter table jobsys.jobs drop constraint jobs_status_check;
alter table jobsys.jobs add constraint jobs_status_check check (
  status in ('active', 'paused', 'completed', 'incomplete', 'cancelled')
  and (end_reason is not null) = (status = 'incomplete')
  and (end_reason is null or end_reason in ('no_eligible_devices', 'timed_out', 'max_attempts')));
alter table jobsys.jobs drop constraint jobs_input_check;
alter table jobsys.jobs add constraint jobs_input_check check (
    length(title) between 1 and 200
    and action = 'open_url'
    and length(target_url) <= 2048 and target_url ~* '^https?://[^[:space:]/?#]+'
    and duration_sec between 1 and 86400
    and ((target_type = 'all_devices' and target_value is null)
         or (target_type = 'percentage' and target_value between 1 and 100)
         or (target_type = 'device_count' and target_value between 1 and 100000))
    and target_count >= 0
    and max_attempts between 1 and 100
    and (timeout_sec is null or timeout_sec between 1 and 604800)
    and (topup_grace_sec is null or topup_grace_sec between 0 and 86400));

insert into jobsys.settings (key, value, description) values
  ('topup_grace_sec', 120,
   'a job whose runs all ended short waits this long for new eligible devices, then ends incomplete');

drop function jobsys.create_job(text, integer, text, integer, text, text, integer);

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
    'timeout_sec', j.timeout_sec, 'topup_grace_sec', j.topup_grace_sec,
    'waiting_for_devices', case when j.status = 'active' and j.waiting_since is not null
                                then greatest(j.target_count - j.completed_count, 0) end,
    'waiting_since', case when j.status = 'active' then j.waiting_since end)
$$;
comment on function jobsys.job_json(jobsys.jobs) is
  'The JSON shape of a job in the API (waiting_for_devices: short by N while an active job waits out its top-up grace).';

create or replace function jobsys.progress_json(j jobsys.jobs) returns jsonb
  language sql immutable
  as $$
  select jsonb_build_object(
    'job_id', j.id, 'status', j.status, 'end_reason', j.end_reason, 'target_count', j.target_count,
    'assigned_count', j.assigned_count, 'running_count', j.running_count,
    'completed_count', j.completed_count, 'failed_count', j.failed_count,
    'cancelled_count', j.cancelled_count,
    'waiting_for_devices', case when j.status = 'active' and j.waiting_since is not null
                                then greatest(j.target_count - j.completed_count, 0) end)
$$;
comment on function jobsys.progress_json(jobsys.jobs) is
  'The payload of the job_progress event: the job status, its end reason and counters, and how many devices it waits for.';

create or replace function jobsys.apply_counts(
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
    -- New runs end a wait for devices (jobsys.settle_jobs starts it again if they all end short).
    waiting_since = case when p_assigned > 0 then null else j.waiting_since end,
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
    update jobsys.jobs j set status = 'completed', finished_at = now(), waiting_since = null,
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
comment on function jobsys.apply_counts(uuid, integer, integer, integer, integer, integer, boolean) is
  'The one place job counters change (the caller holds the job row lock). Completes the job when completed reaches target, cancelling what is still queued, ends a wait for devices when runs are added, and emits job_progress, throttled per job.';

create or replace function jobsys.create_job(
  p_target_url text, p_duration_sec integer, p_target_type text,
  p_target_value integer default null, p_title text default null,
  p_action text default 'open_url', p_max_attempts integer default null,
  p_timeout_sec integer default null, p_topup_grace_sec integer default null)
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
                           target_count, max_attempts, created_by, timeout_sec, topup_grace_sec)
  values (v_title, p_action, p_target_url, p_duration_sec, p_target_type, v_target_value, v_target,
          coalesce(p_max_attempts, jobsys.setting('max_attempts')::integer), auth.uid(),
          p_timeout_sec, p_topup_grace_sec)
  returning * into v_job;

  -- A new job has no assignments yet, so every healthy device is eligible.
  v_assigned := jobsys.assign_devices(v_job.id, v_target, v_healthy);
  v_job := jobsys.apply_counts(v_job.id, v_assigned, 0, 0, 0, 0, true);
  return jsonb_build_object('job', jobsys.job_json(v_job), 'assigned', v_assigned);
end
$$;
comment on function jobsys.create_job(text, integer, text, integer, text, text, integer, integer, integer) is
  'Operators: create a device job and distribute it to the healthy devices in the same transaction; JS409 when no healthy device is connected. Optional time limit (timeout_sec) and top-up grace (topup_grace_sec, else the setting).';

-- End a job now: its queued runs are cancelled, its running ones stopped (the workers are
-- told), and the job takes p_status (cancelled, completed or incomplete with p_end_reason).
-- The caller holds the job row lock. Lock order: the job, then all its live runs (in id
-- order), then the devices of the running ones (in id order). One statement that updated
-- each run and freed its device in turn took run 1, device 1, run 2, ... and deadlocked
-- with a heartbeat that held run 2 (its lease) and waited for device 1 (its device report).
create or replace function jobsys.end_job(p_job_id uuid, p_status text, p_end_reason text, p_error text)
  returns jobsys.jobs
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_live bigint[];
  v_devices uuid[];
  v_running integer;
begin
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
    lease_expires_at = null, error = p_error
  where a.id = any(v_live);
  update jobsys.devices d set running_assignment_id = null
  where d.id = any(v_devices) and d.running_assignment_id = any(v_live);
  update jobsys.jobs set status = p_status, end_reason = p_end_reason, finished_at = now(),
    waiting_since = null
  where id = p_job_id;
  perform jobsys.emit_to_job_workers(p_job_id, 'job_cancelled',
    jsonb_build_object('job_id', p_job_id, 'reason', coalesce(p_end_reason, p_status)));
  return jobsys.apply_counts(p_job_id, 0, -v_running, 0, 0, cardinality(v_live), true);
end
$$;
comment on function jobsys.end_job(uuid, text, text, text) is
  'Ends a job now (cancel, time limit): queued runs are cancelled, running ones stopped and their workers told, and the job takes the given status and end reason. The caller holds the job row lock; runs, then devices, are locked in id order.';

-- Cancel: everything not finished is cancelled now; workers stop what is running. Every
-- run stays, for the record (delete removes them).
create or replace function jobsys.cancel_job(p_job_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
begin
  perform jobsys.require_operator();
  v_job := jobsys.lock_job(p_job_id);
  if v_job.status not in ('active', 'paused') then
    perform jobsys.illegal_move(v_job, 'cancel');
  end if;
  v_job := jobsys.end_job(p_job_id, 'cancelled', null, 'job cancelled');
  return jobsys.job_json(v_job);
end
$$;
comment on function jobsys.cancel_job(uuid) is
  'Operators: cancel a job. Everything not finished is cancelled now and the workers stop what is running; every run is kept. Locks the job, its live runs, then their devices, each in id order (jobsys.end_job).';

-- Pause: queued runs wait; running ones finish. A paused job does not wait for devices.
create or replace function jobsys.pause_job(p_job_id uuid) returns jsonb
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
  update jobsys.jobs set status = 'paused', paused_at = now(), waiting_since = null where id = p_job_id;
  v_job := jobsys.apply_counts(p_job_id, 0, 0, 0, 0, 0, true);
  perform jobsys.emit_to_job_workers(p_job_id, 'job_paused', jsonb_build_object('job_id', p_job_id));
  return jobsys.job_json(v_job);
end
$$;
comment on function jobsys.pause_job(uuid) is
  'Operators: pause a job. Queued runs wait; running ones finish; a wait for devices stops.';

-- Retry the failed runs: each goes back to the queue of its device with a new attempt series
-- (attempt 1, so max_attempts applies afresh; a failed run's report was final, so no late
-- report can name it). An incomplete job is re-opened as active. The re-queued runs may lie
-- below their devices' queue floors (35_device_runs.sql): those floors come down to them.
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
  if v_job.failed_count = 0 then
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
  'Operators: re-queue the failed runs of a job (attempt series restarts at 1) and re-open an incomplete job as active; JS409 when nothing failed.';

-- Clone: a new job with the same settings, created and distributed now.
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
    v_job.title, v_job.action, v_job.max_attempts, v_job.timeout_sec, v_job.topup_grace_sec);
end
$$;
comment on function jobsys.clone_job(uuid) is
  'Operators: create a new job with the settings of another (URL, duration, target, title, attempts, time limit, grace), distributed now.';

-- p_q is searched for as typed: strpos on lower-cased text is a plain case-insensitive
-- substring test, so % and _ are not wildcards and nothing needs escaping.
create or replace function jobsys.list_jobs(p_status text default null, p_q text default null,
  p_limit integer default 100, p_offset integer default 0)
  returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform jobsys.require_operator();
  if p_status is not null and p_status not in ('active', 'paused', 'completed', 'incomplete', 'cancelled') then
    perform jobsys.raise_error('JS400', 'status must be active, paused, completed, incomplete or cancelled',
      '{"field": "status"}');
  end if;
  if p_limit is null or p_limit not between 1 and 1000 or p_offset is null or p_offset < 0 then
    perform jobsys.raise_error('JS400', 'limit must be 1-1000 and offset at least 0', '{"field": "limit"}');
  end if;
  return (
    select jsonb_build_object(
      'jobs', coalesce((select jsonb_agg(jobsys.job_json(j) order by j.created_at desc, j.id)
                        from (select * from jobsys.jobs j
                              where (p_status is null or j.status = p_status)
                                and (p_q is null or strpos(lower(j.title), lower(p_q)) > 0
                                     or strpos(lower(j.target_url), lower(p_q)) > 0)
                              order by j.created_at desc, j.id
                              limit p_limit offset p_offset) j), '[]'),
      'summary', (select jsonb_build_object(
                    'total', count(*),
                    'active', count(*) filter (where status = 'active'),
                    'paused', count(*) filter (where status = 'paused'),
                    'completed', count(*) filter (where status = 'completed'),
                    'incomplete', count(*) filter (where status = 'incomplete'),
                    'cancelled', count(*) filter (where status = 'cancelled'),
                    'waiting_for_devices', count(*) filter (where status = 'active' and waiting_since is not null))
                  from jobsys.jobs)));
end
$$;
comment on function jobsys.list_jobs(text, text, integer, integer) is
  'Operators: a page of jobs, newest first, with counts per status. p_q searches title and URL for the text as typed (case-insensitive; % and _ are not wildcards).';

create or replace function jobsys.get_job(p_job_id uuid) returns jsonb
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
      'worker_name', w.name,
      'status', a.status, 'attempt', a.attempt, 'lease_expires_at', a.lease_expires_at,
      'created_at', a.created_at, 'started_at', a.started_at, 'finished_at', a.finished_at,
      'result', a.result, 'error', a.error) order by d.serial)
    from jobsys.job_assignments a join jobsys.devices d on d.id = a.device_id
    left join jobsys.workers w on w.id = coalesce(a.worker_id, d.worker_id)
    where a.job_id = p_job_id), '[]'));
end
$$;
comment on function jobsys.get_job(uuid) is
  'Operators: one job with its assignments (worker_name: the session that ran it, else the device''s).';

-- Every job ends. Run by maintain(), never scheduled by a user:
--   * time limit: an active or paused job past created_at + timeout_sec ends now
--     (jobsys.end_job: queued runs cancelled, running ones stopped): completed if its target
--     is met, else incomplete / timed_out;
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
  for v_job in
    select * from jobsys.jobs j
    where j.status in ('active', 'paused') and j.timeout_sec is not null
      and j.created_at + make_interval(secs => j.timeout_sec) <= now()
    order by j.id
    for no key update skip locked
  loop
    perform jobsys.end_job(v_job.id,
      case when v_job.completed_count >= v_job.target_count then 'completed' else 'incomplete' end,
      case when v_job.completed_count >= v_job.target_count then null else 'timed_out' end,
      'job timed out');
    v_ended := v_ended + 1;
  end loop;

  for v_job in
    select * from jobsys.jobs j
    where j.status = 'active' and j.completed_count < j.target_count
      and j.assigned_count = j.completed_count + j.failed_count + j.cancelled_count
    order by j.id
    for no key update skip locked
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
  'Ends jobs that cannot go on (run by maintain): past their time limit (completed or incomplete/timed_out, running runs stopped), or with no live run, still short, after the top-up grace (incomplete/no_eligible_devices or max_attempts). Returns how many ended.';

create or replace function jobsys.maintain(p_force boolean default false) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_rescued integer;
  v_stale integer;
  v_topped integer;
  v_ended integer;
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
  v_ended := jobsys.settle_jobs();
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
                            'topped_up', v_topped, 'ended_jobs', v_ended);
end
$$;
comment on function jobsys.maintain(boolean) is
  'Periodic upkeep (lease rescue, stale marking, top-up, ending jobs past their time limit or top-up grace, trailing job_progress), run from every worker heartbeat and claim loop; an advisory lock and maintenance_interval_ms make it run once per interval however many call it.';

revoke execute on function jobsys.end_job(uuid, text, text, text), jobsys.settle_jobs() from public;
revoke execute on function jobsys.create_job(text, integer, text, integer, text, text, integer, integer, integer),
  jobsys.retry_job(uuid), jobsys.clone_job(uuid) from public;
grant execute on function
  jobsys.create_job(text, integer, text, integer, text, text, integer, integer, integer),
  jobsys.retry_job(uuid), jobsys.clone_job(uuid)
to authenticated, service_role;
