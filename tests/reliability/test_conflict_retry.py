"""The Postgres transport retries a call that lost a deadlock (40P01) or a serialization
failure (40001), and nothing else. Safe because every call is one function in one autocommit
transaction: Postgres rolled the loser back whole.

The deadlock here is a real one, detected by Postgres: a test function takes lock 1, waits at
a gate, then takes lock 2, while another session holds 2 and asks for 1. The other session's
deadlock_timeout is long and the function's short, so the call through the transport is the
one Postgres aborts; the transport runs it again and it succeeds. The storm
(test_storm.py) counts how often this happens under load."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import psycopg
import pytest

from jobsys import IllegalTransition, TransportError, rpc
from jobsys.transport.postgres import (
    CONFLICT_BACKOFF_MAX_S,
    RETRIES_ON_CONFLICT,
    PostgresTransport,
    conflict_backoff_s,
)
from tests.support.postgres import Db
from tests.support.waiting import wait_until

FIRST, SECOND, GATE = 801, 802, 803  # advisory lock keys
LOCK_PAIR = rpc.SqlFunction("test_lock_pair", {"p_first": "bigint", "p_second": "bigint", "p_gate": "bigint"})
FAIL_FIRST_CALLS = rpc.SqlFunction("test_fail_first_calls", {"p_sqlstate": "text", "p_failures": "integer"})

TEST_FUNCTIONS = """
create sequence jobsys.test_calls;
create table jobsys.test_effects (id serial primary key);

-- Records an effect, takes p_first, waits at the gate, takes p_second. A short
-- deadlock_timeout while it runs makes it the one Postgres aborts.
create function jobsys.test_lock_pair(p_first bigint, p_second bigint, p_gate bigint) returns bigint
  language plpgsql
  set deadlock_timeout = '100ms'
  as $$
begin
  perform nextval('jobsys.test_calls');  -- a sequence is not rolled back: counts every run
  insert into jobsys.test_effects default values;
  perform pg_advisory_xact_lock(p_first);
  perform pg_advisory_xact_lock_shared(p_gate);
  perform pg_advisory_xact_lock(p_second);
  return (select count(*) from jobsys.test_effects);
end
$$;

-- Raises p_sqlstate on its first p_failures runs, then returns the number of runs.
create function jobsys.test_fail_first_calls(p_sqlstate text, p_failures integer) returns bigint
  language plpgsql
  as $$
declare
  v_call bigint := nextval('jobsys.test_calls');
begin
  insert into jobsys.test_effects default values;
  if v_call <= p_failures then
    raise exception 'forced %', p_sqlstate using errcode = p_sqlstate;
  end if;
  return v_call;
end
$$;
"""


@pytest.fixture
async def transport(db_url: str, db: Db) -> AsyncIterator[PostgresTransport]:
    db.run(TEST_FUNCTIONS)
    async with PostgresTransport(db_url, push=False) as opened:
        yield opened


def waiting_on(db: Db, key: int) -> bool:
    return bool(db.value("select count(*) from pg_locks where locktype = 'advisory' and objid = %s"
                         " and not granted", (key,)))


async def test_a_real_deadlock_is_retried_inside_and_the_call_succeeds(
        transport: PostgresTransport, db: Db) -> None:
    async with await psycopg.AsyncConnection.connect(db.url) as gate, \
            await psycopg.AsyncConnection.connect(db.url) as other:
        await gate.execute("select pg_advisory_xact_lock(%s)", (GATE,))
        await other.execute("set deadlock_timeout = '10min'")  # never the one to detect it
        await other.execute("select pg_advisory_xact_lock(%s)", (SECOND,))

        call = asyncio.create_task(transport.call(
            LOCK_PAIR, {"p_first": FIRST, "p_second": SECOND, "p_gate": GATE}))
        await wait_until(lambda: waiting_on(db, GATE), what="the call holding lock 1, waiting at the gate")
        other_wants_first = asyncio.create_task(other.execute("select pg_advisory_xact_lock(%s)", (FIRST,)))
        await wait_until(lambda: waiting_on(db, FIRST), what="the other session waiting for lock 1")
        await gate.commit()  # the call goes on to lock 2, held by the other session: a deadlock

        await other_wants_first  # Postgres aborted the call, which released lock 1
        await other.commit()
        effects = await asyncio.wait_for(call, timeout=30)

    assert transport.conflicts_retried == {"40P01": 1}
    assert db.value("select last_value from jobsys.test_calls") == 2  # the function ran twice...
    assert effects == 1 == db.value("select count(*) from jobsys.test_effects")  # ...and took effect once


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
async def test_conflicts_are_retried_until_one_run_succeeds(
        transport: PostgresTransport, db: Db, sqlstate: str) -> None:
    runs = await transport.call(FAIL_FIRST_CALLS, {"p_sqlstate": sqlstate, "p_failures": 2})
    assert runs == 3
    assert transport.conflicts_retried == {sqlstate: 2}
    assert db.value("select count(*) from jobsys.test_effects") == 1  # failed runs left nothing


async def test_endless_conflicts_end_as_a_transport_error(transport: PostgresTransport, db: Db) -> None:
    with pytest.raises(TransportError, match="too much contention"):
        await transport.call(FAIL_FIRST_CALLS, {"p_sqlstate": "40001", "p_failures": 1000})
    assert db.value("select last_value from jobsys.test_calls") == RETRIES_ON_CONFLICT + 1
    assert db.value("select count(*) from jobsys.test_effects") == 0


async def test_other_errors_are_not_retried(transport: PostgresTransport, db: Db) -> None:
    with pytest.raises(IllegalTransition):
        await transport.call(FAIL_FIRST_CALLS, {"p_sqlstate": "JS409", "p_failures": 1000})
    assert db.value("select last_value from jobsys.test_calls") == 1
    assert transport.conflicts_retried == {}


def test_backoff_is_jittered_and_bounded() -> None:
    waits = [conflict_backoff_s(attempt) for attempt in range(RETRIES_ON_CONFLICT) for _ in range(50)]
    assert all(0 <= wait <= CONFLICT_BACKOFF_MAX_S for wait in waits)
    assert len(set(waits)) > 1
