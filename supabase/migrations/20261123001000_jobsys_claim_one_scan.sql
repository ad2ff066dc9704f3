-- jobsys: a claim reads each device's queue once. It used to read it twice: once to learn
-- which jobs to lock, and again (after locking them) to pick and lock the runs. Every run
-- a device has finished leaves dead entries at the head of its range of the queue index
-- until vacuum reaches them, and a read of the queue visits the heap for each, so under a
-- steady stream of claims the second read cost as much as the first. Now the first read
-- keeps what it found (device, run, job); after the jobs are locked, the claim locks
-- those runs by primary key, re-checking that each is still pending and its device still
-- free. A device whose candidate moved on meanwhile (paused, cancelled, taken) gets no
-- run in this call; the worker's next claim finds its next one.
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
  v_candidates bigint[];
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
  -- Each free device's oldest pending run (no locks yet): the one read of the queues.
  select array_agg(q.id), array_agg(distinct q.job_id) into v_candidates, v_jobs
  from jobsys.devices d
  cross join lateral (
    select a.id, a.job_id from jobsys.job_assignments a
    where a.device_id = d.id and a.status = 'pending'
    order by a.id limit 1) q
  where d.worker_id = p_worker_id and d.state = 'online' and d.running_assignment_id is null
    and (p_device_ids is null or d.id = any(p_device_ids));
  if v_jobs is null then
    return;
  end if;
  -- Lock order: jobs first (as pause, cancel and finish do), then runs and devices.
  perform 1 from jobsys.jobs j where j.id = any(v_jobs) and j.status = 'active'
    order by j.id for no key update;

  -- Lock the candidates and their devices by key, skipping what another transaction holds;
  -- the WHERE is checked again on the rows as locked.
  select array_agg(p.assignment_id), array_agg(p.device_id)
    into v_claimed, v_devices
  from (
    select a.id as assignment_id, d.id as device_id
    from jobsys.job_assignments a
    join jobsys.devices d on d.id = a.device_id
    where a.id = any(v_candidates) and a.status = 'pending'
      and d.worker_id = p_worker_id and d.state = 'online' and d.running_assignment_id is null
    order by a.id
    limit coalesce(p_limit, 2147483647)
    for no key update of a, d skip locked
  ) p;
  if v_claimed is null then
    return;
  end if;

  update jobsys.devices d set running_assignment_id = x.assignment_id
  from unnest(v_devices, v_claimed) as x(device_id, assignment_id)
  where d.id = any(v_devices) and d.id = x.device_id;
  update jobsys.job_assignments a set status = 'running', worker_id = p_worker_id,
    claimed_at = now(), started_at = case when p_start then now() end,
    lease_expires_at = now() + make_interval(
      secs => case when p_start then j.duration_sec + v_grace else v_claim_lease end)
  from jobsys.jobs j
  where a.id = any(v_claimed) and j.id = a.job_id;

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
  join jobsys.jobs j on j.id = a.job_id
  join jobsys.devices d on d.id = a.device_id
  where a.id = any(v_claimed)
  order by a.id;
end
$$;
