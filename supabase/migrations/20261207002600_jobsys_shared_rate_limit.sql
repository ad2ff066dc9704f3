-- jobsys: issue 23, one rate limit across runners: batch_rate_limits / batch_rate_grants and
-- acquire_batch_rate / cool_down_batch_rate, so runners with --rpm / --tpm share one budget
-- per model and one 429 cooldown through the database.

create table jobsys.batch_rate_limits (
  key text primary key check (length(key) between 1 and 200),  -- the model, e.g. gemini-2.5-flash
  cooldown_until timestamptz not null default '-infinity',  -- a 429's delay, held by every runner
  updated_at timestamptz not null default now()
);
comment on table jobsys.batch_rate_limits is
  'One row per shared rate limit (the model): the lock that serialises its grants, and the 429 cooldown every runner honours.';
create table jobsys.batch_rate_grants (
  id bigint generated always as identity primary key,
  key text not null references jobsys.batch_rate_limits (key) on delete cascade,
  at timestamptz not null default clock_timestamp(),
  tokens integer not null default 0 check (tokens >= 0)  -- the estimate, corrected once usage is known
);
comment on table jobsys.batch_rate_grants is
  'Calls granted under a shared rate limit in the current window (older rows are deleted by the next grant): requests and prompt tokens per window, counted over every runner.';
create index batch_rate_grants_key_at_idx on jobsys.batch_rate_grants (key, at);

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
  update jobsys.batch_rate_grants g set tokens = greatest(0, (s ->> 1)::integer)
  from jsonb_array_elements(coalesce(p_settle, '[]')) s
  where g.id = (s ->> 0)::bigint and g.key = p_key;
  insert into jobsys.batch_rate_limits (key) values (p_key) on conflict (key) do nothing;
  select * into v_limit from jobsys.batch_rate_limits where key = p_key for update;
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
  update jobsys.batch_rate_limits set updated_at = v_now where key = p_key;
  return jsonb_build_object('granted', true, 'grant_id', v_id, 'at', extract(epoch from v_now));
end
$$;
comment on function jobsys.acquire_batch_rate(text, integer, integer, integer, double precision, jsonb) is
  'Runners: grant one call under the shared rate limit of a model (requests and prompt tokens per sliding window, counted over every runner, and the shared 429 cooldown), or say how long to wait. Serialised per key by a row lock.';

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

-- Access (as in 50_access.sql).
alter table jobsys.batch_rate_limits enable row level security;
alter table jobsys.batch_rate_grants enable row level security;
grant select on jobsys.batch_rate_limits, jobsys.batch_rate_grants to authenticated;
grant all on jobsys.batch_rate_limits, jobsys.batch_rate_grants to service_role;
revoke execute on function jobsys.acquire_batch_rate(text, integer, integer, integer, double precision, jsonb),
  jobsys.cool_down_batch_rate(text, double precision) from public;
grant execute on function jobsys.acquire_batch_rate(text, integer, integer, integer, double precision, jsonb),
  jobsys.cool_down_batch_rate(text, double precision) to authenticated, service_role;
