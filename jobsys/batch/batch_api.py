"""BatchApiRun: one claimed job in Batch API mode (Gemini's Batch API, half price, results
within 24 h), run to its end on this runner.

Instead of one call per item in a pool, the run claims every pending item, submits them as
one provider batch (requests keyed by item index: inline, or a JSONL file through the Files
API above the inline limit), records the batch's name on the job (set_background_provider_batch)
and polls its state with backoff until it ends, logging each state. Then each item gets its
response, its error, or, when the batch ended without one (expired, failed, cancelled), the
reason. Structured outputs are validated: the items whose answer does not match the schema
are reported last, asked again once in a follow-up provider batch (round 2, the validation
error in the prompt, counted as an attempt, its first answer's tokens as retry tokens), and
fail with the reason if still invalid.

A runner that takes the job over (lease expired) or gets it back (released on shutdown)
finds the recorded batch and polls it: the items are never submitted twice. The final state
is recorded before the results; either way a runner that finds a recorded batch polls it
(an ended one answers at once) and reports its results rather than submitting again; the
first round's results are stored before the follow-up batch is submitted, so a takeover
finds only the re-asked items pending. A result file (Files API path) is deleted once it is
no longer needed: once its results are stored, or, when items are asked again, once the
follow-up batch is recorded (a takeover before that reads it again); one that cannot be
read (expired, deleted, refused, or failing RESULT_READ_TRIES polls in a row) fails its
items with the reason. Cancel cancels the provider's batch; retry drops the ended batch
(retry_background_job) and submits only the failed items, in a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from typing import Any

from jobsys import errors
from jobsys.batch import structured
from jobsys.batch.engine import NO_USAGE, JobRun, StopReason, token_fields
from jobsys.batch.models import ClaimedItem, ItemResult, LogLevel, LogLine
from jobsys.batch.providers.base import CallFailure, FailureKind, Request, Usage
from jobsys.batch.providers.gemini_batch import GeminiBatchApi, ProviderBatch, ResultFileFailure

log = logging.getLogger("jobsys.batch")

CLAIM_PAGE = 1000  # claim_background_items' limit
CANCEL_TIMEOUT_S = 10.0
FIRST_ROUND = 1
ROUNDS_MAX = 2  # structured output: an invalid answer is asked again once, in a follow-up provider batch
RESULT_READ_TRIES = 5  # transient failures in a row reading an ended batch's result file before its items fail
SPENT_MAX_CHARS = 100_000  # the earlier rounds' tokens kept on the job for a takeover (its record's limit: 200k)


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

    async def _record(self, record: dict[str, Any]) -> None:
        await self.batch.set_provider_batch(self.job.id, self.job.lease_token, record)

    async def _submit_and_poll(self) -> None:
        claimed = await self._claim_all()
        prior = self.job.result.get("provider_batch")
        if isinstance(prior, dict) and prior.get("name"):
            record = dict(prior)
            self.reporter.add_log(LogLine(LogLevel.INFO, f"resuming provider batch {record['name']} (not submitted "
                                                         "again)", {"code": "provider_batch_resumed",
                                                                    "provider_batch": record["name"]}))
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
            record = await self._submit(requests, FIRST_ROUND, {})
        while True:
            name, keys = str(record["name"]), [int(i) for i in record.get("items", [])]
            self.provider_batch = name
            ended = await self._poll(record)
            record = {**record, "state": ended.state}
            await self._record(record)  # before the results: the last report ends the job
            if record.get("input_file"):
                await self.api.delete_file(str(record["input_file"]))
            round_ = int(record.get("round", FIRST_ROUND))
            spent = {int(k): Usage(*v) for k, v in record.get("spent", {}).items()}
            again: dict[int, Request] = {}
            for idx, item in claimed.items():
                if idx not in keys:  # cannot happen with batches this module records; never leave an item running
                    self.reporter.add_result(self._fail(item, 0, f"not in the provider batch {name}"))
                    continue
                outcome = self._outcome(item, ended, round_, spent.get(idx, NO_USAGE))
                if isinstance(outcome, ItemResult):
                    self.reporter.add_result(outcome)
                else:
                    again[idx] = outcome
            # Reported first: a runner taking over then finds only the re-asked items pending.
            await self.reporter.flush()
            if self.stop_reason is not None:  # lost or stopping: a runner taking over may still need the file
                return
            if not again:
                await self._delete_result_file(ended)  # its results are stored
                return
            claimed = {idx: claimed[idx] for idx in again}
            record = await self._submit({idx: request for idx, (request, _) in again.items()}, round_ + 1,
                                        {idx: usage for idx, (_, usage) in again.items()})
            # Only now: until the follow-up batch is recorded, a takeover re-reads this file to ask them again.
            await self._delete_result_file(ended)

    async def _delete_result_file(self, ended: ProviderBatch) -> None:
        if ended.result_file and not ended.results_error:  # an unread one is left to expire
            await self.api.delete_file(ended.result_file)

    async def _submit(self, requests: dict[int, Request], round_: int, spent: dict[int, Usage]) -> dict[str, Any]:
        """Submit one provider batch and record it on the job; the record."""
        display_name = f"jobsys-{self.job.id}-{self.job.retry_count}" + (f"-{round_}" if round_ > FIRST_ROUND else "")
        submitted = await self.api.submit(self.job.payload.model, requests, display_name)
        keys = sorted(requests)
        record: dict[str, Any] = {"name": submitted.name, "state": "queued", "items": keys}
        if submitted.input_file is not None:
            record["input_file"] = submitted.input_file
        if round_ > FIRST_ROUND:
            record["round"] = round_
            spent_json = {str(idx): [u.tokens_in, u.tokens_out, u.tokens_thinking] for idx, u in spent.items()}
            if len(json.dumps(spent_json)) <= SPENT_MAX_CHARS:  # else a takeover loses the first answers' tokens
                record["spent"] = spent_json
        self.provider_batch = submitted.name
        await self._record(record)
        how = "from an uploaded file" if submitted.input_file else "inline"
        if round_ > FIRST_ROUND:
            message = (f"{len(keys)} item(s) with output not matching response_schema asked again in provider batch "
                       f"{submitted.name}")
            self.reporter.add_log(LogLine(LogLevel.WARNING, message, {"code": "provider_batch_asked_again",
                                                                      "provider_batch": submitted.name,
                                                                      "items": len(keys)}))
        log.info("batch %s: submitted provider batch %s with %d item(s) %s", self.job.id, submitted.name, len(keys), how)
        return record

    async def _poll(self, record: dict[str, Any]) -> ProviderBatch:
        name = str(record["name"])
        delay_s = self.settings.batch_api_poll_min_s
        seen: str | None = None
        file_failures = 0
        while True:
            try:
                current = await self.api.get(name)
            except ResultFileFailure as failure:
                file_failures += 1
                if file_failures >= RESULT_READ_TRIES:  # the batch has ended: give up on its file, not poll forever
                    return dataclasses.replace(failure.batch, results_error=f"{failure.reason} ({file_failures} tries)")
                log.warning("batch %s: reading the result file of provider batch %s failed (%s); trying again",
                            self.job.id, name, failure.reason)
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
                    await self._record({**record, "state": current.state})
            await asyncio.sleep(delay_s)  # polling the provider's batch, with backoff
            delay_s = min(delay_s * 1.5, self.settings.batch_api_poll_max_s)

    def _outcome(self, item: ClaimedItem, ended: ProviderBatch, round_: int,
                 before: Usage) -> ItemResult | tuple[Request, Usage]:
        """The item's result, or (the correction request, tokens so far) to ask it again.
        `before`: what its earlier rounds spent (counted as retry tokens)."""
        result = ended.results.get(item.idx)
        if result is None and ended.results_error:
            return self._fail(item, round_, f"provider batch {ended.state}, its result file could not be read: "
                                            f"{ended.results_error}", before)
        if result is None:
            why = f"provider batch {ended.state} without a result for this item"
            return self._fail(item, round_, why + (f" ({ended.error})" if ended.error else ""), before)
        if isinstance(result, CallFailure):
            return self._fail(item, round_, result.reason, before + (result.usage or NO_USAGE))
        spent = before + result.usage
        problem = self._checker.problem(result.text) if self._checker is not None else None
        if problem is None:
            return ItemResult(idx=item.idx, status="completed", output=result.text, attempts=round_,
                              provider=self.provider.name, **token_fields(spent, before))
        if round_ >= ROUNDS_MAX:
            return self._fail(item, round_, f"output does not match response_schema: {problem}", spent)
        request = self._request(item)
        return dataclasses.replace(request, prompt=structured.correction_prompt(request.prompt, problem)), spent
