"""Baseline: the original plan's fan-out (spec section 8), against jobsys's own tables.

A Next.js API inserted the job and a JobDistributor selected the idle devices into the
application, bulk-inserted one assignment per device, and emitted one Socket.io
`job:assign` per assignment. Here, as generously as that design allows: one transaction for
select + insert + counters, COPY for the rows (faster than the HTTP insert it had), and the
pushes pipelined in one transaction (pg_notify in place of Socket.io, one per assignment).
"""

from __future__ import annotations

import json
import uuid
from typing import cast

import psycopg
from psycopg.rows import TupleRow

from bench.sql import query
from jobsys.events import worker_topic

TITLE = "bench fan-out (original plan)"


async def fan_out(conn: psycopg.AsyncConnection[TupleRow], target_url: str, duration_sec: int) -> tuple[uuid.UUID, int]:
    """Create and distribute one job to every idle healthy device; return (job id, assigned)."""
    async with conn.transaction():
        cur = await conn.execute(query("stale_after_sec"))
        stale_after = (await cur.fetchone() or (30.0,))[0]
        cur = await conn.execute(query("plan_idle_devices"), {"stale_after_sec": stale_after})
        devices = cast(list[tuple[uuid.UUID, uuid.UUID]], await cur.fetchall())
        cur = await conn.execute(query("plan_insert_job"), {
            "title": TITLE, "target_url": target_url, "duration_sec": duration_sec,
            "target_count": len(devices)})
        row = await cur.fetchone()
        assert row is not None
        job_id: uuid.UUID = row[0]
        async with conn.cursor().copy(query("plan_copy_assignments")) as copy:
            for device_id, _worker in devices:
                await copy.write_row((job_id, device_id))
        await conn.execute(query("plan_set_counters"), {"assigned": len(devices), "job_id": job_id})
    # After the rows are stored, one push per assignment, as the distributor's emit loop did.
    async with conn.transaction(), conn.cursor() as cur:
        await cur.executemany(query("plan_push"), [
            {"topic": worker_topic(worker_id), "message": json.dumps({
                "event": "assignment",
                "payload": {"job_id": str(job_id), "device_id": str(device_id),
                            "target_url": target_url, "duration_sec": duration_sec}})}
            for device_id, worker_id in devices])
    return job_id, len(devices)
