"""A worker running in-process against the test database."""

from __future__ import annotations

import pathlib
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

from jobsys.events import ChannelState
from jobsys.system import JobSystem
from tests.support.runners import WorkerPool, until_ready
from tests.support.waiting import wait_until
from worker.agent import Worker
from worker.drivers.sim import SimDriver
from worker.options import WorkerOptions

StartWorker = Callable[..., Awaitable[Worker]]


@pytest.fixture
async def start_worker(db_url: str, tmp_path: pathlib.Path) -> AsyncIterator[StartWorker]:
    pool = WorkerPool()

    async def start(name: str = "w1", devices: int = 20, *, speed: float = 50.0, push: bool = True,
                    failure_rate: float = 0.0, driver: SimDriver | None = None, **overrides: Any) -> Worker:
        """`overrides`: further WorkerOptions fields (reboot_timeout_s, vitals_interval_s, ...)."""
        jobs = await JobSystem.connect(db_url, push=push)
        settings: dict[str, Any] = {"heartbeat_interval_s": 0.5, "poll_interval_s": 0.2, "safety_poll_s": 30.0,
                                    "shutdown_grace_s": 5.0, **overrides}
        options = WorkerOptions(name=name, evidence_dir=tmp_path / "evidence", sim_devices=devices,
                                sim_speed=speed, sim_failure_rate=failure_rate, push=push, **settings)
        worker = Worker(jobs, options, driver=driver)
        task = pool.run(worker, jobs)
        await until_ready(task, worker.registered.is_set, "worker registered")
        if push:
            await wait_until(lambda: worker.push_state is ChannelState.SUBSCRIBED, what="push subscribed")
        return worker

    yield start
    await pool.stop_all()
