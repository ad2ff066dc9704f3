-- jobsys declarative schema: operations. The audit log (written by the function that performs
-- each operator action), retention (upkeep purges what is old and finished, a few at a time),
-- and the snapshot GET /metrics turns into Prometheus series.

-- Audit ------------------------------------------------------------------------------------
-- One entry for an operator action, in the caller's transaction: it exists exactly when the
-- action happened. p_detail is brief and never holds a token or a secret.
-- p_by_system: upkeep's own work (retention), whoever's heartbeat happened to run it.
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
  perform jobsys.require_admin();
  if p_limit is null or p_limit not between 1 and 1000 then
    perform jobsys.raise_error('JS400', 'limit must be 1-1000', '{"field": "limit"}');
  end if;
  if p_object_type is not null
     and p_object_type not in ('job', 'device', 'worker_account', 'operator_account', 'background_job', 'system') then
    perform jobsys.raise_error('JS400',
      'object_type must be job, device, worker_account, operator_account, background_job or system',
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
  'Admins: the audit log, newest first, filtered by actor (id, email or role), object and time, paged by p_before_id.';

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

-- Which of these runs still exist: the hub's sweep deletes the screenshots of the others.
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
  perform jobsys.require_viewer();
  return jsonb_build_object(
    'jobs', coalesce((select jsonb_object_agg(x.status, x.n) from (
               select status, count(*) as n from jobsys.jobs group by status) x), '{}'),
    -- The jobs' rows plus their job_run_counts (jobsys.counted), summed apart.
    'runs', (select jsonb_build_object(
               'queued', j.assigned - j.running - j.completed - j.failed - j.cancelled
                         - r.running - r.completed - r.failed - r.cancelled,
               'running', j.running + r.running, 'completed', j.completed + r.completed,
               'failed', j.failed + r.failed, 'cancelled', j.cancelled + r.cancelled)
             from (select coalesce(sum(assigned_count), 0) as assigned, coalesce(sum(running_count), 0) as running,
                          coalesce(sum(completed_count), 0) as completed, coalesce(sum(failed_count), 0) as failed,
                          coalesce(sum(cancelled_count), 0) as cancelled from jobsys.jobs) j,
                  (select coalesce(sum(running), 0) as running, coalesce(sum(completed), 0) as completed,
                          coalesce(sum(failed), 0) as failed, coalesce(sum(cancelled), 0) as cancelled
                   from jobsys.job_run_counts) r),
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
