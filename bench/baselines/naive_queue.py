"""Baseline: the minimal Postgres queue of CALIBRATION.md, re-measured in the same run.

A SKIP LOCKED claim of the oldest pending task and a completion that bumps one counter
row per job: the least a queue with exact per-job counts can do. It has no start step (one
variant adds a bare one: as many transactions per cycle as a claim, a start and a complete
call), no device mutex, no leases, no authorization and no events, so it does less per
cycle than jobsys does.
"""

from __future__ import annotations

import psycopg
from psycopg.rows import TupleRow

from bench.sql import query


async def create(url: str, jobs: int, per_job: int) -> None:
    """Its tables, filled with `jobs` jobs of `per_job` tasks, oldest job first."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(query("naive_schema"))
        await conn.execute(query("naive_fill"), {"jobs": jobs, "per_job": per_job})


async def client(conn: psycopg.AsyncConnection[TupleRow], name: str, cycles: int, start: bool = False) -> int:
    """One client on its own connection: claim, (start,) complete, `cycles` times."""
    done = 0
    claim, begin, complete = query("naive_claim"), query("naive_start"), query("naive_complete")
    for _ in range(cycles):
        cur = await conn.execute(claim, {"worker": name})
        row = await cur.fetchone()
        if row is None:
            break
        if start:
            await conn.execute(begin, {"task_id": row[0]})
        await conn.execute(complete, {"task_id": row[0]})
        done += 1
    return done


async def completed(url: str) -> tuple[int, int]:
    """(completed tasks, sum of the job counters): equal when the counters are exact."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(query("naive_completed"))
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1] or 0)
