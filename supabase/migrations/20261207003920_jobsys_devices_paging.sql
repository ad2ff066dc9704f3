-- jobsys: devices at scale (issue 20). The device list a page at a time by serial
-- (list_devices_page: filters, an opaque cursor, limit 1-1000) and the counts per PC from one
-- aggregate (device_groups), so the Devices page and the header never read the whole fleet;
-- devices_worker_serial_idx (replacing devices_worker_id_idx, its prefix) serves a PC's pages.

drop index jobsys.devices_worker_id_idx;
-- A PC's devices by serial: the Devices page's pages of one PC are a range scan of it (33_fleet.sql).
create index devices_worker_serial_idx on jobsys.devices (worker_id, serial);

-- Devices at scale (issue 20) -------------------------------------------------------------
-- The device list a page at a time, and its counts per PC from one aggregate, so a screen
-- never reads a fleet of 10,000 phones whole. Pages walk the fleet by serial: it is unique,
-- and unlike a worker's name it does not change when a phone moves to another PC, so a walk
-- meets each device once. Filters: p_status a device_status value or 'connected' (idle or
-- busy); p_worker_id one worker session (the nil UUID: devices no worker holds) or p_pc a
-- worker's name; p_labels pairs that must all match (the operator's label winning on a
-- shared key); p_q a serial substring as typed (case-insensitive; % and _ not wildcards).
create or replace function jobsys.device_filter_problem(p_status text, p_labels jsonb, p_q text) returns jsonb
  language sql immutable
  as $$
  select case
    when p_status is not null and p_status not in ('connected', 'idle', 'busy', 'offline', 'error', 'unauthorized',
                                                   'disabled', 'draining', 'quarantined', 'low_battery', 'overheated')
      then jsonb_build_object('message', 'state must be connected, idle, busy, offline, error, unauthorized, '
                              || 'disabled, draining, quarantined, low_battery or overheated', 'field', 'state')
    when jobsys.label_problem(coalesce(p_labels, '{}')) is not null
      then jsonb_build_object('message', jobsys.label_rule_message(jobsys.label_problem(p_labels)),
                              'field', 'label', 'rule', jobsys.label_problem(p_labels))
    when length(p_q) > 200 then jsonb_build_object('message', 'q must be at most 200 characters', 'field', 'q')
  end
$$;
comment on function jobsys.device_filter_problem(text, jsonb, text) is
  'What is wrong with a device list filter (state, labels, serial search) as {message, field, rule}, or null when it is fine.';

-- jobsys.device_status's rule (30_device_jobs.sql) on the columns it reads: plain SQL over
-- columns, so the planner inlines it, where a call with the whole row costs five times the scan
-- on 10,000 devices. tests/core/test_device_paging.py checks both give the same counts.
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
  'jobsys.device_status on the columns it reads (state, worker_id, last_heartbeat_at, running_assignment_id), inlined by the planner: the device lists'' filters and counts over the whole fleet.';

-- p_counts: {status: number of devices}; the answer has every status (0 when absent).
create or replace function jobsys.device_summary_json(p_counts jsonb) returns jsonb
  language sql immutable
  as $$
  select jsonb_build_object(
    'total', (select coalesce(sum(e.value::bigint), 0) from jsonb_each_text(p_counts) e),
    'connected', coalesce((p_counts ->> 'idle')::bigint, 0) + coalesce((p_counts ->> 'busy')::bigint, 0))
    || (select jsonb_object_agg(s, coalesce((p_counts ->> s)::bigint, 0))
        from unnest(array['idle', 'busy', 'offline', 'error', 'unauthorized', 'disabled', 'draining',
                          'quarantined', 'low_battery', 'overheated']) s)
$$;
comment on function jobsys.device_summary_json(jsonb) is
  'The devices'' counts per status (as list_devices'' summary: total, connected, one per status) from {status: count}.';

create or replace function jobsys.list_devices_page(p_status text default null, p_worker_id uuid default null,
  p_pc text default null, p_labels jsonb default '{}', p_q text default null, p_after text default null,
  p_limit integer default 100, p_with_counts boolean default true)
  returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz := jobsys.healthy_cutoff();  -- once, not once per device row
  v_problem jsonb := jobsys.device_filter_problem(p_status, p_labels, p_q);
  v_labels jsonb := coalesce(p_labels, '{}');
  v_q text := lower(nullif(p_q, ''));
  -- $1 cutoff, $2 status, $3 worker, $4 pc name, $5 labels, $6 search
  v_where constant text := $w$
    ($3::uuid is null or d.worker_id = $3
     or ($3 = '00000000-0000-0000-0000-000000000000' and d.worker_id is null))
    and ($4::text is null or d.worker_id in (select w.id from jobsys.workers w where w.name = $4))
    and ($5::jsonb = '{}' or d.labels || d.operator_labels @> $5)
    and ($6::text is null or strpos(lower(d.serial), $6) > 0)
    and ($2::text is null
         or case when $2 = 'connected'
                 then jobsys.device_status_of(d.state, d.worker_id, d.last_heartbeat_at, d.running_assignment_id, $1)
                      in ('idle', 'busy')
                 else jobsys.device_status_of(d.state, d.worker_id, d.last_heartbeat_at, d.running_assignment_id, $1)
                      = $2 end)$w$;
  v_page jsonb;
  v_next text;
  v_total bigint;
  v_summary jsonb;
begin
  perform jobsys.require_viewer();
  if v_problem is not null then
    perform jobsys.raise_error('JS400', v_problem ->> 'message', v_problem - 'message');
  end if;
  if p_limit is null or p_limit not between 1 and 1000 then
    perform jobsys.raise_error('JS400', 'limit must be 1-1000', '{"field": "limit"}');
  end if;
  if length(p_after) not between 1 and 200 then
    perform jobsys.raise_error('JS400', 'cursor is not one this list gave', '{"field": "cursor"}');
  end if;
  -- EXECUTE plans with the arguments' values: an unused filter drops out, and a PC's page is a
  -- range scan of devices_worker_serial_idx (a cached generic plan could not choose it). One
  -- row more than asked says whether a next page exists without counting the rest.
  execute 'select coalesce(jsonb_agg(jobsys.device_json(p.d, $1) order by (p.d).serial)
                    filter (where p.n <= $8), ''[]''),
                  case when count(*) > $8 then max((p.d).serial) filter (where p.n <= $8) end
           from (select s.d, row_number() over (order by (s.d).serial) as n
                 from (select d from jobsys.devices d
                       where ($7::text is null or d.serial > $7) and ' || v_where || '
                       order by d.serial limit $8 + 1) s) p'
    into v_page, v_next
    using v_cutoff, p_status, p_worker_id, p_pc, v_labels, v_q, p_after, p_limit;
  if p_with_counts then
    execute 'select count(*) from jobsys.devices d where ' || v_where
      into v_total using v_cutoff, p_status, p_worker_id, p_pc, v_labels, v_q;
    select jobsys.device_summary_json(coalesce(jsonb_object_agg(c.status, c.n), '{}')) into v_summary
    from (select jobsys.device_status_of(d.state, d.worker_id, d.last_heartbeat_at, d.running_assignment_id, v_cutoff)
                   as status, count(*) as n
          from jobsys.devices d group by 1) c;
  end if;
  return jsonb_build_object('devices', v_page, 'next_cursor', v_next, 'total', v_total, 'summary', v_summary);
end
$$;
comment on function jobsys.list_devices_page(text, uuid, text, jsonb, text, text, integer, boolean) is
  'Operators: up to p_limit (1-1000) devices (as list_devices'' entries) after the serial p_after that pass the filters, by serial; next_cursor: the serial to pass for the next page, null on the last. With p_with_counts, total (matching devices) and summary (the fleet''s counts per status).';

create or replace function jobsys.device_groups(p_status text default null, p_labels jsonb default '{}',
  p_q text default null)
  returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz := jobsys.healthy_cutoff();
  v_problem jsonb := jobsys.device_filter_problem(p_status, p_labels, p_q);
  v_labels jsonb := coalesce(p_labels, '{}');
  v_q text := lower(nullif(p_q, ''));
begin
  perform jobsys.require_viewer();
  if v_problem is not null then
    perform jobsys.raise_error('JS400', v_problem ->> 'message', v_problem - 'message');
  end if;
  return (
    with counted as (  -- one pass over the devices: per worker and status, all and matching
      select d.worker_id,
             jobsys.device_status_of(d.state, d.worker_id, d.last_heartbeat_at, d.running_assignment_id, v_cutoff)
               as status, count(*) as n,
             count(*) filter (where (v_labels = '{}' or d.labels || d.operator_labels @> v_labels)
                                and (v_q is null or strpos(lower(d.serial), v_q) > 0)) as searched
      from jobsys.devices d group by 1, 2
    ), groups as (
      select c.worker_id, sum(c.n) as total, jsonb_object_agg(c.status, c.n) as counts,
             sum(c.searched) filter (where p_status is null or c.status = p_status
                                     or (p_status = 'connected' and c.status in ('idle', 'busy'))) as matching
      from counted c group by 1
    )
    select jsonb_build_object(
      'groups', coalesce((select jsonb_agg(jsonb_build_object('worker_id', g.worker_id, 'worker_name', w.name,
                           'total', g.total, 'matching', coalesce(g.matching, 0),
                           'summary', jobsys.device_summary_json(g.counts))
                           order by w.name nulls last, g.worker_id nulls last)
                         from groups g left join jobsys.workers w on w.id = g.worker_id), '[]'),
      'summary', jobsys.device_summary_json(coalesce(
        (select jsonb_object_agg(s.status, s.n) from (select c.status, sum(c.n) as n from counted c group by 1) s),
        '{}'))));
end
$$;
comment on function jobsys.device_groups(text, jsonb, text) is
  'Operators: the devices'' counts per worker session (the PC; worker_id null: held by none) from one aggregate: summary per status, total, and matching (passing the filters of list_devices_page), with the fleet''s summary; no device rows. The Devices page and the header count read it.';

revoke execute on function jobsys.device_filter_problem(text, jsonb, text), jobsys.device_summary_json(jsonb),
  jobsys.device_status_of(text, uuid, timestamp with time zone, bigint, timestamp with time zone),
  jobsys.list_devices_page(text, uuid, text, jsonb, text, text, integer, boolean),
  jobsys.device_groups(text, jsonb, text) from public;
grant execute on function
  jobsys.list_devices_page(text, uuid, text, jsonb, text, text, integer, boolean),
  jobsys.device_groups(text, jsonb, text)
to authenticated, service_role;
