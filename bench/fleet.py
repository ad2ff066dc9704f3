"""A simulated fleet for the benchmarks, registered through the real API (register_worker),
and the untimed upkeep between runs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator

import psycopg

from bench.sql import query
from jobsys.models import ClaimedAssignment, DeviceReport, RunReport
from jobsys.system import JobSystem


@dataclasses.dataclass(frozen=True)
class Worker:
    id: uuid.UUID
    device_ids: list[uuid.UUID]


async def register(js: JobSystem, workers: int, devices_per_worker: int, prefix: str = "bench") -> list[Worker]:
    """`workers` worker sessions, each with its own simulated devices."""
    out = []
    for w in range(workers):
        reports = [DeviceReport(serial=f"{prefix}-{w:03d}-{d:06d}", model="sim", simulated=True)
                   for d in range(devices_per_worker)]
        session = await js.register_worker(f"{prefix}-worker-{w:03d}", reports, hostname="bench")
        out.append(Worker(session.worker_id, [d.id for d in session.devices]))
    return out


async def keep_alive(js: JobSystem, workers: list[Worker]) -> None:
    """Heartbeat every worker, so its devices stay healthy however long the runs take."""
    for worker in workers:
        await js.heartbeat(worker.id)


KEEP_ALIVE_EVERY_S = 5.0  # well inside stale_after_sec (30 s by default)


@contextlib.asynccontextmanager
async def kept_alive(js: JobSystem, workers: list[Worker]) -> AsyncIterator[None]:
    """Heartbeat the workers in the background while the block runs, for sections longer
    than the health window: once maintain() has marked a device stale, a heartbeat alone does
    not bring it back (a real worker registers again)."""

    async def beat() -> None:
        while True:
            await keep_alive(js, workers)
            await asyncio.sleep(KEEP_ALIVE_EVERY_S)

    task = asyncio.create_task(beat(), name="bench-keep-alive")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def tidy(url: str) -> None:
    """Vacuum so each timed run starts from the same table state, not from the dead rows
    of the run before it."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(query("vacuum_analyze"))


async def set_setting(url: str, key: str, value: float) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(query("settings_update"), {"key": key, "value": value})


EMPTY_CLAIM_RETRY_S = 0.001
STUCK_AFTER_S = 30.0


async def pending_runs(url: str) -> dict[uuid.UUID, int]:
    """Runs queued on each worker session's devices (untimed, before a timed run)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(query("pending_runs_per_worker"))
        return {worker_id: int(n) for worker_id, n in await cur.fetchall()}


def completed(runs: list[ClaimedAssignment]) -> list[RunReport]:
    """Reports of these runs as completed, as a worker sends them after its devices finish."""
    return [RunReport(assignment_id=run.assignment_id, attempt=run.attempt, outcome="completed",
                      result={"bench": True}) for run in runs]


async def work_off(js: JobSystem, worker: Worker, runs: int) -> tuple[int, float]:
    """Claim and start (one call), then report the claimed runs completed (one
    finish_assignments call), as the worker does, until `runs` runs are done; (runs done,
    seconds spent inside claim_assignments). An empty claim is tried again: a heartbeat that
    holds a device row makes the claim skip that device for the moment (SKIP LOCKED), and a
    real worker would claim again on its next wake-up."""
    done = 0
    in_claims = 0.0
    last_progress = time.monotonic()
    while done < runs:
        started = time.perf_counter()
        claimed = await js.claim_assignments(worker.id, start=True)
        in_claims += time.perf_counter() - started
        if not claimed:
            if time.monotonic() - last_progress > STUCK_AFTER_S:
                raise AssertionError(f"worker {worker.id}: {done} of {runs} runs done, nothing left to claim")
            await asyncio.sleep(EMPTY_CLAIM_RETRY_S)  # retry pacing, not synchronisation
            continue
        finished = await js.finish_assignments(worker.id, completed(claimed))
        done += sum(not f.stale for f in finished)
        last_progress = time.monotonic()
    return done, in_claims
