-- jobsys declarative schema: device jobs, the operator side. One function per transition;
-- the worker side (claim, finish, rescue, worker sessions) is in 35_device_runs.sql.
--
-- Lock order, followed by every function so none can deadlock another:
--   jobs (in id order) -> job_assignments -> devices.
-- Functions that run in the background (heartbeat, maintenance) take their locks with
-- SKIP LOCKED, so they never wait on a transition in flight; the row is simply handled
-- on the next round.

-- The job with its exact counters: the row plus its job_run_counts. updated_at is the
-- latest change of either.
create or replace function jobsys.counted(p_job jobsys.jobs) returns jobsys.jobs
  language plpgsql stable
  set search_path = jobsys, pg_temp
  as $$
declare
  v_runs record;
begin
  select coalesce(sum(r.running), 0) as running, coalesce(sum(r.completed), 0) as completed,
         coalesce(sum(r.failed), 0) as failed, coalesce(sum(r.cancelled), 0) as cancelled,
         max(r.changed_at) as changed_at
    into v_runs
  from jobsys.job_run_counts r where r.job_id = p_job.id;
  p_job.running_count := p_job.running_count + v_runs.running;
  p_job.completed_count := p_job.completed_count + v_runs.completed;
  p_job.failed_count := p_job.failed_count + v_runs.failed;
  p_job.cancelled_count := p_job.cancelled_count + v_runs.cancelled;
  p_job.updated_at := greatest(p_job.updated_at, v_runs.changed_at);
  return p_job;
end
$$;
comment on function jobsys.counted(jobsys.jobs) is
  'A job with its exact counters: the stored row plus its job_run_counts (what claims and finishes changed). Give it the row as stored.';

-- JSON shapes ---------------------------------------------------------------------------
create or replace function jobsys.job_json(p_job jobsys.jobs) returns jsonb
  language sql stable
  as $$
  select jsonb_build_object(
    'id', j.id, 'title', j.title, 'action', j.action, 'target_url', j.target_url,
    'duration_sec', j.duration_sec, 'target_type', j.target_type, 'target_value', j.target_value,
    'target_count', j.target_count, 'status', j.status, 'max_attempts', j.max_attempts,
    'assigned_count', j.assigned_count, 'running_count', j.running_count,
    'completed_count', j.completed_count, 'failed_count', j.failed_count,
    'cancelled_count', j.cancelled_count, 'created_by', j.created_by,
    'created_at', j.created_at, 'updated_at', j.updated_at, 'paused_at', j.paused_at,
    'finished_at', j.finished_at, 'ended_at', j.finished_at, 'end_reason', j.end_reason,
    'timeout_sec', j.timeout_sec, 'topup_grace_sec', j.topup_grace_sec, 'start_at', j.start_at,
    'device_labels', j.device_labels, 'priority', j.priority,
    'waiting_for_devices', case when j.status = 'active' and j.waiting_since is not null
                                then greatest(j.target_count - j.completed_count, 0) end,
    'waiting_since', case when j.status = 'active' then j.waiting_since end)
  from jobsys.counted(p_job) j
$$;
comment on function jobsys.job_json(jobsys.jobs) is
  'The JSON shape of a job in the API, with its exact counters (jobsys.counted: give it the row as stored). waiting_for_devices: short by N while an active job waits out its top-up grace; start_at: when a scheduled job starts.';

create or replace function jobsys.progress_json(p_job jobsys.jobs) returns jsonb
  language sql stable
  as $$
  select jsonb_build_object(
    'job_id', j.id, 'status', j.status, 'end_reason', j.end_reason, 'target_count', j.target_count,
    'assigned_count', j.assigned_count, 'running_count', j.running_count,
    'completed_count', j.completed_count, 'failed_count', j.failed_count,
    'cancelled_count', j.cancelled_count,
    'waiting_for_devices', case when j.status = 'active' and j.waiting_since is not null
                                then greatest(j.target_count - j.completed_count, 0) end)
  from jobsys.counted(p_job) j
$$;
comment on function jobsys.progress_json(jobsys.jobs) is
  'The payload of the job_progress event: the job status, its end reason and exact counters (give it the row as stored), and how many devices it waits for.';

-- Workers that hold any assignment of a job (to tell them about pause/cancel/delete).
create or replace function jobsys.job_workers(p_job_id uuid) returns setof uuid
  language sql stable
  set search_path = jobsys, pg_temp
  as $$
  select distinct d.worker_id
  from jobsys.job_assignments a join jobsys.devices d on d.id = a.device_id
  where a.job_id = p_job_id and d.worker_id is not null
$$;
comment on function jobsys.job_workers(uuid) is
  'The workers that hold any assignment of a job, to tell them about pause, resume, cancel and delete.';

create or replace function jobsys.emit_to_job_workers(p_job_id uuid, p_event text, p_payload jsonb) returns void
  language sql
  set search_path = jobsys, pg_temp
  as $$
  select jobsys.emit(jobsys.worker_topic(w), p_event, p_payload) from jobsys.job_workers(p_job_id) w
$$;
comment on function jobsys.emit_to_job_workers(uuid, text, jsonb) is
  'Sends one event to every worker that holds an assignment of the job.';

-- Counters ------------------------------------------------------------------------------
-- A job's counters live in two places, so that claims and finishes of one job on many
-- workers never queue on one row:
--   * job_run_counts, one row per job and worker session: claims and finishes
--     (jobsys.count_runs). They hold the job row FOR SHARE, which keeps the job-level
--     transitions below out (they take it FOR NO KEY UPDATE) but not each other;
--   * the job row: everything else (fan-out, top-up, pause, cancel, rescue, retry), under
--     the job row lock (jobsys.apply_counts).
-- Every reader adds them up (jobsys.counted). Completion needs the row lock: the finish that
-- meets the target takes it when no other claim or finish of the job is in flight, else the
-- next upkeep completes the job (jobsys.settle_jobs).

-- job_progress for a job: always when p_force, else at most every
-- progress_event_interval_ms per job; the job is read only when an event goes out. The mark
-- of a job that is due is taken with SKIP LOCKED, so concurrent finishes never wait on it:
-- one sends, the others need not. The mark keeps what was sent: a finish in flight when
-- another transaction sent is not in that event, so maintain() compares and sends the
-- trailing event when they differ.
create or replace function jobsys.notify_progress(p_job_id uuid, p_force boolean) returns void
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_now timestamptz := clock_timestamp();
  v_payload jsonb;
begin
  if p_force then
    v_payload := (select jobsys.progress_json(j) from jobsys.jobs j where j.id = p_job_id);
    insert into jobsys.job_progress_marks as m (job_id, notified_at, sent) values (p_job_id, v_now, v_payload)
    on conflict (job_id) do update set notified_at = v_now, sent = v_payload;
  else
    -- Settings are read inline (not through jobsys.setting()): a plan cached with the
    -- function is far cheaper per call than a SQL function re-planned in every transaction.
    update jobsys.job_progress_marks m set notified_at = v_now,
      sent = (select jobsys.progress_json(j) from jobsys.jobs j where j.id = p_job_id)
    where m.job_id = (select d.job_id from jobsys.job_progress_marks d
                      where d.job_id = p_job_id and d.notified_at <= v_now - make_interval(
                        secs => (select s.value from jobsys.settings s
                                 where s.key = 'progress_event_interval_ms') / 1000.0)
                      for no key update skip locked)
    returning m.sent into v_payload;
    if not found then
      return;
    end if;
  end if;
  perform jobsys.emit('jobsys:dashboard', 'job_progress', v_payload);
end
$$;
comment on function jobsys.notify_progress(uuid, boolean) is
  'Sends job_progress for a job: always when forced, else at most every progress_event_interval_ms per job (the job that is due is taken with SKIP LOCKED, so concurrent finishes never wait on it; the job is read only when an event goes out). Keeps what was sent for the trailing event.';

-- The counters of the job row change here. The caller holds the job row lock (so no claim
-- or finish of the job is in flight). Completes the job when its target is met (cancelling
-- what is still queued), and emits job_progress, throttled per job.
create or replace function jobsys.apply_counts(
  p_job_id uuid, p_assigned integer, p_running integer, p_completed integer,
  p_failed integer, p_cancelled integer, p_force_event boolean default false)
  returns jobsys.jobs
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
  v_exact jobsys.jobs;
  v_completes boolean;
  v_leftover integer;
begin
  update jobsys.jobs j set
    assigned_count = j.assigned_count + p_assigned,
    running_count = j.running_count + p_running,
    completed_count = j.completed_count + p_completed,
    failed_count = j.failed_count + p_failed,
    cancelled_count = j.cancelled_count + p_cancelled,
    -- New runs end a wait for devices (jobsys.settle_jobs starts it again if they all end short).
    waiting_since = case when p_assigned > 0 then null else j.waiting_since end,
    updated_at = clock_timestamp()
  where j.id = p_job_id
  returning j.* into v_job;

  v_exact := jobsys.counted(v_job);
  v_completes := v_job.status in ('active', 'paused') and v_exact.target_count > 0
    and v_exact.completed_count >= v_exact.target_count;
  if v_completes then
    with leftover as (
      update jobsys.job_assignments a set status = 'cancelled', finished_at = now(),
        error = 'job completed before this run was needed'
      where a.job_id = p_job_id and a.status in ('pending', 'paused')
      returning 1)
    select count(*) into v_leftover from leftover;
    update jobsys.jobs j set status = 'completed', finished_at = now(), waiting_since = null,
      cancelled_count = j.cancelled_count + v_leftover
    where j.id = p_job_id
    returning j.* into v_job;
  end if;
  perform jobsys.notify_progress(p_job_id, p_force_event or v_completes);
  return v_job;
end
$$;
comment on function jobsys.apply_counts(uuid, integer, integer, integer, integer, integer, boolean) is
  'Changes the counters of the job row (the caller holds the job row lock; claims and finishes use jobsys.count_runs). Completes the job when its exact completed count meets the target, cancelling what is still queued, ends a wait for devices when runs are added, and emits job_progress, throttled per job.';

-- Claims and finishes count their runs here, in the row of their job and worker session.
-- The caller holds the job row FOR SHARE. The finish that meets the target completes the
-- job when it can take the job row lock without waiting, that is when no other claim or
-- finish of the job is in flight; otherwise the next upkeep does (jobsys.settle_jobs).
-- One statement counts, reads what completion needs (a finish only) and whether the job's
-- progress event is due, so most calls end there.
create or replace function jobsys.count_runs(p_job_id uuid, p_worker_id uuid, p_running integer,
  p_completed integer, p_failed integer, p_cancelled integer)
  returns void
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_status text;
  v_target integer;
  v_completed bigint;
  v_due boolean;
begin
  -- The exact completed count is jobsys.counted's sum: the job row, the other sessions' rows
  -- as this statement sees them, and this session's row as the upsert left it.
  with mine as (
    insert into jobsys.job_run_counts as r (job_id, worker_id, running, completed, failed, cancelled)
    values (p_job_id, p_worker_id, p_running, p_completed, p_failed, p_cancelled)
    on conflict (job_id, worker_id) do update set
      running = r.running + excluded.running, completed = r.completed + excluded.completed,
      failed = r.failed + excluded.failed, cancelled = r.cancelled + excluded.cancelled,
      changed_at = excluded.changed_at
    returning r.completed)
  select j.status, j.target_count,
         j.completed_count + mine.completed
           + coalesce((select sum(r.completed) from jobsys.job_run_counts r
                       where r.job_id = p_job_id and r.worker_id <> p_worker_id), 0),
         exists (select 1 from jobsys.job_progress_marks m
                 where m.job_id = p_job_id and m.notified_at <= clock_timestamp() - make_interval(
                   secs => (select s.value from jobsys.settings s
                            where s.key = 'progress_event_interval_ms') / 1000.0))
    into v_status, v_target, v_completed, v_due
  from mine
  left join lateral (select j.status, j.target_count, j.completed_count from jobsys.jobs j
                     where j.id = p_job_id and p_completed > 0) j on true;
  if v_status in ('active', 'paused') and v_target > 0 and v_completed >= v_target then
    perform 1 from jobsys.jobs j where j.id = p_job_id for no key update skip locked;
    if found then
      perform jobsys.apply_counts(p_job_id, 0, 0, 0, 0, 0);
      return;
    end if;
  end if;
  if v_due then
    perform jobsys.notify_progress(p_job_id, false);
  end if;
end
$$;
comment on function jobsys.count_runs(uuid, uuid, integer, integer, integer, integer) is
  'Claims and finishes count their runs in the row of their job and worker session (the caller holds the job row FOR SHARE), so the runs of one job on many workers never queue on one row. Completes the job when the target is met and no other claim or finish of it is in flight (else the next upkeep does), and emits job_progress, throttled.';

-- Distribution --------------------------------------------------------------------------
-- Assign up to p_limit eligible devices (healthy, carrying the job's device_labels, never
-- tried for this job), preferring idle devices, then the least loaded. A job without labels
-- tests none (the empty filter first, so no device's labels are merged for it). Set-based; one push per worker, not per
-- assignment. The caller holds the job row lock and applies the counters; that lock is
-- also why no insert here can meet an existing (job, device) row: the eligibility check
-- and the insert are one statement, run by the only transaction assigning this job.
-- p_eligible: how many devices are eligible, when the caller has just counted them.
create or replace function jobsys.assign_devices(p_job_id uuid, p_limit integer, p_eligible integer default null)
  returns integer
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz := jobsys.healthy_cutoff();  -- once, not once per device row
  v_eligible integer := p_eligible;
  v_assigned integer;
  v_labels jsonb := (select j.device_labels from jobsys.jobs j where j.id = p_job_id);
  v_priority integer := (select j.priority from jobsys.jobs j where j.id = p_job_id);
begin
  if p_limit <= 0 then
    return 0;
  end if;
  if v_eligible is null then
    select count(*) into v_eligible
    from jobsys.devices d
    where d.state = 'online' and d.last_heartbeat_at > v_cutoff and d.worker_id is not null
      and (v_labels = '{}' or d.labels || d.operator_labels @> v_labels)
      and not exists (select 1 from jobsys.job_assignments a where a.job_id = p_job_id and a.device_id = d.id);
  end if;

  if v_eligible <= p_limit then
    -- Every eligible device is chosen, so there is nothing to rank. Rows go in in device
    -- order, which keeps the index inserts close together.
    with chosen as (
      select d.id, d.worker_id
      from jobsys.devices d
      where d.state = 'online' and d.last_heartbeat_at > v_cutoff and d.worker_id is not null
        and (v_labels = '{}' or d.labels || d.operator_labels @> v_labels)
        and not exists (select 1 from jobsys.job_assignments a
                        where a.job_id = p_job_id and a.device_id = d.id)
      order by d.id
      limit p_limit
    ), inserted as (
      insert into jobsys.job_assignments (job_id, device_id, priority)
      select p_job_id, c.id, v_priority from chosen c
    ), per_worker as (
      select c.worker_id, count(*) as n from chosen c group by c.worker_id
    ), pushed as (
      select jobsys.emit(jobsys.worker_topic(p.worker_id), 'assignment',
                         jsonb_build_object('job_id', p_job_id, 'count', p.n))
      from per_worker p
    )
    select coalesce(sum(p.n), 0)::integer into v_assigned
    from per_worker p, (select count(*) from pushed) as force_push;
    return v_assigned;
  end if;

  with eligible as (
    select d.id, d.worker_id, d.running_assignment_id is not null as busy
    from jobsys.devices d
    where d.state = 'online' and d.last_heartbeat_at > v_cutoff and d.worker_id is not null
      and (v_labels = '{}' or d.labels || d.operator_labels @> v_labels)
      and not exists (select 1 from jobsys.job_assignments a
                      where a.job_id = p_job_id and a.device_id = d.id)
  ), load as (
    select a.device_id, count(*) as queued
    from jobsys.job_assignments a
    where a.status in ('pending', 'paused', 'running')
      and a.device_id in (select e.id from eligible e)
    group by a.device_id
  ), ranked as (
    select e.id, e.worker_id
    from eligible e left join load l on l.device_id = e.id
    order by e.busy, coalesce(l.queued, 0), random()
    limit p_limit
  ), chosen as (
    select r.id, r.worker_id from ranked r order by r.id
  ), inserted as (
    insert into jobsys.job_assignments (job_id, device_id, priority)
    select p_job_id, c.id, v_priority from chosen c
  ), per_worker as (
    select c.worker_id, count(*) as n from chosen c group by c.worker_id
  ), pushed as (
    select jobsys.emit(jobsys.worker_topic(p.worker_id), 'assignment',
                       jsonb_build_object('job_id', p_job_id, 'count', p.n))
    from per_worker p
  )
  select coalesce(sum(p.n), 0)::integer into v_assigned
  from per_worker p, (select count(*) from pushed) as force_push;
  return v_assigned;
end
$$;
comment on function jobsys.assign_devices(uuid, integer, integer) is
  'Fans a job out to up to p_limit eligible devices (healthy, carrying the job''s device_labels, never tried for this job), idle first, then the least loaded, with one push per worker. The caller holds the job row lock and applies the counters.';

-- Top-up: while an active job has fewer live-or-completed assignments than its target,
-- assign newly eligible devices. p_job_id null = every short active job.
create or replace function jobsys.top_up(p_job_id uuid default null) returns integer
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
  v_added integer;
  v_total integer := 0;
begin
  for v_job in
    select c.* from jobsys.jobs j cross join lateral jobsys.counted(j) c
    where j.status = 'active' and (p_job_id is null or j.id = p_job_id)
      and c.assigned_count - c.failed_count - c.cancelled_count < c.target_count
    order by j.id
  loop
    -- Re-read under the lock: another top-up may have filled it meanwhile. A claim or
    -- finish of it in flight holds it FOR SHARE: the next upkeep tops it up.
    select * into v_job from jobsys.jobs j where j.id = v_job.id and j.status = 'active'
      for no key update skip locked;
    continue when not found;
    v_job := jobsys.counted(v_job);
    v_added := jobsys.assign_devices(v_job.id,
      v_job.target_count - (v_job.assigned_count - v_job.failed_count - v_job.cancelled_count));
    if v_added > 0 then
      perform jobsys.apply_counts(v_job.id, v_added, 0, 0, 0, 0);
      v_total := v_total + v_added;
    end if;
  end loop;
  return v_total;
end
$$;
comment on function jobsys.top_up(uuid) is
  'While an active job has fewer live or completed assignments than its target, assigns newly eligible devices; a null p_job_id means every short active job.';

-- Input checks shared by create and edit ------------------------------------------------
create or replace function jobsys.check_title(p_title text) returns text
  language plpgsql immutable
  as $$
begin
  if p_title is null or btrim(p_title) = '' then
    perform jobsys.raise_error('JS400', 'title must not be empty', '{"field": "title"}');
  end if;
  if length(btrim(p_title)) > 200 then
    perform jobsys.raise_error('JS400', 'title must be at most 200 characters', '{"field": "title"}');
  end if;
  if p_title ~ '[[:cntrl:]]' then
    perform jobsys.raise_error('JS400', 'title must not contain control characters', '{"field": "title"}');
  end if;
  return btrim(p_title);
end
$$;
comment on function jobsys.check_title(text) is
  'Checks and trims a title (1-200 characters, no control characters) or raises JS400; shared by create and edit.';

-- Default title: host and path of the URL, at most 200 characters.
create or replace function jobsys.title_from_url(p_url text) returns text
  language sql immutable
  as $$
  select left(rtrim(coalesce(substring(p_url from '^[A-Za-z]+://([^?#]*)'), p_url), '/'), 200)
$$;
comment on function jobsys.title_from_url(text) is
  'Default job title: host and path of the URL, at most 200 characters.';

-- RFC 3492 Punycode of one label, without the xn-- prefix, as Python's "punycode" codec
-- writes it: the IDNA form of an international host name label, whose length is checked.
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

-- The URL of a device job: http or https, at most 2048 characters, no spaces or control
-- characters, and a real host. Refused: a user name or password (https://evil.com@good.com/
-- goes to good.com), an empty label, a label with anything but letters, digits and inner
-- hyphens, a label over 63 or a host over 253 characters in IDNA form, a host ending in a
-- number that is not an IPv4 address, a bracketed host that is not IPv6, a port outside
-- 1-65535. International labels (https://한국.kr/) are measured by their punycode
-- (xn--3e0b707e) and the URL is kept as typed; characters that only look like part of a name
-- (other scripts' spaces and dots, zero-width and direction marks, symbols, emoji, fullwidth
-- forms, private use) are refused. The same rules as check_url in jobsys/models.py.
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

-- Create + distribute -------------------------------------------------------------------
-- Start a job: resolve its target against the devices healthy now (and carrying its
-- device_labels) and distribute it. Used
-- by create_job for a job that starts now, and for a scheduled job at its start_at
-- (jobsys.release_scheduled_jobs, or resume_job of one paused before it started). The
-- caller holds the job row lock; the job has no runs yet, so every healthy device is
-- eligible. A percentage or all_devices job with no healthy device at its start ends
-- incomplete / no_eligible_devices at once (create_job refuses such a job with JS409).
create or replace function jobsys.start_job(p_job_id uuid) returns jobsys.jobs
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
  v_healthy integer;
  v_target integer;
  v_assigned integer;
begin
  select * into v_job from jobsys.jobs where id = p_job_id;
  select count(*) into v_healthy from jobsys.devices d
  where d.state = 'online' and d.last_heartbeat_at > jobsys.healthy_cutoff() and d.worker_id is not null
    and (v_job.device_labels = '{}' or d.labels || d.operator_labels @> v_job.device_labels);
  v_target := case v_job.target_type
    when 'all_devices' then v_healthy
    when 'percentage' then ceil(v_healthy * v_job.target_value / 100.0)::integer
    else v_job.target_value end;
  if v_target = 0 then
    update jobsys.jobs set status = 'incomplete', end_reason = 'no_eligible_devices',
      finished_at = now(), paused_at = null, waiting_since = null
    where id = p_job_id;
    return jobsys.apply_counts(p_job_id, 0, 0, 0, 0, 0, true);
  end if;
  update jobsys.jobs set status = 'active', target_count = v_target, paused_at = null
  where id = p_job_id;
  v_assigned := jobsys.assign_devices(p_job_id, v_target, v_healthy);
  return jobsys.apply_counts(p_job_id, v_assigned, 0, 0, 0, 0, true);
end
$$;
comment on function jobsys.start_job(uuid) is
  'Starts a job now: resolves its target against the healthy devices and distributes it (one push per worker); no healthy device for a percentage / all_devices target ends it incomplete / no_eligible_devices. The caller holds the job row lock.';

create or replace function jobsys.create_job(
  p_target_url text, p_duration_sec integer, p_target_type text,
  p_target_value integer default null, p_title text default null,
  p_action text default 'open_url', p_max_attempts integer default null,
  p_timeout_sec integer default null, p_topup_grace_sec integer default null,
  p_start_at timestamptz default null, p_device_labels jsonb default null, p_priority integer default 0)
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
  v_target_value integer := p_target_value;
  v_scheduled boolean := p_start_at is not null and p_start_at > now();
  v_labels jsonb := coalesce(p_device_labels, '{}');
  v_rule text := jobsys.label_problem(coalesce(p_device_labels, '{}'));
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
  -- all_devices: a target_value (the original plan sends 100) is accepted within 1-100 and ignored.
  if p_target_type = 'all_devices' and p_target_value is not null and p_target_value not between 1 and 100 then
    perform jobsys.raise_error('JS400', 'target_value must be empty or between 1 and 100 for all_devices (it is ignored)',
      '{"field": "target_value"}');
  elsif p_target_type = 'percentage' and (p_target_value is null or p_target_value not between 1 and 100) then
    perform jobsys.raise_error('JS400', 'percentage must be between 1 and 100', '{"field": "target_value"}');
  elsif p_target_type = 'device_count' and (p_target_value is null or p_target_value not between 1 and 100000) then
    perform jobsys.raise_error('JS400', 'device_count must be between 1 and 100000', '{"field": "target_value"}');
  end if;
  if p_target_type = 'all_devices' then
    v_target_value := null;
  end if;
  if p_max_attempts is not null and p_max_attempts not between 1 and 100 then
    perform jobsys.raise_error('JS400', 'max_attempts must be between 1 and 100', '{"field": "max_attempts"}');
  end if;
  if p_timeout_sec is not null and p_timeout_sec not between 1 and 604800 then
    perform jobsys.raise_error('JS400', 'timeout_sec must be between 1 and 604800', '{"field": "timeout_sec"}');
  end if;
  if p_topup_grace_sec is not null and p_topup_grace_sec not between 0 and 86400 then
    perform jobsys.raise_error('JS400', 'topup_grace_sec must be between 0 and 86400', '{"field": "topup_grace_sec"}');
  end if;
  if p_start_at is not null and (p_start_at > now() + interval '365 days' or not isfinite(p_start_at)) then
    perform jobsys.raise_error('JS400', 'start_at must be at most 365 days ahead', '{"field": "start_at"}');
  end if;
  if p_priority is null or p_priority not between -10 and 10 then
    perform jobsys.raise_error('JS400', 'priority must be between -10 and 10', '{"field": "priority"}');
  end if;
  if v_rule is not null then
    perform jobsys.raise_error('JS400', 'device_labels: ' || jobsys.label_rule_message(v_rule),
      jsonb_build_object('field', 'device_labels', 'rule', v_rule));
  end if;
  v_title := jobsys.check_title(coalesce(nullif(btrim(p_title), ''), jobsys.title_from_url(p_target_url)));

  v_cutoff := jobsys.healthy_cutoff();  -- once, not once per device row
  select count(*) into v_healthy from jobsys.devices d
  where d.state = 'online' and d.last_heartbeat_at > v_cutoff and d.worker_id is not null
    and (v_labels = '{}' or d.labels || d.operator_labels @> v_labels);
  v_target := case p_target_type
    when 'all_devices' then v_healthy
    when 'percentage' then ceil(v_healthy * p_target_value / 100.0)::integer
    else p_target_value end;
  -- A scheduled job needs no device now: its target is resolved again when it starts.
  if v_target = 0 and not v_scheduled then
    perform jobsys.raise_error('JS409', case when v_labels = '{}' then 'no healthy device is connected to run this job on'
                                             else 'no healthy device carries the labels this job asks for' end,
      jsonb_build_object('healthy_devices', 0, 'reason', 'no_devices', 'device_labels', v_labels));
  end if;

  insert into jobsys.jobs (title, action, target_url, duration_sec, target_type, target_value,
                           target_count, max_attempts, created_by, timeout_sec, topup_grace_sec,
                           status, start_at, device_labels, priority)
  values (v_title, p_action, p_target_url, p_duration_sec, p_target_type, v_target_value, v_target,
          coalesce(p_max_attempts, jobsys.setting('max_attempts')::integer), auth.uid(),
          p_timeout_sec, p_topup_grace_sec,
          case when v_scheduled then 'scheduled' else 'active' end, p_start_at, v_labels, p_priority)
  returning * into v_job;
  perform jobsys.audit('create', 'job', v_job.id::text, jsonb_build_object(
    'title', v_title, 'target_type', p_target_type, 'target_value', v_target_value, 'device_labels', v_labels,
    'start_at', p_start_at, 'priority', p_priority));

  if v_scheduled then
    -- No runs until start_at (jobsys.release_scheduled_jobs distributes it then).
    v_job := jobsys.apply_counts(v_job.id, 0, 0, 0, 0, 0, true);
    return jsonb_build_object('job', jobsys.job_json(v_job), 'assigned', 0);
  end if;
  -- A new job has no assignments yet, so every healthy device is eligible.
  v_assigned := jobsys.assign_devices(v_job.id, v_target, v_healthy);
  v_job := jobsys.apply_counts(v_job.id, v_assigned, 0, 0, 0, 0, true);
  return jsonb_build_object('job', jobsys.job_json(v_job), 'assigned', v_assigned);
end
$$;
comment on function jobsys.create_job(text, integer, text, integer, text, text, integer, integer, integer, timestamp with time zone, jsonb, integer) is
  'Operators: create a device job and distribute it to the healthy devices in the same transaction; JS409 when no healthy device is connected. Optional time limit (timeout_sec), top-up grace (topup_grace_sec, else the setting), start time (start_at, at most 365 days ahead: the job is scheduled, with no runs, until then) and device_labels (only devices carrying every pair run it; its target counts among them) and priority (-10..10, default 0: a device claims the highest priority first, then the oldest).';

-- Job-level transitions -----------------------------------------------------------------
create or replace function jobsys.lock_job(p_job_id uuid) returns jobsys.jobs
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
begin
  select * into v_job from jobsys.jobs where id = p_job_id for no key update;
  if not found then
    perform jobsys.raise_error('JS404', 'job not found', jsonb_build_object('job_id', p_job_id));
  end if;
  return v_job;
end
$$;
comment on function jobsys.lock_job(uuid) is
  'Locks a job row for a transition (FOR NO KEY UPDATE) or raises JS404.';

create or replace function jobsys.illegal_move(p_job jobsys.jobs, p_move text) returns void
  language plpgsql
  as $$
begin
  perform jobsys.raise_error('JS409', format('cannot %s a job that is %s', p_move, p_job.status),
    jsonb_build_object('job_id', p_job.id, 'status', p_job.status, 'transition', p_move));
end
$$;
comment on function jobsys.illegal_move(jobsys.jobs, text) is
  'Raises JS409 for a transition the job status does not allow.';

-- Pause: queued runs wait; running ones finish. A paused job does not wait for devices. A
-- scheduled job (no runs yet) is paused as it is; resume puts it back on its schedule.
create or replace function jobsys.pause_job(p_job_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
begin
  perform jobsys.require_operator();
  v_job := jobsys.lock_job(p_job_id);
  if v_job.status not in ('active', 'scheduled') then
    perform jobsys.illegal_move(v_job, 'pause');
  end if;
  perform jobsys.audit('pause', 'job', p_job_id::text, jsonb_build_object('from', v_job.status));
  update jobsys.job_assignments set status = 'paused' where job_id = p_job_id and status = 'pending';
  update jobsys.jobs set status = 'paused', paused_at = now(), waiting_since = null where id = p_job_id;
  v_job := jobsys.apply_counts(p_job_id, 0, 0, 0, 0, 0, true);
  perform jobsys.emit_to_job_workers(p_job_id, 'job_paused', jsonb_build_object('job_id', p_job_id));
  return jobsys.job_json(v_job);
end
$$;
comment on function jobsys.pause_job(uuid) is
  'Operators: pause an active or scheduled job. Queued runs wait; running ones finish; a wait for devices stops.';

-- Resume: paused runs are pending again. They may lie below their devices' queue floors
-- (35_device_runs.sql), so those floors come down to them. A job paused before it started
-- (start_at set, no run yet) is scheduled again while start_at is ahead, else it starts now.
create or replace function jobsys.resume_job(p_job_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
  v_added integer;
begin
  perform jobsys.require_operator();
  v_job := jobsys.lock_job(p_job_id);
  if v_job.status <> 'paused' then
    perform jobsys.illegal_move(v_job, 'resume');
  end if;
  perform jobsys.audit('resume', 'job', p_job_id::text);
  if v_job.start_at is not null and v_job.assigned_count = 0 then  -- assigned: the row's alone
    if v_job.start_at > now() then
      update jobsys.jobs set status = 'scheduled', paused_at = null where id = p_job_id;
      v_job := jobsys.apply_counts(p_job_id, 0, 0, 0, 0, 0, true);
    else
      v_job := jobsys.start_job(p_job_id);
    end if;
    return jobsys.job_json(v_job);
  end if;
  -- The resumed runs may lie below their devices' queue floors: lower those floors, taking
  -- the device rows in id order as a finish does.
  with resumed as (
    update jobsys.job_assignments set status = 'pending' where job_id = p_job_id and status = 'paused'
    returning id, device_id
  ), lowered as (
    select d.id, r.id as floor from jobsys.devices d join resumed r on r.device_id = d.id
    where d.queue_floor > r.id order by d.id for no key update of d
  )
  update jobsys.devices d set queue_floor = l.floor from lowered l where d.id = l.id;
  update jobsys.jobs set status = 'active', paused_at = null where id = p_job_id
    returning * into v_job;
  v_job := jobsys.counted(v_job);
  perform jobsys.emit_to_job_workers(p_job_id, 'job_resumed', jsonb_build_object('job_id', p_job_id));
  -- Devices may have come or gone while paused.
  v_added := jobsys.assign_devices(p_job_id,
    v_job.target_count - (v_job.assigned_count - v_job.failed_count - v_job.cancelled_count));
  v_job := jobsys.apply_counts(p_job_id, v_added, 0, 0, 0, 0, true);
  return jobsys.job_json(v_job);
end
$$;
comment on function jobsys.resume_job(uuid) is
  'Operators: resume a paused job. Its runs are pending again (their devices queue floors come down to them) and devices that came while it was paused are assigned. A job paused before its start_at is scheduled again (or starts, if start_at has passed).';

-- End a job now: its queued runs are cancelled, its running ones stopped (the workers are
-- told), and the job takes p_status (cancelled, completed or incomplete with p_end_reason).
-- The caller holds the job row lock. Lock order: the job, then all its live runs (in id
-- order), then the devices of the running ones (in id order). One statement that updated
-- each run and freed its device in turn took run 1, device 1, run 2, ... and deadlocked
-- with a heartbeat that held run 2 (its lease) and waited for device 1 (its device report).
create or replace function jobsys.end_job(p_job_id uuid, p_status text, p_end_reason text, p_error text)
  returns jobsys.jobs
  language plpgsql
  set search_path = jobsys, pg_temp
  as $$
declare
  v_live bigint[];
  v_devices uuid[];
  v_running integer;
begin
  select coalesce(array_agg(l.id), '{}'),
         coalesce(array_agg(l.device_id) filter (where l.status = 'running'), '{}'),
         count(*) filter (where l.status = 'running')
    into v_live, v_devices, v_running
  from (select a.id, a.device_id, a.status from jobsys.job_assignments a
        where a.job_id = p_job_id and a.status in ('pending', 'paused', 'running')
        order by a.id
        for no key update) l;
  perform 1 from jobsys.devices d where d.id = any(v_devices) order by d.id for no key update;
  update jobsys.job_assignments a set status = 'cancelled', finished_at = now(),
    lease_expires_at = null, error = p_error
  where a.id = any(v_live);
  update jobsys.devices d set running_assignment_id = null
  where d.id = any(v_devices) and d.running_assignment_id = any(v_live);
  update jobsys.jobs set status = p_status, end_reason = p_end_reason, finished_at = now(),
    waiting_since = null
  where id = p_job_id;
  perform jobsys.emit_to_job_workers(p_job_id, 'job_cancelled',
    jsonb_build_object('job_id', p_job_id, 'reason', coalesce(p_end_reason, p_status)));
  return jobsys.apply_counts(p_job_id, 0, -v_running, 0, 0, cardinality(v_live), true);
end
$$;
comment on function jobsys.end_job(uuid, text, text, text) is
  'Ends a job now (cancel, time limit): queued runs are cancelled, running ones stopped and their workers told, and the job takes the given status and end reason. The caller holds the job row lock; runs, then devices, are locked in id order.';

-- Cancel: everything not finished is cancelled now; workers stop what is running. Every
-- run stays, for the record (delete removes them).
create or replace function jobsys.cancel_job(p_job_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
begin
  perform jobsys.require_operator();
  v_job := jobsys.lock_job(p_job_id);
  if v_job.status not in ('active', 'paused', 'scheduled') then
    perform jobsys.illegal_move(v_job, 'cancel');
  end if;
  perform jobsys.audit('cancel', 'job', p_job_id::text, jsonb_build_object('from', v_job.status));
  v_job := jobsys.end_job(p_job_id, 'cancelled', null, 'job cancelled');
  return jobsys.job_json(v_job);
end
$$;
comment on function jobsys.cancel_job(uuid) is
  'Operators: cancel a job (active, paused or scheduled). Everything not finished is cancelled now and the workers stop what is running; every run is kept. Locks the job, its live runs, then their devices, each in id order (jobsys.end_job).';

create or replace function jobsys.delete_job(p_job_id uuid) returns void
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
begin
  perform jobsys.require_operator();
  v_job := jobsys.lock_job(p_job_id);
  v_job := jobsys.counted(v_job);
  perform jobsys.audit('delete', 'job', p_job_id::text, jsonb_build_object(
    'title', v_job.title, 'status', v_job.status, 'completed', v_job.completed_count, 'failed', v_job.failed_count));
  -- Tell workers before the rows that name them are gone; delivered at commit.
  perform jobsys.emit_to_job_workers(p_job_id, 'job_cancelled',
    jsonb_build_object('job_id', p_job_id, 'reason', 'deleted'));
  -- Lock order: the running runs, then their devices in id order, before the cascade frees
  -- the devices in whatever order it meets them (a heartbeat taking its devices in id order
  -- deadlocked with it).
  perform 1 from jobsys.devices d
  where d.id = any(array(select a.device_id from jobsys.job_assignments a
                         where a.job_id = p_job_id and a.status = 'running'
                         order by a.id for no key update))
  order by d.id
  for no key update;
  delete from jobsys.jobs where id = p_job_id;  -- assignments cascade; devices are freed
  perform jobsys.emit('jobsys:dashboard', 'job_deleted', jsonb_build_object('job_id', p_job_id));
end
$$;
comment on function jobsys.delete_job(uuid) is
  'Operators: delete a job and its assignments; workers are told before the rows that name them are gone.';

create or replace function jobsys.update_job_title(p_job_id uuid, p_title text) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_title text := jobsys.check_title(p_title);
begin
  perform jobsys.require_operator();
  perform jobsys.lock_job(p_job_id);
  perform jobsys.audit('rename', 'job', p_job_id::text, jsonb_build_object('title', v_title));
  update jobsys.jobs set title = v_title where id = p_job_id;
  return jobsys.job_json(jobsys.apply_counts(p_job_id, 0, 0, 0, 0, 0, true));
end
$$;
comment on function jobsys.update_job_title(uuid, text) is
  'Operators: rename a job (title checked as on create).';

-- PATCH /api/jobs/{id}: a status move and/or a new title, both or neither. Everything is
-- checked before anything changes; the move runs the pause / resume / cancel transition
-- itself, then the rename, in this one transaction, so a refused title undoes nothing
-- because nothing was done, and a refused move (JS409) keeps the old title.
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

-- Retry the failed runs: each goes back to the queue of its device with a new attempt series
-- (attempt 1, so max_attempts applies afresh; a failed run's report was final, so no late
-- report can name it). An incomplete job is re-opened as active. The re-queued runs may lie
-- below their devices' queue floors (35_device_runs.sql): those floors come down to them.
create or replace function jobsys.retry_job(p_job_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
  v_retried integer;
begin
  perform jobsys.require_operator();
  v_job := jobsys.lock_job(p_job_id);
  if v_job.status not in ('active', 'paused', 'incomplete') then
    perform jobsys.illegal_move(v_job, 'retry');
  end if;
  -- Re-opened past its time limit, the job would end again at the next upkeep.
  if v_job.end_reason = 'timed_out' then
    perform jobsys.raise_error('JS409', 'the job''s time limit has passed: run it again as a new job (clone)',
      jsonb_build_object('job_id', p_job_id, 'status', v_job.status, 'transition', 'retry', 'reason', 'timed_out'));
  end if;
  if (jobsys.counted(v_job)).failed_count = 0 then
    perform jobsys.raise_error('JS409', 'nothing to retry: no run of this job failed',
      jsonb_build_object('job_id', p_job_id, 'status', v_job.status, 'transition', 'retry', 'reason', 'nothing_failed'));
  end if;
  with retried as (
    update jobsys.job_assignments a
    set status = case when v_job.status = 'paused' then 'paused' else 'pending' end,
      attempt = 1, error = null, result = null, lease_expires_at = null, claimed_at = null,
      started_at = null, finished_at = null
    where a.id = any(array(select f.id from jobsys.job_assignments f
                           where f.job_id = p_job_id and f.status = 'failed'
                           order by f.id for no key update))
    returning a.id, a.device_id
  ), lowered as (
    select d.id, min(r.id) as floor from jobsys.devices d join retried r on r.device_id = d.id
    group by d.id
  ), locked as (
    select d.id, l.floor from jobsys.devices d join lowered l on l.id = d.id
    where d.queue_floor > l.floor order by d.id for no key update of d
  ), moved as (
    update jobsys.devices d set queue_floor = k.floor from locked k where d.id = k.id
  )
  select count(*) into v_retried from retried;
  perform jobsys.audit('retry', 'job', p_job_id::text, jsonb_build_object('retried', v_retried));
  if v_job.status = 'incomplete' then
    update jobsys.jobs set status = 'active', end_reason = null, finished_at = null, waiting_since = null
    where id = p_job_id;
  end if;
  v_job := jobsys.apply_counts(p_job_id, 0, 0, 0, -v_retried, 0, true);
  perform jobsys.emit(jobsys.worker_topic(w.worker_id), 'assignment',
                      jsonb_build_object('job_id', p_job_id, 'count', w.n))
  from (select d.worker_id, count(*) as n from jobsys.job_assignments a
        join jobsys.devices d on d.id = a.device_id
        where a.job_id = p_job_id and a.status = 'pending' and d.worker_id is not null
        group by d.worker_id) w;
  return jsonb_build_object('job', jobsys.job_json(v_job), 'retried', v_retried);
end
$$;
comment on function jobsys.retry_job(uuid) is
  'Operators: re-queue the failed runs of a job (attempt series restarts at 1) and re-open an incomplete job as active; JS409 when nothing failed, or when the job ended at its time limit (clone it instead).';

-- Clone: a new job with the same settings, created and distributed now.
create or replace function jobsys.clone_job(p_job_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
begin
  perform jobsys.require_operator();
  select * into v_job from jobsys.jobs where id = p_job_id;
  if not found then
    perform jobsys.raise_error('JS404', 'job not found', jsonb_build_object('job_id', p_job_id));
  end if;
  perform jobsys.audit('clone', 'job', p_job_id::text);  -- the new job's own entry is its create
  return jobsys.create_job(v_job.target_url, v_job.duration_sec, v_job.target_type, v_job.target_value,
    v_job.title, v_job.action, v_job.max_attempts, v_job.timeout_sec, v_job.topup_grace_sec, null,
    v_job.device_labels, v_job.priority);
end
$$;
comment on function jobsys.clone_job(uuid) is
  'Operators: create a new job with the settings of another (URL, duration, target, device labels, title, attempts, time limit, grace, priority), distributed now.';

-- Reads for the dashboard and API -------------------------------------------------------
-- p_cutoff: jobsys.healthy_cutoff(), computed once by the caller rather than once per device.
-- What an operator decided shows first, then what a person must fix on the phone
-- (unauthorized, error), then offline; a phone low on battery or too hot that still runs
-- its last run shows busy.
-- The status rule, on the columns it reads: plain SQL over columns, so the planner inlines
-- it where the device lists filter and count the whole fleet (a call with the whole row
-- cost five times the scan on 10,000 devices).
create or replace function jobsys.device_status_of(p_state text, p_worker_id uuid, p_last_heartbeat_at timestamptz,
  p_running_assignment_id bigint, p_cutoff timestamptz) returns text
  language sql immutable
  as $$
  select case
    when p_state in ('disabled', 'draining', 'quarantined', 'unauthorized', 'error') then p_state
    when p_state = 'offline' or p_worker_id is null or p_last_heartbeat_at <= p_cutoff then 'offline'
    when p_running_assignment_id is not null then 'busy'
    when p_state in ('low_battery', 'overheated') then p_state
    else 'idle' end
$$;
comment on function jobsys.device_status_of(text, uuid, timestamp with time zone, bigint, timestamp with time zone) is
  'The status rule of jobsys.device_status on the columns it reads (state, worker_id, last_heartbeat_at, running_assignment_id), inlined by the planner: the device lists'' filters and counts over the whole fleet.';

create or replace function jobsys.device_status(d jobsys.devices, p_cutoff timestamptz) returns text
  language sql stable
  set search_path = jobsys, pg_temp
  as $$
  select jobsys.device_status_of(d.state, d.worker_id, d.last_heartbeat_at, d.running_assignment_id, p_cutoff)
$$;
comment on function jobsys.device_status(jobsys.devices, timestamp with time zone) is
  'The status the dashboard shows for a device: disabled, draining, quarantined, unauthorized, error, offline, busy, low_battery, overheated or idle. p_cutoff is jobsys.healthy_cutoff(), computed once by the caller.';

-- p_q is searched for as typed: strpos on lower-cased text is a plain case-insensitive
-- substring test, so % and _ are not wildcards and nothing needs escaping.
create or replace function jobsys.list_jobs(p_status text default null, p_q text default null,
  p_limit integer default 100, p_offset integer default 0)
  returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform jobsys.require_viewer();
  if p_status is not null and p_status not in ('scheduled', 'active', 'paused', 'completed', 'incomplete', 'cancelled') then
    perform jobsys.raise_error('JS400', 'status must be scheduled, active, paused, completed, incomplete or cancelled',
      '{"field": "status"}');
  end if;
  if p_limit is null or p_limit not between 1 and 1000 or p_offset is null or p_offset < 0 then
    perform jobsys.raise_error('JS400', 'limit must be 1-1000 and offset at least 0', '{"field": "limit"}');
  end if;
  return (
    select jsonb_build_object(
      'jobs', coalesce((select jsonb_agg(jobsys.job_json(j) order by j.created_at desc, j.id)
                        from (select * from jobsys.jobs j
                              where (p_status is null or j.status = p_status)
                                and (p_q is null or strpos(lower(j.title), lower(p_q)) > 0
                                     or strpos(lower(j.target_url), lower(p_q)) > 0)
                              order by j.created_at desc, j.id
                              limit p_limit offset p_offset) j), '[]'),
      'summary', (select jsonb_build_object(
                    'total', count(*),
                    'scheduled', count(*) filter (where status = 'scheduled'),
                    'active', count(*) filter (where status = 'active'),
                    'paused', count(*) filter (where status = 'paused'),
                    'completed', count(*) filter (where status = 'completed'),
                    'incomplete', count(*) filter (where status = 'incomplete'),
                    'cancelled', count(*) filter (where status = 'cancelled'),
                    'waiting_for_devices', count(*) filter (where status = 'active' and waiting_since is not null))
                  from jobsys.jobs)));
end
$$;
comment on function jobsys.list_jobs(text, text, integer, integer) is
  'Operators: a page of jobs, newest first, with counts per status. p_q searches title and URL for the text as typed (case-insensitive; % and _ are not wildcards).';

create or replace function jobsys.get_job(p_job_id uuid) returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_job jobsys.jobs;
begin
  perform jobsys.require_viewer();
  select * into v_job from jobsys.jobs where id = p_job_id;
  if not found then
    perform jobsys.raise_error('JS404', 'job not found', jsonb_build_object('job_id', p_job_id));
  end if;
  return jobsys.job_json(v_job) || jsonb_build_object('assignments', coalesce((
    select jsonb_agg(jsonb_build_object(
      'id', a.id, 'device_id', a.device_id, 'serial', d.serial, 'worker_id', d.worker_id,
      'worker_name', w.name,
      'status', a.status, 'attempt', a.attempt, 'lease_expires_at', a.lease_expires_at,
      'created_at', a.created_at, 'started_at', a.started_at, 'finished_at', a.finished_at,
      'result', a.result, 'error', a.error) order by d.serial)
    from jobsys.job_assignments a join jobsys.devices d on d.id = a.device_id
    left join jobsys.workers w on w.id = coalesce(a.worker_id, d.worker_id)
    where a.job_id = p_job_id), '[]'));
end
$$;
comment on function jobsys.get_job(uuid) is
  'Operators: one job with its assignments (worker_name: the session that ran it, else the device''s).';

create or replace function jobsys.list_devices() returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
declare
  v_cutoff timestamptz := jobsys.healthy_cutoff();
begin
  perform jobsys.require_viewer();
  return (
    with rows as (
      select jobsys.device_json(d, v_cutoff) as device, w.name as worker_name
      from jobsys.devices d
      left join jobsys.workers w on w.id = d.worker_id
    )
    select jsonb_build_object(
      'devices', coalesce(jsonb_agg(r.device order by r.worker_name, r.device ->> 'serial'), '[]'),
      'summary', jsonb_build_object(
        'total', count(*),
        'connected', count(*) filter (where r.device ->> 'status' in ('idle', 'busy')),
        'idle', count(*) filter (where r.device ->> 'status' = 'idle'),
        'busy', count(*) filter (where r.device ->> 'status' = 'busy'),
        'offline', count(*) filter (where r.device ->> 'status' = 'offline'),
        'error', count(*) filter (where r.device ->> 'status' = 'error'),
        'unauthorized', count(*) filter (where r.device ->> 'status' = 'unauthorized'),
        'disabled', count(*) filter (where r.device ->> 'status' = 'disabled'),
        'draining', count(*) filter (where r.device ->> 'status' = 'draining'),
        'quarantined', count(*) filter (where r.device ->> 'status' = 'quarantined'),
        'low_battery', count(*) filter (where r.device ->> 'status' = 'low_battery'),
        'overheated', count(*) filter (where r.device ->> 'status' = 'overheated')))
    from rows r);
end
$$;
comment on function jobsys.list_devices() is
  'Operators: every device (jobsys.device_json: status and why, labels, vitals, worker, current job, the last session refused it) with counts per status.';
