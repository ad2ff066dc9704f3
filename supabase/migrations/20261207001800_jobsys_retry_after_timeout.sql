-- jobsys: issue 17, retry of a job that ended at its time limit.
--
-- Re-opened, such a job ended again at the next upkeep (its limit had passed). retry_job now
-- refuses it with JS409 and says to clone it instead.

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
  'Operators: re-queue the failed runs of a job (attempt series restarts at 1) and re-open an incomplete job as active; JS409 when nothing failed, or when the job ended at its time limit (clone it instead).';
