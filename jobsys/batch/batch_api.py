"""BatchApiRun: one claimed job in Batch API mode (Gemini's Batch API, half price, results
within 24 h), run to its end on this runner.

Instead of one call per item in a pool, the run claims every pending item, submits them as
one provider batch (inline requests keyed by item index), records the batch's name on the
job (set_background_provider_batch) and polls its state with backoff until it ends, logging
each state. Then each item gets its response, its error, or, when the batch ended without
one (expired, failed, cancelled), the reason; structured outputs are validated (no second
ask here: an invalid one fails the item).

A runner that takes the job over (lease expired) or gets it back (released on shutdown)
finds the recorded batch and polls it: the items are never submitted twice. The final state
is recorded before the results; either way a runner that finds a recorded batch polls it
(an ended one answers at once) and reports its results rather than submitting again. Cancel
cancels the provider's batch; retry drops the ended batch (retry_background_job) and submits
only the failed items, in a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from jobsys import errors
from jobsys.batch.engine import NO_USAGE, JobRun, StopReason
from jobsys.batch.models import ClaimedItem, ItemResult, LogLevel, LogLine
from jobsys.batch.providers.base import CallFailure, Completion, FailureKind, Request
from jobsys.batch.providers.gemini_batch import GeminiBatchApi, ProviderBatch

log = logging.getLogger("jobsys.batch")

CLAIM_PAGE = 1000  # claim_background_items' limit
CANCEL_TIMEOUT_S = 10.0


class BatchApiRun(JobRun):
    api: GeminiBatchApi
    polls = 0  # state reads of the provider batch by this run

    def attach(self, api: GeminiBatchApi) -> BatchApiRun:
        self.api = api
        self.provider_batch: str | None = None
        return self

    async def _work(self) -> None:
        self._scheduler = asyncio.create_task(self._submit_and_poll(), name=f"batch-api-{self.job.id}")
        await asyncio.gather(self._scheduler, return_exceptions=True)
        if not self._scheduler.cancelled() and self._scheduler.exception() is not None:
            exc = self._scheduler.exception()
            if isinstance(exc, CallFailure) and exc.kind is FailureKind.FATAL:
                self.stop(StopReason.FATAL, exc.reason)
            elif isinstance(exc, (errors.StaleRun, errors.NotFound)):
                self.stop(StopReason.LOST, exc.message)
            else:
                log.error("batch %s: Batch API run failed: %r", self.job.id, exc)
                self.stop(StopReason.SHUTDOWN, f"Batch API run failed: {exc!r}")  # hand the job back
        if self.stop_reason is StopReason.CANCELLED and self.provider_batch is not None:
            with contextlib.suppress(CallFailure, asyncio.TimeoutError):
                async with asyncio.timeout(CANCEL_TIMEOUT_S):
                    await self.api.cancel(self.provider_batch)
                    log.info("batch %s: provider batch %s cancelled", self.job.id, self.provider_batch)
        if self.stop_reason is not None:
            return
        await self.reporter.flush()
        if self.stop_reason is not None:
            return
        try:
            self.final = await self.batch.finish_job(self.job.id, self.job.lease_token)
        except errors.IllegalTransition:
            self.stop(StopReason.SHUTDOWN, "items are still pending: hand the job back for another batch")
        except (errors.StaleRun, errors.NotFound) as exc:
            self.stop(StopReason.LOST, exc.message)

    async def _claim_all(self) -> dict[int, ClaimedItem]:
        claimed: dict[int, ClaimedItem] = {}
        while True:
            page = await self.batch.claim_items(self.job.id, self.job.lease_token, CLAIM_PAGE)
            claimed.update((item.idx, item) for item in page)
            if len(page) < CLAIM_PAGE:
                return claimed

    async def _record(self, name: str, state: str, items: list[int]) -> None:
        await self.batch.set_provider_batch(self.job.id, self.job.lease_token,
                                            {"name": name, "state": state, "items": items})

    async def _submit_and_poll(self) -> None:
        claimed = await self._claim_all()
        prior = self.job.result.get("provider_batch")
        if isinstance(prior, dict) and prior.get("name"):
            name, keys = str(prior["name"]), [int(i) for i in prior.get("items", [])]
            self.reporter.add_log(LogLine(LogLevel.INFO, f"resuming provider batch {name} (not submitted again)",
                                          {"provider_batch": name}))
        else:
            if not claimed:
                return
            requests: dict[int, Request] = {}
            for idx, item in claimed.items():
                try:
                    requests[idx] = self._request(item)
                except (KeyError, ValueError) as exc:
                    self.reporter.add_result(self._fail(item, 0, f"cannot render the prompt: {exc!r}"))
            if not requests:
                return
            display_name = f"jobsys-{self.job.id}-{self.job.retry_count}"
            name = await self.api.submit(self.job.payload.model, requests, display_name)
            keys = sorted(requests)
            self.provider_batch = name
            await self._record(name, "queued", keys)
            log.info("batch %s: submitted provider batch %s with %d item(s)", self.job.id, name, len(keys))
        self.provider_batch = name
        ended = await self._poll(name, keys)
        await self._record(name, ended.state, keys)  # before the results: the last report ends the job
        for idx, item in claimed.items():
            if idx in keys:
                self.reporter.add_result(self._outcome(item, ended))
            else:  # cannot happen with batches this module records; never leave an item running
                self.reporter.add_result(self._fail(item, 0, f"not in the provider batch {name}"))

    async def _poll(self, name: str, keys: list[int]) -> ProviderBatch:
        delay_s = self.settings.batch_api_poll_min_s
        seen: str | None = None
        while True:
            try:
                current = await self.api.get(name)
            except CallFailure as failure:
                if failure.kind is FailureKind.FATAL:
                    raise
                log.warning("batch %s: reading provider batch %s failed (%s); polling on", self.job.id, name,
                            failure.reason)
            else:
                self.polls += 1
                if current.final:
                    return current
                if current.state != seen:
                    seen = current.state
                    await self._record(name, current.state, keys)
            await asyncio.sleep(delay_s)  # polling the provider's batch, with backoff
            delay_s = min(delay_s * 1.5, self.settings.batch_api_poll_max_s)

    def _outcome(self, item: ClaimedItem, ended: ProviderBatch) -> ItemResult:
        result = ended.results.get(item.idx)
        if result is None:
            why = f"provider batch {ended.state} without a result for this item"
            return self._fail(item, 1, why + (f" ({ended.error})" if ended.error else ""))
        if isinstance(result, CallFailure):
            return self._fail(item, 1, result.reason, result.usage or NO_USAGE)
        return self._completed(item, result)

    def _completed(self, item: ClaimedItem, completion: Completion) -> ItemResult:
        problem = self._checker.problem(completion.text) if self._checker is not None else None
        if problem is not None:
            return self._fail(item, 1, f"output does not match response_schema: {problem}", completion.usage)
        usage = completion.usage
        fields = {} if usage == NO_USAGE else {
            "tokens_in": usage.tokens_in, "tokens_out": usage.tokens_out, "tokens_thinking": usage.tokens_thinking,
            "retry_tokens_in": 0, "retry_tokens_out": 0, "retry_tokens_thinking": 0}
        return ItemResult(idx=item.idx, status="completed", output=completion.text, attempts=1,
                          provider=self.provider.name, **fields)
