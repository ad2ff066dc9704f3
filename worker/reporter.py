"""Reports run outcomes to the server and never loses one while the process lives: on a
connection error the report waits and is retried with backoff; a run the server says
has moved on (StaleRun, NotFound) is dropped, since someone else owns it now."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any, Literal

from jobsys import errors
from jobsys.system import JobSystem

log = logging.getLogger("jobsys.worker.reporter")

RETRY_MIN_S = 0.2
RETRY_MAX_S = 5.0


@dataclasses.dataclass(frozen=True)
class Outcome:
    assignment_id: int
    attempt: int
    kind: Literal["complete", "fail", "release"]
    result: dict[str, Any] | None = None
    error: str | None = None


class Reporter:
    def __init__(self, jobs: JobSystem) -> None:
        self._jobs = jobs
        self._queue: asyncio.Queue[Outcome] = asyncio.Queue()
        self._in_flight: dict[int, Outcome] = {}
        self.sent = 0
        self.dropped = 0

    def submit(self, outcome: Outcome) -> None:
        self._in_flight[outcome.assignment_id] = outcome
        self._queue.put_nowait(outcome)

    def pending_ids(self) -> list[int]:
        """Runs reported locally but not yet accepted: still running on the server."""
        return list(self._in_flight)

    async def run(self) -> None:
        while True:
            outcome = await self._queue.get()
            await self._deliver(outcome)
            self._queue.task_done()

    async def drain(self) -> None:
        await self._queue.join()

    async def _deliver(self, outcome: Outcome) -> None:
        backoff_s = RETRY_MIN_S
        while True:
            try:
                await self._send(outcome)
                self.sent += 1
                break
            except (errors.StaleRun, errors.NotFound) as exc:
                self.dropped += 1
                log.info("run %s/%s moved on, report dropped: %s", outcome.assignment_id, outcome.attempt,
                         exc.message)
                break
            except errors.TransportError as exc:
                log.warning("report of run %s waits for the database (%s); retry in %.1fs",
                            outcome.assignment_id, exc.message, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, RETRY_MAX_S)
        self._in_flight.pop(outcome.assignment_id, None)

    async def _send(self, outcome: Outcome) -> None:
        if outcome.kind == "complete":
            await self._jobs.complete_assignment(outcome.assignment_id, outcome.attempt, outcome.result)
        elif outcome.kind == "fail":
            await self._jobs.fail_assignment(outcome.assignment_id, outcome.attempt, outcome.error or "failed",
                                             result=outcome.result)
        else:
            await self._jobs.release_assignment(outcome.assignment_id, outcome.attempt, outcome.error)
