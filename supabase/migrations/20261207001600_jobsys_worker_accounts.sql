-- jobsys: issue 18, the hub's worker accounts.
--
-- * jobsys.worker_accounts: one per PC joining the hub, its token stored as a SHA-256 digest
--   (readable by operators without the digest); add / list / revoke for operators;
--   hub_claims for the hub's own connection (JS401 for an unknown or revoked token).
-- * heartbeat takes p_meta (the worker's version and push state), merged into workers.meta.

create table jobsys.worker_accounts (
  id uuid primary key default gen_random_uuid(),
  name text not null check (length(name) between 1 and 64 and name = btrim(name) and name !~ '[[:cntrl:]]'),
  token_hash text not null unique check (token_hash ~ '^[0-9a-f]{64}$'),
  created_at timestamptz not null default now(),
  last_seen_at timestamptz,
  revoked_at timestamptz
);
comment on table jobsys.worker_accounts is
  'One account per PC joining the hub (jobsys workers add): its name, the SHA-256 digest of its token (never the token), when it was last seen and whether it was revoked.';
create unique index worker_accounts_active_name_idx on jobsys.worker_accounts (name) where revoked_at is null;

alter table jobsys.worker_accounts enable row level security;
create policy worker_accounts_operator_read on jobsys.worker_accounts for select to authenticated
  using (jobsys.caller_role() = 'operator');
grant all on jobsys.worker_accounts to service_role;
grant select (id, name, created_at, last_seen_at, revoked_at) on jobsys.worker_accounts to authenticated;

create or replace function jobsys.raise_error(p_sqlstate text, p_message text, p_details jsonb default '{}')
  returns void
  language plpgsql
  as $$
begin
  raise exception using errcode = p_sqlstate, message = p_message, detail = p_details::text;
end
$$;
comment on function jobsys.raise_error(text, text, jsonb) is
  'Raises one of the stable SQLSTATEs the library maps to typed exceptions (jobsys/errors.py): JS400 invalid input, JS401 unknown or revoked token, JS403 forbidden, JS404 not found, JS409 illegal transition, JS410 stale.';

drop function jobsys.heartbeat(uuid, jsonb, bigint[]);
create or replace function jobsys.heartbeat(p_worker_id uuid, p_devices jsonb default null,
  p_running bigint[] default null, p_meta jsonb default null)
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_stop bigint[];
  v_refused jsonb := '[]';
begin
  perform jobsys.require_worker(p_worker_id);
  if p_meta is not null and (jsonb_typeof(p_meta) <> 'object' or length(p_meta::text) > 2000) then
    perform jobsys.raise_error('JS400', 'meta must be a JSON object of at most 2000 characters',
      '{"field": "meta"}');
  end if;
  update jobsys.workers set last_heartbeat_at = now(), status = 'online',
    meta = case when p_meta is null then meta else meta || p_meta end
  where id = p_worker_id;
  if not found then
    perform jobsys.raise_error('JS404', 'worker session not found; register again',
      jsonb_build_object('worker_id', p_worker_id));
  end if;

  if p_devices is not null then
    v_refused := jobsys.sync_devices(p_worker_id, p_devices);
  else
    update jobsys.devices d set last_heartbeat_at = now()
    where d.id in (select id from jobsys.devices where worker_id = p_worker_id
                   for no key update skip locked);
  end if;

  -- The leases of the runs this session holds, after the device report and not before: the
  -- report may lock jobs and takes its device rows, and the lock order is jobs -> runs ->
  -- devices. (Extending first, a heartbeat held run 2 and waited for device 1, which
  -- cancel_job had taken with run 1 and held while it waited for run 2: a deadlock.)
  update jobsys.job_assignments a set lease_expires_at = greatest(a.lease_expires_at,
      now() + make_interval(secs => jobsys.setting('heartbeat_lease_sec')::double precision))
  where a.id in (select a2.id from jobsys.job_assignments a2
                 join jobsys.devices d on d.running_assignment_id = a2.id
                 where d.worker_id = p_worker_id and a2.worker_id = p_worker_id and a2.status = 'running'
                 for no key update of a2 skip locked);

  select array_agg(r.id order by r.id) into v_stop
  from unnest(coalesce(p_running, '{}')) as r(id)
  where not exists (select 1 from jobsys.job_assignments a
                    join jobsys.devices d on d.id = a.device_id
                    where a.id = r.id and a.status = 'running' and d.worker_id = p_worker_id);
  return jsonb_build_object('stop', coalesce(to_jsonb(v_stop), '[]'), 'refused', v_refused,
                            'maintenance', jobsys.maintain());
end
$$;
comment on function jobsys.heartbeat(uuid, jsonb, bigint[], jsonb) is
  'Workers: the worker and its devices are alive, running leases are extended, and maintenance runs; p_meta (version, push state) is merged into the session''s meta. Returns the runs the worker must stop (the polling path for cancellation when push is down) and, with a device report, the serials refused to it.';

create or replace function jobsys.worker_account_json(a jobsys.worker_accounts) returns jsonb
  language sql stable
  set search_path = jobsys, pg_temp
  as $$
  select jsonb_build_object(
    'id', a.id, 'name', a.name, 'created_at', a.created_at, 'last_seen_at', a.last_seen_at,
    'revoked_at', a.revoked_at,
    'sessions', coalesce((
      select jsonb_agg(jsonb_build_object(
               'worker_id', w.id, 'name', w.name, 'hostname', w.hostname, 'status', w.status,
               'started_at', w.started_at, 'last_heartbeat_at', w.last_heartbeat_at,
               'healthy', w.status = 'online' and w.last_heartbeat_at > jobsys.healthy_cutoff(),
               'version', w.meta ->> 'version', 'push', w.meta ->> 'push',
               'devices', (select count(*) from jobsys.devices d where d.worker_id = w.id))
             order by w.started_at desc)
      from jobsys.workers w where w.user_id = a.id and w.status = 'online'), '[]'),
    'device_count', (select count(*) from jobsys.devices d join jobsys.workers w on w.id = d.worker_id
                     where w.user_id = a.id and w.status = 'online'))
$$;
comment on function jobsys.worker_account_json(jobsys.worker_accounts) is
  'One worker account as operators see it: never its token digest; its live sessions (version and push state as the worker reports them) and their devices.';

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
  return jobsys.worker_account_json(v_account);
end
$$;
comment on function jobsys.add_worker_account(text, text) is
  'Operators: a new worker account (a PC joining the hub) named p_name with the SHA-256 digest of its token; the token itself never reaches the database. JS409 when an active account has that name.';

create or replace function jobsys.list_worker_accounts(p_include_revoked boolean default false) returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform jobsys.require_operator();
  return jsonb_build_object('accounts', coalesce((
    select jsonb_agg(jobsys.worker_account_json(a) order by a.revoked_at is not null, a.name, a.created_at)
    from jobsys.worker_accounts a where p_include_revoked or a.revoked_at is null), '[]'));
end
$$;
comment on function jobsys.list_worker_accounts(boolean) is
  'Operators: the worker accounts (active first, by name), with their live sessions and device counts.';

-- Revoking ends the account's sessions at once: its devices go offline and their queues
-- move elsewhere (as a clean stop); runs it was running are rescued when their lease ends.
-- Hubs close the account's push sockets on the account_revoked event.
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
  update jobsys.devices set state = case when state = 'disabled' then 'disabled' else 'offline' end,
    reported_state = 'offline'
  where worker_id = any(v_sessions) and (state not in ('offline', 'disabled') or reported_state <> 'offline');
  perform jobsys.emit('jobsys:hub', 'account_revoked', jsonb_build_object('account_id', v_account.id));
  perform jobsys.emit('jobsys:dashboard', 'device_status', jsonb_build_object('account_id', v_account.id));
  perform jobsys.release_unhealthy_queues();
  perform jobsys.top_up();
  return jobsys.worker_account_json(v_account);
end
$$;
comment on function jobsys.revoke_worker_account(text) is
  'Operators: revoke the active worker account named p_name. Its token is refused from then on, its sessions stop, its devices go offline and their queues move elsewhere; runs it was running follow the lease rules. Hubs close its push sockets (event account_revoked on jobsys:hub).';

-- The hub's only question: whose token is this? Called by the hub's own connection (the
-- service) before it switches to the authenticated role for the call itself.
create or replace function jobsys.hub_claims(p_token_hash text) returns text
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_id uuid;
begin
  if jobsys.caller_role() <> 'service' then
    perform jobsys.raise_error('JS403', 'only the hub resolves worker tokens');
  end if;
  select id into v_id from jobsys.worker_accounts where token_hash = p_token_hash and revoked_at is null;
  if v_id is null then
    perform jobsys.raise_error('JS401', 'unknown or revoked worker token');
  end if;
  update jobsys.worker_accounts set last_seen_at = now()
  where id = v_id and (last_seen_at is null or last_seen_at < now() - interval '10 seconds');
  return json_build_object('sub', v_id, 'role', 'authenticated',
                           'app_metadata', json_build_object('jobsys_role', 'worker'))::text;
end
$$;
comment on function jobsys.hub_claims(text) is
  'The hub only: the JWT-shaped claims of the active worker account whose token has this SHA-256 digest (its id as sub, jobsys_role worker), or JS401. Notes when the account was last seen (at most every 10 s).';

revoke execute on function jobsys.worker_account_json(jobsys.worker_accounts),
  jobsys.add_worker_account(text, text), jobsys.list_worker_accounts(boolean),
  jobsys.revoke_worker_account(text), jobsys.hub_claims(text),
  jobsys.heartbeat(uuid, jsonb, bigint[], jsonb) from public;
grant execute on function jobsys.heartbeat(uuid, jsonb, bigint[], jsonb),
  jobsys.add_worker_account(text, text), jobsys.list_worker_accounts(boolean),
  jobsys.revoke_worker_account(text)
to authenticated, service_role;
grant execute on function jobsys.hub_claims(text) to service_role;
