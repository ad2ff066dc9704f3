-- jobsys: batch review fixes.
-- * acquire_batch_rate keeps the last rpm and tpm a runner gave, each on its own: a runner with
--   only --rpm no longer blanks another runner's --tpm in batch_rate_limits.
-- * batch_rate_limits is keyed provider:model (its comment said the model).
-- * report_background_items' item_failed log line keeps its error once, in the message (the
--   dashboard reads it from there), not copied again into the metadata.

comment on table jobsys.batch_rate_limits is
  'One row per shared rate limit, keyed provider:model: the lock that serialises its grants, the 429 cooldown every runner honours, and the last rpm and tpm the runners asked with.';

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
