-- jobsys: the device status rule in one place. jobsys.device_status (the whole row) calls
-- jobsys.device_status_of (the columns it reads, which the planner inlines) instead of
-- repeating its rule.

create or replace function jobsys.device_status_of(p_state text, p_worker_id uuid, p_last_heartbeat_at timestamptz,
  p_running_assignment_id bigint, p_cutoff timestamptz) returns text
  language sql immutable
  as $$
  select case
    when p_state in ('disabled', 'draining', 'quarantined', 'unauthorized', 'error') then p_state
    when p_state = 'offline' or p_worker_id is null or p_last_heartbeat_at <= p_cutoff then 'offline'
    when p_running_assignment_id is not null then 'busy'
    when p_state in ('low_battery', 'overheated') then p_state
    else 'idle' end
$$;
comment on function jobsys.device_status_of(text, uuid, timestamp with time zone, bigint, timestamp with time zone) is
  'The status rule of jobsys.device_status on the columns it reads (state, worker_id, last_heartbeat_at, running_assignment_id), inlined by the planner: the device lists'' filters and counts over the whole fleet.';

create or replace function jobsys.device_status(d jobsys.devices, p_cutoff timestamptz) returns text
  language sql stable
  set search_path = jobsys, pg_temp
  as $$
  select jobsys.device_status_of(d.state, d.worker_id, d.last_heartbeat_at, d.running_assignment_id, p_cutoff)
$$;
comment on function jobsys.device_status(jobsys.devices, timestamp with time zone) is
  'The status the dashboard shows for a device: disabled, draining, quarantined, unauthorized, error, offline, busy, low_battery, overheated or idle. p_cutoff is jobsys.healthy_cutoff(), computed once by the caller.';

