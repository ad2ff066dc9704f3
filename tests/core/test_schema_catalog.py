"""supabase/schemas (every object declared once, by domain) and supabase/migrations (the
upgrade path) must build the same database.

Two databases, one built by applying the schema files in name order (each in one
transaction), one by `jobsys.migrations.migrate`, then their catalogs are read, restricted to
what our SQL owns (every schema but the system ones and the supabase_migrations
bookkeeping), and compared kind by kind. A difference names the object and shows both sides.
"""

from __future__ import annotations

import difflib
import itertools
import os
import pathlib
import re
import shutil
from typing import Any, Iterator

import psycopg
import pytest
from psycopg import sql

from jobsys import migrations
from jobsys.embedded import database_url as url_for
from tests.support.paths import ROOT

SCHEMAS_DIR = ROOT / "supabase" / "schemas"
MIGRATIONS_DIR = ROOT / "supabase" / "migrations"
# The migrations a database made before the declarative schema existed has applied.
PRE_SCHEMA_MIGRATIONS = 10
MAX_OBJECTS_SHOWN = 8
MAX_DIFF_LINES = 14
MAX_VALUE_CHARS = 300

_names = itertools.count()

# Schemas our SQL owns: all but the system ones and the migration bookkeeping.
_OWN = """n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast', 'supabase_migrations')
          and n.nspname not like 'pg\\_temp\\_%' and n.nspname not like 'pg\\_toast\\_temp\\_%'"""

# One query per kind of object: (key, value) rows. ACLs are sorted: the order of grants is not
# part of what they mean.
CATALOG_QUERIES: dict[str, str] = {
    "schemas": f"""
        select n.nspname, jsonb_build_object(
                 'owner', pg_get_userbyid(n.nspowner),
                 'acl', (select array_agg(a::text order by a::text) from unnest(n.nspacl) a))
        from pg_namespace n where {_OWN}""",
    "relations": f"""
        select n.nspname || '.' || c.relname, jsonb_build_object(
                 'kind', c.relkind, 'persistence', c.relpersistence, 'options', c.reloptions,
                 'row_security', c.relrowsecurity, 'force_row_security', c.relforcerowsecurity,
                 'replica_identity', c.relreplident, 'owner', pg_get_userbyid(c.relowner),
                 'acl', (select array_agg(a::text order by a::text) from unnest(c.relacl) a))
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where {_OWN} and c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')""",
    "columns": f"""
        select n.nspname || '.' || c.relname || '.' || a.attname, jsonb_build_object(
                 'position', row_number() over (partition by c.oid order by a.attnum),
                 'type', format_type(a.atttypid, a.atttypmod), 'not_null', a.attnotnull,
                 'default', pg_get_expr(d.adbin, d.adrelid), 'identity', a.attidentity,
                 'generated', a.attgenerated, 'collation', a.attcollation::regcollation::text,
                 'acl', (select array_agg(x::text order by x::text) from unnest(a.attacl) x))
        from pg_attribute a
        join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
        left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
        where {_OWN} and c.relkind in ('r', 'p', 'v', 'm', 'f') and a.attnum > 0 and not a.attisdropped""",
    "constraints": f"""
        select n.nspname || '.' || coalesce(c.relname, t.typname) || '.' || k.conname,
               to_jsonb(pg_get_constraintdef(k.oid))
        from pg_constraint k join pg_namespace n on n.oid = k.connamespace
        left join pg_class c on c.oid = k.conrelid left join pg_type t on t.oid = k.contypid
        where {_OWN}""",
    "indexes": f"""
        select n.nspname || '.' || c.relname, to_jsonb(pg_get_indexdef(i.indexrelid))
        from pg_index i join pg_class c on c.oid = i.indexrelid join pg_namespace n on n.oid = c.relnamespace
        where {_OWN}""",
    "functions": f"""
        select n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
               jsonb_build_object(
                 'definition', pg_get_functiondef(p.oid), 'config', p.proconfig,
                 'security_definer', p.prosecdef, 'owner', pg_get_userbyid(p.proowner),
                 'acl', (select array_agg(a::text order by a::text) from unnest(p.proacl) a))
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where {_OWN} and p.prokind in ('f', 'p', 'w')""",
    "aggregates": f"""
        select n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
               to_jsonb(p.prokind::text)
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where {_OWN} and p.prokind = 'a'""",
    "triggers": f"""
        select n.nspname || '.' || c.relname || '.' || t.tgname,
               jsonb_build_object('definition', pg_get_triggerdef(t.oid), 'enabled', t.tgenabled)
        from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
        where {_OWN} and not t.tgisinternal""",
    "policies": """
        select p.schemaname || '.' || p.tablename || '.' || p.policyname, jsonb_build_object(
                 'permissive', p.permissive, 'roles', p.roles, 'command', p.cmd,
                 'using', p.qual, 'with_check', p.with_check)
        from pg_policies p
        where p.schemaname not in ('pg_catalog', 'information_schema', 'supabase_migrations')""",
    "types": f"""
        select n.nspname || '.' || t.typname, jsonb_build_object(
                 'kind', t.typtype, 'owner', pg_get_userbyid(t.typowner),
                 'labels', (select array_agg(e.enumlabel order by e.enumsortorder)
                            from pg_enum e where e.enumtypid = t.oid),
                 'base', case when t.typtype = 'd' then format_type(t.typbasetype, t.typtypmod) end,
                 'not_null', t.typnotnull, 'default', t.typdefault,
                 'acl', (select array_agg(a::text order by a::text) from unnest(t.typacl) a))
        from pg_type t join pg_namespace n on n.oid = t.typnamespace
        where {_OWN} and (t.typtype in ('e', 'd', 'r', 'm')
                          or (t.typtype = 'c' and (select c.relkind from pg_class c
                                                   where c.oid = t.typrelid) = 'c'))""",
    "sequences": """
        select s.schemaname || '.' || s.sequencename, jsonb_build_object(
                 'type', s.data_type::text, 'start', s.start_value, 'min', s.min_value,
                 'max', s.max_value, 'increment', s.increment_by, 'cycle', s.cycle, 'cache', s.cache_size,
                 'owned_by', (select c.relname || '.' || a.attname from pg_depend d
                              join pg_class c on c.oid = d.refobjid
                              join pg_attribute a on a.attrelid = d.refobjid and a.attnum = d.refobjsubid
                              where d.classid = 'pg_class'::regclass
                                and d.objid = format('%I.%I', s.schemaname, s.sequencename)::regclass
                                and d.deptype in ('a', 'i')))
        from pg_sequences s
        where s.schemaname not in ('pg_catalog', 'information_schema', 'supabase_migrations')""",
    "views": f"""
        select n.nspname || '.' || c.relname, to_jsonb(pg_get_viewdef(c.oid))
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where {_OWN} and c.relkind in ('v', 'm')""",
    # Every comment on a user object (pg_description), by what it describes.
    "comments": """
        select pg_describe_object(d.classoid, d.objoid, d.objsubid), to_jsonb(d.description)
        from pg_description d
        where d.objoid >= 16384
          and pg_describe_object(d.classoid, d.objoid, d.objsubid) not like '%supabase_migrations%'""",
    "default_privileges": """
        select coalesce(n.nspname, '*') || ':' || pg_get_userbyid(d.defaclrole) || ':' || d.defaclobjtype::text,
               to_jsonb((select array_agg(a::text order by a::text) from unnest(d.defaclacl) a))
        from pg_default_acl d left join pg_namespace n on n.oid = d.defaclnamespace""",
    "extensions": """
        select e.extname, jsonb_build_object('schema', e.extnamespace::regnamespace::text,
                                             'version', e.extversion)
        from pg_extension e where e.extname <> 'plpgsql'""",
    "publications": """
        select p.pubname, jsonb_build_object(
                 'all_tables', p.puballtables,
                 'tables', (select array_agg(r.schemaname || '.' || r.tablename order by 1)
                            from pg_publication_tables r where r.pubname = p.pubname
                              and r.schemaname <> 'supabase_migrations'))
        from pg_publication p""",
    # The roles our SQL grants to or names in policies (roles are per cluster, so the two
    # databases share them; test_schema_files_create_the_roles_the_migrations_create checks
    # the SQL that creates them).
    "roles": """
        select r.rolname, jsonb_build_object('login', r.rolcanlogin, 'inherit', r.rolinherit,
                                             'bypass_rls', r.rolbypassrls, 'superuser', r.rolsuper)
        from pg_roles r where r.rolname in ('anon', 'authenticated', 'service_role')""",
}


def read_catalog(url: str) -> dict[str, dict[str, Any]]:
    """Every kind of object, as {kind: {object name: what defines it}}, plus the rows of our
    tables (the seeded settings are part of the schema)."""
    catalog: dict[str, dict[str, Any]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for kind, query in CATALOG_QUERIES.items():
            rows = conn.execute(query).fetchall()
            catalog[kind] = dict(rows)
            assert len(catalog[kind]) == len(rows), f"{kind}: duplicate keys"
        tables = conn.execute(f"""
            select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where {_OWN} and c.relkind in ('r', 'p') order by 1, 2""").fetchall()
        catalog["rows"] = {
            f"{schema}.{table}": sorted(row[0] for row in conn.execute(
                sql.SQL("select to_jsonb(t)::text from {}.{} t").format(
                    sql.Identifier(schema), sql.Identifier(table))))
            for schema, table in tables}
    return catalog


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "..."


def _field_difference(field: str, left: Any, right: Any, labels: tuple[str, str]) -> list[str]:
    """A line diff for text of several lines (function bodies), the entries only on one side
    for lists, else both values."""
    if isinstance(left, str) and isinstance(right, str) and ("\n" in left or "\n" in right):
        diff = list(difflib.unified_diff(left.splitlines(), right.splitlines(), *labels, n=1, lineterm=""))
        hidden = len(diff) - MAX_DIFF_LINES
        return ([f"    {field}:"] + [f"      {line}" for line in diff[:MAX_DIFF_LINES]]
                + ([f"      ... {hidden} more lines of diff"] if hidden > 0 else []))
    if isinstance(left, list) and isinstance(right, list):  # ACLs, rows: the entries that differ
        left, right = [x for x in left if x not in right], [x for x in right if x not in left]
        return [f"    {field}: only in {labels[0]}: {_short(left)}",
                f"    {field}: only in {labels[1]}: {_short(right)}"]
    return [f"    {field}: {labels[0]}: {_short(left)}", f"    {field}: {labels[1]}: {_short(right)}"]


def _object_difference(name: str, left: Any, right: Any, labels: tuple[str, str]) -> list[str]:
    if isinstance(left, dict) and isinstance(right, dict):
        fields = [f for f in sorted(set(left) | set(right)) if left.get(f) != right.get(f)]
    else:
        fields, left, right = ["value"], {"value": left}, {"value": right}
    lines = [f"  {name}:"]
    for field in fields:
        lines.extend(_field_difference(field, left.get(field), right.get(field), labels))
    return lines


def catalog_differences(left: dict[str, dict[str, Any]], right: dict[str, dict[str, Any]],
                        left_label: str, right_label: str) -> str:
    """A short report, per kind of object, of what is only on one side or differs; '' if equal."""
    report: list[str] = []
    for kind in left:
        a, b = left[kind], right[kind]
        only_left = sorted(set(a) - set(b))
        only_right = sorted(set(b) - set(a))
        changed = sorted(k for k in set(a) & set(b) if a[k] != b[k])
        if not (only_left or only_right or changed):
            continue
        report.append(f"{kind}:")
        if only_left:
            report.append(f"  only in {left_label}: {', '.join(only_left[:MAX_OBJECTS_SHOWN])}"
                          + (" ..." if len(only_left) > MAX_OBJECTS_SHOWN else ""))
        if only_right:
            report.append(f"  only in {right_label}: {', '.join(only_right[:MAX_OBJECTS_SHOWN])}"
                          + (" ..." if len(only_right) > MAX_OBJECTS_SHOWN else ""))
        for name in changed[:MAX_OBJECTS_SHOWN]:
            report.extend(_object_difference(name, a[name], b[name], (left_label, right_label)))
        if len(changed) > MAX_OBJECTS_SHOWN:
            report.append(f"  ... and {len(changed) - MAX_OBJECTS_SHOWN} more changed")
    return "\n".join(report)


@pytest.fixture(scope="module")
def new_database(pg_server: Any) -> Iterator[Any]:
    """Makes empty databases with unique names on the session server; drops them afterwards."""
    admin = pg_server.get_uri()
    made: list[str] = []

    def make() -> str:
        name = f"schema_catalog_{os.getpid()}_{next(_names)}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        made.append(name)
        return url_for(admin, name)

    yield make
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in made:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


def apply_schema_files(url: str, directory: pathlib.Path = SCHEMAS_DIR) -> None:
    """What a fresh declarative build does: every file, in name order, one transaction each."""
    with psycopg.connect(url, autocommit=True) as conn:
        for path in sorted(directory.glob("*.sql")):
            try:
                with conn.transaction():
                    conn.execute(path.read_text(encoding="utf-8"))
            except psycopg.Error as exc:
                raise AssertionError(f"{path.name} does not apply to an empty database: {exc}") from exc


@pytest.fixture(scope="module")
def declared_url(new_database: Any) -> str:
    url = new_database()
    apply_schema_files(url)
    return url


@pytest.fixture(scope="module")
def migrated_catalog(new_database: Any) -> dict[str, dict[str, Any]]:
    url = new_database()
    migrations.migrate(url)
    return read_catalog(url)


def test_schema_files_build_the_catalog_the_migrations_build(
        declared_url: str, migrated_catalog: dict[str, dict[str, Any]]) -> None:
    declared = read_catalog(declared_url)
    assert declared["functions"], "the catalog query found no functions"
    differences = catalog_differences(declared, migrated_catalog, "schemas", "migrations")
    if differences:
        pytest.fail("supabase/schemas and supabase/migrations build different databases (a change edits "
                    "the schema file AND adds a migration):\n" + differences, pytrace=False)


def test_upgrading_an_existing_database_reaches_the_same_catalog(
        new_database: Any, migrated_catalog: dict[str, dict[str, Any]], tmp_path: pathlib.Path) -> None:
    """A database made before the declarative schema (the first ten migrations), migrated
    with the full set, ends where a fresh full migrate does."""
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql"))[:PRE_SCHEMA_MIGRATIONS]:
        shutil.copy(path, earlier / path.name)
    url = new_database()
    assert len(migrations.migrate(url, directory=earlier)) == PRE_SCHEMA_MIGRATIONS
    assert migrations.migrate(url), "the full set added nothing to a database made by the first ten migrations"
    differences = catalog_differences(read_catalog(url), migrated_catalog, "upgraded", "fresh")
    if differences:
        pytest.fail("upgrading an existing database does not reach the fresh catalog:\n" + differences,
                    pytrace=False)


def test_every_jobsys_table_and_function_says_why(declared_url: str) -> None:
    with psycopg.connect(declared_url, autocommit=True) as conn:
        missing = [row[0] for row in conn.execute("""
            select c.oid::regclass::text from pg_class c
            where c.relnamespace = 'jobsys'::regnamespace and c.relkind = 'r'
              and obj_description(c.oid, 'pg_class') is null
            union all
            select p.oid::regprocedure::text from pg_proc p
            where p.pronamespace = 'jobsys'::regnamespace and obj_description(p.oid, 'pg_proc') is null
            order by 1""")]
    assert not missing, f"no `comment on` for: {', '.join(missing)}"


_FUNCTION_RE = re.compile(r"\bcreate\s+(?:or\s+replace\s+)?function\s+([\w.\"]+)\s*\(", re.IGNORECASE)
_ROLE_RE = re.compile(r"\bcreate\s+role\s+([^;]+);", re.IGNORECASE)


def _without_comments(text: str) -> str:
    return re.sub(r"--[^\n]*", "", text)


def test_every_function_is_declared_exactly_once() -> None:
    counts: dict[str, list[str]] = {}
    for path in sorted(SCHEMAS_DIR.glob("*.sql")):
        for name in _FUNCTION_RE.findall(_without_comments(path.read_text(encoding="utf-8"))):
            counts.setdefault(name.lower(), []).append(path.name)
    assert counts, "no function found under supabase/schemas"
    repeated = {name: files for name, files in counts.items() if len(files) > 1}
    assert not repeated, f"functions declared more than once under supabase/schemas: {repeated}"


def test_schema_files_create_the_roles_the_migrations_create() -> None:
    """Roles belong to the cluster, not to one database: both test databases see the same ones,
    so the catalog comparison cannot tell who created them. Compare the statements instead."""
    def roles(directory: pathlib.Path) -> list[str]:
        return sorted(" ".join(m.split()).lower() for path in sorted(directory.glob("*.sql"))
                      for m in _ROLE_RE.findall(_without_comments(path.read_text(encoding="utf-8"))))
    assert roles(SCHEMAS_DIR) == roles(MIGRATIONS_DIR)
    assert roles(SCHEMAS_DIR), "no create role found"
