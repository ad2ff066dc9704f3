"""Small asyncio helpers that stay correct on Python 3.11, shared by the worker, the batch
runner and the CLI.

On 3.11, `asyncio.wait_for` (used inside libraries such as psycopg_pool too) can swallow
a cancellation that arrives as the awaited thing completes. A task stuck that way never
ends, and shutting down hangs. So: wait with `asyncio.timeout` (`wait_event`), and cancel
tasks until they are really done (`cancel_and_wait`). `supervise` runs a set of loops the
way every long-running part here does: until a stop event or until one of them ends, then
winds down, cancels the rest and re-raises a failure. `call_handler` delivers a push event
or state to a handler that may be plain or async, and keeps its bugs to itself.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Awaitable, Callable, Iterable, Sequence, TypeVar

RECANCEL_EVERY_S = 0.5
T = TypeVar("T")


class TaskFailed(RuntimeError):
    """A supervised task ended with an exception, which is this error's __cause__."""

    def __init__(self, supervisor: str, task_name: str) -> None:
        super().__init__(f"{supervisor} stopped because {task_name} failed")
        self.task_name = task_name


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for a wake-up (`event` set) or the poll interval (`timeout_s`), whichever comes
    first; True if the event is set. The caller clears it."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        pass
    return event.is_set()


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]]) -> list[object]:
    """Cancel the tasks and wait until each has ended, cancelling again any that swallowed
    the cancellation. Returns their results or exceptions, in order."""
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_EVERY_S)
    results: list[object] = []
    for task in tasks:
        if task.cancelled():
            results.append(asyncio.CancelledError())
        else:
            results.append(task.exception() or task.result())
    return results


def _failure(task: asyncio.Task[Any]) -> Exception | None:
    if not task.done() or task.cancelled():
        return None
    exc = task.exception()
    return exc if isinstance(exc, Exception) else None


async def supervise(tasks: Sequence[asyncio.Task[Any]], stop: asyncio.Event, *,
                    wind_down: Callable[[], Awaitable[object]] | None = None,
                    name: str = "supervisor", log: logging.Logger | None = None) -> None:
    """Run `tasks` until `stop` is set or one of them ends (a side loop that fails must
    stop the whole, as in Procrastinate); then await `wind_down` (graceful work that still
    needs the tasks running, e.g. draining reports), cancel the tasks still running and
    wait until every one has ended. The same happens if this call is cancelled.

    If a task ended with an exception, the first in `tasks` order is raised as TaskFailed
    ("<name> stopped because <task> failed", the exception as its cause). With `log`, a
    failure that ends the wait is logged at once, before winding down."""
    tasks = list(tasks)
    stop_waiter = asyncio.create_task(stop.wait(), name=f"{name} stop")
    try:
        done, _ = await asyncio.wait([stop_waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if log is not None:
            for task in tasks:
                if task in done and _failure(task) is not None:
                    log.error("%s side task %s failed: %r", name, task.get_name(), task.exception())
    finally:
        try:
            if wind_down is not None:
                await wind_down()
        finally:
            await cancel_and_wait([*tasks, stop_waiter])
    for task in tasks:
        failure = _failure(task)
        if failure is not None:
            raise TaskFailed(name, task.get_name()) from failure


async def maybe_await(result: object) -> None:
    """Await a handler's result when it is awaitable: push handlers may be plain or async."""
    if inspect.isawaitable(result):
        await result


async def call_handler(handler: Callable[[T], object], value: T, log: logging.Logger) -> None:
    """Call a push handler with `value`; a bug in it is logged, never raised into the
    channel that delivers (one bad handler must not end push for everyone)."""
    try:
        await maybe_await(handler(value))
    except Exception:
        log.exception("push handler failed for %r", value)
