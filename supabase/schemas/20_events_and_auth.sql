-- jobsys declarative schema: the settings reader, the one event helper, error helpers, and
-- caller authorization.

-- Tunables (jobsys.settings) -----------------------------------------------------------
create or replace function jobsys.setting(p_key text) returns numeric
  language sql stable
  set search_path = jobsys, pg_temp
  as $$ select value from jobsys.settings where key = p_key $$;
comment on function jobsys.setting(text) is
  'The value of one tunable in jobsys.settings.';

-- Events --------------------------------------------------------------------------------
-- Topics: 'jobsys:dashboard' and 'jobsys:worker:<worker uuid>'. The Postgres channel is
-- the topic itself; the payload is {"event": ..., "payload": {...}}. On Supabase the same
-- message also goes out through Realtime Broadcast (realtime.send), private channel.
create or replace function jobsys.emit(p_topic text, p_event text, p_payload jsonb) returns void
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
begin
  perform pg_notify(p_topic, jsonb_build_object('event', p_event, 'payload', p_payload)::text);
  if to_regprocedure('realtime.send(jsonb,text,text,boolean)') is not null then
    execute 'select realtime.send($1, $2, $3, true)' using p_payload, p_event, p_topic;
  end if;
end
$$;
comment on function jobsys.emit(text, text, jsonb) is
  'The one way events leave the database: pg_notify on the topic (the channel is the topic itself) and, on Supabase, the same message through Realtime Broadcast on a private channel.';

create or replace function jobsys.worker_topic(p_worker_id uuid) returns text
  language sql immutable
  as $$ select 'jobsys:worker:' || p_worker_id::text $$;
comment on function jobsys.worker_topic(uuid) is
  'The push topic of one worker session: jobsys:worker:<worker uuid>.';

-- Errors -------------------------------------------------------------------------------
-- Stable SQLSTATEs the library maps to typed exceptions (jobsys/errors.py):
--   JS400 invalid input, JS401 unknown or revoked token (the hub), JS403 forbidden, JS404 not found, JS409 illegal transition,
--   JS410 stale (the assignment moved on: lease lost, job cancelled or deleted).
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

-- Authorization ------------------------------------------------------------------------
-- Who is calling: 'service' for a trusted direct connection or the service role,
-- 'operator' / 'worker' / 'runner' from the Supabase JWT's app_metadata.jobsys_role, else
-- 'anon'. A runner runs AI batches and nothing else; a device worker runs no batch.
-- Functions are security definer, so the caller's role is read from the `role` setting
-- that PostgREST sets (SET LOCAL ROLE authenticated) rather than current_user.
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

-- Staff roles: viewer reads; operator also runs jobs and AI batches; admin also manages
-- devices, PCs, accounts and reads the audit log. The service may do everything.
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

-- Whether the caller is staff, for the row level security policies.
create or replace function jobsys.is_staff() returns boolean
  language sql stable
  set search_path = jobsys, pg_temp
  as $$
  select jobsys.caller_role() in ('viewer', 'operator', 'admin')
$$;
comment on function jobsys.is_staff() is
  'Whether the caller is a viewer, an operator or an admin (the row level security policies'' reader).';

-- Upkeep (lease rescue, stale marking, top-up) is harmless for operators and workers:
-- workers run it from their heartbeats. Runners have no business with device jobs.
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

-- A worker may act only as a worker session it registered itself.
create or replace function jobsys.require_worker(p_worker_id uuid) returns void
  language plpgsql stable
  set search_path = jobsys, pg_temp
  as $$
declare
  v_role text := jobsys.caller_role();
begin
  if v_role = 'service' then
    return;
  end if;
  if v_role <> 'worker'
     or not exists (select 1 from jobsys.workers w where w.id = p_worker_id and w.user_id = auth.uid()) then
    perform jobsys.raise_error('JS403', 'not allowed to act as this worker',
      jsonb_build_object('worker_id', p_worker_id));
  end if;
end
$$;
comment on function jobsys.require_worker(uuid) is
  'Raises JS403 unless the caller is the service or the worker user that registered this worker session: a worker acts only as itself.';

-- Healthy and connected: fresh heartbeat and state online.
create or replace function jobsys.healthy_cutoff() returns timestamptz
  language sql stable
  set search_path = jobsys, pg_temp
  as $$ select now() - make_interval(secs => jobsys.setting('stale_after_sec')::double precision) $$;
comment on function jobsys.healthy_cutoff() is
  'Healthy and connected means a heartbeat after this instant (now - stale_after_sec) and state online.';

-- Readiness ----------------------------------------------------------------------------
-- The newest migration applied here, for readiness probes (GET /readyz): anyone may ask,
-- and the answer says nothing but a version. Null when migrations were not recorded (the
-- schema applied by hand from supabase/schemas).
create or replace function jobsys.schema_version() returns text
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  if to_regclass('supabase_migrations.schema_migrations') is null then
    return null;
  end if;
  return (select max(version) from supabase_migrations.schema_migrations);
end
$$;
comment on function jobsys.schema_version() is
  'The newest migration applied to this database (readiness probes compare it with the one the running jobsys ships); null when none was recorded.';
