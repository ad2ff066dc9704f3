-- jobsys: issue 16 (defects 3, 5 and 8), runners get a role of their own, PATCH is one
-- transaction, and a job's URL names a real host.
--
-- Runners. jobsys.require_runner() let the worker role claim AI batches, read their
-- templates and inputs and report outputs, labelled with any provider. Now:
--   * caller_role() knows 'runner' (app_metadata.jobsys_role, like operator and worker);
--   * require_runner() takes the runner role or the service (embedded mode: the runner is
--     the database owner), not the worker role;
--   * require_signed_in() (device upkeep) takes operators, workers and the service only;
--   * report_background_items refuses a result whose provider is not the one the job asked
--     for (gemini or offline as asked, either for auto), JS400 before anything is stored;
--   * RLS: background_jobs and background_job_items are readable by operators and runners
--     (the *_operator_read policies are replaced), the logs by operators; workers read none.
--
-- PATCH /api/jobs/{id}. jobsys.update_job(p_job_id, p_status, p_title) checks everything,
-- then runs pause / resume / cancel and the rename in one transaction.
--
-- URLs. create_job checks its URL with jobsys.check_target_url: no user name or password,
-- a valid host (domain labels in IDNA form via jobsys.punycode, IPv4, bracketed IPv6) and
-- port. International names are stored as typed.

-- Who is calling ----------------------------------------------------------------------
create or replace function jobsys.caller_role() returns text
  language plpgsql stable
  set search_path = jobsys, pg_temp
  as $$
declare
  -- plpgsql, not sql: a SQL-language function here is re-planned on every call, and this
  -- runs at least once per transition (measured 120-160 us as SQL, under 10 us as plpgsql).
  v_role text := coalesce(nullif(current_setting('role', true), 'none'), '');
  v_claims jsonb;
begin
  if v_role not in ('anon', 'authenticated') then
    return 'service';
  end if;
  v_claims := auth.jwt();
  if v_claims ->> 'role' = 'service_role' then
    return 'service';
  end if;
  if v_role = 'authenticated'
     and v_claims -> 'app_metadata' ->> 'jobsys_role' in ('operator', 'worker', 'runner') then
    return v_claims -> 'app_metadata' ->> 'jobsys_role';
  end if;
  return 'anon';
end
$$;
comment on function jobsys.caller_role() is
  'Who is calling: service (a trusted direct connection or the service role), operator, worker or runner (app_metadata.jobsys_role of the Supabase JWT), else anon. Read from the role setting PostgREST sets, because the functions run as security definer.';

create or replace function jobsys.require_signed_in() returns void
  language plpgsql stable
  set search_path = jobsys, pg_temp
  as $$
begin
  if jobsys.caller_role() not in ('service', 'operator', 'worker') then
    perform jobsys.raise_error('JS403', 'signed-in operator or worker required');
  end if;
end
$$;
comment on function jobsys.require_signed_in() is
  'Raises JS403 unless the caller is an operator, a worker or the service: upkeep (lease rescue, stale marking, top-up) is harmless for them, and workers run it from their heartbeats. Runners and anon may not.';

create or replace function jobsys.require_runner() returns void
  language plpgsql stable
  set search_path = jobsys, pg_temp
  as $$
begin
  if jobsys.caller_role() not in ('service', 'runner') then
    perform jobsys.raise_error('JS403', 'batch runner required (app_metadata.jobsys_role runner, or the service role)');
  end if;
end
$$;
comment on function jobsys.require_runner() is
  'Raises JS403 unless the caller is a batch runner: the runner role (app_metadata.jobsys_role) or the service. Device workers are not runners.';

-- Reports name the provider the job asked for ------------------------------------------
create or replace function jobsys.report_background_items(p_job_id uuid, p_lease_token uuid,
  p_results jsonb default '[]', p_logs jsonb default '[]')
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.background_jobs;
  v_completed integer;
  v_failed integer;
  v_applied integer[];
  v_asked text;
  v_named text;
  v_wrong jsonb;
begin
  perform jobsys.require_runner();
  if jsonb_typeof(coalesce(p_results, '[]')) <> 'array' or jsonb_typeof(coalesce(p_logs, '[]')) <> 'array' then
    perform jobsys.raise_error('JS400', 'results and logs must be JSON arrays', '{"field": "results"}');
  end if;
  if exists (select 1 from jsonb_array_elements(coalesce(p_results, '[]')) r
             where jsonb_typeof(r) <> 'object' or jsonb_typeof(r -> 'idx') is distinct from 'number'
                or coalesce(r ->> 'status', '') not in ('completed', 'failed')
                or (r ->> 'status' = 'failed' and coalesce(btrim(r ->> 'error'), '') = '')) then
    perform jobsys.raise_error('JS400',
      'each result needs idx and a status of completed or failed; a failed one says why in error',
      '{"field": "results"}');
  end if;
  if (select count(*) <> count(distinct r ->> 'idx') from jsonb_array_elements(coalesce(p_results, '[]')) r) then
    perform jobsys.raise_error('JS400', 'a report names each item at most once', '{"field": "results"}');
  end if;
  if exists (select 1 from jsonb_array_elements(coalesce(p_logs, '[]')) l
             where jsonb_typeof(l) <> 'object' or coalesce(l ->> 'level', '') not in ('info', 'warning', 'error')
                or coalesce(btrim(l ->> 'message'), '') = '') then
    perform jobsys.raise_error('JS400', 'each log needs a level (info, warning, error) and a message',
      '{"field": "logs"}');
  end if;
  v_job := jobsys.held_background_job(p_job_id, p_lease_token);
  -- Outputs are labelled with the provider that made them: only the one the job asked for.
  v_asked := coalesce(v_job.payload ->> 'provider', 'auto');
  v_named := nullif(v_asked, 'auto');
  select r into v_wrong from jsonb_array_elements(coalesce(p_results, '[]')) r
  where case coalesce(jsonb_typeof(r -> 'provider'), 'null')
          when 'null' then false
          when 'string' then r ->> 'provider' <> all(case when v_asked = 'auto' then array['gemini', 'offline']
                                                          else array[v_asked] end)
          else true end
  limit 1;
  if found then
    perform jobsys.raise_error('JS400',
      format('item %s: provider must be %s, the provider this job asked for (got %s)', v_wrong -> 'idx',
             case when v_asked = 'auto' then 'gemini or offline' else v_asked end,
             left(coalesce(v_wrong -> 'provider', 'null')::text, 60)),
      jsonb_build_object('field', 'results', 'item', v_wrong -> 'idx', 'job_provider', v_asked));
  end if;

  with r as (
    select * from jsonb_to_recordset(coalesce(p_results, '[]')) as x(
      idx integer, status text, output text, error text, attempts integer, tokens_in integer,
      tokens_out integer, latency_ms integer, provider text)
  ), done as (
    update jobsys.background_job_items i set
      status = r.status, output = left(r.output, 1000000), error = left(r.error, 2000),
      attempts = i.attempts + greatest(coalesce(r.attempts, 1), 0),
      tokens_in = r.tokens_in, tokens_out = r.tokens_out, latency_ms = r.latency_ms,
      provider = left(coalesce(r.provider, v_named), 50), finished_at = now(), lease_token = null
    from r
    where i.job_id = p_job_id and i.idx = r.idx and i.status = 'running' and i.lease_token = p_lease_token
    returning i.idx, i.status, i.error, i.attempts, i.provider
  ), logged as (
    insert into jobsys.background_job_logs (job_id, level, message, metadata)
    select p_job_id, 'error', left(format('item %s failed after %s attempt(s): %s', d.idx, d.attempts, d.error), 4000),
           jsonb_build_object('item', d.idx, 'attempts', d.attempts)
    from done d where d.status = 'failed'
    returning 1
  ), providers as (
    update jobsys.background_jobs j set result = jsonb_set(j.result, '{providers}', (
        select coalesce(jsonb_agg(distinct p order by p), '[]')
        from (select jsonb_array_elements_text(coalesce(j.result -> 'providers', '[]')) p
              union select d.provider from done d where d.provider is not null) ps))
    where j.id = p_job_id and exists (select 1 from done d where d.provider is not null
                                      and not coalesce(j.result -> 'providers', '[]') ? d.provider)
    returning 1
  )
  select count(*) filter (where d.status = 'completed'), count(*) filter (where d.status = 'failed'),
         coalesce(array_agg(d.idx), '{}')
    into v_completed, v_failed, v_applied
  from done d, (select count(*) from logged) as force_logged, (select count(*) from providers) as force_providers;

  insert into jobsys.background_job_logs (job_id, level, message, metadata)
  select p_job_id, l ->> 'level', left(l ->> 'message', 4000),
         case when jsonb_typeof(l -> 'metadata') = 'object' then l -> 'metadata' else '{}' end
  from jsonb_array_elements(coalesce(p_logs, '[]')) l;

  update jobsys.background_jobs set lease_expires_at = now() + jobsys.batch_lease_interval()
  where id = p_job_id;
  if v_completed + v_failed > 0 then
    v_job := jobsys.apply_background_counts(p_job_id, -(v_completed + v_failed), v_completed, v_failed, 0);
  end if;
  return jsonb_build_object(
    'applied', v_completed + v_failed,
    'stale', coalesce((select jsonb_agg(x.idx order by x.idx)
                       from jsonb_to_recordset(coalesce(p_results, '[]')) as x(idx integer)
                       where not x.idx = any(v_applied)), '[]'),
    'job', jobsys.background_progress_json(v_job));
end
$$;
comment on function jobsys.report_background_items(uuid, uuid, jsonb, jsonb) is
  'Runners: record item results with compare-and-set on the lease token, so a runner that lost the job changes nothing (JS410) and a repeated result comes back as stale. A result names the provider the job asked for (either one for auto) or none (recorded as the job''s own choice); any other refuses the whole report (JS400).';

-- RLS: runners read the batches, workers none -------------------------------------------
drop policy background_jobs_operator_read on jobsys.background_jobs;
drop policy background_job_items_operator_read on jobsys.background_job_items;
create policy background_jobs_read on jobsys.background_jobs for select to authenticated
  using (jobsys.caller_role() in ('operator', 'runner'));
create policy background_job_items_read on jobsys.background_job_items for select to authenticated
  using (jobsys.caller_role() in ('operator', 'runner'));

-- The URL of a device job -----------------------------------------------------------
create or replace function jobsys.punycode(p_label text) returns text
  language plpgsql immutable strict
  as $$
declare
  v_cps integer[] := array(select ascii(substr(p_label, i, 1)) from generate_series(1, length(p_label)) i);
  v_out text;
  v_n integer := 128;
  v_delta bigint := 0;
  v_bias integer := 72;
  v_b integer;
  v_h integer;
  v_c integer;
  v_q bigint;
  v_k integer;
  v_t integer;
  v_digit integer;
begin
  select coalesce(string_agg(chr(c), '' order by o), '') into v_out
  from unnest(v_cps) with ordinality as u(c, o) where c < 128;
  v_b := length(v_out);
  v_h := v_b;
  if v_b > 0 then
    v_out := v_out || '-';
  end if;
  while v_h < cardinality(v_cps) loop
    select min(c) into v_c from unnest(v_cps) c where c >= v_n;
    v_delta := v_delta + (v_c - v_n)::bigint * (v_h + 1);
    v_n := v_c;
    foreach v_c in array v_cps loop
      if v_c < v_n then
        v_delta := v_delta + 1;
      elsif v_c = v_n then
        v_q := v_delta;
        v_k := 36;
        loop
          v_t := case when v_k <= v_bias then 1 when v_k >= v_bias + 26 then 26 else v_k - v_bias end;
          exit when v_q < v_t;
          v_digit := v_t + ((v_q - v_t) % (36 - v_t))::integer;
          v_out := v_out || chr(case when v_digit < 26 then 97 + v_digit else 22 + v_digit end);
          v_q := (v_q - v_t) / (36 - v_t);
          v_k := v_k + 36;
        end loop;
        v_out := v_out || chr((case when v_q < 26 then 97 + v_q else 22 + v_q end)::integer);
        -- adapt the bias (RFC 3492 section 6.1)
        v_q := case when v_h = v_b then v_delta / 700 else v_delta / 2 end;
        v_q := v_q + v_q / (v_h + 1);
        v_k := 0;
        while v_q > 455 loop
          v_q := v_q / 35;
          v_k := v_k + 36;
        end loop;
        v_bias := v_k + ((36 * v_q) / (v_q + 38))::integer;
        v_delta := 0;
        v_h := v_h + 1;
      end if;
    end loop;
    v_delta := v_delta + 1;
    v_n := v_n + 1;
  end loop;
  return v_out;
end
$$;
comment on function jobsys.punycode(text) is
  'RFC 3492 Punycode of one host name label, without the xn-- prefix (as Python''s punycode codec writes it): the IDNA form whose length check_target_url checks.';

create or replace function jobsys.check_target_url(p_url text) returns text
  language plpgsql immutable
  set search_path = jobsys, pg_temp
  as $$
declare
  v_authority text := substring(p_url from '^[Hh][Tt][Tt][Pp][Ss]?://([^/?#]*)');
  v_host text;
  v_port text;
  v_label text;
  v_size integer;
  v_total integer := -1;
  v_problem text;
begin
  if p_url is null or length(p_url) > 2048 or p_url ~ '[[:space:][:cntrl:]]' or v_authority is null then
    perform jobsys.raise_error('JS400', 'target_url must be an http or https URL of at most 2048 characters',
      '{"field": "target_url"}');
  end if;
  if strpos(v_authority, '@') > 0 then
    perform jobsys.raise_error('JS400',
      'target_url must not contain a user name or password (user@host): give the host alone',
      '{"field": "target_url", "reason": "userinfo"}');
  end if;
  if left(v_authority, 1) = '[' then
    v_host := substring(v_authority from '^\[([0-9A-Fa-f:.]+)\]');
    v_port := coalesce(substring(v_authority from '^\[[^]]*\](.*)$'), '');
    begin
      if v_host is null or family(v_host::inet) <> 6 then
        v_problem := 'the host in brackets is not an IPv6 address';
      end if;
    exception when invalid_text_representation then
      v_problem := 'the host in brackets is not an IPv6 address';
    end;
  else
    v_host := split_part(v_authority, ':', 1);
    v_port := substr(v_authority, length(v_host) + 1);
    if v_host = '' then
      v_problem := 'there is no host';
    end if;
    foreach v_label in array string_to_array(v_host, '.') loop
      exit when v_problem is not null;
      if v_label = '' then
        v_problem := 'the host has an empty label (two dots in a row, or a dot at either end)';
      elsif length(v_label) > 63 then
        v_problem := 'a label of the host is longer than 63 characters';
      elsif v_label ~ '^-|-$' or v_label ~ '[\u0001-\u002c\u002e\u002f\u003a-\u0040\u005b-\u0060\u007b-\u00bf\u00d7\u00f7\u2000-\u206f\u2100-\u2bff\u3000-\u303f\ue000-\uf8ff\ufe00-\ufe6f\ufeff\uff00-\uffff\U0001f000-\U0001ffff\U000e0000-\U000e007f\U000f0000-\U0010ffff]' then
        v_problem := 'a host name has letters, digits, dots and hyphens only (no hyphen at either end of a label)';
      else
        v_size := case when v_label ~ '^[\u0001-\u007f]*$' then length(v_label)
                       else length('xn--' || jobsys.punycode(v_label)) end;
        v_total := v_total + 1 + v_size;
        if v_size > 63 then
          v_problem := 'a label of the host is longer than 63 characters in its IDNA (punycode) form';
        end if;
      end if;
    end loop;
    if v_problem is null and v_total > 253 then
      v_problem := 'the host is longer than 253 characters (in its IDNA form)';
    end if;
    if v_problem is null and v_label ~ '^[0-9]+$'
       and v_host !~ '^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$' then
      v_problem := 'a host ending in a number must be an IPv4 address (four numbers 0-255)';
    end if;
  end if;
  if v_problem is null and v_port <> '' then
    if v_port !~ '^:[0-9]{1,5}$' then
      v_problem := 'the port must be a number from 1 to 65535';
    elsif substr(v_port, 2)::integer not between 1 and 65535 then
      v_problem := 'the port must be a number from 1 to 65535';
    end if;
  end if;
  if v_problem is not null then
    perform jobsys.raise_error('JS400', 'target_url has an invalid host: ' || v_problem,
      jsonb_build_object('field', 'target_url', 'reason', v_problem));
  end if;
  return p_url;
end
$$;
comment on function jobsys.check_target_url(text) is
  'Checks the URL of a device job or raises JS400: http(s), at most 2048 characters, no user name or password, a valid host (domain labels checked in IDNA form, IPv4, or bracketed IPv6) and port. International names are kept as typed. Mirrors check_url in jobsys/models.py.';

create or replace function jobsys.create_job(
  p_target_url text, p_duration_sec integer, p_target_type text,
  p_target_value integer default null, p_title text default null,
  p_action text default 'open_url', p_max_attempts integer default null)
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz;
  v_healthy integer;
  v_target integer;
  v_job jobsys.jobs;
  v_assigned integer;
  v_title text;
begin
  perform jobsys.require_operator();
  perform jobsys.check_target_url(p_target_url);
  if p_duration_sec is null or p_duration_sec not between 1 and 86400 then
    perform jobsys.raise_error('JS400', 'duration_sec must be between 1 and 86400', '{"field": "duration_sec"}');
  end if;
  if p_action is distinct from 'open_url' then
    perform jobsys.raise_error('JS400', 'action must be open_url', '{"field": "action"}');
  end if;
  if p_target_type is null or p_target_type not in ('all_devices', 'percentage', 'device_count') then
    perform jobsys.raise_error('JS400', 'target_type must be all_devices, percentage or device_count',
      '{"field": "target_type"}');
  end if;
  if p_target_type = 'all_devices' and p_target_value is not null then
    perform jobsys.raise_error('JS400', 'target_value must be empty for all_devices', '{"field": "target_value"}');
  elsif p_target_type = 'percentage' and (p_target_value is null or p_target_value not between 1 and 100) then
    perform jobsys.raise_error('JS400', 'percentage must be between 1 and 100', '{"field": "target_value"}');
  elsif p_target_type = 'device_count' and (p_target_value is null or p_target_value not between 1 and 100000) then
    perform jobsys.raise_error('JS400', 'device_count must be between 1 and 100000', '{"field": "target_value"}');
  end if;
  if p_max_attempts is not null and p_max_attempts not between 1 and 100 then
    perform jobsys.raise_error('JS400', 'max_attempts must be between 1 and 100', '{"field": "max_attempts"}');
  end if;
  v_title := jobsys.check_title(coalesce(nullif(btrim(p_title), ''), jobsys.title_from_url(p_target_url)));

  v_cutoff := jobsys.healthy_cutoff();  -- once, not once per device row
  select count(*) into v_healthy from jobsys.devices d
  where d.state = 'online' and d.last_heartbeat_at > v_cutoff and d.worker_id is not null;
  v_target := case p_target_type
    when 'all_devices' then v_healthy
    when 'percentage' then ceil(v_healthy * p_target_value / 100.0)::integer
    else p_target_value end;
  if v_target = 0 then
    perform jobsys.raise_error('JS409', 'no healthy device is connected to run this job on',
      jsonb_build_object('healthy_devices', 0, 'reason', 'no_devices'));
  end if;

  insert into jobsys.jobs (title, action, target_url, duration_sec, target_type, target_value,
                           target_count, max_attempts, created_by)
  values (v_title, p_action, p_target_url, p_duration_sec, p_target_type, p_target_value, v_target,
          coalesce(p_max_attempts, jobsys.setting('max_attempts')::integer), auth.uid())
  returning * into v_job;

  -- A new job has no assignments yet, so every healthy device is eligible.
  v_assigned := jobsys.assign_devices(v_job.id, v_target, v_healthy);
  v_job := jobsys.apply_counts(v_job.id, v_assigned, 0, 0, 0, 0, true);
  return jsonb_build_object('job', jobsys.job_json(v_job), 'assigned', v_assigned);
end
$$;
comment on function jobsys.create_job(text, integer, text, integer, text, text, integer) is
  'Operators: create a device job and distribute it to the healthy devices in the same transaction; JS409 when no healthy device is connected.';

-- PATCH: status and title in one transaction -----------------------------------------
create or replace function jobsys.update_job(p_job_id uuid, p_status text default null, p_title text default null)
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_title text;
  v_job jsonb;
begin
  perform jobsys.require_operator();
  if p_status is null and p_title is null then
    perform jobsys.raise_error('JS400', 'give a status or a title to change', '{"field": "status"}');
  end if;
  if p_status is not null and p_status not in ('paused', 'active', 'cancelled') then
    perform jobsys.raise_error('JS400', 'status must be paused, active or cancelled', '{"field": "status"}');
  end if;
  if p_title is not null then
    v_title := jobsys.check_title(p_title);
  end if;
  v_job := case p_status
    when 'paused' then jobsys.pause_job(p_job_id)
    when 'active' then jobsys.resume_job(p_job_id)
    when 'cancelled' then jobsys.cancel_job(p_job_id) end;
  if v_title is not null then
    v_job := jobsys.update_job_title(p_job_id, v_title);
  end if;
  return v_job;
end
$$;
comment on function jobsys.update_job(uuid, text, text) is
  'Operators: move a job to paused, active or cancelled and/or rename it (title checked as on create), in one transaction: both happen or neither.';

-- New functions are executable by PUBLIC when created: only update_job is API.
revoke execute on function jobsys.punycode(text), jobsys.check_target_url(text),
  jobsys.update_job(uuid, text, text) from public;
grant execute on function jobsys.update_job(uuid, text, text) to authenticated, service_role;
