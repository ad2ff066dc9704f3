"""Reports run outcomes to the server and never loses one while the process lives.

Outcomes queue up while a report is in flight and go together in the next call
(finish_assignments: one transaction, one counter update per job), so a busy worker
sends few large reports rather than many small ones, without waiting to fill a batch.
On a connection error the batch waits and is retried with backoff; a run the server says
has moved on (stale: lease expired and re-queued, job cancelled or deleted) is dropped,
since someone else owns it now."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from typing import Any, Literal

from jobsys import errors
from jobsys.models import RunOutcome, RunReport
from jobsys.system import MAX_REPORTS, JobSystem

log = logging.getLogger("jobsys.worker.reporter")

RETRY_MIN_S = 0.2
RETRY_MAX_S = 5.0

_OUTCOMES: dict[str, RunOutcome] = {"complete": "completed", "fail": "failed", "release": "release"}


@dataclasses.dataclass(frozen=True)
class Outcome:
    assignment_id: int
    attempt: int
    kind: Literal["complete", "fail", "release"]
    result: dict[str, Any] | None = None
    error: str | None = None

    def report(self) -> RunReport:
        return RunReport(assignment_id=self.assignment_id, attempt=self.attempt, outcome=_OUTCOMES[self.kind],
                         result=self.result, error=self.error or ("failed" if self.kind == "fail" else None))


class Reporter:
    def __init__(self, jobs: JobSystem) -> None:
        self._jobs = jobs
        self._worker_id: uuid.UUID | None = None
        self._queue: asyncio.Queue[Outcome] = asyncio.Queue()
        self._in_flight: dict[int, Outcome] = {}
        self.sent = 0
        self.dropped = 0
        self.calls = 0  # finish_assignments calls made (each carries one or more reports)

    def bind(self, worker_id: uuid.UUID) -> None:
        """The worker session the reported runs were claimed by (set once registered)."""
        self._worker_id = worker_id

    def submit(self, outcome: Outcome) -> None:
        self._in_flight[outcome.assignment_id] = outcome
        self._queue.put_nowait(outcome)

    def pending_ids(self) -> list[int]:
        """Runs reported locally but not yet accepted: still running on the server."""
        return list(self._in_flight)

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_REPORTS and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._deliver(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def drain(self) -> None:
        await self._queue.join()

    async def _deliver(self, batch: list[Outcome]) -> None:
        assert self._worker_id is not None, "bind() the worker session before reporting"
        backoff_s = RETRY_MIN_S
        while True:
            try:
                answers = await self._jobs.finish_assignments(self._worker_id, [o.report() for o in batch])
                self.calls += 1
                break
            except errors.TransportError as exc:
                log.warning("report of %d run(s) waits for the database (%s); retry in %.1fs",
                            len(batch), exc.message, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, RETRY_MAX_S)
            except errors.JobsysError as exc:
                # Refused as a whole (e.g. the session is no longer this worker's): a retry
                # cannot succeed, and the runs' leases bring them back to the queue.
                log.error("report of %d run(s) refused, dropped: %s", len(batch), exc.message)
                self._settle(batch, sent=0)
                return
        stale = [a for a in answers if a.stale]
        for answer in stale:
            log.info("run %s/%s moved on, report dropped", answer.assignment_id, answer.attempt)
        self._settle(batch, sent=len(batch) - len(stale))

    def _settle(self, batch: list[Outcome], sent: int) -> None:
        self.sent += sent
        self.dropped += len(batch) - sent
        for outcome in batch:
            if self._in_flight.get(outcome.assignment_id) is outcome:  # not a newer attempt's
                del self._in_flight[outcome.assignment_id]
