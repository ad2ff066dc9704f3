-- jobsys: issue 21, operations: the audit log, retention and the metrics snapshot.
--
-- * audit_log: every operator action (jobs, devices, PCs; retention's purges), written by the
--   function that performs it (jobsys.audit); list_audit reads it.
-- * Retention: settings retention_days (30; 0 keeps everything); purge_expired, run by
--   maintain at most once a minute (maintenance_state.last_purge_at), deletes finished jobs
--   and AI batches older than that, a few at a time; existing_runs lets the dashboard delete
--   the screenshots of purged runs.
-- * metrics_snapshot: what GET /metrics exposes from the database (metrics_device_series).
-- * Claims skip a device whose reboot was asked in the last 10 minutes.

insert into jobsys.settings (key, value, description) values
  ('retention_days', 30,
   'finished jobs and AI batches older than this are purged by upkeep, a few at a time (0 keeps them)'),
  ('metrics_device_series', 200,
   'GET /metrics gives per-device battery and temperature series for at most this many devices');
alter table jobsys.maintenance_state add column last_purge_at timestamptz not null default '-infinity';

-- The audit log ========================================================================
-- Every operator action, written by the SQL function that performs it, in its transaction.
create table jobsys.audit_log (
  id bigint generated always as identity primary key,
  at timestamptz not null default now(),
  actor_role text not null,  -- jobsys.caller_role(): operator, service...
  actor_id uuid,  -- auth.uid(): the operator's account (null for the service)
  actor_name text check (length(actor_name) <= 320),  -- the account's email, when its token says
  action text not null check (action ~ '^[a-z_]{1,40}$'),
  object_type text not null check (object_type in ('job', 'device', 'worker_account', 'background_job', 'system')),
  object_id text check (length(object_id) <= 200),
  detail jsonb not null default '{}' check (octet_length(detail::text) <= 8192)
);
comment on table jobsys.audit_log is
  'Insert-only record of every operator action (who, when, what, in brief), written by the function that performs it; never a token or a secret. Outlives what it names (a deleted job).';
create index audit_log_at_idx on jobsys.audit_log (at desc);
create index audit_log_object_idx on jobsys.audit_log (object_type, object_id, id desc);

-- Audit ------------------------------------------------------------------------------------
-- One entry for an operator action, in the caller's transaction: it exists exactly when the
-- action happened. p_detail is brief and never holds a token or a secret.
create or replace function jobsys.audit(p_action text, p_object_type text, p_object_id text,
  p_detail jsonb default '{}')
  returns void
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
begin
  insert into jobsys.audit_log (actor_role, actor_id, actor_name, action, object_type, object_id, detail)
  values (jobsys.caller_role(), auth.uid(), left(auth.jwt() ->> 'email', 320), p_action, p_object_type,
          left(p_object_id, 200), coalesce(p_detail, '{}'));
end
$$;
comment on function jobsys.audit(text, text, text, jsonb) is
  'Writes one audit_log entry for an operator action in the caller''s transaction (who: caller_role, auth.uid and the token''s email; what: action, object, a brief detail without secrets).';

-- The audit log, newest first, filtered by actor (id or name), object and time; paged by
-- p_before_id (the smallest id of the previous page).
create or replace function jobsys.list_audit(p_actor text default null, p_object_type text default null,
  p_object_id text default null, p_since timestamptz default null, p_limit integer default 100,
  p_before_id bigint default null)
  returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform jobsys.require_operator();
  if p_limit is null or p_limit not between 1 and 1000 then
    perform jobsys.raise_error('JS400', 'limit must be 1-1000', '{"field": "limit"}');
  end if;
  if p_object_type is not null
     and p_object_type not in ('job', 'device', 'worker_account', 'background_job', 'system') then
    perform jobsys.raise_error('JS400', 'object_type must be job, device, worker_account, background_job or system',
      '{"field": "object_type"}');
  end if;
  return jsonb_build_object('entries', coalesce((
    select jsonb_agg(jsonb_build_object('id', a.id, 'at', a.at, 'actor_role', a.actor_role,
             'actor_id', a.actor_id, 'actor_name', a.actor_name, 'action', a.action,
             'object_type', a.object_type, 'object_id', a.object_id, 'detail', a.detail) order by a.id desc)
    from (select * from jobsys.audit_log a
          where (p_actor is null or a.actor_id::text = p_actor or a.actor_name = p_actor or a.actor_role = p_actor)
            and (p_object_type is null or a.object_type = p_object_type)
            and (p_object_id is null or a.object_id = p_object_id)
            and (p_since is null or a.at >= p_since)
            and (p_before_id is null or a.id < p_before_id)
          order by a.id desc limit p_limit) a), '[]'));
end
$$;
comment on function jobsys.list_audit(text, text, text, timestamp with time zone, integer, bigint) is
  'Operators: the audit log, newest first, filtered by actor (id, email or role), object and time, paged by p_before_id.';

-- Retention -------------------------------------------------------------------------------
-- Finished jobs and AI batches older than retention_days (0 keeps them) go, at most 200 jobs
-- and 50 batches a call, rows locked with SKIP LOCKED, so no purge holds a long lock or waits
-- on a transition. Run by maintain at most once a minute; what went is in the audit log.
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
                     and x.finished_at < now() - make_interval(days => v_days::integer)
                   order by x.finished_at limit 200
                   for update skip locked)
    returning j.id)
  select coalesce(array_agg(g.id), '{}') into v_jobs from gone g;
  with gone as (
    delete from jobsys.background_jobs b
    where b.id in (select x.id from jobsys.background_jobs x
                   where x.status in ('completed', 'failed', 'cancelled')
                     and coalesce(x.completed_at, x.updated_at) < now() - make_interval(days => v_days::integer)
                   order by x.created_at limit 50
                   for update skip locked)
    returning 1)
  select count(*) into v_batches from gone;
  perform jobsys.emit('jobsys:dashboard', 'job_deleted', jsonb_build_object('job_id', j)) from unnest(v_jobs) j;
  if cardinality(v_jobs) + v_batches > 0 then
    perform jobsys.audit('purge', 'system', null, jsonb_build_object(
      'jobs', cardinality(v_jobs), 'background_jobs', v_batches, 'older_than_days', v_days));
  end if;
  return cardinality(v_jobs) + v_batches;
end
$$;
comment on function jobsys.purge_expired() is
  'Retention (run by maintain at most once a minute): deletes finished jobs and AI batches older than retention_days (0 keeps them), at most 200 jobs and 50 batches a call with SKIP LOCKED, and notes the counts in the audit log.';

-- Which of these runs still exist: the dashboard deletes the screenshots of the others.
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
  'Operators: which of the given run ids still exist (the screenshots of the others are deleted by the dashboard).';

-- Metrics ---------------------------------------------------------------------------------
-- What GET /metrics exposes from the database, in one snapshot: jobs by status, runs by
-- status (from the jobs' exact counters), devices by status and PC, battery and temperature
-- of at most metrics_device_series devices, each live worker's push state, AI batches and
-- their items by status. Labels are bounded: statuses, PC names and, up to the setting, serials.
create or replace function jobsys.metrics_snapshot() returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz := jobsys.healthy_cutoff();
begin
  perform jobsys.require_operator();
  return jsonb_build_object(
    'jobs', coalesce((select jsonb_object_agg(x.status, x.n) from (
               select status, count(*) as n from jobsys.jobs group by status) x), '{}'),
    'runs', (select jsonb_build_object(
               'queued', coalesce(sum(assigned_count - running_count - completed_count - failed_count
                                      - cancelled_count), 0),
               'running', coalesce(sum(running_count), 0), 'completed', coalesce(sum(completed_count), 0),
               'failed', coalesce(sum(failed_count), 0), 'cancelled', coalesce(sum(cancelled_count), 0))
             from jobsys.jobs),
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
    and d.labels || d.operator_labels @> v_labels;
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
  perform jobsys.audit('pause', 'job', p_job_id::text, jsonb_build_object('from', v_job.status));
  update jobsys.job_assignments set status = 'paused' where job_id = p_job_id and status = 'pending';
  update jobsys.jobs set status = 'paused', paused_at = now(), waiting_since = null where id = p_job_id;
  v_job := jobsys.apply_counts(p_job_id, 0, 0, 0, 0, 0, true);
  perform jobsys.emit_to_job_workers(p_job_id, 'job_paused', jsonb_build_object('job_id', p_job_id));
  return jobsys.job_json(v_job);
end
$$;
comment on function jobsys.pause_job(uuid) is
  'Operators: pause an active or scheduled job. Queued runs wait; running ones finish; a wait for devices stops.';

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
  perform jobsys.audit('cancel', 'job', p_job_id::text, jsonb_build_object('from', v_job.status));
  v_job := jobsys.end_job(p_job_id, 'cancelled', null, 'job cancelled');
  return jobsys.job_json(v_job);
end
$$;
comment on function jobsys.cancel_job(uuid) is
  'Operators: cancel a job (active, paused or scheduled). Everything not finished is cancelled now and the workers stop what is running; every run is kept. Locks the job, its live runs, then their devices, each in id order (jobsys.end_job).';

create or replace function jobsys.delete_job(p_job_id uuid) returns void
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
begin
  perform jobsys.require_operator();
  v_job := jobsys.lock_job(p_job_id);
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

create or replace function jobsys.update_job_title(p_job_id uuid, p_title text) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_title text := jobsys.check_title(p_title);
begin
  perform jobsys.require_operator();
  perform jobsys.lock_job(p_job_id);
  perform jobsys.audit('rename', 'job', p_job_id::text, jsonb_build_object('title', v_title));
  update jobsys.jobs set title = v_title where id = p_job_id;
  return jobsys.job_json(jobsys.apply_counts(p_job_id, 0, 0, 0, 0, 0, true));
end
$$;
comment on function jobsys.update_job_title(uuid, text) is
  'Operators: rename a job (title checked as on create).';

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
    v_job.device_labels);
end
$$;
comment on function jobsys.clone_job(uuid) is
  'Operators: create a new job with the settings of another (URL, duration, target, device labels, title, attempts, time limit, grace), distributed now.';

create or replace function jobsys.set_device_labels(p_device_id uuid, p_labels jsonb) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_rule text := jobsys.label_problem(p_labels);
  v_device jobsys.devices;
  v_key text;
begin
  perform jobsys.require_operator();
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
  perform jobsys.top_up();  -- jobs targeting these labels may now have a device
  return jobsys.device_json(v_device, jobsys.healthy_cutoff());
end
$$;
comment on function jobsys.set_device_labels(uuid, jsonb) is
  'Operators: replace a device''s operator labels (bounded as worker labels; a key its worker reports is refused). Jobs targeting labels see the change at once.';

create or replace function jobsys.request_device_reboot(p_device_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_device jobsys.devices;
begin
  perform jobsys.require_operator();
  select * into v_device from jobsys.devices where id = p_device_id for no key update;
  if not found then
    perform jobsys.raise_error('JS404', 'device not found', jsonb_build_object('device_id', p_device_id));
  end if;
  if v_device.running_assignment_id is not null then
    perform jobsys.raise_error('JS409', 'the device is running a run: drain it first, then reboot',
      jsonb_build_object('device_id', p_device_id, 'reason', 'busy'));
  end if;
  if v_device.reported_state = 'offline' or not exists (
       select 1 from jobsys.workers w where w.id = v_device.worker_id and w.status = 'online'
       and w.last_heartbeat_at > jobsys.healthy_cutoff()) then
    perform jobsys.raise_error('JS409', 'no worker holds the device now, so none can reboot it',
      jsonb_build_object('device_id', p_device_id, 'reason', 'offline'));
  end if;
  perform jobsys.audit('reboot', 'device', p_device_id::text, jsonb_build_object('serial', v_device.serial));
  update jobsys.devices set reboot_requested_at = now() where id = p_device_id returning * into v_device;
  insert into jobsys.device_events (device_id, event, state) values (p_device_id, 'reboot_requested', v_device.state);
  perform jobsys.emit(jobsys.worker_topic(v_device.worker_id), 'device_reboot',
    jsonb_build_object('device_id', p_device_id, 'serial', v_device.serial));
  perform jobsys.emit('jobsys:dashboard', 'device_status', jsonb_build_object('device_id', p_device_id));
  return jobsys.device_json(v_device, jobsys.healthy_cutoff());
end
$$;
comment on function jobsys.request_device_reboot(uuid) is
  'Operators: ask the device''s worker to reboot it (pushed device_reboot; listed by heartbeat for 10 minutes). JS409 while it runs a run or when no live worker holds it.';

create or replace function jobsys.fleet_labels(p_labels jsonb default '{}') returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_rule text := jobsys.label_problem(coalesce(p_labels, '{}'));
  v_cutoff timestamptz := jobsys.healthy_cutoff();
begin
  perform jobsys.require_operator();
  if v_rule is not null then
    perform jobsys.raise_error('JS400', jobsys.label_rule_message(v_rule),
      jsonb_build_object('field', 'labels', 'rule', v_rule));
  end if;
  return (
    with matching as (
      select d.labels || d.operator_labels as labels,
             d.state = 'online' and d.last_heartbeat_at > v_cutoff and d.worker_id is not null as healthy
      from jobsys.devices d
      where d.labels || d.operator_labels @> coalesce(p_labels, '{}')
    ), pairs as (
      select p.key, p.value #>> '{}' as value, count(*) as total, count(*) filter (where m.healthy) as healthy
      from matching m cross join lateral jsonb_each(m.labels) p
      where p.key not in ('error', 'probe', 'reboot', 'adb_serial', 'transport_id')  -- the worker's notes, not choices
      group by 1, 2
    )
    select jsonb_build_object(
      'healthy', (select count(*) filter (where m.healthy) from matching m),
      'total', (select count(*) from matching m),
      'labels', coalesce((select jsonb_agg(jsonb_build_object('key', p.key, 'value', p.value,
                            'total', p.total, 'healthy', p.healthy) order by p.key, p.value)
                          from (select * from pairs order by key, value limit 1000) p), '[]')));
end
$$;
comment on function jobsys.fleet_labels(jsonb) is
  'Operators: the label pairs of the devices matching p_labels, each with how many devices carry it (total, and healthy: may take a run now), and how many healthy devices match: the choices and live counts of the new-job dialog.';

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
    order by j.id for no key update;

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
    perform jobsys.apply_counts(v_row.id, 0, v_row.n::integer, 0, 0, 0);
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
  'Workers: claim for each free online device of the worker (or those listed) its oldest pending assignment, from the device queue floor up; p_start starts the runs at once. Locks the jobs first, then SKIP LOCKED on assignments and devices, so a claim never waits on another claim.';

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
    select * from jobsys.jobs
    where status in ('active', 'paused') and updated_at > progress_notified_at
    for no key update skip locked
  loop
    update jobsys.jobs set progress_notified_at = v_job.updated_at where id = v_job.id;
    perform jobsys.emit('jobsys:dashboard', 'job_progress', jobsys.progress_json(v_job));
  end loop;
  return jsonb_build_object('ran', true, 'rescued', v_rescued, 'offline_devices', v_stale,
                            'started_jobs', v_started, 'topped_up', v_topped, 'ended_jobs', v_ended,
                            'refit_devices', v_refit, 'purged', v_purged);
end
$$;
comment on function jobsys.maintain(boolean) is
  'Periodic upkeep (lease rescue, stale marking, starting scheduled jobs at their start_at, top-up, ending jobs past their time limit or top-up grace, ending quarantines and drains, retention at most once a minute, trailing job_progress), run from every worker heartbeat and claim loop; an advisory lock and maintenance_interval_ms make it run once per interval however many call it.';

create or replace function jobsys.set_device_state(p_device_id uuid, p_state text) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz := jobsys.healthy_cutoff();
  v_device jobsys.devices;
begin
  perform jobsys.require_operator();
  if p_state is null or p_state not in ('disabled', 'draining', 'enabled') then
    perform jobsys.raise_error('JS400', 'state must be disabled, draining or enabled', '{"field": "state"}');
  end if;
  perform 1 from jobsys.devices where id = p_device_id;
  if not found then
    perform jobsys.raise_error('JS404', 'device not found', jsonb_build_object('device_id', p_device_id));
  end if;
  perform jobsys.audit(case p_state when 'disabled' then 'disable' when 'draining' then 'drain' else 'enable' end,
                       'device', p_device_id::text,
                       jsonb_build_object('serial', (select d.serial from jobsys.devices d where d.id = p_device_id)));
  if p_state = 'disabled' then
    perform jobsys.requeue_device_run(p_device_id, false, 'device disabled by an operator');
  end if;
  update jobsys.devices d set
    state = case
      when p_state = 'disabled' then 'disabled'
      when p_state = 'draining' then case when d.state = 'disabled' or d.running_assignment_id is null
                                          then 'disabled' else 'draining' end
      when not jobsys.sticky_state(d.state) then d.state
      when live.yes then f.state
      else 'offline' end,
    state_reason = case
      when p_state = 'disabled' then 'disabled by an operator'
      when p_state = 'draining' and d.state = 'disabled' then d.state_reason
      when p_state = 'draining' and d.running_assignment_id is null then 'drained: disabled by an operator'
      when p_state = 'draining' then 'draining: its run finishes, then it is disabled'
      when not jobsys.sticky_state(d.state) then d.state_reason
      when live.yes then f.reason end,
    failure_streak = case when p_state = 'enabled' then 0 else d.failure_streak end,
    quarantined_until = case when p_state = 'enabled' then null else d.quarantined_until end
  from (select exists (select 1 from jobsys.workers w
                       join jobsys.devices x on x.worker_id = w.id
                       where x.id = p_device_id and w.status = 'online' and w.last_heartbeat_at > v_cutoff) as yes) live
  cross join lateral (select f.state, f.reason from jobsys.devices x
                      cross join lateral jobsys.fitness(x.reported_state, x.vitals, x.labels) f
                      where x.id = p_device_id) f
  where d.id = p_device_id
  returning d.* into v_device;
  perform jobsys.emit('jobsys:dashboard', 'device_status',
    jsonb_build_object('device_id', p_device_id, 'state', v_device.state));
  perform jobsys.release_unhealthy_queues();
  perform jobsys.top_up();
  return jobsys.device_json(v_device, v_cutoff);
end
$$;
comment on function jobsys.set_device_state(uuid, text) is
  'Operators: disable a device (no new runs; its running run goes back to the queue, its queue to other devices), drain it (its running run finishes, then it is disabled) or enable it again (back to what its worker reports; ends a quarantine). Workers cannot disable, drain or enable.';

create or replace function jobsys.release_device(p_device_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_device jobsys.devices;
begin
  perform jobsys.require_operator();
  perform 1 from jobsys.devices where id = p_device_id;
  if not found then
    perform jobsys.raise_error('JS404', 'device not found', jsonb_build_object('device_id', p_device_id));
  end if;
  perform jobsys.audit('release', 'device', p_device_id::text,
                       jsonb_build_object('serial', (select d.serial from jobsys.devices d where d.id = p_device_id)));
  perform jobsys.requeue_device_run(p_device_id, true, 'device released by an operator');
  update jobsys.devices d set worker_id = null,
    state = case when jobsys.sticky_state(d.state) then d.state else 'offline' end,
    reported_state = 'offline', conflict_worker_id = null, conflict_at = null
  where d.id = p_device_id
  returning * into v_device;
  perform jobsys.emit('jobsys:dashboard', 'device_status',
    jsonb_build_object('device_id', p_device_id, 'released', true));
  perform jobsys.release_unhealthy_queues();  -- its queue moves to other devices
  perform jobsys.top_up();
  return jobsys.device_json(v_device, jobsys.healthy_cutoff());
end
$$;
comment on function jobsys.release_device(uuid) is
  'Operators: unbind a device from its worker session. Its running run goes back to the queue by the rule of lease expiry (failed after the last attempt), its worker is told to stop it, and the next registration by anyone takes the device.';

create or replace function jobsys.add_worker_account(p_name text, p_token_hash text) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_account jobsys.worker_accounts;
begin
  perform jobsys.require_operator();
  if p_name is null or length(btrim(p_name)) not between 1 and 64 or p_name ~ '[[:cntrl:]]' then
    perform jobsys.raise_error('JS400', 'PC name must be 1-64 printable characters', '{"field": "name"}');
  end if;
  if p_token_hash is null or p_token_hash !~ '^[0-9a-f]{64}$' then
    perform jobsys.raise_error('JS400', 'token_hash must be a SHA-256 hex digest', '{"field": "token_hash"}');
  end if;
  insert into jobsys.worker_accounts (name, token_hash) values (btrim(p_name), p_token_hash)
  on conflict do nothing
  returning * into v_account;
  if v_account.id is null then
    perform jobsys.raise_error('JS409', format('a PC named %s already exists; revoke it first or choose another name',
                                                btrim(p_name)), jsonb_build_object('name', btrim(p_name)));
  end if;
  perform jobsys.emit('jobsys:dashboard', 'device_status', jsonb_build_object('account_id', v_account.id));
  perform jobsys.audit('add_pc', 'worker_account', v_account.id::text, jsonb_build_object('name', v_account.name));
  return jobsys.worker_account_json(v_account);
end
$$;
comment on function jobsys.add_worker_account(text, text) is
  'Operators: a new worker account (a PC joining the hub) named p_name with the SHA-256 digest of its token; the token itself never reaches the database. JS409 when an active account has that name.';

create or replace function jobsys.revoke_worker_account(p_name text) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_account jobsys.worker_accounts;
  v_sessions uuid[];
begin
  perform jobsys.require_operator();
  update jobsys.worker_accounts set revoked_at = now()
  where name = btrim(coalesce(p_name, '')) and revoked_at is null
  returning * into v_account;
  if v_account.id is null then
    perform jobsys.raise_error('JS404', 'no active PC by that name', jsonb_build_object('name', p_name));
  end if;
  with stopped as (
    update jobsys.workers set status = 'stopped'
    where user_id = v_account.id and status <> 'stopped'
    returning id)
  select coalesce(array_agg(id order by id), '{}') into v_sessions from stopped;
  perform 1 from jobsys.devices d where d.worker_id = any(v_sessions) order by d.id for no key update;
  update jobsys.devices set state = case when jobsys.sticky_state(state) then state else 'offline' end,
    reported_state = 'offline'
  where worker_id = any(v_sessions) and ((state <> 'offline' and not jobsys.sticky_state(state)) or reported_state <> 'offline');
  perform jobsys.emit('jobsys:hub', 'account_revoked', jsonb_build_object('account_id', v_account.id));
  perform jobsys.audit('revoke_pc', 'worker_account', v_account.id::text, jsonb_build_object('name', v_account.name));
  perform jobsys.emit('jobsys:dashboard', 'device_status', jsonb_build_object('account_id', v_account.id));
  perform jobsys.release_unhealthy_queues();
  perform jobsys.top_up();
  return jobsys.worker_account_json(v_account);
end
$$;
comment on function jobsys.revoke_worker_account(text) is
  'Operators: revoke the active worker account named p_name. Its token is refused from then on, its sessions stop, its devices go offline and their queues move elsewhere; runs it was running follow the lease rules. Hubs close its push sockets (event account_revoked on jobsys:hub).';

alter table jobsys.audit_log enable row level security;
create policy audit_log_operator_read on jobsys.audit_log for select to authenticated
  using (jobsys.caller_role() = 'operator');
grant select on jobsys.audit_log to authenticated;
grant all on jobsys.audit_log to service_role;

revoke execute on function jobsys.audit(text, text, text, jsonb),
  jobsys.list_audit(text, text, text, timestamp with time zone, integer, bigint),
  jobsys.purge_expired(), jobsys.existing_runs(bigint[]), jobsys.metrics_snapshot() from public;
grant execute on function
  jobsys.list_audit(text, text, text, timestamp with time zone, integer, bigint), jobsys.metrics_snapshot(),
  jobsys.existing_runs(bigint[])
to authenticated, service_role;
