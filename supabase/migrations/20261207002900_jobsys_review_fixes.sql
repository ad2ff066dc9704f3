-- jobsys: review fixes. A device that no longer carries a job's labels gives its queued runs
-- of that job back (release_unhealthy_queues; set_device_labels calls it); the shared rate
-- limit takes its key's row lock before it settles grants (a deadlock between runners);
-- retention is audited as the system, and a fractional retention_days counts as such; a job
-- without labels does not merge any device's labels to test them (fan-out, create, release).

drop function jobsys.audit(text, text, text, jsonb);

create or replace function jobsys.audit(p_action text, p_object_type text, p_object_id text,
  p_detail jsonb default '{}', p_by_system boolean default false)
  returns void
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
begin
  insert into jobsys.audit_log (actor_role, actor_id, actor_name, action, object_type, object_id, detail)
  select case when p_by_system then 'system' else jobsys.caller_role() end,
         case when p_by_system then null else auth.uid() end,
         case when p_by_system then null
              else left(coalesce(auth.jwt() ->> 'email', auth.jwt() ->> 'jobsys_account'), 320) end,
         p_action, p_object_type, left(p_object_id, 200), coalesce(p_detail, '{}');
end
$$;
comment on function jobsys.audit(text, text, text, jsonb, boolean) is
  'Writes one audit_log entry for an operator action in the caller''s transaction (who: caller_role, auth.uid and the token''s email or embedded account name, or system for upkeep; what: action, object, a brief detail without secrets).';

create or replace function jobsys.purge_expired() returns integer
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_days numeric := jobsys.setting('retention_days');
  v_jobs uuid[];
  v_batches integer;
begin
  if v_days <= 0 then
    return 0;
  end if;
  with gone as (
    delete from jobsys.jobs j
    where j.id in (select x.id from jobsys.jobs x
                   where x.status in ('completed', 'incomplete', 'cancelled')
                     and x.finished_at < now() - v_days * interval '1 day'
                   order by x.finished_at limit 200
                   for update skip locked)
    returning j.id)
  select coalesce(array_agg(g.id), '{}') into v_jobs from gone g;
  with gone as (
    delete from jobsys.background_jobs b
    where b.id in (select x.id from jobsys.background_jobs x
                   where x.status in ('completed', 'failed', 'cancelled')
                     and coalesce(x.completed_at, x.updated_at) < now() - v_days * interval '1 day'
                   order by x.created_at limit 50
                   for update skip locked)
    returning 1)
  select count(*) into v_batches from gone;
  perform jobsys.emit('jobsys:dashboard', 'job_deleted', jsonb_build_object('job_id', j)) from unnest(v_jobs) j;
  if cardinality(v_jobs) + v_batches > 0 then
    perform jobsys.audit('purge', 'system', null, jsonb_build_object(
      'jobs', cardinality(v_jobs), 'background_jobs', v_batches, 'older_than_days', v_days), true);
  end if;
  return cardinality(v_jobs) + v_batches;
end
$$;
comment on function jobsys.purge_expired() is
  'Retention (run by maintain at most once a minute): deletes finished jobs and AI batches older than retention_days (0 keeps them), at most 200 jobs and 50 batches a call with SKIP LOCKED, and notes the counts in the audit log.';

create or replace function jobsys.existing_runs(p_ids bigint[]) returns bigint[]
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform jobsys.require_operator();
  if cardinality(p_ids) > 10000 then
    perform jobsys.raise_error('JS400', 'at most 10000 ids per call', '{"field": "ids"}');
  end if;
  return coalesce((select array_agg(a.id order by a.id) from jobsys.job_assignments a where a.id = any(p_ids)), '{}');
end
$$;
comment on function jobsys.existing_runs(bigint[]) is
  'Operators: which of the given run ids still exist (the hub''s sweep deletes the screenshots of the others).';

create or replace function jobsys.release_unhealthy_queues() returns integer
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
      and (d.state <> 'online' or d.last_heartbeat_at <= v_cutoff or d.worker_id is null
           or exists (select 1 from jobsys.jobs j where j.id = a.job_id and j.device_labels <> '{}'
                      and not d.labels || d.operator_labels @> j.device_labels))
    order by a.job_id
  loop
    perform 1 from jobsys.jobs where id = v_job_id for no key update skip locked;
    continue when not found;
    with released as (
      delete from jobsys.job_assignments a
      using jobsys.devices d, jobsys.jobs j
      where a.job_id = v_job_id and j.id = v_job_id and d.id = a.device_id and a.status in ('pending', 'paused')
        and (d.state <> 'online' or d.last_heartbeat_at <= v_cutoff or d.worker_id is null
             or (j.device_labels <> '{}' and not d.labels || d.operator_labels @> j.device_labels))
      returning 1)
    select count(*) into v_n from released;
    continue when v_n = 0;
    perform jobsys.apply_counts(v_job_id, -v_n, 0, 0, 0, 0);
    v_total := v_total + v_n;
  end loop;
  return v_total;
end
$$;
comment on function jobsys.release_unhealthy_queues() is
  'Pending and paused runs on unhealthy devices, or on devices that no longer carry their job''s device_labels, are removed so that top-up can place them on eligible devices; a device may be chosen again later.';

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
comment on function jobsys.assign_devices(uuid, integer, integer) is
  'Fans a job out to up to p_limit eligible devices (healthy, carrying the job''s device_labels, never tried for this job), idle first, then the least loaded, with one push per worker. The caller holds the job row lock and applies the counters.';

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
  where d.state = 'online' and d.last_heartbeat_at > jobsys.healthy_cutoff() and d.worker_id is not null
    and (v_job.device_labels = '{}' or d.labels || d.operator_labels @> v_job.device_labels);
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
  p_start_at timestamptz default null, p_device_labels jsonb default null)
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
                           status, start_at, device_labels)
  values (v_title, p_action, p_target_url, p_duration_sec, p_target_type, v_target_value, v_target,
          coalesce(p_max_attempts, jobsys.setting('max_attempts')::integer), auth.uid(),
          p_timeout_sec, p_topup_grace_sec,
          case when v_scheduled then 'scheduled' else 'active' end, p_start_at, v_labels)
  returning * into v_job;
  perform jobsys.audit('create', 'job', v_job.id::text, jsonb_build_object(
    'title', v_title, 'target_type', p_target_type, 'target_value', v_target_value, 'device_labels', v_labels,
    'start_at', p_start_at));

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
comment on function jobsys.create_job(text, integer, text, integer, text, text, integer, integer, integer, timestamp with time zone, jsonb) is
  'Operators: create a device job and distribute it to the healthy devices in the same transaction; JS409 when no healthy device is connected. Optional time limit (timeout_sec), top-up grace (topup_grace_sec, else the setting), start time (start_at, at most 365 days ahead: the job is scheduled, with no runs, until then) and device_labels (only devices carrying every pair run it; its target counts among them).';

create or replace function jobsys.set_device_labels(p_device_id uuid, p_labels jsonb) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_rule text := jobsys.label_problem(p_labels);
  v_device jobsys.devices;
  v_key text;
begin
  perform jobsys.require_admin();
  if v_rule is not null then
    perform jobsys.raise_error('JS400', jobsys.label_rule_message(v_rule),
      jsonb_build_object('field', 'labels', 'rule', v_rule));
  end if;
  select * into v_device from jobsys.devices where id = p_device_id for no key update;
  if not found then
    perform jobsys.raise_error('JS404', 'device not found', jsonb_build_object('device_id', p_device_id));
  end if;
  select k into v_key from jsonb_object_keys(p_labels) k where v_device.labels ? k order by k limit 1;
  if found then
    perform jobsys.raise_error('JS400', format('label %s is reported by the device''s worker and cannot be set', v_key),
      jsonb_build_object('field', 'labels', 'rule', 'worker_label', 'key', v_key));
  end if;
  perform jobsys.audit('label', 'device', p_device_id::text, jsonb_build_object(
    'serial', v_device.serial, 'before', v_device.operator_labels, 'after', p_labels));
  update jobsys.devices set operator_labels = p_labels where id = p_device_id returning * into v_device;
  perform jobsys.emit('jobsys:dashboard', 'device_status', jsonb_build_object('device_id', p_device_id));
  perform jobsys.release_unhealthy_queues();  -- runs queued for labels it no longer carries move on
  perform jobsys.top_up();  -- jobs targeting these labels may now have a device
  return jobsys.device_json(v_device, jobsys.healthy_cutoff());
end
$$;
comment on function jobsys.set_device_labels(uuid, jsonb) is
  'Admins: replace a device''s operator labels (bounded as worker labels; a key its worker reports is refused). Jobs targeting labels see the change at once: runs queued for labels it no longer carries move to other devices, jobs it now matches may get it.';

create or replace function jobsys.acquire_batch_rate(p_key text, p_rpm integer, p_tpm integer, p_tokens integer,
  p_window_sec double precision default 60, p_settle jsonb default '[]')
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_limit jobsys.batch_rate_limits;
  v_now timestamptz;
  v_window interval;
  v_count integer;
  v_sum bigint;
  v_wait double precision := 0;
  v_at timestamptz;
  v_id bigint;
begin
  perform jobsys.require_runner();
  if p_key is null or length(p_key) not between 1 and 200 or p_window_sec is null
     or p_window_sec not between 0.01 and 86400 or coalesce(p_rpm, 1) < 1 or coalesce(p_tpm, 1) < 1
     or coalesce(p_tokens, 0) < 0 or jsonb_typeof(coalesce(p_settle, '[]')) <> 'array' then
    perform jobsys.raise_error('JS400',
      'key must be 1-200 characters, rpm and tpm at least 1, tokens at least 0, window 0.01-86400 s',
      '{"field": "key"}');
  end if;
  -- The key's row lock first, then its grants: every caller takes them in this order, so a
  -- settle never waits on a grant another runner is deleting while it holds the key.
  insert into jobsys.batch_rate_limits (key) values (p_key) on conflict (key) do nothing;
  select * into v_limit from jobsys.batch_rate_limits where key = p_key for update;
  update jobsys.batch_rate_grants g set tokens = greatest(0, (s ->> 1)::integer)
  from jsonb_array_elements(coalesce(p_settle, '[]')) s
  where g.id = (s ->> 0)::bigint and g.key = p_key;
  v_now := clock_timestamp();
  v_window := make_interval(secs => p_window_sec);
  delete from jobsys.batch_rate_grants where key = p_key and at <= v_now - v_window;
  if v_limit.cooldown_until > v_now then  -- '-infinity' until a first cooldown
    v_wait := extract(epoch from v_limit.cooldown_until - v_now);
  end if;
  select count(*), coalesce(sum(tokens), 0) into v_count, v_sum from jobsys.batch_rate_grants where key = p_key;
  if p_rpm is not null and v_count >= p_rpm then
    -- the call that must leave the window first: the (count - rpm + 1)-th oldest
    select at into v_at from jobsys.batch_rate_grants where key = p_key order by at, id offset v_count - p_rpm limit 1;
    v_wait := greatest(v_wait, extract(epoch from v_at + v_window - v_now));
  end if;
  if p_tpm is not null and v_count > 0 and v_sum + coalesce(p_tokens, 0) > p_tpm then
    -- wait for the oldest grants to leave until this one fits (alone, if it is larger than the budget)
    select c.at into v_at from (
      select g.at, sum(g.tokens) over (order by g.at, g.id) as freed
      from jobsys.batch_rate_grants g where g.key = p_key) c
    where c.freed >= v_sum + coalesce(p_tokens, 0) - p_tpm
    order by c.at limit 1;
    v_wait := greatest(v_wait, extract(epoch from coalesce(v_at, v_now) + v_window - v_now));
  end if;
  if v_wait > 0 then
    return jsonb_build_object('granted', false, 'wait_s', v_wait);
  end if;
  insert into jobsys.batch_rate_grants (key, at, tokens) values (p_key, v_now, coalesce(p_tokens, 0))
  returning id into v_id;
  update jobsys.batch_rate_limits set updated_at = v_now where key = p_key;
  return jsonb_build_object('granted', true, 'grant_id', v_id, 'at', extract(epoch from v_now));
end
$$;
comment on function jobsys.acquire_batch_rate(text, integer, integer, integer, double precision, jsonb) is
  'Runners: grant one call under the shared rate limit of a model (requests and prompt tokens per sliding window, counted over every runner, and the shared 429 cooldown), or say how long to wait. Serialised per key by a row lock.';

revoke execute on function jobsys.audit(text, text, text, jsonb, boolean) from public;
