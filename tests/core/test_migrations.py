"""Migrations: idempotent, shipped in the wheel unchanged, and matching what the library calls."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import zipfile

from jobsys import migrations, rpc
from tests.support.paths import ROOT
from tests.support.postgres import Db


def test_migrate_is_idempotent(db_url: str, db: Db) -> None:
    assert migrations.migrate(db_url) == []  # the template already has them all
    versions = [row[0] for row in db.rows("select version from supabase_migrations.schema_migrations order by 1")]
    assert versions == [m.version for m in migrations.load_migrations(ROOT / "supabase" / "migrations")]


def test_wheel_ships_the_migrations_unchanged(tmp_path: pathlib.Path) -> None:
    subprocess.run([sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True)
    [wheel] = tmp_path.glob("*.whl")
    source = {p.name: p.read_bytes() for p in (ROOT / "supabase" / "migrations").glob("*.sql")}
    with zipfile.ZipFile(wheel) as archive:
        packaged = {pathlib.PurePosixPath(n).name: archive.read(n) for n in archive.namelist()
                    if n.startswith("jobsys/_migrations/") and n.endswith(".sql")}
        # The declarative schema (supabase/schemas, every object once) ships whole, README included.
        schemas_source = {p.name: p.read_bytes() for p in (ROOT / "supabase" / "schemas").iterdir() if p.is_file()}
        schemas_packaged = {pathlib.PurePosixPath(n).name: archive.read(n) for n in archive.namelist()
                            if n.startswith("jobsys/_schemas/") and not n.endswith("/")}
    assert packaged == source
    assert schemas_source, "supabase/schemas is empty"
    assert schemas_packaged == schemas_source


def test_every_function_the_library_calls_exists_with_these_arguments(db: Db) -> None:
    for function in rpc.ALL:
        rows = db.rows("""
            select p.proargnames[1:p.pronargs], array(select format_type(t, null) from unnest(p.proargtypes) t),
                   p.proretset, p.prosecdef, p.pronargdefaults
            from pg_proc p join pg_namespace n on n.oid = p.pronamespace
            where n.nspname = %s and p.proname = %s""", (rpc.SCHEMA, function.name))
        assert len(rows) == 1, f"{function.name}: expected one function, found {len(rows)}"
        names, types, returns_set, security_definer, defaults = rows[0]
        # The library may leave out trailing arguments that have defaults (create_job's p_max_attempts).
        listed = list(zip(names or [], types))[:len(function.params)]
        assert dict(listed) == function.params, function.name
        assert len(names or []) - len(function.params) <= defaults, function.name
        assert returns_set == function.returns_set, function.name
        assert security_definer, f"{function.name} must be security definer (it checks claims itself)"
