-- jobsys declarative schema: references kept by triggers instead of foreign keys.
--
-- job_assignments.job_id -> jobs and .device_id -> devices (on delete cascade), and
-- devices.running_assignment_id -> job_assignments (on delete set null) are kept by these
-- triggers instead of declared foreign keys. A fan-out inserts up to 100,000 assignments in
-- one statement; row-by-row foreign-key checks cost more than the insert itself, and the
-- index a declared set-null needs on devices.running_assignment_id made every claim and
-- completion rewrite the device row in every index. The triggers take the locks a foreign
-- key takes (FOR KEY SHARE on the referenced rows, so a referenced row cannot be deleted
-- until the referencing transaction ends), once per statement, and raise the same error
-- (SQLSTATE 23503); the one exception is the devices a fan-out references, see
-- assignments_check_parents. Security definer: like foreign-key actions, they run as the owner.

create or replace function jobsys.raise_missing_reference(
  p_table text, p_constraint text, p_column text, p_key text, p_referenced text) returns void
  language plpgsql
  as $$
begin
  raise exception using errcode = 'foreign_key_violation',
    message = format('insert or update on table "%s" violates foreign key constraint "%s"', p_table, p_constraint),
    detail = format('Key (%s)=(%s) is not present in table "%s".', p_column, p_key, p_referenced);
end
$$;
comment on function jobsys.raise_missing_reference(text, text, text, text, text) is
  'Raises the error a declared foreign key raises (SQLSTATE 23503, same message and detail), for the triggers that stand in for foreign keys.';

-- Fan-out without a row lock per device. A foreign key would lock every referenced device
-- FOR KEY SHARE, so that no device could be deleted under a new assignment: for a
-- 10,000-device job that is 10,000 row locks, each a write to the device's row. jobsys
-- itself never deletes devices (an administrator may), so the delete side waits
-- instead (devices_cascade_delete): deleting devices takes a lock on job_assignments that conflicts
-- with any transaction inserting assignments (SHARE ROW EXCLUSIVE vs ROW EXCLUSIVE), then
-- cascades with a fresh snapshot, so it sees, and deletes, assignments committed meanwhile;
-- an insert that starts after the delete commits finds the device missing and fails as a
-- foreign key would (23503). Jobs keep their FOR KEY SHARE lock (one row per statement).
create or replace function jobsys.assignments_check_parents() returns trigger
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_jobs uuid[];
  v_locked bigint;
  v_missing text;
begin
  select array_agg(g.job_id) into v_jobs from (select n.job_id from new_rows n group by n.job_id) g;
  perform 1 from jobsys.jobs j where j.id = any(v_jobs) for key share;
  get diagnostics v_locked = row_count;
  if v_locked < coalesce(cardinality(v_jobs), 0) then
    select n.job_id::text into v_missing from new_rows n
    where not exists (select 1 from jobsys.jobs j where j.id = n.job_id) limit 1;
    perform jobsys.raise_missing_reference('job_assignments', 'job_assignments_job_id_fkey', 'job_id',
      v_missing, 'jobs');
  end if;
  select n.device_id::text into v_missing from new_rows n
  where not exists (select 1 from jobsys.devices d where d.id = n.device_id) limit 1;
  if found then
    perform jobsys.raise_missing_reference('job_assignments', 'job_assignments_device_id_fkey', 'device_id',
      v_missing, 'devices');
  end if;
  return null;
end
$$;
comment on function jobsys.assignments_check_parents() is
  'Insert trigger standing in for the job_id and device_id foreign keys of job_assignments, once per statement: jobs are locked FOR KEY SHARE, devices only checked, so a 10,000-device fan-out takes no lock per device (devices_cascade_delete waits instead).';

create trigger job_assignments_parents_on_insert after insert on jobsys.job_assignments
  referencing new table as new_rows
  for each statement execute function jobsys.assignments_check_parents();

-- Nothing in jobsys moves an assignment to another job or device; if anything does, the
-- new parents are checked as on insert.
create or replace function jobsys.assignment_check_moved_parents() returns trigger
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
comment on function jobsys.assignment_check_moved_parents() is
  'Update trigger: nothing in jobsys moves an assignment to another job or device; if anything does, the new parents are checked as on insert.';

create trigger job_assignments_parents_on_update after update of job_id, device_id on jobsys.job_assignments
  for each row when (old.job_id is distinct from new.job_id or old.device_id is distinct from new.device_id)
  execute function jobsys.assignment_check_moved_parents();

-- A device's running assignment must be one of its own assignments. Checked per statement:
-- a claim sets it on 100 devices at once, and one lookup for all of them costs a fraction of
-- a trigger call per row. (A transition table cannot go with UPDATE OF a column, so every
-- update of devices runs it; it finds nothing to check in those that leave the column be.)
create or replace function jobsys.devices_check_running_assignments() returns trigger
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_bad record;
begin
  -- One statement per branch: the rows whose running assignment is new, each looked up and
  -- kept from going away until commit (FOR KEY SHARE, as a foreign key does); the first that
  -- is not one of the device's own assignments, if any.
  if tg_op = 'INSERT' then
    select n.id, n.running_assignment_id into v_bad
    from new_rows n
    left join lateral (select true as found from jobsys.job_assignments a
                       where a.id = n.running_assignment_id and a.device_id = n.id for key share) a on true
    where n.running_assignment_id is not null and a.found is null
    limit 1;
  else
    select n.id, n.running_assignment_id into v_bad
    from new_rows n join old_rows o on o.id = n.id
    left join lateral (select true as found from jobsys.job_assignments a
                       where a.id = n.running_assignment_id and a.device_id = n.id for key share) a on true
    where n.running_assignment_id is not null and n.running_assignment_id is distinct from o.running_assignment_id
      and a.found is null
    limit 1;
  end if;
  if found then
    perform jobsys.raise_missing_reference('devices', 'devices_running_assignment_fk', 'running_assignment_id',
      v_bad.running_assignment_id::text, 'job_assignments');
  end if;
  return null;
end
$$;
comment on function jobsys.devices_check_running_assignments() is
  'Stands in for a foreign key on devices.running_assignment_id, once per statement: a device''s running assignment must be one of its own assignments.';

create trigger devices_running_assignment_on_insert after insert on jobsys.devices
  referencing new table as new_rows
  for each statement execute function jobsys.devices_check_running_assignments();
create trigger devices_running_assignment_on_update after update on jobsys.devices
  referencing old table as old_rows new table as new_rows
  for each statement execute function jobsys.devices_check_running_assignments();

-- Deletes cascade (jobs, devices -> their assignments) and free the devices that ran a
-- deleted assignment. New row versions are seen here: each statement of a trigger takes a
-- fresh snapshot, as a foreign-key action does.
create or replace function jobsys.jobs_cascade_delete() returns trigger
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  delete from jobsys.job_assignments a using old_rows o where a.job_id = o.id;
  return null;
end
$$;
comment on function jobsys.jobs_cascade_delete() is
  'Deleting jobs deletes their assignments, as on delete cascade would; each statement of a trigger takes a fresh snapshot, as a foreign-key action does.';

create trigger jobs_cascade_delete after delete on jobsys.jobs
  referencing old table as old_rows
  for each statement execute function jobsys.jobs_cascade_delete();

-- Takes SHARE ROW EXCLUSIVE on job_assignments first (see assignments_check_parents), then
-- cascades with a fresh snapshot.
create or replace function jobsys.devices_cascade_delete() returns trigger
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  lock table jobsys.job_assignments in share row exclusive mode;
  delete from jobsys.job_assignments a using old_rows o where a.device_id = o.id;
  return null;
end
$$;
comment on function jobsys.devices_cascade_delete() is
  'Deleting devices deletes their assignments, after a SHARE ROW EXCLUSIVE lock on job_assignments: it waits for any fan-out in flight and then deletes what that fan-out committed too.';

create trigger devices_cascade_delete after delete on jobsys.devices
  referencing old table as old_rows
  for each statement execute function jobsys.devices_cascade_delete();

create or replace function jobsys.assignments_free_devices() returns trigger
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  update jobsys.devices d set running_assignment_id = null
  from old_rows o where d.id = o.device_id and d.running_assignment_id = o.id;
  return null;
end
$$;
comment on function jobsys.assignments_free_devices() is
  'Deleting assignments frees the devices that were running them, as on delete set null on devices.running_assignment_id would.';

create trigger job_assignments_free_devices after delete on jobsys.job_assignments
  referencing old table as old_rows
  for each statement execute function jobsys.assignments_free_devices();

-- A referenced key never changes (ids are generated); refuse it as a foreign key would.
create or replace function jobsys.refuse_referenced_key_change() returns trigger
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
comment on function jobsys.refuse_referenced_key_change() is
  'Refuses to change a jobs or devices id that assignments reference, as a foreign key would (ids are generated and never change).';

create trigger jobs_key_change after update of id on jobsys.jobs
  for each row when (old.id is distinct from new.id)
  execute function jobsys.refuse_referenced_key_change();
create trigger devices_key_change after update of id on jobsys.devices
  for each row when (old.id is distinct from new.id)
  execute function jobsys.refuse_referenced_key_change();
