-- jobsys declarative schema: background AI batch jobs. One function per transition, as for device jobs.
--
--   pending --claim_background_job--> running --(last item reported)--> completed | failed
--   running --lease expired, claim_background_job by another runner--> running (taken over)
--   running --release_background_job (runner shutdown)--> pending
--   running --finish_background_job(error)--> failed      (job-level error: bad key, unknown model)
--   pending | running --cancel_background_job--> cancelled
--   completed | failed (with failed items) --retry_background_job--> pending (failed items only)
--
-- Items: pending -> running (claimed in batches, tagged with the job's lease token) ->
-- completed | failed; pending | running -> cancelled on cancel; running -> pending on takeover
-- or release; failed -> pending on retry. A result is recorded only while the item is still
-- running under the reporting runner's lease token (compare-and-set), so a runner whose job
-- was taken over or cancelled never counts anything.
--
-- Lock order: background_jobs -> background_job_items (and logs, which are insert-only).
-- Counters (running / completed / failed / cancelled) change only in
-- jobsys.apply_background_counts, in the transaction that moves the items;
-- pending = total - running - completed - failed - cancelled.
-- Tables: 10_tables.sql; access: 50_access.sql.

-- Helpers -------------------------------------------------------------------------------
-- Runners have a role of their own: a device worker's account runs no batch (it would see
-- templates and inputs, and could label outputs). Embedded, the runner is the service.
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

create or replace function jobsys.background_job_json(j jobsys.background_jobs) returns jsonb
  language sql immutable
  as $$
  select jsonb_build_object(
    'id', j.id, 'type', j.type, 'title', j.title, 'status', j.status, 'payload', j.payload,
    'result', j.result, 'offline', coalesce(j.result -> 'providers' ? 'offline', false),
    'concurrency', j.concurrency, 'total_items', j.total_items, 'running_items', j.running_items,
    'completed_items', j.completed_items, 'failed_items', j.failed_items,
    'cancelled_items', j.cancelled_items, 'progress_percent', j.progress_percent,
    'retry_count', j.retry_count, 'max_retries', j.max_retries, 'error_message', j.error_message,
    'created_by', j.created_by, 'created_at', j.created_at, 'updated_at', j.updated_at,
    'started_at', j.started_at, 'completed_at', j.completed_at, 'lease_owner', j.lease_owner,
    'lease_expires_at', j.lease_expires_at, 'usage', j.usage)
$$;
comment on function jobsys.background_job_json(jobsys.background_jobs) is
  'The JSON shape of a background job in the API.';

-- What background_job_progress carries: enough for a progress monitor without a read.
create or replace function jobsys.background_progress_json(j jobsys.background_jobs) returns jsonb
  language sql immutable
  as $$
  select jsonb_build_object(
    'job_id', j.id, 'status', j.status, 'total_items', j.total_items,
    'running_items', j.running_items, 'completed_items', j.completed_items,
    'failed_items', j.failed_items, 'cancelled_items', j.cancelled_items,
    'progress_percent', j.progress_percent, 'error_message', j.error_message,
    'offline', coalesce(j.result -> 'providers' ? 'offline', false),
    'started_at', j.started_at, 'completed_at', j.completed_at, 'updated_at', j.updated_at,
    'usage', j.usage)
$$;
comment on function jobsys.background_progress_json(jobsys.background_jobs) is
  'The payload of background_job_progress: enough for a progress monitor without a read.';

create or replace function jobsys.background_log(p_job_id uuid, p_level text, p_message text,
  p_metadata jsonb default '{}')
  returns void
  language sql
  set search_path = jobsys, pg_temp
  as $$
  insert into jobsys.background_job_logs (job_id, level, message, metadata)
  values (p_job_id, p_level, left(p_message, 4000), coalesce(p_metadata, '{}'))
$$;
comment on function jobsys.background_log(uuid, text, text, jsonb) is
  'Appends one line to the log of a background job (message cut at 4000 characters). p_metadata carries the line''s code and parameters ({"code": "cancelled", "cancelled_items": 3, ...}), which the dashboard renders in the reader''s language; the English message is the fallback.';

-- Adds token counts key by key ({"input": 3} + {"input": 2, "output": 1} = {"input": 5, "output": 1}).
create or replace function jobsys.add_token_usage(p_a jsonb, p_b jsonb) returns jsonb
  language sql immutable
  as $$
  select coalesce(jsonb_object_agg(k, coalesce((p_a ->> k)::bigint, 0) + coalesce((p_b ->> k)::bigint, 0)), '{}')
  from (select jsonb_object_keys(coalesce(p_a, '{}')) union select jsonb_object_keys(coalesce(p_b, '{}'))) keys(k)
$$;
comment on function jobsys.add_token_usage(jsonb, jsonb) is
  'Adds two token count objects key by key (background_jobs.usage).';

-- Whether a runner offering p_providers can run a job with this payload: auto and offline
-- run anywhere (offline is built in; auto falls back to it), gemini and openai_compatible
-- only where configured. Null p_providers: a runner that did not say (claim_background_job).
create or replace function jobsys.background_runnable(p_payload jsonb, p_providers text[]) returns boolean
  language sql immutable
  as $$
  select p_providers is null or coalesce(p_payload ->> 'provider', 'auto') in ('auto', 'offline')
    or p_payload ->> 'provider' = any(p_providers)
$$;
comment on function jobsys.background_runnable(jsonb, text[]) is
  'Whether a runner offering these providers can run a job with this payload (auto and offline anywhere; gemini and openai_compatible only where configured; null providers: any).';

-- Why a pending job is not running yet, when the runners registered lately say so: none is
-- up, or none can run its provider (no key / no server configured). Null otherwise. A runner
-- counts as up for 45 s after its last claim or heartbeat (it claims at least every 15 s).
create or replace function jobsys.background_wait_reason(j jobsys.background_jobs) returns jsonb
  language sql stable
  set search_path = jobsys, pg_temp
  as $$
  with up as (
    select r.providers from jobsys.background_runners r where r.seen_at > now() - interval '45 seconds')
  select case
    when j.status <> 'pending' then null
    when not exists (select 1 from up) then
      jsonb_build_object('code', 'no_runner', 'message', 'no batch runner is up')
    when not exists (select 1 from up where jobsys.background_runnable(j.payload, up.providers)) then
      jsonb_build_object('code', 'no_capable_runner', 'provider', j.payload ->> 'provider',
        'message', case j.payload ->> 'provider'
                     when 'gemini' then 'no runner with a Gemini key (GEMINI_API_KEY) is up'
                     else format('no runner configured for %s is up', j.payload ->> 'provider') end)
  end
$$;
comment on function jobsys.background_wait_reason(jobsys.background_jobs) is
  'Why a pending job waits, from the runners seen in the last 45 s: none is up (no_runner), or none can run its provider (no_capable_runner); null otherwise.';

create or replace function jobsys.batch_lease_interval() returns interval
  language sql stable
  set search_path = jobsys, pg_temp
  as $$ select make_interval(secs => jobsys.setting('batch_lease_sec')::double precision) $$;
comment on function jobsys.batch_lease_interval() is
  'How long a runner holds a claimed background job past its last heartbeat (batch_lease_sec).';

create or replace function jobsys.lock_background_job(p_job_id uuid) returns jobsys.background_jobs
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.background_jobs;
begin
  select * into v_job from jobsys.background_jobs where id = p_job_id for no key update;
  if not found then
    perform jobsys.raise_error('JS404', 'background job not found', jsonb_build_object('job_id', p_job_id));
  end if;
  return v_job;
end
$$;
comment on function jobsys.lock_background_job(uuid) is
  'Locks a background job row for a transition or raises JS404.';

-- The job, locked, if the caller's lease is current; else JS410 (cancelled, taken over,
-- finished), which tells the runner to drop the job and count nothing more.
create or replace function jobsys.held_background_job(p_job_id uuid, p_lease_token uuid) returns jobsys.background_jobs
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.background_jobs := jobsys.lock_background_job(p_job_id);
begin
  if v_job.status <> 'running' or v_job.lease_token is distinct from p_lease_token then
    perform jobsys.raise_error('JS410', 'this runner no longer holds the job',
      jsonb_build_object('job_id', p_job_id, 'status', v_job.status,
                         'reason', case when v_job.status = 'running' then 'taken_over' else v_job.status end));
  end if;
  return v_job;
end
$$;
comment on function jobsys.held_background_job(uuid, uuid) is
  'The job, locked, if the lease of the caller is current; else JS410 (cancelled, taken over, finished), which tells the runner to drop the job and count nothing more.';

-- Counters: the one place they change. The caller holds the job row lock. A running job
-- whose items are all final finishes here, in the same transaction: completed, or failed
-- when no item succeeded. background_job_progress is throttled per job like job_progress;
-- renew_background_leases sends the trailing event.
create or replace function jobsys.apply_background_counts(
  p_job_id uuid, p_running integer, p_completed integer, p_failed integer, p_cancelled integer,
  p_force_event boolean default false)
  returns jobsys.background_jobs
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_now timestamptz := clock_timestamp();
  v_interval interval := make_interval(secs => jobsys.setting('progress_event_interval_ms') / 1000.0);
  v_job jobsys.background_jobs;
  v_finishes boolean;
begin
  update jobsys.background_jobs j set
    running_items = j.running_items + p_running,
    completed_items = j.completed_items + p_completed,
    failed_items = j.failed_items + p_failed,
    cancelled_items = j.cancelled_items + p_cancelled,
    updated_at = v_now
  where j.id = p_job_id
  returning j.* into v_job;

  v_finishes := v_job.status = 'running' and v_job.running_items = 0
    and v_job.completed_items + v_job.failed_items + v_job.cancelled_items >= v_job.total_items;
  if v_finishes then
    update jobsys.background_jobs j set
      status = case when j.completed_items = 0 and j.failed_items > 0 then 'failed' else 'completed' end,
      completed_at = v_now, lease_expires_at = null,
      error_message = case when j.failed_items > 0
                           then format('%s of %s items failed', j.failed_items, j.total_items) end
    where j.id = p_job_id
    returning j.* into v_job;
    perform jobsys.background_log(p_job_id,
      case when v_job.status = 'failed' then 'error' when v_job.failed_items > 0 then 'warning' else 'info' end,
      format('%s: %s of %s items succeeded, %s failed', v_job.status, v_job.completed_items,
             v_job.total_items, v_job.failed_items),
      jsonb_build_object('code', 'finished_' || v_job.status, 'status', v_job.status,
                         'completed_items', v_job.completed_items, 'failed_items', v_job.failed_items,
                         'total_items', v_job.total_items));
  end if;

  if p_force_event or v_finishes or v_now - v_job.progress_notified_at >= v_interval then
    update jobsys.background_jobs j set progress_notified_at = v_now where j.id = p_job_id;
    perform jobsys.emit('jobsys:dashboard', 'background_job_progress', jobsys.background_progress_json(v_job));
  end if;
  return v_job;
end
$$;
comment on function jobsys.apply_background_counts(uuid, integer, integer, integer, integer, boolean) is
  'The one place background job counters change (the caller holds the job row lock). A running job whose items are all final finishes here; background_job_progress is throttled per job.';

-- Placeholders of a template: plain {name} fields; {{ and }} are literal braces. Anything
-- else ({0}, {a.b}, {x!r}, {x:>9}, a lone brace) is refused. Mirrors jobsys/batch/template.py.
create or replace function jobsys.template_placeholders(p_template text) returns text[]
  language plpgsql immutable
  as $$
declare
  v_rest text := replace(replace(p_template, '{{', ''), '}}', '');
  v_names text[];
begin
  if regexp_replace(v_rest, '\{[A-Za-z_][A-Za-z0-9_]*\}', '', 'g') ~ '[{}]' then
    perform jobsys.raise_error('JS400',
      'template placeholders must be plain {name} fields (letters, digits, underscore); write {{ and }} for literal braces',
      '{"field": "template"}');
  end if;
  select coalesce(array_agg(distinct m[1] order by m[1]), '{}') into v_names
  from regexp_matches(v_rest, '\{([A-Za-z_][A-Za-z0-9_]*)\}', 'g') as m;
  return v_names;
end
$$;
comment on function jobsys.template_placeholders(text) is
  'The placeholders of a template: plain {name} fields, {{ and }} for literal braces, anything else refused with JS400. Mirrors jobsys/batch/template.py.';

-- Payload checks for ai_batch: returns the normalised payload or raises JS400 (nothing stored).
create or replace function jobsys.check_ai_batch(p_payload jsonb, p_items jsonb) returns jsonb
  language plpgsql immutable
  set search_path = jobsys, pg_temp
  as $$
declare
  v_template text;
  v_placeholders text[];
  v_bad record;
  v_n integer;
begin
  if jsonb_typeof(p_payload) is distinct from 'object' then
    perform jobsys.raise_error('JS400', 'payload must be a JSON object', '{"field": "payload"}');
  end if;
  if exists (select 1 from jsonb_object_keys(p_payload) k
             where k not in ('template', 'model', 'system_instruction', 'temperature', 'max_output_tokens', 'provider',
                             'response_schema', 'mode')) then
    perform jobsys.raise_error('JS400',
      'payload accepts template, model, system_instruction, temperature, max_output_tokens, provider, response_schema and mode only',
      '{"field": "payload"}');
  end if;
  if jsonb_typeof(p_payload -> 'template') is distinct from 'string'
     or (p_payload ->> 'template') ~ '^[[:space:]]*$' or length(p_payload ->> 'template') > 20000 then
    perform jobsys.raise_error('JS400', 'template must be 1-20000 characters', '{"field": "template"}');
  end if;
  v_template := p_payload ->> 'template';
  v_placeholders := jobsys.template_placeholders(v_template);
  if cardinality(v_placeholders) = 0 then
    perform jobsys.raise_error('JS400', 'template has no {placeholder}: name the item fields it uses, e.g. {text}',
      '{"field": "template"}');
  end if;
  if jsonb_typeof(p_payload -> 'model') is distinct from 'string'
     or (p_payload ->> 'model') !~ '^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$' then
    perform jobsys.raise_error('JS400', 'model must be a model name such as gemini-2.5-flash', '{"field": "model"}');
  end if;
  if p_payload ? 'system_instruction' and jsonb_typeof(p_payload -> 'system_instruction') <> 'null'
     and (jsonb_typeof(p_payload -> 'system_instruction') <> 'string'
          or length(p_payload ->> 'system_instruction') > 20000) then
    perform jobsys.raise_error('JS400', 'system_instruction must be text of at most 20000 characters',
      '{"field": "system_instruction"}');
  end if;
  if p_payload ? 'temperature' and jsonb_typeof(p_payload -> 'temperature') <> 'null'
     and (jsonb_typeof(p_payload -> 'temperature') <> 'number'
          or (p_payload ->> 'temperature')::numeric not between 0 and 2) then
    perform jobsys.raise_error('JS400', 'temperature must be between 0 and 2', '{"field": "temperature"}');
  end if;
  if p_payload ? 'max_output_tokens' and jsonb_typeof(p_payload -> 'max_output_tokens') <> 'null'
     and (jsonb_typeof(p_payload -> 'max_output_tokens') <> 'number'
          or (p_payload ->> 'max_output_tokens')::numeric not between 1 and 65536
          or (p_payload ->> 'max_output_tokens')::numeric % 1 <> 0) then
    perform jobsys.raise_error('JS400', 'max_output_tokens must be a whole number between 1 and 65536',
      '{"field": "max_output_tokens"}');
  end if;
  if coalesce(p_payload ->> 'provider', 'auto') not in ('auto', 'gemini', 'offline', 'openai_compatible') then
    perform jobsys.raise_error('JS400', 'provider must be auto, gemini, offline or openai_compatible',
      '{"field": "provider"}');
  end if;
  -- batch_api: Gemini's Batch API (half price, up to 24 h), so Gemini only.
  if coalesce(p_payload ->> 'mode', 'standard') not in ('standard', 'batch_api') then
    perform jobsys.raise_error('JS400', 'mode must be standard or batch_api', '{"field": "mode"}');
  end if;
  if p_payload ->> 'mode' = 'batch_api' and coalesce(p_payload ->> 'provider', 'auto') <> 'gemini' then
    perform jobsys.raise_error('JS400', 'mode batch_api needs provider gemini', '{"field": "mode"}');
  end if;
  -- The JSON Schema itself is checked by the library (jsonschema); here only its shape and size.
  if p_payload ? 'response_schema' and jsonb_typeof(p_payload -> 'response_schema') <> 'null'
     and (jsonb_typeof(p_payload -> 'response_schema') <> 'object'
          or length((p_payload -> 'response_schema')::text) > 20000) then
    perform jobsys.raise_error('JS400', 'response_schema must be a JSON Schema object of at most 20000 characters',
      '{"field": "response_schema"}');
  end if;

  if jsonb_typeof(p_items) is distinct from 'array' then
    perform jobsys.raise_error('JS400', 'items must be a JSON array of objects', '{"field": "items"}');
  end if;
  v_n := jsonb_array_length(p_items);
  if v_n not between 1 and 10000 then
    perform jobsys.raise_error('JS400', 'a batch needs 1 to 10000 items',
      jsonb_build_object('field', 'items', 'count', v_n));
  end if;
  if octet_length(p_items::text) > 16000000 then
    perform jobsys.raise_error('JS400', 'items must total at most 16 MB', '{"field": "items"}');
  end if;
  select e.ord - 1 as idx, case
      when jsonb_typeof(e.value) <> 'object' then 'must be a JSON object'
      when length(e.value::text) > 20000 then 'is larger than 20000 characters'
      when exists (select 1 from jsonb_each(e.value) f where jsonb_typeof(f.value) in ('object', 'array'))
        then 'has a nested object or list; field values must be text, numbers, true/false or null'
      else (select format('has no field %s, which the template uses', p)
            from unnest(v_placeholders) p where not e.value ? p limit 1)
    end as problem
    into v_bad
  from jsonb_array_elements(p_items) with ordinality as e(value, ord)
  where jsonb_typeof(e.value) <> 'object' or length(e.value::text) > 20000
     or exists (select 1 from jsonb_each(e.value) f where jsonb_typeof(f.value) in ('object', 'array'))
     or exists (select 1 from unnest(v_placeholders) p where not e.value ? p)
  order by e.ord limit 1;
  if found then
    perform jobsys.raise_error('JS400', format('item %s %s', v_bad.idx, v_bad.problem),
      jsonb_build_object('field', 'items', 'item', v_bad.idx));
  end if;

  return jsonb_build_object(
    'template', v_template, 'model', p_payload ->> 'model',
    'system_instruction', nullif(p_payload ->> 'system_instruction', ''),
    'temperature', p_payload -> 'temperature', 'max_output_tokens', p_payload -> 'max_output_tokens',
    'provider', coalesce(p_payload ->> 'provider', 'auto'), 'placeholders', to_jsonb(v_placeholders),
    'response_schema', p_payload -> 'response_schema', 'mode', coalesce(p_payload ->> 'mode', 'standard'))
    - case when jsonb_typeof(p_payload -> 'temperature') is distinct from 'number' then 'temperature' else '' end
    - case when jsonb_typeof(p_payload -> 'max_output_tokens') is distinct from 'number' then 'max_output_tokens' else '' end
    - case when jsonb_typeof(p_payload -> 'response_schema') is distinct from 'object' then 'response_schema' else '' end;
end
$$;
comment on function jobsys.check_ai_batch(jsonb, jsonb) is
  'Checks an ai_batch payload and its items; returns the normalised payload or raises JS400, so nothing is stored.';

-- Operators ------------------------------------------------------------------------------
create or replace function jobsys.create_background_job(
  p_payload jsonb, p_items jsonb, p_title text default null, p_concurrency integer default 5,
  p_max_retries integer default 3, p_type text default 'ai_batch')
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_payload jsonb;
  v_title text;
  v_job jobsys.background_jobs;
begin
  perform jobsys.require_operator();
  if p_type is distinct from 'ai_batch' then
    perform jobsys.raise_error('JS400', 'type must be ai_batch', '{"field": "type"}');
  end if;
  if p_concurrency is null or p_concurrency not between 1 and 64 then
    perform jobsys.raise_error('JS400', 'concurrency must be between 1 and 64', '{"field": "concurrency"}');
  end if;
  if p_max_retries is null or p_max_retries not between 0 and 10 then
    perform jobsys.raise_error('JS400', 'max_retries must be between 0 and 10', '{"field": "max_retries"}');
  end if;
  v_payload := jobsys.check_ai_batch(p_payload, p_items);
  v_title := jobsys.check_title(coalesce(nullif(btrim(p_title), ''),
    left(btrim(regexp_replace(v_payload ->> 'template', '[[:space:][:cntrl:]]+', ' ', 'g')), 80)));

  insert into jobsys.background_jobs (type, title, payload, concurrency, total_items, max_retries, created_by)
  values (p_type, v_title, v_payload, p_concurrency, jsonb_array_length(p_items), p_max_retries, auth.uid())
  returning * into v_job;
  insert into jobsys.background_job_items (job_id, idx, input)
  select v_job.id, (e.ord - 1)::integer, e.value
  from jsonb_array_elements(p_items) with ordinality as e(value, ord);

  perform jobsys.background_log(v_job.id, 'info',
    format('created: %s items, model %s, provider %s, concurrency %s', v_job.total_items,
           v_payload ->> 'model', v_payload ->> 'provider', v_job.concurrency),
    jsonb_build_object('code', 'created', 'items', v_job.total_items, 'model', v_payload ->> 'model',
                       'provider', v_payload ->> 'provider', 'concurrency', v_job.concurrency));
  perform jobsys.emit('jobsys:runners', 'background_job_queued', jsonb_build_object('job_id', v_job.id));
  perform jobsys.audit('create', 'background_job', v_job.id::text, jsonb_build_object(
    'title', v_job.title, 'items', v_job.total_items, 'model', v_payload ->> 'model',
    'provider', v_payload ->> 'provider'));
  v_job := jobsys.apply_background_counts(v_job.id, 0, 0, 0, 0, true);
  return jobsys.background_job_json(v_job);
end
$$;
comment on function jobsys.create_background_job(jsonb, jsonb, text, integer, integer, text) is
  'Operators: create an AI batch job and its items; runners are told by push.';

-- Cancel: nothing more is scheduled; every unfinished item is cancelled now; the runner is
-- told (push, and its next heartbeat) and cancels its in-flight calls, whose late results
-- no longer count.
create or replace function jobsys.cancel_background_job(p_job_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.background_jobs;
  v_cancelled integer;
  v_running integer;
begin
  perform jobsys.require_operator();
  v_job := jobsys.lock_background_job(p_job_id);
  if v_job.status not in ('pending', 'running') then
    perform jobsys.raise_error('JS409', format('cannot cancel a background job that is %s', v_job.status),
      jsonb_build_object('job_id', p_job_id, 'status', v_job.status, 'transition', 'cancel'));
  end if;
  with stopped as (
    update jobsys.background_job_items i set status = 'cancelled', finished_at = now(),
      lease_token = null, error = 'job cancelled'
    from (select idx, status as old_status from jobsys.background_job_items
          where job_id = p_job_id and status in ('pending', 'running')) old
    where i.job_id = p_job_id and i.idx = old.idx
    returning old.old_status)
  select count(*), count(*) filter (where old_status = 'running') into v_cancelled, v_running from stopped;
  update jobsys.background_jobs set status = 'cancelled', completed_at = now(), lease_expires_at = null
  where id = p_job_id;
  perform jobsys.background_log(p_job_id, 'info',
    format('cancelled: %s unfinished item(s) cancelled (%s in flight)', v_cancelled, v_running),
    jsonb_build_object('code', 'cancelled', 'cancelled_items', v_cancelled, 'in_flight', v_running));
  perform jobsys.emit('jobsys:runners', 'background_job_cancelled', jsonb_build_object('job_id', p_job_id));
  perform jobsys.audit('cancel', 'background_job', p_job_id::text, jsonb_build_object('cancelled_items', v_cancelled));
  v_job := jobsys.apply_background_counts(p_job_id, -v_running, 0, 0, v_cancelled, true);
  return jobsys.background_job_json(v_job);
end
$$;
comment on function jobsys.cancel_background_job(uuid) is
  'Operators: cancel a background job. Every unfinished item is cancelled now and the runner is told, so late results of its in-flight calls no longer count.';

-- Retry: only the failed items go back to the queue; completed outputs stay.
create or replace function jobsys.retry_background_job(p_job_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.background_jobs;
  v_n integer;
begin
  perform jobsys.require_operator();
  v_job := jobsys.lock_background_job(p_job_id);
  if v_job.status not in ('completed', 'failed') or v_job.failed_items = 0 then
    perform jobsys.raise_error('JS409',
      case when v_job.status in ('completed', 'failed') then 'no failed items to retry'
           else format('cannot retry a background job that is %s', v_job.status) end,
      jsonb_build_object('job_id', p_job_id, 'status', v_job.status, 'transition', 'retry',
                         'failed_items', v_job.failed_items));
  end if;
  with requeued as (
    update jobsys.background_job_items set status = 'pending', error = null, output = null,
      started_at = null, finished_at = null, lease_token = null
    where job_id = p_job_id and status = 'failed'
    returning 1)
  select count(*) into v_n from requeued;
  -- Batch API mode: the ended provider batch is done with; the failed items go in a new one.
  -- started_at stays: the job's first start, kept across retries (the claim keeps it too).
  update jobsys.background_jobs set status = 'pending', retry_count = retry_count + 1,
    error_message = null, completed_at = null, lease_expires_at = null,
    result = result - 'provider_batch'
  where id = p_job_id
  returning * into v_job;
  perform jobsys.background_log(p_job_id, 'info',
    format('retry %s: %s failed item(s) re-queued', v_job.retry_count, v_n),
    jsonb_build_object('code', 'retried', 'retry_count', v_job.retry_count, 'requeued', v_n));
  perform jobsys.emit('jobsys:runners', 'background_job_queued', jsonb_build_object('job_id', p_job_id));
  perform jobsys.audit('retry', 'background_job', p_job_id::text, jsonb_build_object('requeued', v_n));
  v_job := jobsys.apply_background_counts(p_job_id, 0, 0, -v_n, 0, true);
  return jobsys.background_job_json(v_job);
end
$$;
comment on function jobsys.retry_background_job(uuid) is
  'Operators: retry a finished job. Only the failed items go back to the queue; completed outputs stay.';

-- Runners --------------------------------------------------------------------------------
-- Claim one job with a lease: a running job whose lease expired (its runner is gone: taken
-- over, its unfinished items back to pending, completed ones untouched) before the oldest
-- pending one. SKIP LOCKED: two runners never wait on each other. Null when there is none.
create or replace function jobsys.claim_runnable_background_job(p_runner_id text, p_providers text[])
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.background_jobs;
  v_requeued integer := 0;
  v_previous text;
begin
  perform jobsys.require_runner();
  if p_runner_id is null or length(btrim(p_runner_id)) not between 1 and 200 or p_runner_id ~ '[[:cntrl:]]' then
    perform jobsys.raise_error('JS400', 'runner id must be 1-200 printable characters', '{"field": "runner_id"}');
  end if;
  if exists (select 1 from unnest(p_providers) p
             where p is null or p not in ('gemini', 'offline', 'openai_compatible')) then
    perform jobsys.raise_error('JS400', 'providers must be gemini, offline or openai_compatible',
      '{"field": "providers"}');
  end if;
  -- Register (or refresh) what this runner can run: the wait reason of a job that no runner
  -- seen lately can run reads it. Runners gone for an hour are forgotten.
  if p_providers is not null then
    insert into jobsys.background_runners (runner_id, providers, seen_at)
    values (p_runner_id, p_providers, now())
    on conflict (runner_id) do update set providers = excluded.providers, seen_at = excluded.seen_at;
    delete from jobsys.background_runners where seen_at < now() - interval '1 hour';
  end if;

  select * into v_job from jobsys.background_jobs
  where status = 'running' and lease_expires_at < now()
    and jobsys.background_runnable(payload, p_providers)
  order by lease_expires_at limit 1
  for no key update skip locked;
  if found then
    v_previous := v_job.lease_owner;
    with back as (
      update jobsys.background_job_items set status = 'pending', lease_token = null, started_at = null
      where job_id = v_job.id and status = 'running'
      returning 1)
    select count(*) into v_requeued from back;
    perform jobsys.background_log(v_job.id, 'warning',
      format('taken over by runner %s: the lease of runner %s expired; %s unfinished item(s) re-queued, '
             || '%s completed item(s) kept', p_runner_id, coalesce(v_previous, '?'), v_requeued,
             v_job.completed_items),
      jsonb_build_object('code', 'taken_over', 'runner', p_runner_id, 'previous_runner', coalesce(v_previous, '?'),
                         'requeued', v_requeued, 'kept', v_job.completed_items));
  else
    select * into v_job from jobsys.background_jobs
    where status = 'pending' and jobsys.background_runnable(payload, p_providers)
    order by created_at, id limit 1
    for no key update skip locked;
    if not found then
      return null;
    end if;
    perform jobsys.background_log(v_job.id, 'info',
      format('started by runner %s', p_runner_id), jsonb_build_object('code', 'started', 'runner', p_runner_id));
  end if;

  update jobsys.background_jobs set status = 'running', started_at = coalesce(started_at, now()),
    lease_owner = p_runner_id, lease_token = gen_random_uuid(),
    lease_expires_at = now() + jobsys.batch_lease_interval()
  where id = v_job.id;
  -- Finishes at once if nothing is left (e.g. everything was reported before the takeover).
  v_job := jobsys.apply_background_counts(v_job.id, -v_requeued, 0, 0, 0, true);
  return jobsys.background_job_json(v_job) || jsonb_build_object(
    'lease_token', v_job.lease_token, 'lease_sec', jobsys.setting('batch_lease_sec'));
end
$$;
comment on function jobsys.claim_runnable_background_job(text, text[]) is
  'Runners: claim one job this runner can run (p_providers: gemini, offline, openai_compatible; null: any) with a lease, a running job whose lease expired (taken over) before the oldest pending one, and register the runner''s providers for wait reasons. SKIP LOCKED, so two runners never wait on each other; null when there is none.';

-- Claim without saying what the runner can run (runners before issue 23): any job.
create or replace function jobsys.claim_background_job(p_runner_id text) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  return jobsys.claim_runnable_background_job(p_runner_id, null);
end
$$;
comment on function jobsys.claim_background_job(text) is
  'Runners: claim one job of any provider with a lease (runners that do not say what they can run). claim_runnable_background_job claims only what the runner can run.';

-- Claim up to p_limit pending items of a held job, in index order, and extend the lease.
create or replace function jobsys.claim_background_items(p_job_id uuid, p_lease_token uuid, p_limit integer)
  returns table (idx integer, input jsonb, attempts integer)
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.background_jobs;
  v_n integer;
begin
  perform jobsys.require_runner();
  if p_limit is null or p_limit not between 1 and 1000 then
    perform jobsys.raise_error('JS400', 'limit must be between 1 and 1000', '{"field": "limit"}');
  end if;
  v_job := jobsys.held_background_job(p_job_id, p_lease_token);
  return query
  with picked as (
    select i.idx from jobsys.background_job_items i
    where i.job_id = p_job_id and i.status = 'pending'
    order by i.idx limit p_limit
    for no key update skip locked
  ), claimed as (
    update jobsys.background_job_items i set status = 'running', lease_token = p_lease_token,
      runner_id = v_job.lease_owner, started_at = now()
    from picked p where i.job_id = p_job_id and i.idx = p.idx
    returning i.idx, i.input, i.attempts)
  select c.idx, c.input, c.attempts from claimed c order by c.idx;
  get diagnostics v_n = row_count;  -- rows RETURN QUERY added
  update jobsys.background_jobs set lease_expires_at = now() + jobsys.batch_lease_interval()
  where id = p_job_id;
  if v_n > 0 then
    perform jobsys.apply_background_counts(p_job_id, v_n, 0, 0, 0);
  end if;
end
$$;
comment on function jobsys.claim_background_items(uuid, uuid, integer) is
  'Runners: claim up to p_limit pending items of a held job, in index order, and extend the lease.';

-- Record item results with compare-and-set: an item counts only while it is running under
-- this lease token, so a result from a runner that lost the job (taken over, cancelled)
-- raises JS410 and changes nothing, and a repeated result is returned as stale.
-- p_results: [{"idx", "status": completed|failed, "output"?, "error"?, "attempts"?,
--              "tokens_in"?, "tokens_out"?, "tokens_thinking"?, "retry_tokens_in"?,
--              "retry_tokens_out"?, "retry_tokens_thinking"?, "latency_ms"?, "provider"?}]
-- tokens_* are the item's totals over this run's attempts; retry_tokens_* the part of them
-- spent on attempts whose output was not kept. Both add to the job's usage.
-- p_logs: [{"level": info|warning|error, "message", "metadata"?}] written with them.
-- provider is the one the job asked for (gemini or offline as asked, either for auto); any
-- other refuses the whole report (JS400). Left out, it is recorded as the job's own choice
-- (unknown for auto), so an output is never labelled with a provider the job did not ask for.
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
  v_usage jsonb;
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
      tokens_out integer, tokens_thinking integer, retry_tokens_in integer, retry_tokens_out integer,
      retry_tokens_thinking integer, latency_ms integer, provider text)
  ), done as (
    update jobsys.background_job_items i set
      status = r.status, output = left(r.output, 1000000), error = left(r.error, 2000),
      attempts = i.attempts + greatest(coalesce(r.attempts, 1), 0),
      tokens_in = r.tokens_in, tokens_out = r.tokens_out, tokens_thinking = r.tokens_thinking,
      latency_ms = r.latency_ms,
      provider = left(coalesce(r.provider, v_named), 50), finished_at = now(), lease_token = null
    from r
    where i.job_id = p_job_id and i.idx = r.idx and i.status = 'running' and i.lease_token = p_lease_token
    returning i.idx, i.status, i.error, i.attempts, i.provider, r.tokens_in, r.tokens_out, r.tokens_thinking,
      r.retry_tokens_in, r.retry_tokens_out, r.retry_tokens_thinking
  ), logged as (
    -- The error once, in the message: the dashboard reads it from there (after "attempt(s): ").
    insert into jobsys.background_job_logs (job_id, level, message, metadata)
    select p_job_id, 'error', left(format('item %s failed after %s attempt(s): %s', d.idx, d.attempts, d.error), 4000),
           jsonb_build_object('code', 'item_failed', 'item', d.idx, 'attempts', d.attempts)
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
         coalesce(array_agg(d.idx), '{}'),
         jsonb_build_object('input', sum(coalesce(d.tokens_in, 0)), 'output', sum(coalesce(d.tokens_out, 0)),
           'thinking', sum(coalesce(d.tokens_thinking, 0)), 'retry_input', sum(coalesce(d.retry_tokens_in, 0)),
           'retry_output', sum(coalesce(d.retry_tokens_out, 0)),
           'retry_thinking', sum(coalesce(d.retry_tokens_thinking, 0)))
    into v_completed, v_failed, v_applied, v_usage
  from done d, (select count(*) from logged) as force_logged, (select count(*) from providers) as force_providers;

  insert into jobsys.background_job_logs (job_id, level, message, metadata)
  select p_job_id, l ->> 'level', left(l ->> 'message', 4000),
         case when jsonb_typeof(l -> 'metadata') = 'object' then l -> 'metadata' else '{}' end
  from jsonb_array_elements(coalesce(p_logs, '[]')) l;

  update jobsys.background_jobs set lease_expires_at = now() + jobsys.batch_lease_interval(),
    usage = case when v_completed + v_failed > 0 then jobsys.add_token_usage(usage, v_usage) else usage end
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

-- Heartbeat of a runner: extends the leases it still holds and sends the trailing
-- background_job_progress of each. Returns the tokens it no longer holds (cancelled, taken
-- over): the polling path for cancellation when push is down. SKIP LOCKED: a job busy in
-- a report right now is renewed by that report.
create or replace function jobsys.renew_background_leases(p_runner_id text, p_lease_tokens uuid[]) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.background_jobs;
begin
  perform jobsys.require_runner();
  -- A busy runner claims nothing new: its heartbeat keeps it registered as up.
  update jobsys.background_runners set seen_at = now() where runner_id = p_runner_id;
  for v_job in
    select * from jobsys.background_jobs
    where lease_token = any(coalesce(p_lease_tokens, '{}')) and status = 'running'
    order by id
    for no key update skip locked
  loop
    update jobsys.background_jobs set lease_expires_at = now() + jobsys.batch_lease_interval(),
      progress_notified_at = case when updated_at > progress_notified_at then updated_at else progress_notified_at end
    where id = v_job.id;
    if v_job.updated_at > v_job.progress_notified_at then
      perform jobsys.emit('jobsys:dashboard', 'background_job_progress', jobsys.background_progress_json(v_job));
    end if;
  end loop;
  return jsonb_build_object('runner_id', p_runner_id, 'lost', coalesce((
    select jsonb_agg(t order by t) from unnest(coalesce(p_lease_tokens, '{}')) t
    where not exists (select 1 from jobsys.background_jobs j where j.lease_token = t and j.status = 'running')),
    '[]'));
end
$$;
comment on function jobsys.renew_background_leases(text, uuid[]) is
  'Runners: heartbeat. Extends the leases still held, sends their trailing progress events and returns the tokens no longer held: the polling path for cancellation when push is down.';

-- Finish a held job. Without p_error: only when nothing is left (normally the last report
-- has finished it already, and this returns it unchanged). With p_error: a job-level
-- failure (no API key, unknown model, daily quota): every unfinished item fails with it, so
-- a retry after the fix runs exactly those.
create or replace function jobsys.finish_background_job(p_job_id uuid, p_lease_token uuid, p_error text default null)
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.background_jobs;
  v_failed integer;
  v_running integer;
begin
  perform jobsys.require_runner();
  v_job := jobsys.lock_background_job(p_job_id);
  if v_job.lease_token is not distinct from p_lease_token and v_job.status in ('completed', 'failed')
     and p_error is null then
    return jobsys.background_job_json(v_job);
  end if;
  v_job := jobsys.held_background_job(p_job_id, p_lease_token);
  if p_error is null then
    if v_job.running_items + v_job.completed_items + v_job.failed_items + v_job.cancelled_items < v_job.total_items
       or v_job.running_items > 0 then
      perform jobsys.raise_error('JS409', 'items are still pending or running',
        jsonb_build_object('job_id', p_job_id, 'transition', 'finish'));
    end if;
    return jobsys.background_job_json(jobsys.apply_background_counts(p_job_id, 0, 0, 0, 0, true));
  end if;
  with failed as (
    update jobsys.background_job_items i set status = 'failed', error = left(p_error, 2000),
      finished_at = now(), lease_token = null
    from (select idx, status as old_status from jobsys.background_job_items
          where job_id = p_job_id and status in ('pending', 'running')) old
    where i.job_id = p_job_id and i.idx = old.idx
    returning old.old_status)
  select count(*), count(*) filter (where old_status = 'running') into v_failed, v_running from failed;
  update jobsys.background_jobs set status = 'failed', completed_at = now(), lease_expires_at = null,
    error_message = left(p_error, 2000)
  where id = p_job_id;
  perform jobsys.background_log(p_job_id, 'error',
    format('failed: %s; %s unfinished item(s) marked failed', left(p_error, 2000), v_failed),
    jsonb_build_object('code', 'job_failed', 'error', left(p_error, 2000), 'failed_items', v_failed));
  v_job := jobsys.apply_background_counts(p_job_id, -v_running, 0, v_failed, 0, true);
  return jobsys.background_job_json(v_job);
end
$$;
comment on function jobsys.finish_background_job(uuid, uuid, text) is
  'Runners: finish a held job. With p_error, a job-level failure (no API key, unknown model, quota) fails every unfinished item, so a retry after the fix runs exactly those.';

-- A runner shutting down hands the job back: unfinished items to pending, the job to
-- pending for the next runner (told by push).
create or replace function jobsys.release_background_job(p_job_id uuid, p_lease_token uuid, p_reason text default null)
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.background_jobs;
  v_n integer;
begin
  perform jobsys.require_runner();
  v_job := jobsys.held_background_job(p_job_id, p_lease_token);
  with back as (
    update jobsys.background_job_items set status = 'pending', lease_token = null, started_at = null
    where job_id = p_job_id and status = 'running'
    returning 1)
  select count(*) into v_n from back;
  update jobsys.background_jobs set status = 'pending', lease_token = null, lease_expires_at = null
  where id = p_job_id;
  perform jobsys.background_log(p_job_id, 'info',
    format('released by runner %s (%s); %s unfinished item(s) re-queued', v_job.lease_owner,
           left(coalesce(p_reason, 'shutting down'), 500), v_n),
    jsonb_build_object('code', 'released', 'runner', v_job.lease_owner,
                       'reason', left(coalesce(p_reason, 'shutting down'), 500), 'requeued', v_n));
  perform jobsys.emit('jobsys:runners', 'background_job_queued', jsonb_build_object('job_id', p_job_id));
  v_job := jobsys.apply_background_counts(p_job_id, -v_n, 0, 0, 0, true);
  return jobsys.background_job_json(v_job);
end
$$;
comment on function jobsys.release_background_job(uuid, uuid, text) is
  'Runners: a runner shutting down hands the job back; its unfinished items and the job go back to pending for the next runner.';

-- Reads for the dashboard and API -------------------------------------------------------
create or replace function jobsys.list_background_jobs(p_status text default null, p_limit integer default 100,
  p_offset integer default 0, p_q text default null, p_sort text default '-created', p_statuses text[] default null)
  returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_statuses text[] := coalesce(p_statuses, case when p_status is not null then array[p_status] end);
  v_key text := ltrim(coalesce(p_sort, '-created'), '-');
  v_desc boolean := left(coalesce(p_sort, '-created'), 1) = '-';
begin
  perform jobsys.require_viewer();
  if p_status is not null and p_statuses is not null then
    perform jobsys.raise_error('JS400', 'give status or statuses, not both', '{"field": "status"}');
  end if;
  if cardinality(v_statuses) not between 1 and 5
     or exists (select from unnest(v_statuses) s
                where s is null or s not in ('pending', 'running', 'completed', 'failed', 'cancelled')) then
    perform jobsys.raise_error('JS400', 'status must be pending, running, completed, failed or cancelled',
      '{"field": "status"}');
  end if;
  if p_limit is null or p_limit not between 1 and 1000 or p_offset is null or p_offset < 0 then
    perform jobsys.raise_error('JS400', 'limit must be 1-1000 and offset at least 0', '{"field": "limit"}');
  end if;
  if length(p_q) > 200 then
    perform jobsys.raise_error('JS400', 'q must be at most 200 characters', '{"field": "q"}');
  end if;
  if coalesce(p_sort, '-created') !~ '^-?(status|title|progress|created|started|ended|duration)$' then
    perform jobsys.raise_error('JS400',
      'sort must be status, title, progress, created, started, ended or duration, with - for descending',
      '{"field": "sort"}');
  end if;
  return (
    with matching as (
      select j as job,
             -- The column's value as a number (title: as text); rows without one (not started,
             -- not ended) come last either way. created is the tie-breaker below, so the
             -- default order stays the index's.
             case v_key
               when 'status' then array_position(array['pending', 'running', 'completed', 'failed', 'cancelled'],
                                                 j.status)::double precision
               when 'progress' then case when j.total_items > 0 then j.completed_items::double precision / j.total_items
                                         else 0 end
               when 'started' then extract(epoch from j.started_at)
               when 'ended' then extract(epoch from j.completed_at)
               when 'duration' then greatest(extract(epoch from coalesce(j.completed_at, now()) - j.started_at), 0)
             end as num,
             case when v_key = 'title' then lower(j.title) end as txt
      from jobsys.background_jobs j
      where (v_statuses is null or j.status = any(v_statuses))
        and (p_q is null or strpos(lower(j.title), lower(p_q)) > 0)
    ), page as (
      select * from matching m
      order by case when not v_desc then m.num end asc nulls last, case when v_desc then m.num end desc nulls last,
               case when not v_desc then m.txt end asc nulls last, case when v_desc then m.txt end desc nulls last,
               case when v_key = 'created' and not v_desc then (m.job).created_at end asc,
               (m.job).created_at desc, (m.job).id
      limit p_limit offset p_offset
    )
    select jsonb_build_object(
      'jobs', coalesce((select jsonb_agg(jobsys.background_job_json(p.job)
                                         || jsonb_build_object('wait_reason', jobsys.background_wait_reason(p.job))
                                         order by case when not v_desc then p.num end asc nulls last,
                                                  case when v_desc then p.num end desc nulls last,
                                                  case when not v_desc then p.txt end asc nulls last,
                                                  case when v_desc then p.txt end desc nulls last,
                                                  case when v_key = 'created' and not v_desc then (p.job).created_at end asc,
                                                  (p.job).created_at desc, (p.job).id)
                        from page p), '[]'),
      'matching', (select count(*) from matching),
      'summary', (select jsonb_build_object(
                    'total', count(*),
                    'pending', count(*) filter (where status = 'pending'),
                    'running', count(*) filter (where status = 'running'),
                    'completed', count(*) filter (where status = 'completed'),
                    'failed', count(*) filter (where status = 'failed'),
                    'cancelled', count(*) filter (where status = 'cancelled'))
                  from jobsys.background_jobs)));
end
$$;
comment on function jobsys.list_background_jobs(text, integer, integer, text, text, text[]) is
  'Operators: a page of background jobs with counts per status. p_status one status or p_statuses several (not both); p_q searches the title for the text as typed (case-insensitive; % and _ are not wildcards; at most 200 characters); p_sort a column (status, title, progress, created, started, ended, duration), - first for descending, default -created (newest first); rows without a value come last. matching counts the jobs the filters pass.';

create or replace function jobsys.get_background_job(p_job_id uuid) returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.background_jobs;
begin
  perform jobsys.require_viewer();
  select * into v_job from jobsys.background_jobs where id = p_job_id;
  if not found then
    perform jobsys.raise_error('JS404', 'background job not found', jsonb_build_object('job_id', p_job_id));
  end if;
  return jobsys.background_job_json(v_job)
    || jsonb_build_object('wait_reason', jobsys.background_wait_reason(v_job));
end
$$;
comment on function jobsys.get_background_job(uuid) is
  'Operators: one background job.';

-- Newest first, paged by id: pass the previous page's next_before_id.
create or replace function jobsys.list_background_job_logs(p_job_id uuid, p_limit integer default 100,
  p_before_id bigint default null)
  returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_logs jsonb;
begin
  perform jobsys.require_viewer();
  if p_limit is null or p_limit not between 1 and 1000 then
    perform jobsys.raise_error('JS400', 'limit must be between 1 and 1000', '{"field": "limit"}');
  end if;
  if not exists (select 1 from jobsys.background_jobs where id = p_job_id) then
    perform jobsys.raise_error('JS404', 'background job not found', jsonb_build_object('job_id', p_job_id));
  end if;
  select coalesce(jsonb_agg(jsonb_build_object('id', l.id, 'level', l.level, 'message', l.message,
                                               'metadata', l.metadata, 'created_at', l.created_at)
                            order by l.id desc), '[]')
    into v_logs
  from (select * from jobsys.background_job_logs l
        where l.job_id = p_job_id and (p_before_id is null or l.id < p_before_id)
        order by l.id desc limit p_limit) l;
  return jsonb_build_object('logs', v_logs,
    'next_before_id', case when jsonb_array_length(v_logs) = p_limit
                           then v_logs -> (p_limit - 1) -> 'id' end);
end
$$;
comment on function jobsys.list_background_job_logs(uuid, integer, bigint) is
  'Operators: the log of a job, newest first, paged by id (pass the previous page next_before_id).';

create or replace function jobsys.list_background_job_items(p_job_id uuid, p_status text default null,
  p_limit integer default 100, p_offset integer default 0)
  returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform jobsys.require_viewer();
  if p_status is not null and p_status not in ('pending', 'running', 'completed', 'failed', 'cancelled') then
    perform jobsys.raise_error('JS400', 'status must be pending, running, completed, failed or cancelled',
      '{"field": "status"}');
  end if;
  if p_limit is null or p_limit not between 1 and 1000 or p_offset is null or p_offset < 0 then
    perform jobsys.raise_error('JS400', 'limit must be 1-1000 and offset at least 0', '{"field": "limit"}');
  end if;
  if not exists (select 1 from jobsys.background_jobs where id = p_job_id) then
    perform jobsys.raise_error('JS404', 'background job not found', jsonb_build_object('job_id', p_job_id));
  end if;
  return jsonb_build_object(
    'items', coalesce((select jsonb_agg(jsonb_build_object(
        'idx', i.idx, 'input', i.input, 'status', i.status, 'output', i.output, 'error', i.error,
        'attempts', i.attempts, 'tokens_in', i.tokens_in, 'tokens_out', i.tokens_out,
        'tokens_thinking', i.tokens_thinking,
        'latency_ms', i.latency_ms, 'provider', i.provider, 'runner_id', i.runner_id,
        'started_at', i.started_at, 'finished_at', i.finished_at) order by i.idx)
      from (select * from jobsys.background_job_items i
            where i.job_id = p_job_id and (p_status is null or i.status = p_status)
            order by i.idx limit p_limit offset p_offset) i), '[]'),
    'total', (select count(*) from jobsys.background_job_items i
              where i.job_id = p_job_id and (p_status is null or i.status = p_status)));
end
$$;
comment on function jobsys.list_background_job_items(uuid, text, integer, integer) is
  'Operators: a page of the items of a job in index order, optionally of one status.';

-- Grant one call under the shared limit p_key if the window allows it: at most p_rpm calls
-- and p_tpm prompt tokens started in any p_window_sec (null: no such limit), and no shared
-- cooldown running. Else the seconds to wait before asking again. One row lock per key
-- serialises runners, so two of them never both take the last slot. p_settle corrects the
-- token estimates of earlier grants ([[grant_id, tokens], ...]) in the same call.
create or replace function jobsys.acquire_batch_rate(p_key text, p_rpm integer, p_tpm integer, p_tokens integer,
  p_window_sec double precision default 60, p_settle jsonb default '[]')
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_limit jobsys.batch_rate_limits;
  v_now timestamptz;
  v_window interval;
  v_count integer;
  v_sum bigint;
  v_wait double precision := 0;
  v_at timestamptz;
  v_id bigint;
begin
  perform jobsys.require_runner();
  if p_key is null or length(p_key) not between 1 and 200 or p_window_sec is null
     or p_window_sec not between 0.01 and 86400 or coalesce(p_rpm, 1) < 1 or coalesce(p_tpm, 1) < 1
     or coalesce(p_tokens, 0) < 0 or jsonb_typeof(coalesce(p_settle, '[]')) <> 'array' then
    perform jobsys.raise_error('JS400',
      'key must be 1-200 characters, rpm and tpm at least 1, tokens at least 0, window 0.01-86400 s',
      '{"field": "key"}');
  end if;
  -- The key's row lock first, then its grants: every caller takes them in this order, so a
  -- settle never waits on a grant another runner is deleting while it holds the key.
  insert into jobsys.batch_rate_limits (key) values (p_key) on conflict (key) do nothing;
  select * into v_limit from jobsys.batch_rate_limits where key = p_key for update;
  update jobsys.batch_rate_grants g set tokens = greatest(0, (s ->> 1)::integer)
  from jsonb_array_elements(coalesce(p_settle, '[]')) s
  where g.id = (s ->> 0)::bigint and g.key = p_key;
  v_now := clock_timestamp();
  v_window := make_interval(secs => p_window_sec);
  delete from jobsys.batch_rate_grants where key = p_key and at <= v_now - v_window;
  if v_limit.cooldown_until > v_now then  -- '-infinity' until a first cooldown
    v_wait := extract(epoch from v_limit.cooldown_until - v_now);
  end if;
  select count(*), coalesce(sum(tokens), 0) into v_count, v_sum from jobsys.batch_rate_grants where key = p_key;
  if p_rpm is not null and v_count >= p_rpm then
    -- the call that must leave the window first: the (count - rpm + 1)-th oldest
    select at into v_at from jobsys.batch_rate_grants where key = p_key order by at, id offset v_count - p_rpm limit 1;
    v_wait := greatest(v_wait, extract(epoch from v_at + v_window - v_now));
  end if;
  if p_tpm is not null and v_count > 0 and v_sum + coalesce(p_tokens, 0) > p_tpm then
    -- wait for the oldest grants to leave until this one fits (alone, if it is larger than the budget)
    select c.at into v_at from (
      select g.at, sum(g.tokens) over (order by g.at, g.id) as freed
      from jobsys.batch_rate_grants g where g.key = p_key) c
    where c.freed >= v_sum + coalesce(p_tokens, 0) - p_tpm
    order by c.at limit 1;
    v_wait := greatest(v_wait, extract(epoch from coalesce(v_at, v_now) + v_window - v_now));
  end if;
  if v_wait > 0 then
    return jsonb_build_object('granted', false, 'wait_s', v_wait);
  end if;
  insert into jobsys.batch_rate_grants (key, at, tokens) values (p_key, v_now, coalesce(p_tokens, 0))
  returning id into v_id;
  -- Each limit as last given: a runner with only --rpm must not blank another runner's --tpm
  -- (a limit dropped from every runner stays shown until one gives it anew).
  update jobsys.batch_rate_limits set updated_at = v_now, rpm = coalesce(p_rpm, rpm), tpm = coalesce(p_tpm, tpm)
  where key = p_key;
  return jsonb_build_object('granted', true, 'grant_id', v_id, 'at', extract(epoch from v_now));
end
$$;
comment on function jobsys.acquire_batch_rate(text, integer, integer, integer, double precision, jsonb) is
  'Runners: grant one call under the shared rate limit of a provider:model key (requests and prompt tokens per sliding window, counted over every runner, and the shared 429 cooldown), or say how long to wait; a grant records the last rpm and tpm given (each kept while a runner gives none). Serialised per key by a row lock.';

-- A 429 (or 503) seen by one runner holds every runner's calls of this key: the cooldown
-- only grows. started: no cooldown was running (the caller logs it once).
create or replace function jobsys.cool_down_batch_rate(p_key text, p_seconds double precision) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_before timestamptz;
  v_until timestamptz;
begin
  perform jobsys.require_runner();
  if p_key is null or length(p_key) not between 1 and 200 or p_seconds is null or p_seconds not between 0 and 86400 then
    perform jobsys.raise_error('JS400', 'key must be 1-200 characters and seconds 0-86400', '{"field": "seconds"}');
  end if;
  insert into jobsys.batch_rate_limits (key) values (p_key) on conflict (key) do nothing;
  select cooldown_until into v_before from jobsys.batch_rate_limits where key = p_key for update;
  update jobsys.batch_rate_limits
  set cooldown_until = greatest(cooldown_until, clock_timestamp() + make_interval(secs => p_seconds)),
      updated_at = clock_timestamp()
  where key = p_key
  returning cooldown_until into v_until;
  return jsonb_build_object('started', v_before <= clock_timestamp(), 'until', v_until);
end
$$;
comment on function jobsys.cool_down_batch_rate(text, double precision) is
  'Runners: hold every runner''s calls under this shared rate limit for p_seconds (a 429''s retry delay); never shortens a cooldown.';

-- The shared rate limits as the runners last asked for them (--rpm / --tpm), per provider and
-- model, with a running 429 cooldown: what the new-batch dialog shows. A limit no runner has
-- used for a day is left out (no runner with it may still be up).
create or replace function jobsys.list_batch_rate_limits() returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform jobsys.require_viewer();
  return jsonb_build_object('limits', coalesce((
    select jsonb_agg(jsonb_build_object('key', l.key, 'rpm', l.rpm, 'tpm', l.tpm,
             'cooldown_until', case when l.cooldown_until > now() then l.cooldown_until end,
             'updated_at', l.updated_at) order by l.key)
    from jobsys.batch_rate_limits l
    where (l.rpm is not null or l.tpm is not null) and l.updated_at > now() - interval '1 day'), '[]'));
end
$$;
comment on function jobsys.list_batch_rate_limits() is
  'Staff: the runners'' shared rate limits per provider and model (requests and prompt tokens per minute as last asked, a running cooldown), used in the last day.';

-- Batch API mode (issue 23): the provider batch a held job submitted (name, state, the items
-- in it), kept in result.provider_batch so that a runner taking the job over polls the same
-- batch instead of submitting again. Each state change is logged.
create or replace function jobsys.set_background_provider_batch(p_job_id uuid, p_lease_token uuid, p_batch jsonb)
  returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.background_jobs;
  v_before jsonb;
begin
  perform jobsys.require_runner();
  if jsonb_typeof(p_batch) is distinct from 'object' or jsonb_typeof(p_batch -> 'name') is distinct from 'string'
     or jsonb_typeof(p_batch -> 'state') is distinct from 'string' or length(p_batch::text) > 200000 then
    perform jobsys.raise_error('JS400', 'batch must be an object with a name and a state', '{"field": "batch"}');
  end if;
  v_job := jobsys.held_background_job(p_job_id, p_lease_token);
  v_before := v_job.result -> 'provider_batch';
  update jobsys.background_jobs set result = jsonb_set(result, '{provider_batch}', p_batch),
    lease_expires_at = now() + jobsys.batch_lease_interval()
  where id = p_job_id;
  if v_before is null or v_before ->> 'name' is distinct from p_batch ->> 'name'
     or v_before ->> 'state' is distinct from p_batch ->> 'state' then
    perform jobsys.background_log(p_job_id, 'info',
      format('provider batch %s: %s', left(p_batch ->> 'name', 200), left(p_batch ->> 'state', 50)),
      jsonb_build_object('code', 'provider_batch', 'provider_batch', left(p_batch ->> 'name', 200),
                         'state', left(p_batch ->> 'state', 50)));
  end if;
  return jsonb_build_object('job_id', p_job_id, 'provider_batch', p_batch);
end
$$;
comment on function jobsys.set_background_provider_batch(uuid, uuid, jsonb) is
  'Runners (Batch API mode): record the provider batch a held job submitted and its state, so a runner taking the job over polls it instead of submitting again; state changes are logged.';
