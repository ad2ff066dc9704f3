"""`jobsys batch submit` follows its job: a progress bar on the terminal, live from
background_job_progress events, re-read by polling while the push channel is down."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from typing import TextIO

from jobsys import aio
from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchJob, BatchProgress
from jobsys.events import ChannelState, Event, EventName

FOLLOW_POLL_S = 2.0  # progress poll while push is down
FOLLOW_SAFETY_POLL_S = 10.0  # while push is up
BAR_WIDTH = 30
NO_RUNNER_HINT_S = 10.0  # still pending after this long: say that a runner is needed


class ProgressBar:
    """A one-line bar redrawn in place on a terminal; one line per change (at most one a
    second) when the output is a file or pipe."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last_line = ""
        self._last_print_s = 0.0
        self._started_s = time.monotonic()

    def show(self, p: BatchProgress | BatchJob, final: bool = False) -> None:
        done = p.completed_items + p.failed_items
        filled = BAR_WIDTH * done // max(1, p.total_items)
        line = (f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{p.total_items} ({p.progress_percent}%) "
                f"ok {p.completed_items} failed {p.failed_items} running {p.running_items} "
                f"{p.status.value}{' OFFLINE' if p.offline else ''} {time.monotonic() - self._started_s:.0f}s")
        if self.tty:
            self.out.write("\r" + line.ljust(len(self._last_line)) + ("\n" if final else ""))
            self.out.flush()
            self._last_line = line
        elif line != self._last_line and (final or time.monotonic() - self._last_print_s >= 1.0):
            self.out.write(line + "\n")
            self.out.flush()
            self._last_print_s = time.monotonic()
            self._last_line = line


async def follow(batch: BatchJobs, job_id: uuid.UUID, out: TextIO = sys.stderr) -> BatchJob:
    """Show the job's progress until it ends: live from background_job_progress events,
    a poll every 2 s while the push channel is down."""
    bar = ProgressBar(out)
    wake = asyncio.Event()
    push = {"state": ChannelState.DISCONNECTED}

    def on_event(event: Event) -> None:
        if event.event != EventName.BACKGROUND_JOB_PROGRESS or event.payload.get("job_id") != str(job_id):
            return
        progress = BatchProgress.model_validate(event.payload)
        bar.show(progress)
        if progress.status.final:
            wake.set()

    def on_state(state: ChannelState) -> None:
        push["state"] = state
        wake.set()  # resync with a read

    subscription = await batch.subscribe_progress(on_event, on_state)
    started_s = time.monotonic()
    hinted = False
    try:
        job = await batch.get_job(job_id)
        while True:
            bar.show(job, final=job.status.final)
            if job.status.final:
                return job
            if not hinted and job.status.value == "pending" and time.monotonic() - started_s > NO_RUNNER_HINT_S:
                out.write("\nstill pending: is a batch runner running? (`jobsys up` or `jobsys batch-runner`)\n")
                hinted = True
            interval_s = FOLLOW_SAFETY_POLL_S if push["state"] is ChannelState.SUBSCRIBED else FOLLOW_POLL_S
            await aio.wait_event(wake, interval_s)
            wake.clear()
            job = await batch.get_job(job_id)
    finally:
        await subscription.close()
