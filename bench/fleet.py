"""A simulated fleet for the benchmarks, registered through the real API (register_worker),
and the untimed upkeep between runs."""

from __future__ import annotations

import dataclasses
import uuid

import psycopg

from bench.sql import query
from jobsys.models import DeviceReport
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


async def tidy(url: str) -> None:
    """Vacuum so each timed run starts from the same table state, not from the dead rows
    of the run before it."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(query("vacuum_analyze"))


async def set_setting(url: str, key: str, value: float) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(query("settings_update"), {"key": key, "value": value})
