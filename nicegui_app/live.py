"""Live page updates: a hub listener per page region that coalesces bursts of events.

A burst of progress events (20 devices finishing within a second) becomes at most one
re-read per REFRESH_MIN_INTERVAL_S: the first event after a quiet spell refreshes at
once (low latency), later ones wait for the interval. The listener is removed when the
NiceGUI client is deleted, so a page open for an hour holds one listener, not one per
event, and a closed page holds none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Iterable

from nicegui import Client

from jobsys.errors import JobsysError
from jobsys.events import Event
from nicegui_app.hub import RESYNC, EventHub

log = logging.getLogger(__name__)

REFRESH_MIN_INTERVAL_S = 0.2

Refresh = Callable[[], Awaitable[None]]


class Coalescer:
    """Runs `refresh` soon after `poke()`; at most once per interval; never two at a time."""

    def __init__(
        self, refresh: Refresh, min_interval_s: float = REFRESH_MIN_INTERVAL_S, name: str = "refresh"
    ) -> None:
        self._refresh = refresh
        self._min_interval_s = min_interval_s
        self._name = name
        self._dirty = False
        self._closed = False
        self._last_run = -min_interval_s
        self._task: asyncio.Task[None] | None = None
        self.runs = 0  # for tests and benchmarks: how many re-reads the events cost

    def poke(self) -> None:
        if self._closed:
            return
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def _run(self) -> None:
        while self._dirty and not self._closed:
            wait_s = self._last_run + self._min_interval_s - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)  # rate limit: gather the rest of the burst
            self._dirty = False
            self._last_run = time.monotonic()
            try:
                await self._refresh()
            except JobsysError as exc:  # database briefly away: the next event or resync retries
                log.warning("%s failed: %s", self._name, exc)
            except Exception:  # a bug in one page region must not stop its later refreshes
                log.exception("%s failed", self._name)
            self.runs += 1

    def close(self) -> None:
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()


def follow(hub: EventHub, client: Client, refresh: Refresh, events: Iterable[str], name: str) -> Coalescer:
    """Refresh a page region on these dashboard events (and on every resync) while the client lives."""
    wanted = frozenset(events) | {RESYNC}
    coalescer = Coalescer(refresh, name=name)

    def on_event(event: Event) -> None:
        if event.event in wanted:
            coalescer.poke()

    def stop() -> None:
        hub.remove_listener(on_event)
        coalescer.close()

    hub.add_listener(on_event)
    client.on_delete(stop)
    return coalescer
