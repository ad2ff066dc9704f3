-- jobsys: schema, tables and indexes for device jobs.
--
-- Everything lives in the `jobsys` schema so a project's own `jobs` table is never
-- touched. The same file applies to a Supabase project and to plain Postgres: the
-- first block creates, on plain Postgres only, the roles and `auth` helpers that
-- Supabase already has.

-- Supabase roles and auth helpers, created only where missing ------------------------
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
end
$$;

create schema if not exists auth;

do $$
begin
  -- PostgREST sets request.jwt.claims; older versions set request.jwt.claim.
  if to_regprocedure('auth.jwt()') is null then
    create function auth.jwt() returns jsonb
      language sql stable
      as $f$
        select coalesce(
          nullif(current_setting('request.jwt.claims', true), ''),
          nullif(current_setting('request.jwt.claim', true), ''),
          '{}')::jsonb
      $f$;
  end if;
  if to_regprocedure('auth.uid()') is null then
    create function auth.uid() returns uuid
      language sql stable
      as $f$ select nullif(auth.jwt() ->> 'sub', '')::uuid $f$;
  end if;
  -- Ours only where we created them; Supabase grants its own.
  if (select nspowner = (select oid from pg_roles where rolname = current_user)
      from pg_namespace where nspname = 'auth') then
    grant usage on schema auth to anon, authenticated, service_role;
    grant execute on function auth.jwt(), auth.uid() to anon, authenticated, service_role;
  end if;
end
$$;

create schema if not exists jobsys;

-- Tunables. Tests shorten them; operators rarely need to. ----------------------------
create table jobsys.settings (
  key text primary key,
  value numeric not null,
  description text not null
);

insert into jobsys.settings (key, value, description) values
  ('stale_after_sec', 30, 'a device or worker without a heartbeat for this long is offline'),
  ('claim_lease_sec', 30, 'lease of a claimed assignment until the worker starts it'),
  ('lease_grace_sec', 30, 'added to duration_sec for the lease of a started assignment'),
  ('heartbeat_lease_sec', 30, 'each heartbeat extends running leases to at least now + this'),
  ('max_attempts', 3, 'runs of one assignment before it fails (lease expiries count)'),
  ('maintenance_interval_ms', 1000, 'rescue / stale marking / top-up run at most this often'),
  ('progress_event_interval_ms', 100, 'job_progress events per job are at most this frequent (the last one is always sent)');

create function jobsys.setting(p_key text) returns numeric
  language sql stable
  set search_path = jobsys, pg_temp
  as $$ select value from jobsys.settings where key = p_key $$;

-- Maintenance bookkeeping: one row, so periodic work runs once however many workers call it.
create table jobsys.maintenance_state (
  id boolean primary key default true check (id),
  last_run_at timestamptz not null default '-infinity'
);
insert into jobsys.maintenance_state default values;

-- Workers: one row per worker process session -----------------------------------------
create table jobsys.workers (
  id uuid primary key default gen_random_uuid(),
  name text not null check (length(name) between 1 and 200),
  hostname text not null default '' check (length(hostname) <= 255),
  user_id uuid,  -- the Supabase Auth user this worker signed in as (null on plain Postgres)
  status text not null default 'online' check (status in ('online', 'offline', 'stopped')),
  started_at timestamptz not null default now(),
  last_heartbeat_at timestamptz not null default now(),
  meta jsonb not null default '{}'
);
create index workers_user_id_idx on jobsys.workers (user_id);

-- Devices: stable by serial, re-bound to whichever worker session registers them -------
create table jobsys.devices (
  id uuid primary key default gen_random_uuid(),
  serial text not null unique check (length(serial) between 1 and 200),
  worker_id uuid references jobsys.workers (id) on delete set null,
  model text not null default '' check (length(model) <= 200),
  labels jsonb not null default '{}',
  simulated boolean not null default false,
  state text not null default 'online' check (state in ('online', 'offline', 'error', 'disabled')),
  -- The device row is the per-device mutex: claim sets this under the row lock, so a
  -- device never runs two assignments at once. References one of this device's own
  -- assignments (on delete set null); kept by the triggers at the end of this file.
  running_assignment_id bigint,
  last_heartbeat_at timestamptz not null default now(),
  registered_at timestamptz not null default now()
) with (fillfactor = 70);  -- heartbeats, claims and completions update rows in place (HOT)
create index devices_worker_id_idx on jobsys.devices (worker_id);

-- Jobs --------------------------------------------------------------------------------
create table jobsys.jobs (
  id uuid primary key default gen_random_uuid(),
  title text not null check (length(title) between 1 and 200),
  action text not null default 'open_url' check (action in ('open_url')),
  target_url text not null check (length(target_url) <= 2048 and target_url ~* '^https?://[^[:space:]/?#]+'),
  duration_sec integer not null check (duration_sec between 1 and 86400),
  target_type text not null check (target_type in ('all_devices', 'percentage', 'device_count')),
  target_value integer check (
    (target_type = 'all_devices' and target_value is null)
    or (target_type = 'percentage' and target_value between 1 and 100)
    or (target_type = 'device_count' and target_value between 1 and 100000)),
  target_count integer not null check (target_count >= 0),
  status text not null default 'active' check (status in ('active', 'paused', 'completed', 'cancelled')),
  max_attempts integer not null check (max_attempts between 1 and 100),
  -- Exact counters, kept in the transaction of every transition. assigned = rows of any
  -- status; pending + paused = assigned - running - completed - failed - cancelled.
  assigned_count integer not null default 0 check (assigned_count >= 0),
  running_count integer not null default 0 check (running_count >= 0),
  completed_count integer not null default 0 check (completed_count >= 0),
  failed_count integer not null default 0 check (failed_count >= 0),
  cancelled_count integer not null default 0 check (cancelled_count >= 0),
  created_by uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  paused_at timestamptz,
  finished_at timestamptz,
  progress_notified_at timestamptz not null default '-infinity'
);
create index jobs_status_created_idx on jobsys.jobs (status, created_at desc);
create index jobs_created_idx on jobsys.jobs (created_at desc);

-- Assignments: one run of one job on one device ---------------------------------------
create table jobsys.job_assignments (
  id bigint generated always as identity primary key,
  -- References jobs (on delete cascade) and devices (on delete cascade), kept by the
  -- triggers at the end of this file.
  job_id uuid not null,
  device_id uuid not null,
  worker_id uuid,  -- the worker session that last claimed it
  status text not null default 'pending'
    check (status in ('pending', 'paused', 'running', 'completed', 'failed', 'cancelled')),
  attempt integer not null default 1 check (attempt >= 1),
  lease_expires_at timestamptz,
  created_at timestamptz not null default now(),
  claimed_at timestamptz,
  started_at timestamptz,
  finished_at timestamptz,
  result jsonb,
  error text,
  unique (job_id, device_id)
) with (fillfactor = 90);  -- room for start and lease extensions to update in place (HOT)
-- Claims (oldest pending of a device), load per device, releasing a device's queue.
create index job_assignments_device_live_idx on jobsys.job_assignments (device_id, id)
  where status in ('pending', 'paused', 'running');
-- Lease rescue scans the running runs (at most one per device). Keyed on job_id, not on
-- lease_expires_at: start and every heartbeat move the lease, and an indexed lease would
-- turn each of those into a new row version plus an entry in every index.
create index job_assignments_running_idx on jobsys.job_assignments (job_id)
  where status = 'running';

-- Referential integrity, one statement at a time ------------------------------------------
-- job_assignments.job_id -> jobs and .device_id -> devices (on delete cascade), and
-- devices.running_assignment_id -> job_assignments (on delete set null) are kept by these
-- triggers instead of declared foreign keys. A fan-out inserts up to 100,000 assignments in
-- one statement; row-by-row foreign-key checks cost more than the insert itself, and the
-- index a declared set-null needs on devices.running_assignment_id made every claim and
-- completion rewrite the device row in every index. The triggers take the locks a foreign
-- key takes (FOR KEY SHARE on the referenced rows, so a referenced row cannot be deleted
-- until the referencing transaction ends), once per statement, and raise the same error
-- (SQLSTATE 23503). Security definer: like foreign-key actions, they run as the owner.

create function jobsys.raise_missing_reference(
  p_table text, p_constraint text, p_column text, p_key text, p_referenced text) returns void
  language plpgsql
  as $$
begin
  raise exception using errcode = 'foreign_key_violation',
    message = format('insert or update on table "%s" violates foreign key constraint "%s"', p_table, p_constraint),
    detail = format('Key (%s)=(%s) is not present in table "%s".', p_column, p_key, p_referenced);
end
$$;

create function jobsys.assignments_check_parents() returns trigger
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_jobs uuid[];
  v_rows bigint;
  v_devices bigint;
  v_locked bigint;
  v_missing text;
begin
  -- Lock every referenced job and device (what each foreign-key check would lock) and
  -- count what was found; only when something is missing, look for which.
  select array_agg(g.job_id) into v_jobs from (select n.job_id from new_rows n group by n.job_id) g;
  perform 1 from jobsys.jobs j where j.id = any(v_jobs) for key share;
  get diagnostics v_locked = row_count;
  if v_locked < coalesce(cardinality(v_jobs), 0) then
    select n.job_id::text into v_missing from new_rows n
    where not exists (select 1 from jobsys.jobs j where j.id = n.job_id) limit 1;
    perform jobsys.raise_missing_reference('job_assignments', 'job_assignments_job_id_fkey', 'job_id',
      v_missing, 'jobs');
  end if;
  perform 1 from jobsys.devices d where d.id in (select n.device_id from new_rows n) for key share;
  get diagnostics v_locked = row_count;
  select count(*) into v_rows from new_rows;
  -- (job_id, device_id) is unique, so with one job every row names another device.
  v_devices := case when cardinality(v_jobs) = 1 then v_rows
                    else (select count(distinct n.device_id) from new_rows n) end;
  if v_locked < v_devices then
    select n.device_id::text into v_missing from new_rows n
    where not exists (select 1 from jobsys.devices d where d.id = n.device_id) limit 1;
    perform jobsys.raise_missing_reference('job_assignments', 'job_assignments_device_id_fkey', 'device_id',
      v_missing, 'devices');
  end if;
  return null;
end
$$;

create trigger job_assignments_parents_on_insert after insert on jobsys.job_assignments
  referencing new table as new_rows
  for each statement execute function jobsys.assignments_check_parents();

-- Nothing in jobsys moves an assignment to another job or device; if anything does, the
-- new parents are checked as on insert.
create function jobsys.assignment_check_moved_parents() returns trigger
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform 1 from jobsys.jobs j where j.id = new.job_id for key share;
  if not found then
    perform jobsys.raise_missing_reference('job_assignments', 'job_assignments_job_id_fkey', 'job_id',
      new.job_id::text, 'jobs');
  end if;
  perform 1 from jobsys.devices d where d.id = new.device_id for key share;
  if not found then
    perform jobsys.raise_missing_reference('job_assignments', 'job_assignments_device_id_fkey', 'device_id',
      new.device_id::text, 'devices');
  end if;
  return null;
end
$$;

create trigger job_assignments_parents_on_update after update of job_id, device_id on jobsys.job_assignments
  for each row when (old.job_id is distinct from new.job_id or old.device_id is distinct from new.device_id)
  execute function jobsys.assignment_check_moved_parents();

-- A device's running assignment must be one of its own assignments.
create function jobsys.device_check_running_assignment() returns trigger
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform 1 from jobsys.job_assignments a
  where a.id = new.running_assignment_id and a.device_id = new.id for key share;
  if not found then
    perform jobsys.raise_missing_reference('devices', 'devices_running_assignment_fk', 'running_assignment_id',
      new.running_assignment_id::text, 'job_assignments');
  end if;
  return null;
end
$$;

create trigger devices_running_assignment_on_insert after insert on jobsys.devices
  for each row when (new.running_assignment_id is not null)
  execute function jobsys.device_check_running_assignment();
create trigger devices_running_assignment_on_update after update of running_assignment_id on jobsys.devices
  for each row when (new.running_assignment_id is not null
                     and new.running_assignment_id is distinct from old.running_assignment_id)
  execute function jobsys.device_check_running_assignment();

-- Deletes cascade (jobs, devices -> their assignments) and free the devices that ran a
-- deleted assignment. New row versions are seen here: each statement of a trigger takes a
-- fresh snapshot, as a foreign-key action does.
create function jobsys.jobs_cascade_delete() returns trigger
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  delete from jobsys.job_assignments a using old_rows o where a.job_id = o.id;
  return null;
end
$$;

create trigger jobs_cascade_delete after delete on jobsys.jobs
  referencing old table as old_rows
  for each statement execute function jobsys.jobs_cascade_delete();

create function jobsys.devices_cascade_delete() returns trigger
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  delete from jobsys.job_assignments a using old_rows o where a.device_id = o.id;
  return null;
end
$$;

create trigger devices_cascade_delete after delete on jobsys.devices
  referencing old table as old_rows
  for each statement execute function jobsys.devices_cascade_delete();

create function jobsys.assignments_free_devices() returns trigger
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  update jobsys.devices d set running_assignment_id = null
  from old_rows o where d.id = o.device_id and d.running_assignment_id = o.id;
  return null;
end
$$;

create trigger job_assignments_free_devices after delete on jobsys.job_assignments
  referencing old table as old_rows
  for each statement execute function jobsys.assignments_free_devices();

-- A referenced key never changes (ids are generated); refuse it as a foreign key would.
create function jobsys.refuse_referenced_key_change() returns trigger
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  if exists (select 1 from jobsys.job_assignments a
             where (tg_table_name = 'jobs' and a.job_id = old.id)
                or (tg_table_name = 'devices' and a.device_id = old.id)) then
    raise exception using errcode = 'foreign_key_violation',
      message = format('update on table "%s" violates foreign key constraint "job_assignments_%s_fkey" on table "job_assignments"',
                       tg_table_name, case tg_table_name when 'jobs' then 'job_id' else 'device_id' end),
      detail = format('Key (id)=(%s) is still referenced from table "job_assignments".', old.id);
  end if;
  return null;
end
$$;

create trigger jobs_key_change after update of id on jobsys.jobs
  for each row when (old.id is distinct from new.id)
  execute function jobsys.refuse_referenced_key_change();
create trigger devices_key_change after update of id on jobsys.devices
  for each row when (old.id is distinct from new.id)
  execute function jobsys.refuse_referenced_key_change();
