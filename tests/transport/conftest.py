"""Both transports against the same real test database.

Postgres transport: psycopg with the identity set per session (`-c role=... -c
request.jwt.claims=...`), the GUCs PostgREST sets per request. Supabase transport:
supabase-py against our PostgREST double (respx, forwarding each rpc to the test
database) and our Realtime double (websockets on loopback, fed from realtime.messages,
joins authorized by the migration's RLS policies). The minimal `realtime` and `storage`
shapes are created in the test database, then migration 20261122000700 is applied again
so its guarded blocks run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
from typing import Any, AsyncIterator, Awaitable, Callable

import psycopg
import pytest
import respx
from psycopg import conninfo

from jobsys.connect import connect_hub, connect_supabase
from jobsys.system import JobSystem
from jobsys.transport.postgres import PostgresTransport
from jobsys.transport.realtime_watchdog import RealtimeSettings
from tests.support.paths import ROOT
from tests.support.hub import running_hub
from tests.support.postgres import Db
from tests.transport.postgrest_double import RPC_PREFIX, PostgrestDouble, exposed_schemas
from tests.transport.realtime_double import RealtimeDouble, db_authorizer
from tests.transport.tokens import ANON, Identity

SQL_DIR = pathlib.Path(__file__).parent / "sql"
REALTIME_MIGRATION = ROOT / "supabase" / "migrations" / "20261122000700_jobsys_realtime_and_storage.sql"
# Later migrations that redefine what REALTIME_MIGRATION defines: applied again after it.
REALTIME_FOLLOW_UPS = [ROOT / "supabase" / "migrations" / "20261207002200_jobsys_runner_push.sql"]
# Short waits so fault tests finish quickly; production defaults are in RealtimeSettings.
FAST_REALTIME = RealtimeSettings(reconnect_min_s=0.05, reconnect_max_s=0.2, join_timeout_s=1.0,
                                 check_interval_s=0.5)


def install_supabase_shapes(db_url: str) -> None:
    """realtime + storage minimal shapes, then the realtime/storage migration again (and
    the later ones that redefine its functions, so the database ends as migrated)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute((SQL_DIR / "realtime_shape.sql").read_text(encoding="utf-8"))
        conn.execute((SQL_DIR / "storage_shape.sql").read_text(encoding="utf-8"))
        for migration in [REALTIME_MIGRATION, *REALTIME_FOLLOW_UPS]:
            conn.execute(migration.read_text(encoding="utf-8"))


@pytest.fixture
def supabase_db(db_url: str) -> str:
    install_supabase_shapes(db_url)
    return db_url


@dataclasses.dataclass
class SupabaseDoubles:
    url: str
    realtime: RealtimeDouble
    postgrest: PostgrestDouble
    router: respx.MockRouter

    async def connect(self, identity: Identity, *, push: bool = True,
                      realtime: RealtimeSettings = FAST_REALTIME) -> JobSystem:
        return await connect_supabase(self.url, ANON.token, access_token=identity.token, push=push,
                                      realtime=realtime)


@contextlib.asynccontextmanager
async def start_doubles(db_url: str) -> AsyncIterator[SupabaseDoubles]:
    install_supabase_shapes(db_url)
    realtime = RealtimeDouble(authorize=db_authorizer(db_url))
    await realtime.start()
    await realtime.feed_from(db_url)
    postgrest = PostgrestDouble(db_url, exposed_schemas(ROOT / "supabase" / "config.toml"))
    await postgrest.open()
    try:
        with respx.mock(base_url=realtime.url, assert_all_called=False) as router:
            router.post(path__startswith=RPC_PREFIX, name="rpc").mock(side_effect=postgrest)
            yield SupabaseDoubles(realtime.url, realtime, postgrest, router)
    finally:
        await postgrest.close()
        await realtime.aclose()


@pytest.fixture
async def doubles(db_url: str) -> AsyncIterator[SupabaseDoubles]:
    async with start_doubles(db_url) as started:
        yield started


def postgres_conninfo(db_url: str, identity: Identity) -> str:
    claims = json.dumps(identity.claims, separators=(",", ":"))
    return conninfo.make_conninfo(db_url, options=f"-c role={identity.db_role} -c request.jwt.claims={claims}")


@dataclasses.dataclass
class Sides:
    """One transport, any identity: `await sides.as_(identity)` is that user's JobSystem."""

    kind: str
    db: Db
    _open: Callable[[Identity], Awaitable[JobSystem]]
    _opened: dict[str, JobSystem] = dataclasses.field(default_factory=dict)

    async def as_(self, identity: Identity) -> JobSystem:
        key = json.dumps(identity.claims, sort_keys=True)
        if key not in self._opened:
            self._opened[key] = await self._open(identity)
        return self._opened[key]

    async def close(self) -> None:
        for system in self._opened.values():
            await system.close()


@pytest.fixture(params=["postgres", "supabase", "hub"])
async def sides(request: pytest.FixtureRequest, db_url: str, db: Db,
                tmp_path: pathlib.Path) -> AsyncIterator[Sides]:
    async def open_postgres(identity: Identity) -> JobSystem:
        return JobSystem(await PostgresTransport(postgres_conninfo(db_url, identity)).open())

    if request.param == "postgres":
        opened = Sides("postgres", db, open_postgres)
        yield opened
        await opened.close()
        return
    if request.param == "hub":
        # Workers through the hub with their own worker accounts; the hub serves workers
        # only, so every other identity calls as on the Postgres side.
        async with running_hub(db_url, tmp_path) as hub:
            async def open_hub(identity: Identity) -> JobSystem:
                if (identity.claims.get("app_metadata") or {}).get("jobsys_role") != "worker":
                    return await open_postgres(identity)
                return await connect_hub(hub.url, await hub.enrol(identity.name))
            opened = Sides("hub", db, open_hub)
            yield opened
            await opened.close()
        return
    async with start_doubles(db_url) as started:
        opened = Sides("supabase", db, started.connect)
        yield opened
        await opened.close()


def rpc_calls(doubles: SupabaseDoubles, function: str) -> list[Any]:
    return [c for c in doubles.postgrest.calls if c.function == function]
