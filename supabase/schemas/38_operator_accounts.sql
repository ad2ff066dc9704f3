-- jobsys declarative schema: named operator accounts of embedded mode, each with a role
-- (viewer reads; operator runs jobs and AI batches; admin also manages devices, PCs,
-- accounts and reads the audit log). The dashboard turns an account's token into the claims
-- its calls run with (operator_claims), as the hub does for worker tokens (hub_claims), so
-- every role check is the SQL's own. Only the token's SHA-256 digest is stored.

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
