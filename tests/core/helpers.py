"""Builders for core tests: workers with devices, through the real functions."""

from __future__ import annotations

from jobsys.models import DeviceReport, WorkerSession
from jobsys.system import JobSystem


async def add_worker(jobs: JobSystem, name: str, devices: int, *, state: str = "online") -> WorkerSession:
    reports = [DeviceReport(serial=f"{name}-{i:03d}", state=state, simulated=True) for i in range(devices)]  # type: ignore[arg-type]
    return await jobs.register_worker(name, reports, hostname="test")
