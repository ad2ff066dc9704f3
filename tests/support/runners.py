"""Long-running loops in the test's own event loop: workers and batch runners as tasks,
each waited for until it is ready (or raising why it ended), and stopped as SIGTERM would
stop it."""

from __future__ import annotations

import asyncio
import random
import sys
from typing import Any, Callable

from jobsys.batch.engine import EngineSettings
from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchJob
from jobsys.batch.providers.base import Provider
from jobsys.batch.providers.offline import OfflineProvider
from jobsys.batch.providers.registry import ProviderSet
from jobsys.batch.retry import RetryPolicy
from jobsys.batch.runner import BatchRunner, RunnerOptions
from jobsys.events import ChannelState
from jobsys.system import JobSystem
from tests.support.waiting import wait_until
from worker.agent import Worker

FAST_RETRY = RetryPolicy(backoff_base_s=0.01, backoff_max_s=0.05, cooldown_default_s=0.05)
STOP_TIMEOUT_S = 30.0


async def until_ready(task: asyncio.Task[None], ready: Callable[[], bool], what: str) -> None:
    """Wait until `ready()`; if the task ends first, raise what ended it."""
    await wait_until(lambda: ready() or task.done(), what=what)
    if task.done():
        task.result()


class WorkerPool:
    """In-process workers, each on its own JobSystem, all stopped by `stop_all()`."""

    def __init__(self) -> None:
        self.started: list[tuple[Worker, asyncio.Task[None], JobSystem]] = []

    def run(self, worker: Worker, jobs: JobSystem) -> asyncio.Task[None]:
        """Start the worker's loop; it is stopped with the others however the test ends."""
        task = asyncio.create_task(worker.run())
        self.started.append((worker, task, jobs))
        return task

    async def stop_all(self) -> None:
        for worker, task, jobs in self.started:
            worker.request_stop()
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), STOP_TIMEOUT_S)
            await jobs.close()


def runner_options(**overrides: Any) -> RunnerOptions:
    """A batch runner's options with fast polls, heartbeats and retries."""
    engine = overrides.pop("engine", None) or EngineSettings(
        call_timeout_s=overrides.pop("call_timeout_s", 10.0),
        shutdown_grace_s=overrides.pop("shutdown_grace_s", 0.3), retry=FAST_RETRY)
    base: dict[str, Any] = {"name": "test-runner", "poll_interval_s": 0.2, "safety_poll_s": 1.0,
                            "heartbeat_interval_s": 0.2, "engine": engine}
    return RunnerOptions(**{**base, **overrides})


class RunnerPool:
    """Starts in-process batch runners (call it) and stops them: one by one, or all at teardown."""

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
        await until_ready(task, runner.started.is_set, "runner started")
        if push:
            await wait_until(lambda: runner.push_state is ChannelState.SUBSCRIBED, what="runner subscribed")
        return runner

    async def stop(self, runner: BatchRunner) -> None:
        """As SIGTERM would: stop claiming, hand unfinished jobs back."""
        _, task, stop, jobs = self.started.pop(id(runner))
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT_S)
        except TimeoutError:
            for other in asyncio.all_tasks():  # say where a stop hangs
                other.print_stack(file=sys.stderr)
            raise
        await jobs.close()

    async def stop_all(self) -> None:
        for runner, *_ in list(self.started.values()):
            await self.stop(runner)


StartRunner = RunnerPool  # the type of the `start_runner` fixture


async def wait_final(batch: BatchJobs, job_id: Any, timeout_s: float = 30.0) -> BatchJob:
    """The batch job once it has ended (completed, failed or cancelled)."""
    holder: dict[str, BatchJob] = {}

    async def final() -> bool:
        holder["job"] = await batch.get_job(job_id)
        return holder["job"].status.final

    await wait_until(final, timeout_s=timeout_s, what="the batch job to end")
    return holder["job"]
