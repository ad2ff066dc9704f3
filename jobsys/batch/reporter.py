"""Writes one job's item results and log lines to the database as they come.

Whatever accumulates while a report is on its way goes in the next one, so an idle job
reports each result at once and a busy one batches itself (fewer, larger transactions).
A database outage keeps everything buffered and retries with backoff; a StaleRun (the
job was cancelled or taken over) drops the buffer, since none of it may count.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

from jobsys import errors
from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import ItemResult, LogLine, ReportReply

log = logging.getLogger("jobsys.batch")

REPORT_MAX_RESULTS = 500  # per transaction
RETRY_MIN_S = 0.2
RETRY_MAX_S = 5.0


class Reporter:
    def __init__(self, batch: BatchJobs, job_id: uuid.UUID, lease_token: uuid.UUID,
                 on_lost: Callable[[errors.JobsysError], None]) -> None:
        self._batch = batch
        self._job_id = job_id
        self._lease_token = lease_token
        self._on_lost = on_lost
        self._results: list[ItemResult] = []
        self._logs: list[LogLine] = []
        self._pending = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.last_reply: ReportReply | None = None
        self.lost = False

    def add_result(self, result: ItemResult) -> None:
        self._results.append(result)
        self._wake()

    def add_log(self, line: LogLine) -> None:
        self._logs.append(line)
        self._wake()

    def discard(self) -> None:
        self._results.clear()
        self._logs.clear()
        self._idle.set()

    def _wake(self) -> None:
        if self.lost:
            self.discard()
            return
        self._idle.clear()
        self._pending.set()

    async def flush(self) -> None:
        """Until everything added so far is written (or dropped because the job moved on)."""
        await self._idle.wait()

    async def run(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            results, self._results = self._results[:REPORT_MAX_RESULTS], self._results[REPORT_MAX_RESULTS:]
            logs, self._logs = self._logs, []
            if results or logs:
                await self._send(results, logs)
            if self._results or self._logs:
                self._pending.set()
            else:
                self._idle.set()

    async def _send(self, results: list[ItemResult], logs: list[LogLine]) -> None:
        backoff_s = RETRY_MIN_S
        while True:
            try:
                reply = await self._batch.report(self._job_id, self._lease_token, results, logs)
            except (errors.StaleRun, errors.NotFound) as exc:
                self.lost = True
                self.discard()
                self._on_lost(exc)
                return
            except errors.TransportError as exc:
                log.warning("batch %s: report of %d result(s) waits for the database (%s); retry in %.1fs",
                            self._job_id, len(results), exc.message, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, RETRY_MAX_S)
                continue
            self.last_reply = reply
            if reply.stale:
                log.warning("batch %s: %d result(s) not counted, items no longer ours: %s",
                            self._job_id, len(reply.stale), reply.stale[:10])
            return
