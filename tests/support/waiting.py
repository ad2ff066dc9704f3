"""Waiting for a condition with a deadline: never a bare sleep as synchronisation."""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

SYNC_POLL_INTERVAL_S = 0.05  # wait_for: how often it looks again


async def wait_until(predicate: Callable[[], Awaitable[bool] | bool], timeout_s: float = 10.0,
                     what: str = "condition") -> None:
    """Poll a condition (plain or awaitable) until it holds; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result  # type: ignore[misc]
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """The same outside an event loop (a browser, a server in a subprocess): poll `check()`
    until it is true; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(SYNC_POLL_INTERVAL_S)
