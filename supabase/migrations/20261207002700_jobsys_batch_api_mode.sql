-- jobsys: issue 23, Gemini Batch API mode: payload mode standard | batch_api (check_ai_batch)
-- and set_background_provider_batch, which keeps the submitted provider batch in
-- result.provider_batch so a runner taking the job over polls it instead of submitting again;
-- retry_background_job drops it, so the failed items go in a new provider batch.

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
      jsonb_build_object('provider_batch', left(p_batch ->> 'name', 200), 'state', left(p_batch ->> 'state', 50)));
  end if;
  return jsonb_build_object('job_id', p_job_id, 'provider_batch', p_batch);
end
$$;
comment on function jobsys.set_background_provider_batch(uuid, uuid, jsonb) is
  'Runners (Batch API mode): record the provider batch a held job submitted and its state, so a runner taking the job over polls it instead of submitting again; state changes are logged.';

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
  v_job := jobsys.apply_background_counts(p_job_id, 0, 0, -v_n, 0, true);
  return jobsys.background_job_json(v_job);
end
$$;
comment on function jobsys.retry_background_job(uuid) is
  'Operators: retry a finished job. Only the failed items go back to the queue; completed outputs stay.';

-- Access (as in 50_access.sql).
revoke execute on function jobsys.set_background_provider_batch(uuid, uuid, jsonb) from public;
grant execute on function jobsys.set_background_provider_batch(uuid, uuid, jsonb) to authenticated, service_role;
