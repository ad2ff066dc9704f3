-- jobsys: the background jobs page reads what it shows in SQL. list_background_jobs takes a
-- search (p_q, the title as typed, case-insensitive), a sort column (p_sort) and several
-- statuses (p_statuses, e.g. 진행 중 = pending + running), pages in that order and counts what
-- matches, so the page no longer reads up to 1,000 rows per status and filters and sorts them
-- itself (partial results past 1,000 jobs). The old arguments keep their meaning and place.

drop function jobsys.list_background_jobs(text, integer, integer);
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

revoke execute on function jobsys.list_background_jobs(text, integer, integer, text, text, text[]) from public;
grant execute on function jobsys.list_background_jobs(text, integer, integer, text, text, text[])
  to authenticated, service_role;
