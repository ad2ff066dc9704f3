"""BatchRunner: claims AI batch jobs with a lease and runs each as a JobRun.

A push on the runners topic only wakes the claim loop; the claim always goes through the
database, and a poll runs every 3 s while push is down (and at a slow safety interval while
it is up: a crashed runner's expired lease is noticed only by claiming). The heartbeat
renews the leases of the jobs held, sends their trailing progress events and learns of
cancellations when push is down. One RateLimiter is shared by every job of the runner;
with --rpm / --tpm and shared_rate_limit (the default) the budget is shared with every other
runner instead, per provider and model, through the database (shared_limiter.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import random
import socket
import uuid

from jobsys import aio, errors
from jobsys.batch.engine import EngineSettings, JobRun, StopReason
from jobsys.batch.facade import BatchJobs
from jobsys.batch.limiter import WINDOW_S, RateLimiter
from jobsys.batch.models import BatchMode, ClaimedBatchJob
from jobsys.batch.providers.base import CallFailure
from jobsys.batch.providers.registry import ProviderSet
from jobsys.batch.shared_limiter import SharedRateLimiter
from jobsys.events import ChannelState, Event, EventName
from jobsys.metrics import RunnerMetrics
from jobsys.system import JobSystem, Subscription

log = logging.getLogger("jobsys.batch")

POLL_INTERVAL_S = 3.0  # claim poll while push is down
SAFETY_POLL_S = 15.0  # claim poll while push is up
HEARTBEAT_INTERVAL_S = 1.0  # lease renewal and trailing progress events
MAX_JOBS = 4  # jobs one runner works on at once (each with its own concurrency)


def default_runner_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclasses.dataclass(frozen=True)
class RunnerOptions:
    name: str = dataclasses.field(default_factory=default_runner_name)
    max_jobs: int = MAX_JOBS
    rpm: int | None = None  # requests per minute per provider and model (None: unlimited)
    tpm: int | None = None  # prompt tokens per minute, likewise
    # rpm / tpm count every runner's calls (per provider and model, in the database), as the
    # provider's own quota does; False: each runner has a budget of its own.
    shared_rate_limit: bool = True
    rate_window_s: float = WINDOW_S
    poll_interval_s: float = POLL_INTERVAL_S
    safety_poll_s: float = SAFETY_POLL_S
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    push: bool = True
    engine: EngineSettings = dataclasses.field(default_factory=EngineSettings)


class BatchRunner:
    def __init__(self, batch: BatchJobs, options: RunnerOptions | None = None,
                 providers: ProviderSet | None = None, limiter: RateLimiter | None = None,
                 rng: random.Random | None = None) -> None:
        self.batch = batch
        self.options = options or RunnerOptions()
        self.runner_id = f"{self.options.name}:{uuid.uuid4().hex[:8]}"  # one lease identity per process session
        self._owns_providers = providers is None
        self._shared = (limiter is None and self.options.shared_rate_limit
                        and (self.options.rpm is not None or self.options.tpm is not None))
        self.shared_limiters: dict[str, SharedRateLimiter] = {}
        self.providers = providers or ProviderSet.from_env()
        self.limiter = limiter or RateLimiter(self.options.rpm, self.options.tpm, window_s=self.options.rate_window_s)
        self.runs: dict[uuid.UUID, tuple[JobRun, asyncio.Task[None]]] = {}
        self.push_state = ChannelState.DISCONNECTED
        self.metrics = RunnerMetrics(lambda: self.push_state is ChannelState.SUBSCRIBED)
        self._database_problem: str | None = None  # why the last claim failed, while it does
        self.started = asyncio.Event()
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._subscription: Subscription | None = None
        self._lease_sec = 30.0

    # Lifecycle -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, then hand unfinished jobs back (released, not lost)."""
        log.info("batch runner %s starting: runs %s (auto: %s), rpm %s, tpm %s%s, max %d job(s)", self.runner_id,
                 ", ".join(self.providers.names), self.providers.default_name, self.options.rpm or "unlimited",
                 self.options.tpm or "unlimited", " (shared across runners)" if self._shared else "",
                 self.options.max_jobs)
        if self.options.push:
            self._subscription = await self.batch.subscribe_runners(self._on_event, self._on_state)
        side_tasks = [asyncio.create_task(self._claim_loop(), name="batch-claim"),
                      asyncio.create_task(self._heartbeat_loop(), name="batch-heartbeat")]
        self.started.set()
        try:
            # A failed side task raises aio.TaskFailed: "batch runner stopped because <task> failed".
            await aio.supervise(side_tasks, stop, wind_down=self._stop_runs, name="batch runner", log=log)
        finally:
            await self._close()

    async def _stop_runs(self) -> None:
        """Tell every run to hand its job back (each gets the engine's grace period)."""
        log.info("batch runner %s stopping: %d job(s) to hand back", self.runner_id, len(self.runs))
        for run, _ in list(self.runs.values()):
            run.stop(StopReason.SHUTDOWN, "runner shutting down")

    async def _close(self) -> None:
        """After the side tasks ended: wait for the runs to end, then close."""
        await asyncio.gather(*(task for _, task in list(self.runs.values())), return_exceptions=True)
        if self._subscription is not None:
            await self._subscription.close()
        for shared in self.shared_limiters.values():
            await shared.close()
        if self._owns_providers:
            await self.providers.close()
        log.info("batch runner %s stopped", self.runner_id)

    def readiness(self) -> dict[str, str | None]:
        """For a supervisor (`jobsys batch-runner --health-port`): each check None when fine,
        else why not."""
        return {
            "started": None if self.started.is_set() else "not started yet",
            "database": self._database_problem,
            "push": (None if not self.options.push or self.push_state is ChannelState.SUBSCRIBED
                     else "push channel down; polling"),
            "auth": JobSystem(self.batch.transport).auth_problem(),
        }

    # Push ------------------------------------------------------------------------------
    def _on_state(self, state: ChannelState) -> None:
        self.push_state = state
        self._wake.set()  # resync on (re)subscribe; switch to the short poll on loss

    def _on_event(self, event: Event) -> None:
        if event.event == EventName.BACKGROUND_JOB_QUEUED:
            self._wake.set()
        elif event.event == EventName.BACKGROUND_JOB_CANCELLED:
            with contextlib.suppress(ValueError, TypeError):
                held = self.runs.get(uuid.UUID(str(event.payload.get("job_id"))))
                if held is not None:
                    held[0].stop(StopReason.CANCELLED, "cancelled by an operator")

    # Claiming --------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        backoff_s = 0.2
        while True:
            self._wake.clear()
            try:
                while len(self.runs) < self.options.max_jobs:
                    job = await self.batch.claim_job(self.runner_id, self.providers.names)
                    if job is None:
                        break
                    await self._start(job)
                backoff_s = 0.2
                self._database_problem = None
            except errors.TransportError as exc:
                self._database_problem = f"claims wait for the database: {exc.message}"[:200]
                log.warning("batch runner: claiming waits for the database (%s); retry in %.1fs",
                            exc.message, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
                continue
            interval_s = (self.options.safety_poll_s if self.push_state is ChannelState.SUBSCRIBED
                          else self.options.poll_interval_s)
            await aio.wait_event(self._wake, interval_s)

    async def _start(self, job: ClaimedBatchJob) -> None:
        if job.status.final:  # nothing was left to do: the claim finished it
            log.info("batch %s %s on claim (nothing left to run)", job.id, job.status.value)
            return
        previous = self.runs.get(job.id)
        if previous is not None:  # an earlier run of this job (since retried) is still winding down
            await asyncio.gather(previous[1], return_exceptions=True)
        self._lease_sec = job.lease_sec
        try:
            provider = self.providers.for_choice(job.payload.provider)
        except CallFailure as failure:
            log.error("batch %s cannot run here: %s", job.id, failure.reason)
            with contextlib.suppress(errors.JobsysError):
                await self.batch.finish_job(job.id, job.lease_token, failure.reason)
            return
        limiter = self._limiter_for(f"{provider.name}:{job.payload.model}")
        run: JobRun
        if job.payload.mode is BatchMode.BATCH_API:
            from jobsys.batch.batch_api import BatchApiRun  # google-genai only when used
            from jobsys.batch.providers.gemini import GeminiProvider
            from jobsys.batch.providers.gemini_batch import GeminiBatchApi

            if not isinstance(provider, GeminiProvider):
                with contextlib.suppress(errors.JobsysError):
                    await self.batch.finish_job(job.id, job.lease_token, "Batch API mode needs the Gemini provider")
                return
            run = BatchApiRun(self.batch, job, provider, limiter, self.options.engine,
                              rng=random.Random(self._rng.random()), metrics=self.metrics).attach(
                GeminiBatchApi(provider, inline_max_bytes=self.options.engine.batch_api_inline_max_bytes))
        else:
            run = JobRun(self.batch, job, provider, limiter, self.options.engine, rng=random.Random(self._rng.random()),
                         metrics=self.metrics)
        log.info("batch %s claimed by %s: %r, %d/%d items left, provider %s%s, concurrency %d", job.id,
                 self.runner_id, job.title, job.pending_items, job.total_items, provider.name,
                 " (offline: placeholder drafts)" if provider.offline else "", run.concurrency)
        task = asyncio.create_task(run.run(), name=f"batch-run-{job.id}")
        self.runs[job.id] = (run, task)
        task.add_done_callback(functools.partial(self._run_done, job.id))

    def _limiter_for(self, key: str) -> RateLimiter | SharedRateLimiter:
        """The runner's own limiter, or the shared one of this provider and model."""
        if not self._shared:
            return self.limiter
        if key not in self.shared_limiters:
            self.shared_limiters[key] = SharedRateLimiter(self.batch, key, self.options.rpm, self.options.tpm,
                                                          window_s=self.options.rate_window_s)
        return self.shared_limiters[key]

    def _run_done(self, job_id: uuid.UUID, task: asyncio.Task[None]) -> None:
        if job_id in self.runs and self.runs[job_id][1] is task:  # not a newer run of the same (retried) job
            del self.runs[job_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("batch %s: run failed: %r", job_id, task.exception())
        self._wake.set()  # a free job slot: claim the next

    # Heartbeat -------------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            interval_s = min(self.options.heartbeat_interval_s, self._lease_sec / 3)
            await asyncio.sleep(interval_s)  # pacing of a periodic task
            held = {run.job.lease_token: run for run, _ in list(self.runs.values())}
            if not held:
                continue
            try:
                lost = await self.batch.renew_leases(self.runner_id, held)
            except errors.TransportError as exc:
                log.warning("batch runner: lease renewal waits for the database (%s)", exc.message)
                continue
            for token in lost:
                run = held.get(token)
                reply = run.reporter.last_reply if run is not None else None
                if run is not None and run.final is None and not (reply and reply.job.status.final):
                    run.stop(StopReason.LOST, "the job is no longer held by this runner (cancelled or taken over)")


async def run_runner(jobs_or_url: JobSystem | BatchJobs | str, stop: asyncio.Event,
                     options: RunnerOptions | None = None, providers: ProviderSet | None = None) -> None:
    """Run a batch runner until `stop` is set. Give a connected JobSystem to share its pool
    (as `jobsys up` does), or a database URL to open a connection of its own."""
    if isinstance(jobs_or_url, str):
        async with await JobSystem.connect(jobs_or_url, push=options.push if options else True) as jobs:
            await BatchRunner(BatchJobs.of(jobs), options, providers).run(stop)
        return
    batch = jobs_or_url if isinstance(jobs_or_url, BatchJobs) else BatchJobs.of(jobs_or_url)
    await BatchRunner(batch, options, providers).run(stop)
