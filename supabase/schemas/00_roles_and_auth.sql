-- jobsys declarative schema: roles, the `auth` helpers, and the `jobsys` schema.
--
-- Everything lives in the `jobsys` schema so a project's own `jobs` table is never
-- touched. The same files apply to a Supabase project and to plain Postgres: this file
-- creates, on plain Postgres only, the roles and `auth` helpers that Supabase already has.

-- Supabase roles and auth helpers, created only where missing ------------------------
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
end
$$;

create schema if not exists auth;

do $$
begin
  -- PostgREST sets request.jwt.claims; older versions set request.jwt.claim.
  if to_regprocedure('auth.jwt()') is null then
    create function auth.jwt() returns jsonb
      language sql stable
      as $f$
        select coalesce(
          nullif(current_setting('request.jwt.claims', true), ''),
          nullif(current_setting('request.jwt.claim', true), ''),
          '{}')::jsonb
      $f$;
  end if;
  if to_regprocedure('auth.uid()') is null then
    create function auth.uid() returns uuid
      language sql stable
      as $f$ select nullif(auth.jwt() ->> 'sub', '')::uuid $f$;
  end if;
  -- Ours only where we created them; Supabase grants its own.
  if (select nspowner = (select oid from pg_roles where rolname = current_user)
      from pg_namespace where nspname = 'auth') then
    grant usage on schema auth to anon, authenticated, service_role;
    grant execute on function auth.jwt(), auth.uid() to anon, authenticated, service_role;
  end if;
end
$$;

create schema if not exists jobsys;
comment on schema jobsys is
  'jobsys: device jobs and AI batch jobs. Every state change is one function here, so the database is the single source of truth.';
