"""One thread per phone, so a phone that stops answering holds up nobody else.

adbutils and uiautomator2 block, and a phone can stop answering inside a call for minutes
(adbutils' device sockets default to a 600 s timeout). With a shared pool (asyncio.to_thread)
every hung call keeps a pool thread; a few runs on one hung phone take all of them and
every other phone's calls queue behind. Here each phone has its own daemon thread that
runs its calls one at a time:

- a call that outlives its timeout is abandoned, and the lane is *hung*: later calls fail
  at once (LaneHung) instead of queueing behind it, until the stuck call returns;
- the thread is a daemon and nobody joins it, so a stuck call never holds up shutdown
  (a ThreadPoolExecutor's threads are joined at interpreter exit);
- closing a lane never waits for it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import queue
import threading
import time
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class LaneHung(Exception):
    """An earlier call on this lane is stuck past its timeout; the phone is not answering."""


@dataclasses.dataclass
class _Call:
    what: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: concurrent.futures.Future[Any]
    timeout_s: float
    started: float = 0.0  # time.monotonic() when the thread picked it up


class Lane:
    """Runs blocking calls for one phone on its own daemon thread, one at a time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._current: _Call | None = None
        self._stuck: _Call | None = None  # a call whose waiter gave up on it while it ran
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def hung(self) -> str | None:
        """Why the lane is hung (a call timed out and is still running), else None."""
        stuck = self._stuck
        if stuck is None or stuck.future.done():
            return None
        return f"{stuck.what} has not returned for {time.monotonic() - stuck.started:.0f} s"

    async def call(self, what: str, fn: Callable[..., T], *args: Any, timeout_s: float) -> T:
        """Run fn(*args) on this lane's thread; TimeoutError after timeout_s (the time spent
        queued behind an earlier call counts), LaneHung at once if the lane is hung."""
        if self._closed:
            raise LaneHung(f"{self.name} is closed")
        stuck = self.hung
        if stuck is not None:
            raise LaneHung(stuck)
        call = _Call(what, fn, args, concurrent.futures.Future(), timeout_s)
        self._queue.put(call)
        # Cancelling the waiter cancels a call still queued; a running one is abandoned.
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.wrap_future(call.future)  # type: ignore[no-any-return]
        except TimeoutError:
            # Whatever runs now (this call, or the one this call queued behind) is stuck.
            current = self._current
            if current is not None and not current.future.done():
                self._stuck = current
            raise

    def submit(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) when the lane is free; nobody waits for it (cleanup, release)."""
        if not self._closed:
            self._queue.put(_Call(what, fn, args, concurrent.futures.Future(), 0.0))

    def close(self) -> None:
        """Let the thread end after its current call; never waits for it."""
        self._closed = True
        self._queue.put(None)

    def _run(self) -> None:
        while True:
            call = self._queue.get()
            if call is None:
                return
            if not call.future.set_running_or_notify_cancel():
                continue  # given up while queued
            call.started = time.monotonic()
            self._current = call
            try:
                result = call.fn(*call.args)
            except BaseException as exc:  # handed to the waiter, if one is still there
                if not call.future.cancelled():
                    call.future.set_exception(exc)
            else:
                if not call.future.cancelled():
                    call.future.set_result(result)
            finally:
                self._current = None
