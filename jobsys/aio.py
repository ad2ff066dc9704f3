"""Small asyncio helpers that stay correct on Python 3.11.

On 3.11, `asyncio.wait_for` (used inside libraries such as psycopg_pool too) can swallow
a cancellation that arrives as the awaited thing completes. A task stuck that way never
ends, and shutting down hangs. So: wait with `asyncio.timeout`, and cancel tasks until
they are really done.
"""

from __future__ import annotations

import asyncio
from typing import Iterable

RECANCEL_EVERY_S = 0.5


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for the event at most timeout_s; True if it is set."""
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
