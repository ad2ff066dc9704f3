-- jobsys: issue 21, readiness: the newest migration applied, for GET /readyz.

create or replace function jobsys.schema_version() returns text
  language plpgsql stable security definer
  set search_path = jobsys, pg_temp
  as $$
begin
  if to_regclass('supabase_migrations.schema_migrations') is null then
    return null;
  end if;
  return (select max(version) from supabase_migrations.schema_migrations);
end
$$;
comment on function jobsys.schema_version() is
  'The newest migration applied to this database (readiness probes compare it with the one the running jobsys ships); null when none was recorded.';
revoke execute on function jobsys.schema_version() from public;
grant execute on function jobsys.schema_version() to anon, authenticated, service_role;
