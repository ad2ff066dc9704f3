-- jobsys: issue 21 for AI batches: staff (viewers too) read them; creating, cancelling and
-- retrying one is written to the audit log.

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
           v_payload ->> 'model', v_payload ->> 'provider', v_job.concurrency));
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
    jsonb_build_object('cancelled_items', v_cancelled, 'in_flight', v_running));
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
  update jobsys.background_jobs set status = 'pending', retry_count = retry_count + 1,
    error_message = null, started_at = null, completed_at = null, lease_expires_at = null,
    result = result - 'provider_batch'
  where id = p_job_id
  returning * into v_job;
  perform jobsys.background_log(p_job_id, 'info',
    format('retry %s: %s failed item(s) re-queued', v_job.retry_count, v_n),
    jsonb_build_object('retry_count', v_job.retry_count, 'requeued', v_n));
  perform jobsys.emit('jobsys:runners', 'background_job_queued', jsonb_build_object('job_id', p_job_id));
  perform jobsys.audit('retry', 'background_job', p_job_id::text, jsonb_build_object('requeued', v_n));
  v_job := jobsys.apply_background_counts(p_job_id, 0, 0, -v_n, 0, true);
  return jobsys.background_job_json(v_job);
end
$$;
comment on function jobsys.retry_background_job(uuid) is
  'Operators: retry a finished job. Only the failed items go back to the queue; completed outputs stay.';

create or replace function jobsys.list_background_jobs(p_status text default null, p_limit integer default 100,
  p_offset integer default 0)
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
