-- jobsys: issue 23, the runners' limits in the new-batch dialog: batch_rate_limits keeps the
-- rpm / tpm of the last grant (acquire_batch_rate), read by list_batch_rate_limits (staff).

alter table jobsys.batch_rate_limits add column rpm integer, add column tpm integer;
comment on table jobsys.batch_rate_limits is
  'One row per shared rate limit (the model): the lock that serialises its grants, the 429 cooldown every runner honours, and the limits the runners last asked with.';

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
  update jobsys.batch_rate_limits set updated_at = v_now, rpm = p_rpm, tpm = p_tpm where key = p_key;
  return jsonb_build_object('granted', true, 'grant_id', v_id, 'at', extract(epoch from v_now));
end
$$;
comment on function jobsys.acquire_batch_rate(text, integer, integer, integer, double precision, jsonb) is
  'Runners: grant one call under the shared rate limit of a model (requests and prompt tokens per sliding window, counted over every runner, and the shared 429 cooldown), or say how long to wait. Serialised per key by a row lock.';

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

revoke execute on function jobsys.list_batch_rate_limits() from public;
grant execute on function jobsys.list_batch_rate_limits() to authenticated, service_role;
