"""`jobsys jobs create --wait` follows its device job: a progress bar on the terminal until
the job ends, woken by job_progress events and re-read every second (the database is the
truth; a push only says "look again")."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, TextIO

from jobsys import aio
from jobsys.events import ChannelState, Event, EventName
from jobsys.models import Job
from jobsys.system import JobSystem, Subscription

POLL_S = 1.0  # a read every second whether push is up or not: cheap, and bounds any missed event
BAR_WIDTH = 20
# A device job ends in one of these (SPEC §3 "Every job ends"). Read as strings, so a status
# the library adds later (e.g. `incomplete`) needs no change here.
TERMINAL_STATUSES = frozenset({"completed", "cancelled", "incomplete"})


def status_of(job: Job | dict[str, Any]) -> str:
    raw = job.get("status") if isinstance(job, dict) else job.status
    return str(getattr(raw, "value", raw))


def is_terminal(job: Job | dict[str, Any]) -> bool:
    return status_of(job) in TERMINAL_STATUSES


def progress_text(job: Job, width: int = BAR_WIDTH) -> str:
    """`[#####     ] 15/20 devices (75%)  running 3  failed 1  active`: completed of target."""
    target = max(0, job.target_count)
    done = job.completed_count
    percent = min(100, done * 100 // target) if target else 0
    filled = min(width, width * done // target) if target else 0
    line = f"[{'#' * filled}{' ' * (width - filled)}] {done}/{target} devices ({percent}%)"
    line += f"  running {job.running_count}  failed {job.failed_count}  {status_of(job)}"
    if job.end_reason is not None:
        line += f" ({job.end_reason.value})"
    elif job.waiting_for_devices:
        line += f" (waiting for {job.waiting_for_devices} more devices)"
    return line


class ProgressLine:
    """One line redrawn in place on a terminal; on a file or pipe, one line per change."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last = ""

    def show(self, job: Job, final: bool = False) -> None:
        line = progress_text(job)
        if self.tty:
            self.out.write("\r" + line.ljust(len(self._last)) + ("\n" if final else ""))
        elif line != self._last:
            self.out.write(line + "\n")
        self.out.flush()
        self._last = line

    def break_line(self) -> None:
        """End a line drawn in place, so a message after it starts on its own line."""
        if self.tty and self._last:
            self.out.write("\n")
            self.out.flush()


async def follow(jobs: JobSystem, job_id: uuid.UUID, out: TextIO, interrupted: asyncio.Event) -> Job | None:
    """Show the job's progress until it is in a terminal status (returned) or `interrupted`
    is set (None). A job deleted meanwhile raises NotFound from get_job."""
    bar = ProgressLine(out)
    wake = asyncio.Event()

    def on_event(event: Event) -> None:
        if event.event in (EventName.JOB_PROGRESS, EventName.JOB_DELETED) \
                and event.payload.get("job_id") == str(job_id):
            wake.set()

    def on_state(state: ChannelState) -> None:
        wake.set()  # (re)subscribed or lost: read again

    async def relay_interrupt() -> None:
        await interrupted.wait()
        wake.set()

    subscription: Subscription | None = None
    relay = asyncio.create_task(relay_interrupt())
    try:
        try:
            subscription = await jobs.subscribe_dashboard(on_event, on_state)
        except Exception:  # noqa: BLE001 - push is an optimisation; polling alone is enough
            subscription = None
        while True:
            job = await jobs.get_job(job_id)
            final = is_terminal(job)
            bar.show(job, final=final)
            if final:
                return job
            if interrupted.is_set():
                bar.break_line()
                return None
            started = time.monotonic()
            await aio.wait_event(wake, POLL_S)
            wake.clear()
            if interrupted.is_set():
                bar.break_line()
                return None
            if time.monotonic() - started < 0.1:
                await asyncio.sleep(0.1)  # a burst of events costs one read per 0.1 s at most
    finally:
        relay.cancel()
        if subscription is not None:
            await subscription.close()
