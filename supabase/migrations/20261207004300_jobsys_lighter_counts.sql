-- jobsys: issue 22, fewer statements per claim and finish. count_runs reads the job only when
-- a finish may complete it, with the exact completed count in the same statement;
-- notify_progress takes the job's id and reads the job only when an event goes out.

drop function jobsys.notify_progress(jobsys.jobs, boolean);

create or replace function jobsys.notify_progress(p_job_id uuid, p_force boolean) returns void
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_now timestamptz := clock_timestamp();
  v_payload jsonb;
begin
  if p_force then
    v_payload := (select jobsys.progress_json(j) from jobsys.jobs j where j.id = p_job_id);
    insert into jobsys.job_progress_marks as m (job_id, notified_at, sent) values (p_job_id, v_now, v_payload)
    on conflict (job_id) do update set notified_at = v_now, sent = v_payload;
  else
    -- Settings are read inline (not through jobsys.setting()): a plan cached with the
    -- function is far cheaper per call than a SQL function re-planned in every transaction.
    update jobsys.job_progress_marks m set notified_at = v_now,
      sent = (select jobsys.progress_json(j) from jobsys.jobs j where j.id = p_job_id)
    where m.job_id = (select d.job_id from jobsys.job_progress_marks d
                      where d.job_id = p_job_id and d.notified_at <= v_now - make_interval(
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
comment on function jobsys.notify_progress(uuid, boolean) is
  'Sends job_progress for a job: always when forced, else at most every progress_event_interval_ms per job (the job that is due is taken with SKIP LOCKED, so concurrent finishes never wait on it; the job is read only when an event goes out). Keeps what was sent for the trailing event.';

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
  perform jobsys.notify_progress(p_job_id, p_force_event or v_completes);
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
  v_status text;
  v_target integer;
  v_completed bigint;
begin
  insert into jobsys.job_run_counts as r (job_id, worker_id, running, completed, failed, cancelled)
  values (p_job_id, p_worker_id, p_running, p_completed, p_failed, p_cancelled)
  on conflict (job_id, worker_id) do update set
    running = r.running + excluded.running, completed = r.completed + excluded.completed,
    failed = r.failed + excluded.failed, cancelled = r.cancelled + excluded.cancelled,
    changed_at = excluded.changed_at;
  if p_completed > 0 then
    -- The exact completed count (jobsys.counted's sum) in one statement.
    select j.status, j.target_count,
           j.completed_count + coalesce((select sum(r.completed) from jobsys.job_run_counts r where r.job_id = j.id), 0)
      into v_status, v_target, v_completed
    from jobsys.jobs j where j.id = p_job_id;
    if v_status in ('active', 'paused') and v_target > 0 and v_completed >= v_target then
      perform 1 from jobsys.jobs j where j.id = p_job_id for no key update skip locked;
      if found then
        perform jobsys.apply_counts(p_job_id, 0, 0, 0, 0, 0);
        return;
      end if;
    end if;
  end if;
  perform jobsys.notify_progress(p_job_id, false);
end
$$;
comment on function jobsys.count_runs(uuid, uuid, integer, integer, integer, integer) is
  'Claims and finishes count their runs in the row of their job and worker session (the caller holds the job row FOR SHARE), so the runs of one job on many workers never queue on one row. Completes the job when the target is met and no other claim or finish of it is in flight (else the next upkeep does), and emits job_progress, throttled.';

revoke execute on function jobsys.notify_progress(uuid, boolean) from public;
