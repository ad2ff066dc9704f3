-- jobsys declarative schema: row level security and grants.
--
-- Tables are readable through RLS policies and writable only through the security
-- definer functions, which check the caller's claims themselves (jobsys.caller_role).
--   staff:    viewer, operator, admin (jobsys.is_staff): read everything; operators manage
--             jobs and AI batches, admins also devices, PCs and accounts, through the functions.
--   worker:   reads its own worker sessions, their devices and those devices' assignments;
--             nothing of the AI batches.
--   runner:   reads the background jobs and their items (what it runs); nothing else.
--   anon:     nothing.
--   service:  everything (bypasses RLS; migrations and admin scripts only).

alter table jobsys.settings enable row level security;
alter table jobsys.maintenance_state enable row level security;
alter table jobsys.workers enable row level security;
alter table jobsys.devices enable row level security;
alter table jobsys.jobs enable row level security;
alter table jobsys.job_assignments enable row level security;
alter table jobsys.job_run_counts enable row level security;
alter table jobsys.job_progress_marks enable row level security;  -- no policy: the throttle's bookkeeping
alter table jobsys.background_jobs enable row level security;
alter table jobsys.background_job_items enable row level security;
alter table jobsys.background_job_logs enable row level security;
alter table jobsys.worker_accounts enable row level security;
alter table jobsys.operator_accounts enable row level security;  -- no policy: read by the functions only
alter table jobsys.device_events enable row level security;
alter table jobsys.device_vitals enable row level security;
alter table jobsys.background_runners enable row level security;  -- no policy: read by the functions only
alter table jobsys.batch_rate_limits enable row level security;  -- no policy: read by the functions only
alter table jobsys.batch_rate_grants enable row level security;  -- likewise
alter table jobsys.audit_log enable row level security;

-- Whether the calling worker user owns this worker session.
create or replace function jobsys.is_own_worker(p_worker_id uuid) returns boolean
  language sql stable security definer
  set search_path = jobsys, pg_temp
  as $$
  select jobsys.caller_role() = 'worker'
    and exists (select 1 from jobsys.workers w where w.id = p_worker_id and w.user_id = auth.uid())
$$;
comment on function jobsys.is_own_worker(uuid) is
  'Whether the calling worker user owns this worker session; used by the RLS policies and the Realtime and Storage rules.';

-- Device jobs: operators read everything, a worker its own sessions and what hangs off them.
create policy settings_operator_read on jobsys.settings for select to authenticated
  using (jobsys.is_staff());

create policy workers_read on jobsys.workers for select to authenticated
  using (jobsys.is_staff() or jobsys.is_own_worker(id));

create policy devices_read on jobsys.devices for select to authenticated
  using (jobsys.is_staff() or jobsys.is_own_worker(worker_id));
create policy device_events_operator_read on jobsys.device_events for select to authenticated
  using (jobsys.is_staff());
create policy device_vitals_operator_read on jobsys.device_vitals for select to authenticated
  using (jobsys.is_staff());
create policy audit_log_operator_read on jobsys.audit_log for select to authenticated
  using (jobsys.caller_role() = 'admin');  -- who did what: admins

-- Worker accounts: operators read them, never the token digest (column grants below).
create policy worker_accounts_operator_read on jobsys.worker_accounts for select to authenticated
  using (jobsys.is_staff());

create policy jobs_operator_read on jobsys.jobs for select to authenticated
  using (jobsys.is_staff());
create policy job_run_counts_operator_read on jobsys.job_run_counts for select to authenticated
  using (jobsys.is_staff());

create policy assignments_read on jobsys.job_assignments for select to authenticated
  using (jobsys.is_staff()
         or exists (select 1 from jobsys.devices d
                    where d.id = device_id and jobsys.is_own_worker(d.worker_id)));

-- Background jobs: operators and runners read through RLS (workers nothing); every write
-- goes through the functions.
create policy background_jobs_read on jobsys.background_jobs for select to authenticated
  using (jobsys.is_staff() or jobsys.caller_role() = 'runner');
create policy background_job_items_read on jobsys.background_job_items for select to authenticated
  using (jobsys.is_staff() or jobsys.caller_role() = 'runner');
create policy background_job_logs_operator_read on jobsys.background_job_logs for select to authenticated
  using (jobsys.is_staff());

grant usage on schema jobsys to anon, authenticated, service_role;
grant select on all tables in schema jobsys to authenticated;
grant all on all tables in schema jobsys to service_role;
revoke select on jobsys.worker_accounts from authenticated;
grant select (id, name, created_at, last_seen_at, revoked_at) on jobsys.worker_accounts to authenticated;
revoke select on jobsys.operator_accounts from authenticated;

-- Functions are executable by PUBLIC when created; only the API stays callable. Helpers run
-- inside the definer functions. (The functions of 60_realtime_and_storage.sql, created
-- after this file, revoke and grant their own.)
revoke execute on all functions in schema jobsys from public;
grant execute on function
  jobsys.caller_role(), jobsys.is_own_worker(uuid), jobsys.is_staff(),
  -- device jobs: operators
  jobsys.create_job(text, integer, text, integer, text, text, integer, integer, integer,
                    timestamp with time zone, jsonb, integer),
  jobsys.pause_job(uuid), jobsys.resume_job(uuid), jobsys.cancel_job(uuid), jobsys.delete_job(uuid),
  jobsys.retry_job(uuid), jobsys.clone_job(uuid),
  jobsys.update_job_title(uuid, text), jobsys.update_job(uuid, text, text),
  jobsys.list_jobs(text, text, integer, integer), jobsys.get_job(uuid), jobsys.list_devices(),
  jobsys.set_device_state(uuid, text), jobsys.release_device(uuid),
  jobsys.set_device_labels(uuid, jsonb), jobsys.request_device_reboot(uuid), jobsys.get_device(uuid),
  jobsys.fleet_labels(jsonb),
  jobsys.list_devices_page(text, uuid, text, jsonb, text, text, integer, boolean),
  jobsys.device_groups(text, jsonb, text),
  -- operations: operators
  jobsys.list_audit(text, text, text, timestamp with time zone, integer, bigint), jobsys.metrics_snapshot(),
  jobsys.existing_runs(bigint[]),
  jobsys.add_worker_account(text, text), jobsys.list_worker_accounts(boolean),
  jobsys.revoke_worker_account(text),
  jobsys.add_operator_account(text, text, text), jobsys.list_operator_accounts(boolean),
  jobsys.revoke_operator_account(text),
  -- device jobs: workers
  jobsys.register_worker(text, text, jsonb), jobsys.heartbeat(uuid, jsonb, bigint[], jsonb),
  jobsys.stop_worker(uuid), jobsys.worker_devices(uuid), jobsys.device_rebooted(uuid, uuid, text),
  jobsys.claim_assignments(uuid, uuid[], integer, boolean),
  jobsys.start_assignment(bigint, integer),
  jobsys.complete_assignment(bigint, integer, jsonb),
  jobsys.fail_assignment(bigint, integer, text, boolean, jsonb),
  jobsys.release_assignment(bigint, integer, text),
  jobsys.finish_assignments(uuid, jsonb),
  jobsys.rescue_expired_leases(), jobsys.mark_stale(), jobsys.maintain(boolean),
  -- background jobs: operators
  jobsys.create_background_job(jsonb, jsonb, text, integer, integer, text),
  jobsys.cancel_background_job(uuid), jobsys.retry_background_job(uuid),
  jobsys.list_background_jobs(text, integer, integer, text, text, text[]), jobsys.get_background_job(uuid),
  jobsys.list_background_job_logs(uuid, integer, bigint),
  jobsys.list_background_job_items(uuid, text, integer, integer),
  -- background jobs: runners
  jobsys.claim_background_job(text), jobsys.claim_background_items(uuid, uuid, integer),
  jobsys.report_background_items(uuid, uuid, jsonb, jsonb),
  jobsys.renew_background_leases(text, uuid[]),
  jobsys.finish_background_job(uuid, uuid, text), jobsys.release_background_job(uuid, uuid, text)
to authenticated, service_role;
-- The hub's token lookup: the service only (the hub's own connection).
grant execute on function jobsys.hub_claims(text) to service_role;
-- The dashboard's account token lookup: the service only (its own connection).
grant execute on function jobsys.operator_claims(text) to service_role;
-- Batch runners claiming only what they can run (issue 23).
grant execute on function jobsys.claim_runnable_background_job(text, text[]) to authenticated, service_role;
grant execute on function jobsys.acquire_batch_rate(text, integer, integer, integer, double precision, jsonb),
  jobsys.cool_down_batch_rate(text, double precision) to authenticated, service_role;
grant execute on function jobsys.set_background_provider_batch(uuid, uuid, jsonb) to authenticated, service_role;
-- The runners' shared rate limits, for the new-batch dialog (staff; checked inside).
grant execute on function jobsys.list_batch_rate_limits() to authenticated, service_role;
-- Readiness probes ask this without signing in (it returns a migration version only).
grant execute on function jobsys.schema_version() to anon, authenticated, service_role;
