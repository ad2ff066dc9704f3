-- jobsys: list_jobs searches for the text as typed. It used ILIKE '%' || q || '%', so a
-- search for "50%" or "a_b" treated % and _ as wildcards ("a_b" also found "axb").
-- strpos on lower-cased text is a plain case-insensitive substring test, nothing to escape.
create or replace function jobsys.list_jobs(p_status text default null, p_q text default null,
  p_limit integer default 100, p_offset integer default 0)
  returns jsonb
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  perform jobsys.require_operator();
  if p_status is not null and p_status not in ('active', 'paused', 'completed', 'cancelled') then
    perform jobsys.raise_error('JS400', 'status must be active, paused, completed or cancelled', '{"field": "status"}');
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
                    'active', count(*) filter (where status = 'active'),
                    'paused', count(*) filter (where status = 'paused'),
                    'completed', count(*) filter (where status = 'completed'),
                    'cancelled', count(*) filter (where status = 'cancelled'))
                  from jobsys.jobs)));
end
$$;
