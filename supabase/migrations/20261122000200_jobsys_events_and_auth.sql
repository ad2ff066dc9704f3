-- jobsys: the one event helper, error helpers, and caller authorization.

-- Events --------------------------------------------------------------------------------
-- Topics: 'jobsys:dashboard' and 'jobsys:worker:<worker uuid>'. The Postgres channel is
-- the topic itself; the payload is {"event": ..., "payload": {...}}. On Supabase the same
-- message also goes out through Realtime Broadcast (realtime.send), private channel.
create function jobsys.emit(p_topic text, p_event text, p_payload jsonb) returns void
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

create function jobsys.worker_topic(p_worker_id uuid) returns text
  language sql immutable
  as $$ select 'jobsys:worker:' || p_worker_id::text $$;

-- Errors -------------------------------------------------------------------------------
-- Stable SQLSTATEs the library maps to typed exceptions (jobsys/errors.py):
--   JS400 invalid input, JS403 forbidden, JS404 not found, JS409 illegal transition,
--   JS410 stale (the assignment moved on: lease lost, job cancelled or deleted).
create function jobsys.raise_error(p_sqlstate text, p_message text, p_details jsonb default '{}')
  returns void
  language plpgsql
  as $$
begin
  raise exception using errcode = p_sqlstate, message = p_message, detail = p_details::text;
end
$$;

-- Authorization ------------------------------------------------------------------------
-- Who is calling: 'service' for a trusted direct connection or the service role,
-- 'operator' / 'worker' from the Supabase JWT's app_metadata.jobsys_role, else 'anon'.
-- Functions are security definer, so the caller's role is read from the `role` setting
-- that PostgREST sets (SET LOCAL ROLE authenticated) rather than current_user.
create function jobsys.caller_role() returns text
  language sql stable
  set search_path = jobsys, pg_temp
  as $$
  select case
    when coalesce(nullif(current_setting('role', true), 'none'), '') not in ('anon', 'authenticated')
      then 'service'
    when auth.jwt() ->> 'role' = 'service_role' then 'service'
    when current_setting('role', true) = 'authenticated'
      and auth.jwt() -> 'app_metadata' ->> 'jobsys_role' in ('operator', 'worker')
      then auth.jwt() -> 'app_metadata' ->> 'jobsys_role'
    else 'anon'
  end
$$;

create function jobsys.require_operator() returns void
  language plpgsql stable
  set search_path = jobsys, pg_temp
  as $$
begin
  if jobsys.caller_role() not in ('service', 'operator') then
    perform jobsys.raise_error('JS403', 'operator role required');
  end if;
end
$$;

-- A worker may act only as a worker session it registered itself.
create function jobsys.require_worker(p_worker_id uuid) returns void
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

-- Healthy and connected: fresh heartbeat and state online.
create function jobsys.healthy_cutoff() returns timestamptz
  language sql stable
  set search_path = jobsys, pg_temp
  as $$ select now() - make_interval(secs => jobsys.setting('stale_after_sec')::double precision) $$;
