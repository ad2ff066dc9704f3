-- jobsys: issue 22, cheaper claims. A claim takes devices and runs with SKIP LOCKED, then their
-- jobs FOR SHARE SKIP LOCKED (no walk of the devices' queues beforehand to find the jobs), and
-- the check that a device's running assignment is its own runs once per statement instead of
-- once per device row.

drop trigger devices_running_assignment_on_insert on jobsys.devices;
drop trigger devices_running_assignment_on_update on jobsys.devices;
drop function jobsys.device_check_running_assignment();

create or replace function jobsys.devices_check_running_assignments() returns trigger
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_set bigint[];
  v_bad record;
begin
  if tg_op = 'INSERT' then
    select array_agg(n.running_assignment_id) into v_set from new_rows n where n.running_assignment_id is not null;
  else
    select array_agg(n.running_assignment_id) into v_set
    from new_rows n join old_rows o on o.id = n.id
    where n.running_assignment_id is not null and n.running_assignment_id is distinct from o.running_assignment_id;
  end if;
  if v_set is null then
    return null;
  end if;
  -- As a foreign key does: the rows named are kept from going away until commit.
  perform 1 from jobsys.job_assignments a where a.id = any(v_set) for key share;
  select n.id, n.running_assignment_id into v_bad from new_rows n
  where n.running_assignment_id = any(v_set)
    and not exists (select 1 from jobsys.job_assignments a where a.id = n.running_assignment_id and a.device_id = n.id)
  limit 1;
  if found then
    perform jobsys.raise_missing_reference('devices', 'devices_running_assignment_fk', 'running_assignment_id',
      v_bad.running_assignment_id::text, 'job_assignments');
  end if;
  return null;
end
$$;
comment on function jobsys.devices_check_running_assignments() is
  'Stands in for a foreign key on devices.running_assignment_id, once per statement: a device''s running assignment must be one of its own assignments.';

create trigger devices_running_assignment_on_insert after insert on jobsys.devices
  referencing new table as new_rows
  for each statement execute function jobsys.devices_check_running_assignments();
create trigger devices_running_assignment_on_update after update on jobsys.devices
  referencing old table as old_rows new table as new_rows
  for each statement execute function jobsys.devices_check_running_assignments();

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
      (select first.id from (
         select a.id from jobsys.job_assignments a
         where a.device_id = f.id and a.status = 'pending'
           and a.priority <> 0 and a.priority > 0
         order by a.priority desc, a.id limit 1
         for no key update skip locked) first)
      union all
      (select above.id from (
         select a.id from jobsys.job_assignments a
         where a.device_id = f.id and a.status = 'pending'
           and a.id >= f.queue_floor and a.priority = 0
         order by a.id limit 1
         for no key update skip locked) above)
      union all
      (select below.id from (
         select a.id from jobsys.job_assignments a
         where a.device_id = f.id and a.status = 'pending'
           and a.id < f.queue_floor and a.priority = 0
         order by a.id limit 1
         for no key update skip locked) below)
      union all
      (select last.id from (
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
    select array_agg(x.assignment_id), array_agg(x.device_id) into v_claimed, v_devices
    from unnest(v_claimed, v_devices) as x(assignment_id, device_id)
    where (select a.job_id from jobsys.job_assignments a where a.id = x.assignment_id) = any(v_locked);
    if v_claimed is null then
      return;
    end if;
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
  'Workers: claim for each free online device of the worker (or those listed) its next pending assignment, the highest priority first, then the oldest (from the device queue floor up); p_start starts the runs at once. Devices and runs with SKIP LOCKED, then their jobs FOR SHARE SKIP LOCKED (a job in a pause, cancel or completion is left out), so a claim never waits.';

revoke execute on function jobsys.devices_check_running_assignments() from public;
