-- jobsys: issue 17, scheduled jobs (start_at).
--
-- * Job status scheduled: create_job takes p_start_at (timestamptz, at most 365 days ahead);
--   a job whose start_at is in the future is stored scheduled with no runs (counters all 0),
--   so no claim can see it; a start_at now or in the past starts the job at once.
-- * jobsys.start_job resolves the target against the devices healthy then and distributes
--   the job (create_job's fan-out); jobsys.release_scheduled_jobs, run by maintain(), starts
--   the scheduled jobs that are due.
-- * pause_job pauses a scheduled job; resume_job puts one paused before its start back on
--   its schedule (or starts it when start_at has passed); cancel_job cancels it.
-- * settle_jobs counts timeout_sec from start_at when the job had one.
-- * job_json shows start_at; list_jobs filters and counts scheduled jobs.

alter table jobsys.jobs add column start_at timestamptz;
alter table jobsys.jobs drop constraint jobs_status_check;
alter table jobsys.jobs add constraint jobs_status_check check (
  status in ('scheduled', 'active', 'paused', 'completed', 'incomplete', 'cancelled')
  and (end_reason is not null) = (status = 'incomplete')
  and (end_reason is null or end_reason in ('no_eligible_devices', 'timed_out', 'max_attempts'))
  and (status <> 'scheduled' or start_at is not null));
-- maintain() looks for due scheduled jobs every second.
create index jobs_scheduled_idx on jobsys.jobs (start_at) where status = 'scheduled';

drop function jobsys.create_job(text, integer, text, integer, text, text, integer, integer, integer);

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
    'timeout_sec', j.timeout_sec, 'topup_grace_sec', j.topup_grace_sec, 'start_at', j.start_at,
    'waiting_for_devices', case when j.status = 'active' and j.waiting_since is not null
                                then greatest(j.target_count - j.completed_count, 0) end,
    'waiting_since', case when j.status = 'active' then j.waiting_since end)
$$;
comment on function jobsys.job_json(jobsys.jobs) is
  'The JSON shape of a job in the API (waiting_for_devices: short by N while an active job waits out its top-up grace; start_at: when a scheduled job starts).';

-- Start a job: resolve its target against the devices healthy now and distribute it. Used
-- by create_job for a job that starts now, and for a scheduled job at its start_at
-- (jobsys.release_scheduled_jobs, or resume_job of one paused before it started). The
-- caller holds the job row lock; the job has no runs yet, so every healthy device is
-- eligible. A percentage or all_devices job with no healthy device at its start ends
-- incomplete / no_eligible_devices at once (create_job refuses such a job with JS409).
create or replace function jobsys.start_job(p_job_id uuid) returns jobsys.jobs
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
  v_healthy integer;
  v_target integer;
  v_assigned integer;
begin
  select * into v_job from jobsys.jobs where id = p_job_id;
  select count(*) into v_healthy from jobsys.devices d
  where d.state = 'online' and d.last_heartbeat_at > jobsys.healthy_cutoff() and d.worker_id is not null;
  v_target := case v_job.target_type
    when 'all_devices' then v_healthy
    when 'percentage' then ceil(v_healthy * v_job.target_value / 100.0)::integer
    else v_job.target_value end;
  if v_target = 0 then
    update jobsys.jobs set status = 'incomplete', end_reason = 'no_eligible_devices',
      finished_at = now(), paused_at = null, waiting_since = null
    where id = p_job_id;
    return jobsys.apply_counts(p_job_id, 0, 0, 0, 0, 0, true);
  end if;
  update jobsys.jobs set status = 'active', target_count = v_target, paused_at = null
  where id = p_job_id;
  v_assigned := jobsys.assign_devices(p_job_id, v_target, v_healthy);
  return jobsys.apply_counts(p_job_id, v_assigned, 0, 0, 0, 0, true);
end
$$;
comment on function jobsys.start_job(uuid) is
  'Starts a job now: resolves its target against the healthy devices and distributes it (one push per worker); no healthy device for a percentage / all_devices target ends it incomplete / no_eligible_devices. The caller holds the job row lock.';

create or replace function jobsys.create_job(
  p_target_url text, p_duration_sec integer, p_target_type text,
  p_target_value integer default null, p_title text default null,
  p_action text default 'open_url', p_max_attempts integer default null,
  p_timeout_sec integer default null, p_topup_grace_sec integer default null,
  p_start_at timestamptz default null)
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
  v_scheduled boolean := p_start_at is not null and p_start_at > now();
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
  if p_start_at is not null and (p_start_at > now() + interval '365 days' or not isfinite(p_start_at)) then
    perform jobsys.raise_error('JS400', 'start_at must be at most 365 days ahead', '{"field": "start_at"}');
  end if;
  v_title := jobsys.check_title(coalesce(nullif(btrim(p_title), ''), jobsys.title_from_url(p_target_url)));

  v_cutoff := jobsys.healthy_cutoff();  -- once, not once per device row
  select count(*) into v_healthy from jobsys.devices d
  where d.state = 'online' and d.last_heartbeat_at > v_cutoff and d.worker_id is not null;
  v_target := case p_target_type
    when 'all_devices' then v_healthy
    when 'percentage' then ceil(v_healthy * p_target_value / 100.0)::integer
    else p_target_value end;
  -- A scheduled job needs no device now: its target is resolved again when it starts.
  if v_target = 0 and not v_scheduled then
    perform jobsys.raise_error('JS409', 'no healthy device is connected to run this job on',
      jsonb_build_object('healthy_devices', 0, 'reason', 'no_devices'));
  end if;

  insert into jobsys.jobs (title, action, target_url, duration_sec, target_type, target_value,
                           target_count, max_attempts, created_by, timeout_sec, topup_grace_sec,
                           status, start_at)
  values (v_title, p_action, p_target_url, p_duration_sec, p_target_type, v_target_value, v_target,
          coalesce(p_max_attempts, jobsys.setting('max_attempts')::integer), auth.uid(),
          p_timeout_sec, p_topup_grace_sec,
          case when v_scheduled then 'scheduled' else 'active' end, p_start_at)
  returning * into v_job;

  if v_scheduled then
    -- No runs until start_at (jobsys.release_scheduled_jobs distributes it then).
    v_job := jobsys.apply_counts(v_job.id, 0, 0, 0, 0, 0, true);
    return jsonb_build_object('job', jobsys.job_json(v_job), 'assigned', 0);
  end if;
  -- A new job has no assignments yet, so every healthy device is eligible.
  v_assigned := jobsys.assign_devices(v_job.id, v_target, v_healthy);
  v_job := jobsys.apply_counts(v_job.id, v_assigned, 0, 0, 0, 0, true);
  return jsonb_build_object('job', jobsys.job_json(v_job), 'assigned', v_assigned);
end
$$;
comment on function jobsys.create_job(text, integer, text, integer, text, text, integer, integer, integer, timestamp with time zone) is
  'Operators: create a device job and distribute it to the healthy devices in the same transaction; JS409 when no healthy device is connected. Optional time limit (timeout_sec), top-up grace (topup_grace_sec, else the setting) and start time (start_at, at most 365 days ahead: the job is scheduled, with no runs, until then).';

-- Pause: queued runs wait; running ones finish. A paused job does not wait for devices. A
-- scheduled job (no runs yet) is paused as it is; resume puts it back on its schedule.
create or replace function jobsys.pause_job(p_job_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
begin
  perform jobsys.require_operator();
  v_job := jobsys.lock_job(p_job_id);
  if v_job.status not in ('active', 'scheduled') then
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
  'Operators: pause an active or scheduled job. Queued runs wait; running ones finish; a wait for devices stops.';

-- Resume: paused runs are pending again. They may lie below their devices' queue floors
-- (35_device_runs.sql), so those floors come down to them. A job paused before it started
-- (start_at set, no run yet) is scheduled again while start_at is ahead, else it starts now.
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
  if v_job.start_at is not null and v_job.assigned_count = 0 then
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
  if v_job.status not in ('active', 'paused', 'scheduled') then
    perform jobsys.illegal_move(v_job, 'cancel');
  end if;
  v_job := jobsys.end_job(p_job_id, 'cancelled', null, 'job cancelled');
  return jobsys.job_json(v_job);
end
$$;
comment on function jobsys.cancel_job(uuid) is
  'Operators: cancel a job (active, paused or scheduled). Everything not finished is cancelled now and the workers stop what is running; every run is kept. Locks the job, its live runs, then their devices, each in id order (jobsys.end_job).';

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
  if p_status is not null and p_status not in ('scheduled', 'active', 'paused', 'completed', 'incomplete', 'cancelled') then
    perform jobsys.raise_error('JS400', 'status must be scheduled, active, paused, completed, incomplete or cancelled',
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
                    'scheduled', count(*) filter (where status = 'scheduled'),
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
  for v_job in
    select * from jobsys.jobs j
    where j.status in ('active', 'paused') and j.timeout_sec is not null
      and greatest(j.created_at, coalesce(j.start_at, j.created_at))
          + make_interval(secs => j.timeout_sec) <= now()
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
  'Ends jobs that cannot go on (run by maintain): past their time limit counted from their start (completed or incomplete/timed_out, running runs stopped), or with no live run, still short, after the top-up grace (incomplete/no_eligible_devices or max_attempts). Returns how many ended.';

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
                            'started_jobs', v_started, 'topped_up', v_topped, 'ended_jobs', v_ended);
end
$$;
comment on function jobsys.maintain(boolean) is
  'Periodic upkeep (lease rescue, stale marking, starting scheduled jobs at their start_at, top-up, ending jobs past their time limit or top-up grace, trailing job_progress), run from every worker heartbeat and claim loop; an advisory lock and maintenance_interval_ms make it run once per interval however many call it.';

revoke execute on function jobsys.start_job(uuid), jobsys.release_scheduled_jobs() from public;
revoke execute on function
  jobsys.create_job(text, integer, text, integer, text, text, integer, integer, integer, timestamp with time zone)
from public;
grant execute on function
  jobsys.create_job(text, integer, text, integer, text, text, integer, integer, integer, timestamp with time zone)
to authenticated, service_role;
