-- jobsys: issue 18, the PC page hears of changes.
--
-- add_worker_account and a heartbeat that carries the session's meta (version, push state;
-- sent only when it changes) emit device_status on the dashboard topic, so an open PC page
-- re-reads at once instead of at its 15 s safety refresh.

create or replace function jobsys.heartbeat(p_worker_id uuid, p_devices jsonb default null,
  p_running bigint[] default null, p_meta jsonb default null)
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_stop bigint[];
  v_refused jsonb := '[]';
begin
  perform jobsys.require_worker(p_worker_id);
  if p_meta is not null and (jsonb_typeof(p_meta) <> 'object' or length(p_meta::text) > 2000) then
    perform jobsys.raise_error('JS400', 'meta must be a JSON object of at most 2000 characters',
      '{"field": "meta"}');
  end if;
  update jobsys.workers set last_heartbeat_at = now(), status = 'online',
    meta = case when p_meta is null then meta else meta || p_meta end
  where id = p_worker_id;
  if not found then
    perform jobsys.raise_error('JS404', 'worker session not found; register again',
      jsonb_build_object('worker_id', p_worker_id));
  end if;
  if p_meta is not null then  -- sent when it changes: the PC page shows it
    perform jobsys.emit('jobsys:dashboard', 'device_status', jsonb_build_object('worker_id', p_worker_id));
  end if;

  if p_devices is not null then
    v_refused := jobsys.sync_devices(p_worker_id, p_devices);
  else
    update jobsys.devices d set last_heartbeat_at = now()
    where d.id in (select id from jobsys.devices where worker_id = p_worker_id
                   for no key update skip locked);
  end if;

  -- The leases of the runs this session holds, after the device report and not before: the
  -- report may lock jobs and takes its device rows, and the lock order is jobs -> runs ->
  -- devices. (Extending first, a heartbeat held run 2 and waited for device 1, which
  -- cancel_job had taken with run 1 and held while it waited for run 2: a deadlock.)
  -- A run the worker does not list (p_running) is one it never heard of: the answer to its
  -- claim was lost on the way (a cut link, a hub killed mid-call). Its lease ends now, so
  -- the next rescue puts it back in the queue, instead of being extended forever.
  update jobsys.job_assignments a set lease_expires_at = case
      when p_running is null or a.id = any(p_running) then greatest(a.lease_expires_at,
        now() + make_interval(secs => jobsys.setting('heartbeat_lease_sec')::double precision))
      else least(a.lease_expires_at, now()) end
  where a.id in (select a2.id from jobsys.job_assignments a2
                 join jobsys.devices d on d.running_assignment_id = a2.id
                 where d.worker_id = p_worker_id and a2.worker_id = p_worker_id and a2.status = 'running'
                 for no key update of a2 skip locked);

  select array_agg(r.id order by r.id) into v_stop
  from unnest(coalesce(p_running, '{}')) as r(id)
  where not exists (select 1 from jobsys.job_assignments a
                    join jobsys.devices d on d.id = a.device_id
                    where a.id = r.id and a.status = 'running' and d.worker_id = p_worker_id);
  return jsonb_build_object('stop', coalesce(to_jsonb(v_stop), '[]'), 'refused', v_refused,
                            'maintenance', jobsys.maintain());
end
$$;
comment on function jobsys.heartbeat(uuid, jsonb, bigint[], jsonb) is
  'Workers: the worker and its devices are alive, the leases of the running runs it lists are extended (one it does not list is unknown to it, a lost claim answer: its lease ends now and rescue requeues it), and maintenance runs; p_meta (version, push state) is merged into the session''s meta. Returns the runs the worker must stop (the polling path for cancellation when push is down) and, with a device report, the serials refused to it.';

create or replace function jobsys.add_worker_account(p_name text, p_token_hash text) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_account jobsys.worker_accounts;
begin
  perform jobsys.require_operator();
  if p_name is null or length(btrim(p_name)) not between 1 and 64 or p_name ~ '[[:cntrl:]]' then
    perform jobsys.raise_error('JS400', 'PC name must be 1-64 printable characters', '{"field": "name"}');
  end if;
  if p_token_hash is null or p_token_hash !~ '^[0-9a-f]{64}$' then
    perform jobsys.raise_error('JS400', 'token_hash must be a SHA-256 hex digest', '{"field": "token_hash"}');
  end if;
  insert into jobsys.worker_accounts (name, token_hash) values (btrim(p_name), p_token_hash)
  on conflict do nothing
  returning * into v_account;
  if v_account.id is null then
    perform jobsys.raise_error('JS409', format('a PC named %s already exists; revoke it first or choose another name',
                                                btrim(p_name)), jsonb_build_object('name', btrim(p_name)));
  end if;
  perform jobsys.emit('jobsys:dashboard', 'device_status', jsonb_build_object('account_id', v_account.id));
  return jobsys.worker_account_json(v_account);
end
$$;
comment on function jobsys.add_worker_account(text, text) is
  'Operators: a new worker account (a PC joining the hub) named p_name with the SHA-256 digest of its token; the token itself never reaches the database. JS409 when an active account has that name.';
