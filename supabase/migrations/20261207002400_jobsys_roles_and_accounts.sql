-- jobsys: issue 21, accounts and roles. Staff roles viewer (reads), operator (jobs and AI
-- batches) and admin (also devices, PCs, accounts, the audit log), from app_metadata.jobsys_role
-- in Supabase mode and from named operator accounts in embedded mode (operator_accounts:
-- add / list / revoke, and operator_claims, which the dashboard runs a bearer token's calls
-- with). Every function checks its role (require_viewer / require_operator / require_admin);
-- the policies let all staff read (jobsys.is_staff).

-- Operator accounts of embedded mode (jobsys accounts add): a name, a role and the SHA-256
-- digest of the account's token. Supabase mode takes the same roles from app_metadata.
create table jobsys.operator_accounts (
  id uuid primary key default gen_random_uuid(),
  name text not null check (length(name) between 1 and 64 and name = btrim(name) and name !~ '[[:cntrl:]]'),
  role text not null check (role in ('viewer', 'operator', 'admin')),
  token_hash text not null unique check (token_hash ~ '^[0-9a-f]{64}$'),
  created_at timestamptz not null default now(),
  last_seen_at timestamptz,
  revoked_at timestamptz
);
comment on table jobsys.operator_accounts is
  'Named operator accounts of embedded mode (viewer, operator, admin), each with the SHA-256 digest of its token (never the token); a revoked account keeps its row for the record.';
create unique index operator_accounts_active_name_idx on jobsys.operator_accounts (name) where revoked_at is null;

alter table jobsys.audit_log drop constraint audit_log_object_type_check;
alter table jobsys.audit_log add constraint audit_log_object_type_check
  check (object_type in ('job', 'device', 'worker_account', 'operator_account', 'background_job', 'system'));

create or replace function jobsys.caller_role() returns text
  language plpgsql stable
  set search_path = jobsys, pg_temp
  as $$
declare
  -- plpgsql, not sql: a SQL-language function here is re-planned on every call, and this
  -- runs at least once per transition (measured 120-160 us as SQL, under 10 us as plpgsql).
  v_role text := coalesce(nullif(current_setting('role', true), 'none'), '');
  v_claims jsonb;
begin
  if v_role not in ('anon', 'authenticated') then
    return 'service';
  end if;
  v_claims := auth.jwt();
  if v_claims ->> 'role' = 'service_role' then
    return 'service';
  end if;
  if v_role = 'authenticated'
     and v_claims -> 'app_metadata' ->> 'jobsys_role' in ('viewer', 'operator', 'admin', 'worker', 'runner') then
    return v_claims -> 'app_metadata' ->> 'jobsys_role';
  end if;
  return 'anon';
end
$$;
comment on function jobsys.caller_role() is
  'Who is calling: service (a trusted direct connection or the service role), viewer, operator, admin, worker or runner (app_metadata.jobsys_role of the Supabase JWT, or of an embedded operator account: jobsys.operator_claims), else anon. Read from the role setting PostgREST sets, because the functions run as security definer.';

create or replace function jobsys.require_operator() returns void
  language plpgsql stable
  set search_path = jobsys, pg_temp
  as $$
begin
  if jobsys.caller_role() not in ('service', 'operator', 'admin') then
    perform jobsys.raise_error('JS403', 'operator role required');
  end if;
end
$$;
comment on function jobsys.require_operator() is
  'Raises JS403 unless the caller is an operator, an admin or the service: jobs and AI batches.';

create or replace function jobsys.require_viewer() returns void
  language plpgsql stable
  set search_path = jobsys, pg_temp
  as $$
begin
  if jobsys.caller_role() not in ('service', 'viewer', 'operator', 'admin') then
    perform jobsys.raise_error('JS403', 'viewer, operator or admin role required');
  end if;
end
$$;
comment on function jobsys.require_viewer() is
  'Raises JS403 unless the caller is staff (viewer, operator, admin) or the service: the reads.';

create or replace function jobsys.require_admin() returns void
  language plpgsql stable
  set search_path = jobsys, pg_temp
  as $$
begin
  if jobsys.caller_role() not in ('service', 'admin') then
    perform jobsys.raise_error('JS403', 'admin role required');
  end if;
end
$$;
comment on function jobsys.require_admin() is
  'Raises JS403 unless the caller is an admin or the service: devices, PCs, accounts, the audit log.';

create or replace function jobsys.is_staff() returns boolean
  language sql stable
  set search_path = jobsys, pg_temp
  as $$
  select jobsys.caller_role() in ('viewer', 'operator', 'admin')
$$;
comment on function jobsys.is_staff() is
  'Whether the caller is a viewer, an operator or an admin (the row level security policies'' reader).';

create or replace function jobsys.require_signed_in() returns void
  language plpgsql stable
  set search_path = jobsys, pg_temp
  as $$
begin
  if jobsys.caller_role() not in ('service', 'viewer', 'operator', 'admin', 'worker') then
    perform jobsys.raise_error('JS403', 'signed-in operator or worker required');
  end if;
end
$$;
comment on function jobsys.require_signed_in() is
  'Raises JS403 unless the caller is staff, a worker or the service: upkeep (lease rescue, stale marking, top-up) is harmless for them, and workers run it from their heartbeats. Runners and anon may not.';

create or replace function jobsys.list_jobs(p_status text default null, p_q text default null,
  p_limit integer default 100, p_offset integer default 0)
  returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform jobsys.require_viewer();
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

create or replace function jobsys.get_job(p_job_id uuid) returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
begin
  perform jobsys.require_viewer();
  select * into v_job from jobsys.jobs where id = p_job_id;
  if not found then
    perform jobsys.raise_error('JS404', 'job not found', jsonb_build_object('job_id', p_job_id));
  end if;
  return jobsys.job_json(v_job) || jsonb_build_object('assignments', coalesce((
    select jsonb_agg(jsonb_build_object(
      'id', a.id, 'device_id', a.device_id, 'serial', d.serial, 'worker_id', d.worker_id,
      'worker_name', w.name,
      'status', a.status, 'attempt', a.attempt, 'lease_expires_at', a.lease_expires_at,
      'created_at', a.created_at, 'started_at', a.started_at, 'finished_at', a.finished_at,
      'result', a.result, 'error', a.error) order by d.serial)
    from jobsys.job_assignments a join jobsys.devices d on d.id = a.device_id
    left join jobsys.workers w on w.id = coalesce(a.worker_id, d.worker_id)
    where a.job_id = p_job_id), '[]'));
end
$$;
comment on function jobsys.get_job(uuid) is
  'Operators: one job with its assignments (worker_name: the session that ran it, else the device''s).';

create or replace function jobsys.list_devices() returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz := jobsys.healthy_cutoff();
begin
  perform jobsys.require_viewer();
  return (
    with rows as (
      select jobsys.device_json(d, v_cutoff) as device, w.name as worker_name
      from jobsys.devices d
      left join jobsys.workers w on w.id = d.worker_id
    )
    select jsonb_build_object(
      'devices', coalesce(jsonb_agg(r.device order by r.worker_name, r.device ->> 'serial'), '[]'),
      'summary', jsonb_build_object(
        'total', count(*),
        'connected', count(*) filter (where r.device ->> 'status' in ('idle', 'busy')),
        'idle', count(*) filter (where r.device ->> 'status' = 'idle'),
        'busy', count(*) filter (where r.device ->> 'status' = 'busy'),
        'offline', count(*) filter (where r.device ->> 'status' = 'offline'),
        'error', count(*) filter (where r.device ->> 'status' = 'error'),
        'unauthorized', count(*) filter (where r.device ->> 'status' = 'unauthorized'),
        'disabled', count(*) filter (where r.device ->> 'status' = 'disabled'),
        'draining', count(*) filter (where r.device ->> 'status' = 'draining'),
        'quarantined', count(*) filter (where r.device ->> 'status' = 'quarantined'),
        'low_battery', count(*) filter (where r.device ->> 'status' = 'low_battery'),
        'overheated', count(*) filter (where r.device ->> 'status' = 'overheated')))
    from rows r);
end
$$;
comment on function jobsys.list_devices() is
  'Operators: every device (jobsys.device_json: status and why, labels, vitals, worker, current job, the last session refused it) with counts per status.';

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
  perform jobsys.top_up();  -- jobs targeting these labels may now have a device
  return jobsys.device_json(v_device, jobsys.healthy_cutoff());
end
$$;
comment on function jobsys.set_device_labels(uuid, jsonb) is
  'Admins: replace a device''s operator labels (bounded as worker labels; a key its worker reports is refused). Jobs targeting labels see the change at once.';

create or replace function jobsys.request_device_reboot(p_device_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_device jobsys.devices;
begin
  perform jobsys.require_admin();
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
  'Admins: ask the device''s worker to reboot it (pushed device_reboot; listed by heartbeat for 10 minutes). JS409 while it runs a run or when no live worker holds it.';

create or replace function jobsys.get_device(p_device_id uuid) returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_device jobsys.devices;
begin
  perform jobsys.require_viewer();
  select * into v_device from jobsys.devices where id = p_device_id;
  if not found then
    perform jobsys.raise_error('JS404', 'device not found', jsonb_build_object('device_id', p_device_id));
  end if;
  return jobsys.device_json(v_device, jobsys.healthy_cutoff()) || jsonb_build_object(
    'vitals_history', coalesce((select jsonb_agg(jsonb_build_object('at', v.at, 'battery_pct', v.battery_pct,
                                  'temperature_c', v.temperature_c, 'charging', v.charging) order by v.at)
                                from jobsys.device_vitals v
                                where v.device_id = p_device_id and v.at > now() - interval '24 hours'), '[]'),
    'events', coalesce((select jsonb_agg(jsonb_build_object('id', e.id, 'at', e.at, 'event', e.event,
                          'state', e.state, 'detail', e.detail) order by e.id desc)
                        from (select * from jobsys.device_events e where e.device_id = p_device_id
                              order by e.id desc limit 100) e), '[]'),
    'runs', coalesce((select jsonb_agg(jsonb_build_object('id', a.id, 'job_id', a.job_id, 'job_title', j.title,
                        'status', a.status, 'attempt', a.attempt, 'started_at', a.started_at,
                        'finished_at', a.finished_at, 'error', a.error, 'result', a.result) order by a.id desc)
                      from (select * from jobsys.job_assignments a where a.device_id = p_device_id
                            order by a.id desc limit 50) a
                      join jobsys.jobs j on j.id = a.job_id), '[]'));
end
$$;
comment on function jobsys.get_device(uuid) is
  'Operators: one device with its last 24 hours of vitals, its last 100 events (state changes, reboots) and its last 50 runs.';

create or replace function jobsys.fleet_labels(p_labels jsonb default '{}') returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_rule text := jobsys.label_problem(coalesce(p_labels, '{}'));
  v_cutoff timestamptz := jobsys.healthy_cutoff();
begin
  perform jobsys.require_viewer();
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

create or replace function jobsys.set_device_state(p_device_id uuid, p_state text) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz := jobsys.healthy_cutoff();
  v_device jobsys.devices;
begin
  perform jobsys.require_admin();
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
  'Admins: disable a device (no new runs; its running run goes back to the queue, its queue to other devices), drain it (its running run finishes, then it is disabled) or enable it again (back to what its worker reports; ends a quarantine). Workers cannot disable, drain or enable.';

create or replace function jobsys.release_device(p_device_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_device jobsys.devices;
begin
  perform jobsys.require_admin();
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
  'Admins: unbind a device from its worker session. Its running run goes back to the queue by the rule of lease expiry (failed after the last attempt), its worker is told to stop it, and the next registration by anyone takes the device.';

create or replace function jobsys.add_worker_account(p_name text, p_token_hash text) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_account jobsys.worker_accounts;
begin
  perform jobsys.require_admin();
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
  'Admins: a new worker account (a PC joining the hub) named p_name with the SHA-256 digest of its token; the token itself never reaches the database. JS409 when an active account has that name.';

create or replace function jobsys.list_worker_accounts(p_include_revoked boolean default false) returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform jobsys.require_viewer();
  return jsonb_build_object('accounts', coalesce((
    select jsonb_agg(jobsys.worker_account_json(a) order by a.revoked_at is not null, a.name, a.created_at)
    from jobsys.worker_accounts a where p_include_revoked or a.revoked_at is null), '[]'));
end
$$;
comment on function jobsys.list_worker_accounts(boolean) is
  'Staff: the worker accounts (active first, by name), with their live sessions and device counts.';

create or replace function jobsys.revoke_worker_account(p_name text) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_account jobsys.worker_accounts;
  v_sessions uuid[];
begin
  perform jobsys.require_admin();
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
  'Admins: revoke the active worker account named p_name. Its token is refused from then on, its sessions stop, its devices go offline and their queues move elsewhere; runs it was running follow the lease rules. Hubs close its push sockets (event account_revoked on jobsys:hub).';

create or replace function jobsys.operator_account_json(a jobsys.operator_accounts) returns jsonb
  language sql stable
  as $$
  select jsonb_build_object('id', a.id, 'name', a.name, 'role', a.role, 'created_at', a.created_at,
                            'last_seen_at', a.last_seen_at, 'revoked_at', a.revoked_at)
$$;
comment on function jobsys.operator_account_json(jobsys.operator_accounts) is
  'An operator account as the API shows it: never its token digest.';

create or replace function jobsys.add_operator_account(p_name text, p_role text, p_token_hash text) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_account jobsys.operator_accounts;
begin
  perform jobsys.require_admin();
  if p_name is null or length(btrim(p_name)) not between 1 and 64 or p_name ~ '[[:cntrl:]]' then
    perform jobsys.raise_error('JS400', 'account name must be 1-64 printable characters', '{"field": "name"}');
  end if;
  if p_role is null or p_role not in ('viewer', 'operator', 'admin') then
    perform jobsys.raise_error('JS400', 'role must be viewer, operator or admin', '{"field": "role"}');
  end if;
  if p_token_hash is null or p_token_hash !~ '^[0-9a-f]{64}$' then
    perform jobsys.raise_error('JS400', 'token_hash must be a SHA-256 digest in hex', '{"field": "token_hash"}');
  end if;
  insert into jobsys.operator_accounts (name, role, token_hash) values (btrim(p_name), p_role, p_token_hash)
  on conflict do nothing
  returning * into v_account;
  if v_account.id is null then
    perform jobsys.raise_error('JS409', format('an account named %s already exists; revoke it first or choose another name',
      btrim(p_name)), jsonb_build_object('name', btrim(p_name)));
  end if;
  perform jobsys.audit('add_account', 'operator_account', v_account.id::text,
                       jsonb_build_object('name', v_account.name, 'role', v_account.role));
  return jobsys.operator_account_json(v_account);
end
$$;
comment on function jobsys.add_operator_account(text, text, text) is
  'Admins: a new operator account named p_name with a role (viewer, operator, admin) and the SHA-256 digest of its token; JS409 when an active account has that name.';

create or replace function jobsys.list_operator_accounts(p_include_revoked boolean default false) returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform jobsys.require_admin();
  return jsonb_build_object('accounts', coalesce((
    select jsonb_agg(jobsys.operator_account_json(a) order by a.revoked_at is not null, a.name, a.created_at)
    from jobsys.operator_accounts a where p_include_revoked or a.revoked_at is null), '[]'));
end
$$;
comment on function jobsys.list_operator_accounts(boolean) is
  'Admins: the operator accounts (active first, by name), never their token digests.';

create or replace function jobsys.revoke_operator_account(p_name text) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_account jobsys.operator_accounts;
begin
  perform jobsys.require_admin();
  update jobsys.operator_accounts set revoked_at = now()
  where name = btrim(coalesce(p_name, '')) and revoked_at is null
  returning * into v_account;
  if not found then
    perform jobsys.raise_error('JS404', 'no active account with that name', jsonb_build_object('name', p_name));
  end if;
  perform jobsys.audit('revoke_account', 'operator_account', v_account.id::text,
                       jsonb_build_object('name', v_account.name, 'role', v_account.role));
  return jobsys.operator_account_json(v_account);
end
$$;
comment on function jobsys.revoke_operator_account(text) is
  'Admins: revoke the active operator account named p_name; its token is refused from then on.';

-- The dashboard's only question about a bearer token it does not know: whose is it? Called
-- by the dashboard's own connection (the service) before it switches to the authenticated
-- role for the call itself.
create or replace function jobsys.operator_claims(p_token_hash text) returns text
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_account jobsys.operator_accounts;
begin
  if jobsys.caller_role() <> 'service' then
    perform jobsys.raise_error('JS403', 'only the dashboard resolves account tokens');
  end if;
  select * into v_account from jobsys.operator_accounts where token_hash = p_token_hash and revoked_at is null;
  if v_account.id is null then
    perform jobsys.raise_error('JS401', 'unknown or revoked account token');
  end if;
  update jobsys.operator_accounts set last_seen_at = now()
  where id = v_account.id and (last_seen_at is null or last_seen_at < now() - interval '10 seconds');
  return json_build_object('sub', v_account.id, 'role', 'authenticated', 'jobsys_account', v_account.name,
                           'app_metadata', json_build_object('jobsys_role', v_account.role))::text;
end
$$;
comment on function jobsys.operator_claims(text) is
  'The dashboard only: the JWT-shaped claims of the active operator account whose token has this SHA-256 digest (its id as sub, its role as jobsys_role, its name), or JS401. Notes when it was last seen (at most every 10 s).';

create or replace function jobsys.audit(p_action text, p_object_type text, p_object_id text,
  p_detail jsonb default '{}')
  returns void
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
begin
  insert into jobsys.audit_log (actor_role, actor_id, actor_name, action, object_type, object_id, detail)
  values (jobsys.caller_role(), auth.uid(), left(coalesce(auth.jwt() ->> 'email', auth.jwt() ->> 'jobsys_account'), 320),
          p_action, p_object_type,
          left(p_object_id, 200), coalesce(p_detail, '{}'));
end
$$;
comment on function jobsys.audit(text, text, text, jsonb) is
  'Writes one audit_log entry for an operator action in the caller''s transaction (who: caller_role, auth.uid and the token''s email or embedded account name; what: action, object, a brief detail without secrets).';

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

create or replace function jobsys.may_receive(p_topic text) returns boolean
  language sql stable security definer
  set search_path = jobsys, pg_temp
  as $$
  select case
    when p_topic = 'jobsys:dashboard' then jobsys.caller_role() in ('viewer', 'operator', 'admin', 'service')
    when p_topic = 'jobsys:runners' then jobsys.caller_role() in ('runner', 'service')
    when p_topic like 'jobsys:worker:%' then
      jobsys.caller_role() = 'service'
      or jobsys.is_own_worker(jobsys.try_uuid(substr(p_topic, length('jobsys:worker:') + 1)))
    else false
  end
$$;
comment on function jobsys.may_receive(text) is
  'Realtime Authorization: jobsys:dashboard for staff (viewer, operator, admin), jobsys:runners for AI batch runners (batch ids only; the runner claims through the database), jobsys:worker:<uuid> only for the worker user that registered that session.';

alter policy settings_operator_read on jobsys.settings
  using (jobsys.is_staff());

alter policy workers_read on jobsys.workers
  using (jobsys.is_staff() or jobsys.is_own_worker(id));

alter policy devices_read on jobsys.devices
  using (jobsys.is_staff() or jobsys.is_own_worker(worker_id));

alter policy device_events_operator_read on jobsys.device_events
  using (jobsys.is_staff());

alter policy device_vitals_operator_read on jobsys.device_vitals
  using (jobsys.is_staff());

alter policy audit_log_operator_read on jobsys.audit_log
  using (jobsys.caller_role() = 'admin');

alter policy worker_accounts_operator_read on jobsys.worker_accounts
  using (jobsys.is_staff());

alter policy jobs_operator_read on jobsys.jobs
  using (jobsys.is_staff());

alter policy assignments_read on jobsys.job_assignments
  using (jobsys.is_staff()
         or exists (select 1 from jobsys.devices d
                    where d.id = device_id and jobsys.is_own_worker(d.worker_id)));

alter policy background_jobs_read on jobsys.background_jobs
  using (jobsys.is_staff() or jobsys.caller_role() = 'runner');

alter policy background_job_items_read on jobsys.background_job_items
  using (jobsys.is_staff() or jobsys.caller_role() = 'runner');

alter policy background_job_logs_operator_read on jobsys.background_job_logs
  using (jobsys.is_staff());

alter table jobsys.operator_accounts enable row level security;  -- no policy: read by the functions only
grant all on jobsys.operator_accounts to service_role;

revoke execute on function jobsys.require_viewer(), jobsys.require_admin(), jobsys.is_staff(),
  jobsys.operator_account_json(jobsys.operator_accounts), jobsys.add_operator_account(text, text, text),
  jobsys.list_operator_accounts(boolean), jobsys.revoke_operator_account(text), jobsys.operator_claims(text)
  from public;
grant execute on function jobsys.is_staff(), jobsys.add_operator_account(text, text, text),
  jobsys.list_operator_accounts(boolean), jobsys.revoke_operator_account(text)
to authenticated, service_role;
grant execute on function jobsys.operator_claims(text) to service_role;

-- Evidence bucket (Storage) -------------------------------------------------------------
do $$
begin
  if to_regclass('storage.buckets') is null or to_regclass('storage.objects') is null then
    raise notice 'jobsys: no storage schema here (plain Postgres); evidence bucket skipped';
    return;
  end if;
  -- Private bucket: objects are served only through these policies (or signed URLs).
  execute $b$
    insert into storage.buckets (id, name, public) values ('jobsys-evidence', 'jobsys-evidence', false)
    on conflict (id) do nothing
  $b$;
  execute 'drop policy if exists jobsys_evidence_worker_insert on storage.objects';
  execute 'drop policy if exists jobsys_evidence_read on storage.objects';
  execute 'drop policy if exists jobsys_evidence_operator_delete on storage.objects';
  execute $p$
    create policy jobsys_evidence_worker_insert on storage.objects
      for insert to authenticated
      with check (bucket_id = 'jobsys-evidence' and jobsys.may_write_evidence(name))
  $p$;
  execute $p$
    create policy jobsys_evidence_read on storage.objects
      for select to authenticated
      using (bucket_id = 'jobsys-evidence'
             and (jobsys.is_staff() or jobsys.may_write_evidence(name)))
  $p$;
  execute $p$
    create policy jobsys_evidence_operator_delete on storage.objects
      for delete to authenticated
      using (bucket_id = 'jobsys-evidence' and jobsys.caller_role() in ('operator', 'admin'))
  $p$;
end
$$;
