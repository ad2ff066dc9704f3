-- jobsys: log lines carry a code and their parameters (issue 20). Each line the SQL writes to
-- background_job_logs has metadata {"code": ..., parameters} besides its English message, so
-- the dashboard shows it in the reader's language (Korean or English) and falls back to the
-- message for lines written before, or codes it does not know. A retried job keeps its
-- first start time (started_at), as a device job does. Function bodies as in
-- supabase/schemas/40_background_jobs.sql.

comment on function jobsys.background_log(uuid, text, text, jsonb) is
  'Appends one line to the log of a background job (message cut at 4000 characters). p_metadata carries the line''s code and parameters ({"code": "cancelled", "cancelled_items": 3, ...}), which the dashboard renders in the reader''s language; the English message is the fallback.';

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
           jsonb_build_object('code', 'item_failed', 'item', d.idx, 'attempts', d.attempts, 'error', left(d.error, 2000))
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
