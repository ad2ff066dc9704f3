"""The upkeep loop of `jobsys up` and `jobsys dashboard`: with no worker heartbeating,
expired leases are still rescued, stale devices marked and throttled progress events
still get their trailing update."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib

from jobsys import errors
from jobsys.system import JobSystem

log = logging.getLogger("jobsys.upkeep")

UPKEEP_INTERVAL_S = 1.0  # rescue / stale marking / top-up this often
SWEEP_INTERVAL_S = 600.0  # the hub's screenshots of runs that no longer exist go this often


async def upkeep(jobs: JobSystem) -> None:
    while True:
        with contextlib.suppress(errors.JobsysError):
            await jobs.maintain()
        await asyncio.sleep(UPKEEP_INTERVAL_S)  # pacing of a periodic task


async def sweep_screenshots(jobs: JobSystem, directory: pathlib.Path) -> None:
    """The hub's screenshots of deleted or purged runs go, every SWEEP_INTERVAL_S."""
    from jobsys_hub.evidence import sweep

    while True:
        with contextlib.suppress(errors.JobsysError):
            removed = await sweep(jobs, directory)
            if removed:
                log.info("screenshots_swept removed=%d", removed)
        await asyncio.sleep(SWEEP_INTERVAL_S)  # pacing of a periodic task
