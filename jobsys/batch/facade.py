"""BatchJobs: the typed async facade of AI batch jobs. One method per SQL function; it knows
nothing of psycopg or PostgREST (a Transport does the calls), like JobSystem.

    batch = BatchJobs.of(jobs)  # jobs: a connected JobSystem
    job = await batch.create_job(template="Summarise: {text}", items=[{"text": "..."}])
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from jobsys import errors, rpc, validation
from jobsys.batch.models import (
    BatchCreate,
    BatchItemPage,
    BatchJob,
    BatchJobList,
    BatchListQuery,
    BatchLogPage,
    BatchStatus,
    ClaimedBatchJob,
    ClaimedItem,
    ItemResult,
    LogLine,
    RateLimit,
    ReportReply,
)
from jobsys.events import DASHBOARD_TOPIC, RUNNERS_TOPIC
from jobsys.system import JobId, JobSystem
from jobsys.transport.base import EventHandler, StateHandler, Subscription, Transport


class BatchJobs:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    @classmethod
    def of(cls, jobs: JobSystem) -> BatchJobs:
        """Share a JobSystem's transport (and its connection pool)."""
        return cls(jobs.transport)

    # Operators -------------------------------------------------------------------------
    async def create_job(self, spec: BatchCreate | None = None, /, **fields: Any) -> BatchJob:
        """Validate and store an ai_batch job; a runner picks it up. `spec` or its fields."""
        spec = spec if spec is not None else validation.validated(BatchCreate, fields)
        raw = await self.transport.call(rpc.CREATE_BACKGROUND_JOB, {
            "p_payload": spec.payload(),
            "p_items": spec.items,
            "p_title": spec.title,
            "p_concurrency": spec.concurrency,
            "p_max_retries": spec.max_retries,
            "p_type": "ai_batch",
        })
        return BatchJob.model_validate(raw)

    async def list_jobs(self, status: BatchStatus | str | None = None, limit: int = 100, offset: int = 0, *,
                        q: str | None = None, sort: str = "-created",
                        statuses: Iterable[BatchStatus | str] | None = None) -> BatchJobList:
        """A page in `sort`'s order (a column, "-" first for descending) of the jobs whose
        status is `status` or one of `statuses` (not both) and whose title holds `q`;
        `matching` counts them all."""
        if status and statuses is not None:
            raise errors.InvalidInput("give status or statuses, not both", {"field": "status"})
        # One status as before (an unknown one: ValueError); several checked with the other bounds.
        wanted = (BatchStatus(status),) if status else (tuple(statuses) if statuses is not None else None)
        checked = validation.validated(BatchListQuery, {
            "statuses": wanted, "q": q, "sort": sort, "limit": limit, "offset": offset})
        values = [s.value for s in checked.statuses] if checked.statuses is not None else None
        return BatchJobList.model_validate(await self.transport.call(rpc.LIST_BACKGROUND_JOBS, {
            "p_status": values[0] if status else None, "p_statuses": None if status else values,
            "p_q": checked.q or None, "p_sort": checked.sort, "p_limit": checked.limit,
            "p_offset": checked.offset}))

    async def get_job(self, job_id: JobId) -> BatchJob:
        return BatchJob.model_validate(await self.transport.call(
            rpc.GET_BACKGROUND_JOB, {"p_job_id": validation.as_uuid(job_id, "job_id")}))

    async def job_logs(self, job_id: JobId, limit: int = 100, before_id: int | None = None) -> BatchLogPage:
        """Newest first; pass the page's next_before_id to get older lines."""
        return BatchLogPage.model_validate(await self.transport.call(rpc.LIST_BACKGROUND_JOB_LOGS, {
            "p_job_id": validation.as_uuid(job_id, "job_id"), "p_limit": limit, "p_before_id": before_id}))

    async def job_items(self, job_id: JobId, status: BatchStatus | str | None = None, limit: int = 100,
                        offset: int = 0) -> BatchItemPage:
        status_value = BatchStatus(status).value if status else None
        return BatchItemPage.model_validate(await self.transport.call(rpc.LIST_BACKGROUND_JOB_ITEMS, {
            "p_job_id": validation.as_uuid(job_id, "job_id"), "p_status": status_value, "p_limit": limit,
            "p_offset": offset}))

    async def cancel_job(self, job_id: JobId) -> BatchJob:
        return BatchJob.model_validate(await self.transport.call(
            rpc.CANCEL_BACKGROUND_JOB, {"p_job_id": validation.as_uuid(job_id, "job_id")}))

    async def retry_job(self, job_id: JobId) -> BatchJob:
        """Re-queue the failed items only; completed outputs stay."""
        return BatchJob.model_validate(await self.transport.call(
            rpc.RETRY_BACKGROUND_JOB, {"p_job_id": validation.as_uuid(job_id, "job_id")}))

    async def subscribe_progress(self, on_event: EventHandler, on_state: StateHandler | None = None) -> Subscription:
        """background_job_progress events (dashboard topic; filter on event.event)."""
        return await self.transport.subscribe([DASHBOARD_TOPIC], on_event, on_state)

    async def rate_limits(self) -> list[RateLimit]:
        """The runners' shared rate limits per provider and model, as last asked (used in the last day)."""
        raw = await self.transport.call(rpc.LIST_BATCH_RATE_LIMITS, {})
        return [RateLimit.model_validate(row) for row in raw["limits"]]

    # Runners ---------------------------------------------------------------------------
    async def claim_job(self, runner_id: str, providers: Iterable[str] | None = None) -> ClaimedBatchJob | None:
        """Claim one job this runner can run: `providers` (gemini, offline, openai_compatible)
        are registered for wait reasons; None claims any job (runners that do not say)."""
        if providers is None:
            raw = await self.transport.call(rpc.CLAIM_BACKGROUND_JOB, {"p_runner_id": runner_id})
        else:
            raw = await self.transport.call(rpc.CLAIM_RUNNABLE_BACKGROUND_JOB,
                                            {"p_runner_id": runner_id, "p_providers": list(providers)})
        return None if raw is None else ClaimedBatchJob.model_validate(raw)

    async def claim_items(self, job_id: uuid.UUID, lease_token: uuid.UUID, limit: int) -> list[ClaimedItem]:
        rows = await self.transport.call_rows(rpc.CLAIM_BACKGROUND_ITEMS, {
            "p_job_id": job_id, "p_lease_token": lease_token, "p_limit": limit})
        return [ClaimedItem.model_validate(row) for row in rows]

    async def report(self, job_id: uuid.UUID, lease_token: uuid.UUID, results: Iterable[ItemResult] = (),
                     logs: Iterable[LogLine] = ()) -> ReportReply:
        return ReportReply.model_validate(await self.transport.call(rpc.REPORT_BACKGROUND_ITEMS, {
            "p_job_id": job_id, "p_lease_token": lease_token,
            "p_results": [r.as_json() for r in results], "p_logs": [line.as_json() for line in logs]}))

    async def renew_leases(self, runner_id: str, lease_tokens: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        """Extend the leases still held; return the tokens no longer held (cancelled, taken over)."""
        raw = await self.transport.call(rpc.RENEW_BACKGROUND_LEASES, {
            "p_runner_id": runner_id, "p_lease_tokens": list(lease_tokens)})
        return {uuid.UUID(str(t)) for t in raw["lost"]}

    async def finish_job(self, job_id: uuid.UUID, lease_token: uuid.UUID, error: str | None = None) -> BatchJob:
        return BatchJob.model_validate(await self.transport.call(rpc.FINISH_BACKGROUND_JOB, {
            "p_job_id": job_id, "p_lease_token": lease_token, "p_error": error}))

    async def release_job(self, job_id: uuid.UUID, lease_token: uuid.UUID, reason: str | None = None) -> BatchJob:
        return BatchJob.model_validate(await self.transport.call(rpc.RELEASE_BACKGROUND_JOB, {
            "p_job_id": job_id, "p_lease_token": lease_token, "p_reason": reason}))

    async def acquire_rate(self, key: str, rpm: int | None, tpm: int | None, tokens: int, window_s: float,
                           settle: Iterable[tuple[int, int]] = ()) -> dict[str, Any]:
        """One call under the runners' shared rate limit: {"granted": true, "grant_id"} or
        {"granted": false, "wait_s"}. `settle` corrects earlier grants' token counts."""
        return dict(await self.transport.call(rpc.ACQUIRE_BATCH_RATE, {
            "p_key": key, "p_rpm": rpm, "p_tpm": tpm, "p_tokens": tokens, "p_window_sec": window_s,
            "p_settle": [list(pair) for pair in settle]}))

    async def cool_down_rate(self, key: str, seconds: float) -> dict[str, Any]:
        """Hold every runner's calls under this shared limit for `seconds` (a 429's delay)."""
        return dict(await self.transport.call(rpc.COOL_DOWN_BATCH_RATE, {"p_key": key, "p_seconds": seconds}))

    async def set_provider_batch(self, job_id: uuid.UUID, lease_token: uuid.UUID, provider_batch: dict[str, Any]) -> None:
        """Batch API mode: record the submitted provider batch (name, state, items) on the held job."""
        await self.transport.call(rpc.SET_BACKGROUND_PROVIDER_BATCH, {
            "p_job_id": job_id, "p_lease_token": lease_token, "p_batch": provider_batch})

    async def subscribe_runners(self, on_event: EventHandler, on_state: StateHandler | None = None) -> Subscription:
        return await self.transport.subscribe([RUNNERS_TOPIC], on_event, on_state)
