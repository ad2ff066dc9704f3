-- jobsys: issue 22. The check that stands in for the foreign key on
-- devices.running_assignment_id looks up, locks and checks the new references in one
-- statement instead of three (every claim runs it).

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

