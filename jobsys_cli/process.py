"""What belongs to the process, not the library: Ctrl-C / SIGTERM, and running the parts of
a command until one of them ends or a signal arrives."""

from __future__ import annotations

import asyncio
import signal
from typing import Any, Callable, Sequence

from jobsys import aio


class CommandError(Exception):
    """A refusal main() prints as one line (`jobsys: <message>`), exiting with status 2."""


def stop_on_signals() -> asyncio.Event:
    """An event set on SIGINT/SIGTERM. Install it before anything says it is up, so a
    signal that arrives at once still stops cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def until_stopped(stop: asyncio.Event, tasks: Sequence[asyncio.Task[Any]] = (), *,
                        graceful: Sequence[asyncio.Task[Any]] = (),
                        on_stop: Callable[[], None] | None = None) -> None:
    """Wait for Ctrl-C (`stop`) or for a part to end; then set `stop`, call `on_stop`, let
    the `graceful` parts (which watch `stop` or `on_stop` themselves, like the worker)
    finish, cancel the rest, and re-raise a part's failure as it was raised."""

    async def wind_down() -> None:
        stop.set()
        if on_stop is not None:
            on_stop()
        if graceful:
            await asyncio.wait(graceful)

    failure: BaseException | None = None
    try:
        await aio.supervise([*graceful, *tasks], stop, wind_down=wind_down, name="jobsys")
    except aio.TaskFailed as failed:
        failure = failed.__cause__
    if failure is not None:
        raise failure  # the part's own error: main() turns a busy port into a message
