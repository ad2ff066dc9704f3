"""Batch runners in-process against the test database, with fast retry timings."""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from jobsys.batch.engine import EngineSettings
from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchJob
from jobsys.batch.providers.base import Provider
from jobsys.batch.providers.offline import OfflineProvider
from jobsys.batch.providers.registry import ProviderSet
from jobsys.batch.retry import RetryPolicy
from jobsys.batch.runner import BatchRunner, RunnerOptions
from jobsys.system import JobSystem
from tests.conftest import Db, wait_until

FAST_RETRY = RetryPolicy(backoff_base_s=0.01, backoff_max_s=0.05, cooldown_default_s=0.05)


@pytest.fixture
def batch(jobs: JobSystem) -> BatchJobs:
    return BatchJobs.of(jobs)


def items(n: int, prefix: str = "text") -> list[dict[str, Any]]:
    return [{"text": f"{prefix} {i}"} for i in range(n)]


def runner_options(**overrides: Any) -> RunnerOptions:
    engine = overrides.pop("engine", None) or EngineSettings(
        call_timeout_s=overrides.pop("call_timeout_s", 10.0),
        shutdown_grace_s=overrides.pop("shutdown_grace_s", 0.3), retry=FAST_RETRY)
    base: dict[str, Any] = {"name": "test-runner", "poll_interval_s": 0.2, "safety_poll_s": 1.0,
                            "heartbeat_interval_s": 0.2, "engine": engine}
    return RunnerOptions(**{**base, **overrides})


class RunnerPool:
    """Starts in-process runners (call it) and stops them: one by one, or all at teardown."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.started: dict[int, tuple[BatchRunner, asyncio.Task[None], asyncio.Event, JobSystem]] = {}

    async def __call__(self, provider: Provider | None = None, *, gemini: Provider | None = None,
                       push: bool = True, **options: Any) -> BatchRunner:
        jobs = await JobSystem.connect(self.db_url, push=push)
        providers = ProviderSet(offline=provider or OfflineProvider((0.0, 0.01)), gemini=gemini)
        runner = BatchRunner(BatchJobs.of(jobs), runner_options(push=push, **options), providers,
                             rng=random.Random(7))
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        self.started[id(runner)] = (runner, task, stop, jobs)
        await wait_until(lambda: runner.started.is_set() or task.done(), what="runner started")
        if task.done():
            task.result()
        if push:
            from jobsys.events import ChannelState
            await wait_until(lambda: runner.push_state is ChannelState.SUBSCRIBED, what="runner subscribed")
        return runner

    async def stop(self, runner: BatchRunner) -> None:
        """As SIGTERM would: stop claiming, hand unfinished jobs back."""
        _, task, stop, jobs = self.started.pop(id(runner))
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 30)
        except TimeoutError:
            for other in asyncio.all_tasks():  # say where a stop hangs
                other.print_stack(file=sys.stderr)
            raise
        await jobs.close()

    async def stop_all(self) -> None:
        for runner, *_ in list(self.started.values()):
            await self.stop(runner)


StartRunner = RunnerPool


@pytest.fixture
async def start_runner(db_url: str) -> AsyncIterator[RunnerPool]:
    pool = RunnerPool(db_url)
    yield pool
    await pool.stop_all()


async def wait_final(batch: BatchJobs, job_id: Any, timeout_s: float = 30.0) -> BatchJob:
    holder: dict[str, BatchJob] = {}

    async def final() -> bool:
        holder["job"] = await batch.get_job(job_id)
        return holder["job"].status.final

    await wait_until(final, timeout_s=timeout_s, what="the batch job to end")
    return holder["job"]


def counters_match(db: Db) -> list[tuple[Any, ...]]:
    """Background jobs whose stored counters differ from count(*) over their items."""
    return db.rows("""
        select j.id, j.running_items, j.completed_items, j.failed_items, j.cancelled_items, c.*
        from jobsys.background_jobs j
        left join lateral (
          select count(*) filter (where i.status = 'running') as running,
                 count(*) filter (where i.status = 'completed') as completed,
                 count(*) filter (where i.status = 'failed') as failed,
                 count(*) filter (where i.status = 'cancelled') as cancelled,
                 count(*) as total
          from jobsys.background_job_items i where i.job_id = j.id) c on true
        where (j.running_items, j.completed_items, j.failed_items, j.cancelled_items, j.total_items)
           <> (c.running, c.completed, c.failed, c.cancelled, c.total)""")


def dump_batch_tables(db: Db) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for table in ("background_jobs", "background_job_items", "background_job_logs"):
        out.extend((table, *row) for row in db.rows(f"select * from jobsys.{table} order by 1"))
    return out
