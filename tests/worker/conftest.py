"""A worker running in-process against the test database."""

from __future__ import annotations

import asyncio
import pathlib
from typing import AsyncIterator, Awaitable, Callable

import pytest

from jobsys.system import JobSystem
from tests.conftest import wait_until
from worker.agent import Worker
from worker.drivers.sim import SimDriver
from worker.options import WorkerOptions

StartWorker = Callable[..., Awaitable[Worker]]


@pytest.fixture
async def start_worker(db_url: str, tmp_path: pathlib.Path) -> AsyncIterator[StartWorker]:
    started: list[tuple[Worker, asyncio.Task[None], JobSystem]] = []

    async def start(name: str = "w1", devices: int = 20, *, speed: float = 50.0, push: bool = True,
                    failure_rate: float = 0.0, driver: SimDriver | None = None) -> Worker:
        jobs = await JobSystem.connect(db_url, push=push)
        options = WorkerOptions(name=name, evidence_dir=tmp_path / "evidence", sim_devices=devices,
                                sim_speed=speed, sim_failure_rate=failure_rate, push=push,
                                heartbeat_interval_s=0.5, poll_interval_s=0.2, safety_poll_s=30.0,
                                shutdown_grace_s=5.0)
        worker = Worker(jobs, options, driver=driver)
        task = asyncio.create_task(worker.run())
        started.append((worker, task, jobs))
        await wait_until(lambda: worker.registered.is_set() or task.done(), what="worker registered")
        if task.done():
            task.result()
        if push:
            from jobsys.events import ChannelState
            await wait_until(lambda: worker.push_state is ChannelState.SUBSCRIBED, what="push subscribed")
        return worker

    yield start
    for worker, task, jobs in started:
        worker.request_stop()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 30)
        await jobs.close()
