-- jobsys declarative schema: who may receive the Realtime Broadcast topics, and the evidence bucket.
--
-- jobsys.emit() sends every event through realtime.send(..., private => true), so a
-- client must pass Realtime Authorization to join a topic. Realtime decides by selecting
-- from realtime.messages as the joining user (role + request.jwt.claims + realtime.topic
-- set for the transaction), so the policies below are the access rule:
--   'jobsys:dashboard'        operators only
--   'jobsys:runners'          AI batch runners only (not workers, not operators)
--   'jobsys:worker:<uuid>'    only the worker user that registered that worker session
-- There is no insert policy: clients never send on these topics, only the database does.
--
-- Both parts are guarded: on plain Postgres (no realtime / storage schema) this file
-- changes nothing but the helper functions, and it is safe to run again.

-- Helpers (may_receive and may_write_evidence are security definer: they read
-- jobsys.workers, which the caller may not) -----------------------------------------------
create or replace function jobsys.try_uuid(p_text text) returns uuid
  language sql immutable
  as $$
  select case when p_text ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
              then p_text::uuid end
$$;
comment on function jobsys.try_uuid(text) is
  'The text as a uuid, or null when it is not one: topic and object names come from clients.';

-- Whether the caller may receive the Broadcast messages of this topic.
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

-- Evidence objects live at '<worker uuid>/<file>'; a worker writes only under its own
-- worker sessions, operators read everything.
create or replace function jobsys.may_write_evidence(p_object_name text) returns boolean
  language sql stable security definer
  set search_path = jobsys, pg_temp
  as $$
  select jobsys.is_own_worker(jobsys.try_uuid(split_part(p_object_name, '/', 1)))
$$;
comment on function jobsys.may_write_evidence(text) is
  'Storage: evidence objects live at <worker uuid>/<file>; a worker writes only under its own worker sessions.';

revoke execute on function jobsys.try_uuid(text), jobsys.may_receive(text),
  jobsys.may_write_evidence(text) from public;
grant execute on function jobsys.try_uuid(text), jobsys.may_receive(text),
  jobsys.may_write_evidence(text) to authenticated, service_role;

-- Realtime Authorization ----------------------------------------------------------------
do $$
begin
  if to_regclass('realtime.messages') is null then
    raise notice 'jobsys: no realtime.messages here (plain Postgres); Realtime policies skipped';
    return;
  end if;
  execute 'drop policy if exists jobsys_receive_broadcast on realtime.messages';
  -- The row's own topic, not only realtime.topic(): the rule then also holds for any
  -- other read of stored messages (e.g. broadcast replay).
  execute $p$
    create policy jobsys_receive_broadcast on realtime.messages
      for select to authenticated
      using (realtime.messages.extension = 'broadcast'
             and realtime.messages.topic like 'jobsys:%'
             and jobsys.may_receive(realtime.messages.topic))
  $p$;
end
$$;

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
