"""The upkeep loop of `jobsys up` and `jobsys dashboard`: with no worker heartbeating,
expired leases are still rescued, stale devices marked and throttled progress events
still get their trailing update."""

from __future__ import annotations

import asyncio
import contextlib

from jobsys import errors
from jobsys.system import JobSystem

UPKEEP_INTERVAL_S = 1.0  # rescue / stale marking / top-up this often


async def upkeep(jobs: JobSystem) -> None:
    while True:
        with contextlib.suppress(errors.JobsysError):
            await jobs.maintain()
        await asyncio.sleep(UPKEEP_INTERVAL_S)  # pacing of a periodic task
