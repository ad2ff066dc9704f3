-- jobsys: issue 17, priority. A job's priority (-10..10, default 0) is copied onto its runs; a
-- device claims its pending run of the highest priority first, then the oldest (runs of
-- priority 0 from the device's queue floor as before, the others from a partial index).

alter table jobsys.jobs add column priority integer not null default 0
  constraint jobs_priority_check check (priority between -10 and 10);
alter table jobsys.job_assignments add column priority integer not null default 0;
create index job_assignments_device_priority_idx on jobsys.job_assignments (device_id, priority desc, id)
  where status = 'pending' and priority <> 0;

drop function jobsys.create_job(text, integer, text, integer, text, text, integer, integer, integer,
                                timestamp with time zone, jsonb);
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
    'device_labels', j.device_labels, 'priority', j.priority,
    'waiting_for_devices', case when j.status = 'active' and j.waiting_since is not null
                                then greatest(j.target_count - j.completed_count, 0) end,
    'waiting_since', case when j.status = 'active' then j.waiting_since end)
  from jobsys.counted(p_job) j
$$;
comment on function jobsys.job_json(jobsys.jobs) is
  'The JSON shape of a job in the API, with its exact counters (jobsys.counted: give it the row as stored). waiting_for_devices: short by N while an active job waits out its top-up grace; start_at: when a scheduled job starts.';

create or replace function jobsys.assign_devices(p_job_id uuid, p_limit integer, p_eligible integer default null)
  returns integer
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz := jobsys.healthy_cutoff();  -- once, not once per device row
  v_eligible integer := p_eligible;
  v_assigned integer;
  v_labels jsonb := (select j.device_labels from jobsys.jobs j where j.id = p_job_id);
  v_priority integer := (select j.priority from jobsys.jobs j where j.id = p_job_id);
begin
  if p_limit <= 0 then
    return 0;
  end if;
  if v_eligible is null then
    select count(*) into v_eligible
    from jobsys.devices d
    where d.state = 'online' and d.last_heartbeat_at > v_cutoff and d.worker_id is not null
      and (v_labels = '{}' or d.labels || d.operator_labels @> v_labels)
      and not exists (select 1 from jobsys.job_assignments a where a.job_id = p_job_id and a.device_id = d.id);
  end if;

  if v_eligible <= p_limit then
    -- Every eligible device is chosen, so there is nothing to rank. Rows go in in device
    -- order, which keeps the index inserts close together.
    with chosen as (
      select d.id, d.worker_id
      from jobsys.devices d
      where d.state = 'online' and d.last_heartbeat_at > v_cutoff and d.worker_id is not null
        and (v_labels = '{}' or d.labels || d.operator_labels @> v_labels)
        and not exists (select 1 from jobsys.job_assignments a
                        where a.job_id = p_job_id and a.device_id = d.id)
      order by d.id
      limit p_limit
    ), inserted as (
      insert into jobsys.job_assignments (job_id, device_id, priority)
      select p_job_id, c.id, v_priority from chosen c
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
      and (v_labels = '{}' or d.labels || d.operator_labels @> v_labels)
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
    insert into jobsys.job_assignments (job_id, device_id, priority)
    select p_job_id, c.id, v_priority from chosen c
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
comment on function jobsys.assign_devices(uuid, integer, integer) is
  'Fans a job out to up to p_limit eligible devices (healthy, carrying the job''s device_labels, never tried for this job), idle first, then the least loaded, with one push per worker. The caller holds the job row lock and applies the counters.';

create or replace function jobsys.create_job(
  p_target_url text, p_duration_sec integer, p_target_type text,
  p_target_value integer default null, p_title text default null,
  p_action text default 'open_url', p_max_attempts integer default null,
  p_timeout_sec integer default null, p_topup_grace_sec integer default null,
  p_start_at timestamptz default null, p_device_labels jsonb default null, p_priority integer default 0)
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
  v_labels jsonb := coalesce(p_device_labels, '{}');
  v_rule text := jobsys.label_problem(coalesce(p_device_labels, '{}'));
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
  if p_priority is null or p_priority not between -10 and 10 then
    perform jobsys.raise_error('JS400', 'priority must be between -10 and 10', '{"field": "priority"}');
  end if;
  if v_rule is not null then
    perform jobsys.raise_error('JS400', 'device_labels: ' || jobsys.label_rule_message(v_rule),
      jsonb_build_object('field', 'device_labels', 'rule', v_rule));
  end if;
  v_title := jobsys.check_title(coalesce(nullif(btrim(p_title), ''), jobsys.title_from_url(p_target_url)));

  v_cutoff := jobsys.healthy_cutoff();  -- once, not once per device row
  select count(*) into v_healthy from jobsys.devices d
  where d.state = 'online' and d.last_heartbeat_at > v_cutoff and d.worker_id is not null
    and (v_labels = '{}' or d.labels || d.operator_labels @> v_labels);
  v_target := case p_target_type
    when 'all_devices' then v_healthy
    when 'percentage' then ceil(v_healthy * p_target_value / 100.0)::integer
    else p_target_value end;
  -- A scheduled job needs no device now: its target is resolved again when it starts.
  if v_target = 0 and not v_scheduled then
    perform jobsys.raise_error('JS409', case when v_labels = '{}' then 'no healthy device is connected to run this job on'
                                             else 'no healthy device carries the labels this job asks for' end,
      jsonb_build_object('healthy_devices', 0, 'reason', 'no_devices', 'device_labels', v_labels));
  end if;

  insert into jobsys.jobs (title, action, target_url, duration_sec, target_type, target_value,
                           target_count, max_attempts, created_by, timeout_sec, topup_grace_sec,
                           status, start_at, device_labels, priority)
  values (v_title, p_action, p_target_url, p_duration_sec, p_target_type, v_target_value, v_target,
          coalesce(p_max_attempts, jobsys.setting('max_attempts')::integer), auth.uid(),
          p_timeout_sec, p_topup_grace_sec,
          case when v_scheduled then 'scheduled' else 'active' end, p_start_at, v_labels, p_priority)
  returning * into v_job;
  perform jobsys.audit('create', 'job', v_job.id::text, jsonb_build_object(
    'title', v_title, 'target_type', p_target_type, 'target_value', v_target_value, 'device_labels', v_labels,
    'start_at', p_start_at, 'priority', p_priority));

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
comment on function jobsys.create_job(text, integer, text, integer, text, text, integer, integer, integer, timestamp with time zone, jsonb, integer) is
  'Operators: create a device job and distribute it to the healthy devices in the same transaction; JS409 when no healthy device is connected. Optional time limit (timeout_sec), top-up grace (topup_grace_sec, else the setting), start time (start_at, at most 365 days ahead: the job is scheduled, with no runs, until then) and device_labels (only devices carrying every pair run it; its target counts among them) and priority (-10..10, default 0: a device claims the highest priority first, then the oldest).';

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
  perform jobsys.audit('clone', 'job', p_job_id::text);  -- the new job's own entry is its create
  return jobsys.create_job(v_job.target_url, v_job.duration_sec, v_job.target_type, v_job.target_value,
    v_job.title, v_job.action, v_job.max_attempts, v_job.timeout_sec, v_job.topup_grace_sec, null,
    v_job.device_labels, v_job.priority);
end
$$;
comment on function jobsys.clone_job(uuid) is
  'Operators: create a new job with the settings of another (URL, duration, target, device labels, title, attempts, time limit, grace, priority), distributed now.';

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
    (select a.job_id from jobsys.job_assignments a  -- priority above 0 first, the highest
     where a.device_id = d.id and a.status = 'pending' and a.priority <> 0 and a.priority > 0
     order by a.priority desc, a.id limit 1)
    union all
    (select a.job_id from jobsys.job_assignments a
     where a.device_id = d.id and a.status = 'pending' and a.id >= d.queue_floor and a.priority = 0
     order by a.id limit 1)
    union all  -- below the floor only when nothing is above it (see the top of this file)
    (select a.job_id from jobsys.job_assignments a
     where a.device_id = d.id and a.status = 'pending' and a.id < d.queue_floor and a.priority = 0
     order by a.id limit 1)
    union all  -- priority below 0 last
    (select a.job_id from jobsys.job_assignments a
     where a.device_id = d.id and a.status = 'pending' and a.priority <> 0 and a.priority < 0
     order by a.priority desc, a.id limit 1)
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
      (select first.id from (
         select a.id from jobsys.job_assignments a
         where a.device_id = f.id and a.status = 'pending' and a.job_id = any(v_jobs)
           and a.priority <> 0 and a.priority > 0
         order by a.priority desc, a.id limit 1
         for no key update skip locked) first)
      union all
      (select above.id from (
         select a.id from jobsys.job_assignments a
         where a.device_id = f.id and a.status = 'pending' and a.job_id = any(v_jobs)
           and a.id >= f.queue_floor and a.priority = 0
         order by a.id limit 1
         for no key update skip locked) above)
      union all
      (select below.id from (
         select a.id from jobsys.job_assignments a
         where a.device_id = f.id and a.status = 'pending' and a.job_id = any(v_jobs)
           and a.id < f.queue_floor and a.priority = 0
         order by a.id limit 1
         for no key update skip locked) below)
      union all
      (select last.id from (
         select a.id from jobsys.job_assignments a
         where a.device_id = f.id and a.status = 'pending' and a.job_id = any(v_jobs)
           and a.priority <> 0 and a.priority < 0
         order by a.priority desc, a.id limit 1
         for no key update skip locked) last)
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
  'Workers: claim for each free online device of the worker (or those listed) its next pending assignment, the highest priority first, then the oldest (from the device queue floor up); p_start starts the runs at once. Holds the jobs FOR SHARE first, then SKIP LOCKED on assignments and devices, so a claim never waits on another claim.';

revoke execute on function jobsys.create_job(text, integer, text, integer, text, text, integer, integer, integer,
                                             timestamp with time zone, jsonb, integer) from public;
grant execute on function jobsys.create_job(text, integer, text, integer, text, text, integer, integer, integer,
                                            timestamp with time zone, jsonb, integer) to authenticated, service_role;
