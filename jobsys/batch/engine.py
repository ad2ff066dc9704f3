"""JobRun: one claimed batch job, run to its end on this runner.

Items run in a continuous bounded pool: a semaphore of `concurrency` slots; whenever slots
are free, one claim takes that many pending items (several at once when several freed),
and each item starts as soon as it has a slot. No lock-step batches, no sleeps between
them. Every call passes the runner's shared RateLimiter (RPM, TPM, cooldown).

Per item: rate limits (429/503) wait out the shared cooldown; other transient failures
retry with exponential backoff and full jitter up to the job's max_retries; a permanent
failure fails the item now; a fatal one (bad key, unknown model) fails the job.

Stopping: cancel / lease lost stop scheduling and cancel in-flight calls at once (the
database has already moved those items on, so nothing is reported); shutdown stops
scheduling, gives in-flight calls a grace period, reports what finished and releases the
job; a fatal failure reports what finished and fails the rest of the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import random
import time

from jobsys import aio, errors
from jobsys.batch import structured
from jobsys.batch import template as templates
from jobsys.batch.facade import BatchJobs
from jobsys.batch.limiter import RateLimiter
from jobsys.batch.models import BatchJob, ClaimedBatchJob, ClaimedItem, ItemResult, LogLevel, LogLine
from jobsys.batch.providers.base import CallFailure, FailureKind, Provider, Request, Usage
from jobsys.batch.reporter import Reporter
from jobsys.batch.retry import RetryPolicy
from jobsys.batch.shared_limiter import SharedRateLimiter
from jobsys.metrics import RunnerMetrics

log = logging.getLogger("jobsys.batch")

CONCURRENCY_CAP = 64
CALL_TIMEOUT_S = 120.0
SHUTDOWN_GRACE_S = 5.0
CONCLUDE_TIMEOUT_S = 30.0  # at the end, how long to keep trying to write the last reports
DRAIN_ROUNDS_MAX = 5  # re-check for pending items before finishing (they can only be skipped-locked)
CLAIM_RETRY_MAX_S = 5.0
CHARS_PER_TOKEN = 4  # prompt size -> token estimate for the TPM limiter until usage is known
NO_USAGE = Usage()


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    max_concurrency: int = CONCURRENCY_CAP  # a job's own concurrency is capped by this
    call_timeout_s: float = CALL_TIMEOUT_S
    shutdown_grace_s: float = SHUTDOWN_GRACE_S
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    batch_api_poll_min_s: float = 2.0  # Batch API mode: first poll of the provider batch's state
    batch_api_poll_max_s: float = 60.0  # polls back off (x1.5) to this
    # Batch API mode: requests up to this size go inline, larger ones as a file (Files API);
    # the API's inline limit is 20 MB (gemini_batch.INLINE_MAX_BYTES).
    batch_api_inline_max_bytes: int = 20_000_000


class StopReason(str, enum.Enum):
    CANCELLED = "cancelled"  # an operator cancelled the job
    LOST = "lost"  # the lease moved on (taken over, or cancelled while push was down)
    SHUTDOWN = "shutdown"  # this runner is stopping: hand the job back
    FATAL = "fatal"  # no item can succeed: fail the job


class JobRun:
    def __init__(self, batch: BatchJobs, job: ClaimedBatchJob, provider: Provider,
                 limiter: RateLimiter | SharedRateLimiter,
                 settings: EngineSettings | None = None, rng: random.Random | None = None,
                 metrics: RunnerMetrics | None = None) -> None:
        self.batch = batch
        self.metrics = metrics
        self.job = job
        self.provider = provider
        self.limiter = limiter
        self.settings = settings or EngineSettings()
        self.concurrency = max(1, min(job.concurrency, self.settings.max_concurrency))
        self.reporter = Reporter(batch, job.id, job.lease_token, self._on_lost)
        self.stop_reason: StopReason | None = None
        self.stop_detail = ""
        self.final: BatchJob | None = None
        self.calls = 0  # provider calls started by this run
        self._rng = rng or random.Random()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        self._grace_timer: asyncio.TimerHandle | None = None
        schema = job.payload.response_schema
        self._checker = structured.OutputChecker(schema) if schema is not None else None

    # Control ---------------------------------------------------------------------------
    def stop(self, reason: StopReason, detail: str = "") -> None:
        """Stop scheduling now. The first reason wins."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        self.stop_detail = detail
        if self._scheduler is not None:
            self._scheduler.cancel()
        if reason is StopReason.SHUTDOWN:
            self._grace_timer = asyncio.get_running_loop().call_later(
                self.settings.shutdown_grace_s, self._cancel_in_flight)
        else:
            self._cancel_in_flight()
        log.info("batch %s stopping (%s%s): %d call(s) in flight %s", self.job.id, reason.value,
                 f": {detail}" if detail else "", len(self._tasks),
                 "get a grace period" if reason is StopReason.SHUTDOWN else "cancelled")

    def _cancel_in_flight(self) -> None:
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()

    def _on_lost(self, exc: errors.JobsysError) -> None:
        self.stop(StopReason.LOST, exc.message)

    # Run -------------------------------------------------------------------------------
    async def run(self) -> None:
        reporter_task = asyncio.create_task(self.reporter.run(), name=f"batch-report-{self.job.id}")
        try:
            await self._work()
            await self._conclude()
        finally:
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            self._cancel_in_flight()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await aio.cancel_and_wait([reporter_task])

    async def _work(self) -> None:
        for _ in range(DRAIN_ROUNDS_MAX):
            self._scheduler = asyncio.create_task(self._schedule(), name=f"batch-schedule-{self.job.id}")
            await asyncio.gather(self._scheduler, return_exceptions=True)
            if not self._scheduler.cancelled() and self._scheduler.exception() is not None:
                exc = self._scheduler.exception()
                log.error("batch %s: scheduling failed: %r", self.job.id, exc)
                self.stop(StopReason.SHUTDOWN, f"scheduling failed: {exc!r}")  # hand the job back
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.stop_reason is not None:
                return
            await self.reporter.flush()
            if self.stop_reason is not None:
                return
            try:
                self.final = await self.batch.finish_job(self.job.id, self.job.lease_token)
                return
            except errors.IllegalTransition:
                continue  # items still pending: schedule again
            except (errors.StaleRun, errors.NotFound) as exc:
                self.stop(StopReason.LOST, exc.message)
                return
        log.warning("batch %s: items stayed pending after %d rounds; leaving it to the lease",
                    self.job.id, DRAIN_ROUNDS_MAX)

    async def _schedule(self) -> None:
        """Claim items whenever slots are free; return when no pending item is left."""
        retry_s = 0.2
        while self.stop_reason is None:
            await self._slots.acquire()
            slots = 1
            while not self._slots.locked():  # every other free slot too: one claim for all
                await self._slots.acquire()
                slots += 1
            try:
                items = await self.batch.claim_items(self.job.id, self.job.lease_token, slots)
            except (errors.StaleRun, errors.NotFound) as exc:
                self._release_slots(slots)
                if exc.details.get("status") not in ("completed", "failed"):
                    self.stop(StopReason.LOST, exc.message)
                return  # else our last report just finished the job: nothing left to claim
            except errors.TransportError as exc:
                self._release_slots(slots)
                log.warning("batch %s: claiming items waits for the database (%s)", self.job.id, exc.message)
                await asyncio.sleep(retry_s)
                retry_s = min(retry_s * 2, CLAIM_RETRY_MAX_S)
                continue
            except BaseException:
                self._release_slots(slots)
                raise
            retry_s = 0.2
            self._release_slots(slots - len(items))
            if not items:
                return
            for item in items:
                task = asyncio.create_task(self._run_item(item), name=f"batch-item-{self.job.id}-{item.idx}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _release_slots(self, n: int) -> None:
        for _ in range(n):
            self._slots.release()

    async def _conclude(self) -> None:
        reason = self.stop_reason
        if reason is None:
            if self.final is not None:
                log.info("batch %s %s: %d/%d completed, %d failed", self.job.id, self.final.status.value,
                         self.final.completed_items, self.final.total_items, self.final.failed_items)
            return
        if reason in (StopReason.CANCELLED, StopReason.LOST):
            self.reporter.discard()  # the database moved these items on; none may count
            return
        with contextlib.suppress(asyncio.TimeoutError, errors.JobsysError):
            async with asyncio.timeout(CONCLUDE_TIMEOUT_S):
                await self.reporter.flush()  # what finished before the stop counts
                if self.reporter.lost:
                    return
                if reason is StopReason.SHUTDOWN:
                    await self.batch.release_job(self.job.id, self.job.lease_token, "runner shutting down")
                    log.info("batch %s released for another runner", self.job.id)
                else:
                    self.final = await self.batch.finish_job(self.job.id, self.job.lease_token, self.stop_detail)
                    log.error("batch %s failed: %s", self.job.id, self.stop_detail)

    # One item --------------------------------------------------------------------------
    async def _run_item(self, item: ClaimedItem) -> None:
        try:
            result = await self._call_with_retries(item)
            if result is not None:
                self.reporter.add_result(result)
        finally:
            self._slots.release()

    def _request(self, item: ClaimedItem) -> Request:
        payload = self.job.payload
        return Request(prompt=templates.render(payload.template, item.input), model=payload.model,
                       system_instruction=payload.system_instruction, temperature=payload.temperature,
                       max_output_tokens=payload.max_output_tokens, response_schema=payload.response_schema)

    def _fail(self, item: ClaimedItem, calls: int, reason: str, spent: Usage = NO_USAGE) -> ItemResult:
        log.warning("batch %s item %d failed after %d call(s): %s", self.job.id, item.idx, calls, reason)
        tokens = token_fields(spent, spent)  # nothing kept: every token was spent in vain
        return ItemResult(idx=item.idx, status="failed", error=reason, attempts=calls, provider=self.provider.name,
                          **tokens)

    def _count_call(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.calls.labels(provider=self.provider.name, outcome=outcome).inc()

    async def _call_with_retries(self, item: ClaimedItem) -> ItemResult | None:
        try:
            request = self._request(item)
        except (KeyError, ValueError) as exc:
            return self._fail(item, 0, f"cannot render the prompt: {exc!r}")
        estimate = (len(request.prompt) + len(request.system_instruction or "")) // CHARS_PER_TOKEN + 1
        policy = self.settings.retry
        calls = transient = throttled = 0
        spent = Usage()  # every attempt's tokens in this run, kept or not
        corrected = False  # structured output: asked again once after an invalid answer
        while True:
            waited_from = time.monotonic()
            ticket = await self.limiter.acquire(estimate)
            if self.metrics is not None:
                self.metrics.limiter_wait.observe(time.monotonic() - waited_from)
            if self.stop_reason is not None:
                return None  # stopped meanwhile: no new call (the item stays unfinished)
            calls += 1
            self.calls += 1
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.settings.call_timeout_s):
                    completion = await self.provider.generate(request)
            except TimeoutError:
                failure = CallFailure(FailureKind.TRANSIENT, f"timed out after {self.settings.call_timeout_s:g}s")
            except CallFailure as exc:
                failure = exc
            except Exception as exc:  # noqa: BLE001 - a provider bug fails one attempt, not the runner
                failure = CallFailure(FailureKind.TRANSIENT, f"{type(exc).__name__}: {str(exc)[:200]}")
            else:
                self.limiter.settle(ticket, completion.tokens_in)
                spent += completion.usage
                problem = self._checker.problem(completion.text) if self._checker is not None else None
                self._count_call("ok" if problem is None else "invalid_output")
                if problem is None:
                    return ItemResult(idx=item.idx, status="completed", output=completion.text, attempts=calls,
                                      latency_ms=int((time.monotonic() - started) * 1000),
                                      provider=self.provider.name, **token_fields(spent, spent - completion.usage))
                if corrected:
                    return self._fail(item, calls, f"output does not match response_schema: {problem}", spent)
                corrected = True
                message = (f"item {item.idx} call {calls}: output does not match response_schema: {problem}; "
                           "asking again")
                log.warning("batch %s: %s", self.job.id, message)
                self.reporter.add_log(LogLine(LogLevel.WARNING, message, {
                    "code": "output_invalid", "item": item.idx, "call": calls, "problem": problem}))
                request = dataclasses.replace(request, prompt=structured.correction_prompt(request.prompt, problem))
                continue

            if failure.usage is not None:
                spent += failure.usage
            self._count_call(failure.kind.value)
            if failure.kind is FailureKind.FATAL:
                self.stop(StopReason.FATAL, failure.reason)
                return None
            if failure.kind is FailureKind.PERMANENT:
                return self._fail(item, calls, failure.reason, spent)
            if failure.kind is FailureKind.RATE_LIMITED:
                throttled += 1
                if throttled > policy.rate_limit_retries:
                    return self._fail(item, calls, f"{failure.reason} (still rate limited after {throttled} tries)",
                                      spent)
                delay_s = policy.cooldown_s(failure, throttled, self._rng)
                if self.limiter.cool_down(delay_s):
                    if self.metrics is not None:
                        self.metrics.cooldowns.labels(provider=self.provider.name).inc()
                    message = f"rate limited ({failure.reason}); holding every call for {delay_s:.1f}s"
                    log.warning("batch %s: %s", self.job.id, message)
                    self.reporter.add_log(LogLine(LogLevel.WARNING, message, {
                        "code": "rate_limited", "item": item.idx, "cooldown_s": round(delay_s, 1),
                        "reason": failure.reason}))
                continue
            transient += 1
            if transient > self.job.max_retries:
                return self._fail(item, calls, f"{failure.reason} (gave up after {calls} calls)", spent)
            delay_s = policy.backoff_s(transient, self._rng)
            message = f"item {item.idx} call {calls} failed ({failure.reason}); retry in {delay_s:.1f}s"
            log.warning("batch %s: %s", self.job.id, message)
            self.reporter.add_log(LogLine(LogLevel.WARNING, message, {
                "code": "item_retry", "item": item.idx, "call": calls, "reason": failure.reason,
                "delay_s": round(delay_s, 1)}))
            await asyncio.sleep(delay_s)  # backoff before this item's next attempt


def token_fields(spent: Usage, wasted: Usage) -> dict[str, int | None]:
    """ItemResult's token fields: the run's totals, and the part not kept (retry_tokens_*).
    None when nothing was reported, so an item without usage stays without counts."""
    if spent == NO_USAGE:
        return {}
    return {"tokens_in": spent.tokens_in, "tokens_out": spent.tokens_out, "tokens_thinking": spent.tokens_thinking,
            "retry_tokens_in": wasted.tokens_in, "retry_tokens_out": wasted.tokens_out,
            "retry_tokens_thinking": wasted.tokens_thinking}
