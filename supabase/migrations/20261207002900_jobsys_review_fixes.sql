-- jobsys: review fixes. A device that no longer carries a job's labels gives its queued runs
-- of that job back (release_unhealthy_queues; set_device_labels calls it); the shared rate
-- limit takes its key's row lock before it settles grants (a deadlock between runners);
-- retention is audited as the system, and a fractional retention_days counts as such.

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
           or not d.labels || d.operator_labels @> (select j.device_labels from jobsys.jobs j where j.id = a.job_id))
    order by a.job_id
  loop
    perform 1 from jobsys.jobs where id = v_job_id for no key update skip locked;
    continue when not found;
    with released as (
      delete from jobsys.job_assignments a
      using jobsys.devices d, jobsys.jobs j
      where a.job_id = v_job_id and j.id = v_job_id and d.id = a.device_id and a.status in ('pending', 'paused')
        and (d.state <> 'online' or d.last_heartbeat_at <= v_cutoff or d.worker_id is null
             or not d.labels || d.operator_labels @> j.device_labels)
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
