-- jobsys declarative schema: worker accounts, the per-PC tokens of the hub.
--
-- A PC joins `jobsys up` with a token made by `jobsys workers add NAME`. The hub keeps no
-- state of its own: for every call it asks hub_claims for the account behind the token's
-- digest and runs the SQL function with those claims under the authenticated role, as
-- PostgREST would, so a hub worker is held to the same rules as a Supabase worker user.

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
