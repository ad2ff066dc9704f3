-- jobsys: issue 23, AI batches second version.
-- * Runners claim only what they can run: claim_runnable_background_job(runner, providers)
--   registers the runner's providers (background_runners, refreshed by its heartbeats); a
--   pending job no runner up can run says why (background_wait_reason, in get / list).
-- * Tokens: items keep thinking tokens too; jobs sum every attempt's tokens in usage, retries
--   and failed attempts apart (report_background_items).
-- * Payload: response_schema (structured output) and the openai_compatible provider.

alter table jobsys.background_jobs add column usage jsonb not null default '{}';
comment on column jobsys.background_jobs.usage is
  'Tokens over every attempt of every run: input, output, thinking, and retry_input / retry_output / retry_thinking, the part spent on attempts whose output was not kept (retries, invalid structured outputs, failed items). Cost is priced from it by jobsys/batch/pricing.py.';
alter table jobsys.background_job_items add column tokens_thinking integer;
comment on column jobsys.background_job_items.tokens_thinking is
  'Thinking tokens (usage_metadata.thoughts_token_count); with tokens_in and tokens_out, summed over the attempts of the item''s last run.';

-- Runners and what they can run, registered by claim_runnable_background_job and kept fresh
-- by their heartbeats: a job no runner up can run shows why it waits.
create table jobsys.background_runners (
  runner_id text primary key check (length(runner_id) between 1 and 200),
  providers text[] not null default '{}',
  seen_at timestamptz not null default now()
);
comment on table jobsys.background_runners is
  'Batch runners and the providers each can run (gemini, offline, openai_compatible), refreshed by every claim and heartbeat; read for the wait reason of pending jobs. Rows older than an hour are dropped.';

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
                             'response_schema')) then
    perform jobsys.raise_error('JS400',
      'payload accepts template, model, system_instruction, temperature, max_output_tokens, provider and response_schema only',
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
    'response_schema', p_payload -> 'response_schema')
    - case when jsonb_typeof(p_payload -> 'temperature') is distinct from 'number' then 'temperature' else '' end
    - case when jsonb_typeof(p_payload -> 'max_output_tokens') is distinct from 'number' then 'max_output_tokens' else '' end
    - case when jsonb_typeof(p_payload -> 'response_schema') is distinct from 'object' then 'response_schema' else '' end;
end
$$;
comment on function jobsys.check_ai_batch(jsonb, jsonb) is
  'Checks an ai_batch payload and its items; returns the normalised payload or raises JS400, so nothing is stored.';

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
      jsonb_build_object('runner', p_runner_id, 'previous_runner', v_previous, 'requeued', v_requeued));
  else
    select * into v_job from jobsys.background_jobs
    where status = 'pending' and jobsys.background_runnable(payload, p_providers)
    order by created_at, id limit 1
    for no key update skip locked;
    if not found then
      return null;
    end if;
    perform jobsys.background_log(v_job.id, 'info',
      format('started by runner %s', p_runner_id), jsonb_build_object('runner', p_runner_id));
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

create or replace function jobsys.list_background_jobs(p_status text default null, p_limit integer default 100,
  p_offset integer default 0)
  returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform jobsys.require_operator();
  if p_status is not null and p_status not in ('pending', 'running', 'completed', 'failed', 'cancelled') then
    perform jobsys.raise_error('JS400', 'status must be pending, running, completed, failed or cancelled',
      '{"field": "status"}');
  end if;
  if p_limit is null or p_limit not between 1 and 1000 or p_offset is null or p_offset < 0 then
    perform jobsys.raise_error('JS400', 'limit must be 1-1000 and offset at least 0', '{"field": "limit"}');
  end if;
  return jsonb_build_object(
    'jobs', coalesce((select jsonb_agg(jobsys.background_job_json(j)
                                        || jsonb_build_object('wait_reason', jobsys.background_wait_reason(j))
                                      order by j.created_at desc, j.id)
                      from (select * from jobsys.background_jobs j
                            where p_status is null or j.status = p_status
                            order by j.created_at desc, j.id
                            limit p_limit offset p_offset) j), '[]'),
    'summary', (select jsonb_build_object(
                  'total', count(*),
                  'pending', count(*) filter (where status = 'pending'),
                  'running', count(*) filter (where status = 'running'),
                  'completed', count(*) filter (where status = 'completed'),
                  'failed', count(*) filter (where status = 'failed'),
                  'cancelled', count(*) filter (where status = 'cancelled'))
                from jobsys.background_jobs));
end
$$;
comment on function jobsys.list_background_jobs(text, integer, integer) is
  'Operators: a page of background jobs, newest first, with counts per status.';

create or replace function jobsys.get_background_job(p_job_id uuid) returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.background_jobs;
begin
  perform jobsys.require_operator();
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

create or replace function jobsys.list_background_job_items(p_job_id uuid, p_status text default null,
  p_limit integer default 100, p_offset integer default 0)
  returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform jobsys.require_operator();
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

-- Access (as in 50_access.sql).
alter table jobsys.background_runners enable row level security;
grant select on jobsys.background_runners to authenticated;
grant all on jobsys.background_runners to service_role;
revoke execute on function jobsys.add_token_usage(jsonb, jsonb), jobsys.background_runnable(jsonb, text[]),
  jobsys.background_wait_reason(jobsys.background_jobs),
  jobsys.claim_runnable_background_job(text, text[]) from public;
grant execute on function jobsys.claim_runnable_background_job(text, text[]) to authenticated, service_role;
