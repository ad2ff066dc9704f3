-- jobsys: reads a worker needs after its device list changes.

-- The devices bound to this worker session, so it can claim by device id.
create function jobsys.worker_devices(p_worker_id uuid) returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform jobsys.require_worker(p_worker_id);
  return coalesce((select jsonb_agg(jsonb_build_object('id', d.id, 'serial', d.serial, 'state', d.state)
                                    order by d.serial)
                   from jobsys.devices d where d.worker_id = p_worker_id), '[]');
end
$$;

revoke execute on function jobsys.worker_devices(uuid) from public;
grant execute on function jobsys.worker_devices(uuid) to authenticated, service_role;
