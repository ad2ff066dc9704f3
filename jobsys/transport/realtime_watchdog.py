"""Keeps Supabase Realtime Broadcast channels joined, without limit.

What realtime-py 2.34 does on its own (read in its source, realtime/_async/*.py):
- `AsyncRealtimeClient.connect()` retries `max_retries` times, then raises inside its
  listener task and leaves the channels errored for good;
- callbacks are called synchronously: an `async def` callback is never awaited;
- a message broadcast while the socket is down is not replayed.

So this module owns the connection. The library's auto-reconnect is off; any sign of
trouble (socket closed or dropped, heartbeat failure, join refused or timed out, channel
errored or closed by the server) tears the socket down and builds a new one, with
backoff and no retry limit. Each complete (re)join reports SUBSCRIBED, so the subscriber
resyncs from the database; anything else reports DISCONNECTED, so it polls meanwhile.
Library callbacks only enqueue; one dispatcher task awaits the handlers in order.

The watchdog itself must not die: an unexpected exception in a step (a bad URL, set_auth
failing, a library bug) is logged, reported as DISCONNECTED, and answered with a rebuild
after backoff; should the task end anyway, it is started again.

Liveness: realtime-py sends heartbeats but a socket whose server-side subscription is gone
("zombie": heartbeats answered, broadcasts not delivered) looks healthy. Without a SQL
function to ask the database for a ping on our own topic, the socket is rebuilt on a
schedule (`rebuild_every_s`, jittered), each rebuild ending in SUBSCRIBED so the subscriber
resyncs: a silent loss of push lasts at most that long (the subscriber's safety poll, 30 s
for workers, bounds how late work is claimed meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
import time
from typing import Any

from realtime import AsyncRealtimeClient, RealtimeSubscribeStates
from realtime.types import BroadcastPayload, RealtimeChannelOptions

from jobsys import aio
from jobsys.auth import TokenSource
from jobsys.events import ChannelState, Event
from jobsys.transport.base import EventHandler, StateHandler

log = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class RealtimeSettings:
    reconnect_min_s: float = 0.5  # also the pause after a drop, so a flapping server is not hammered
    reconnect_max_s: float = 15.0
    join_timeout_s: float = 10.0  # connect and phx_join reply, each
    heartbeat_s: int = 25  # Phoenix heartbeat; realtime-py never sends less often than 15 s
    check_interval_s: float = 15.0  # health check and token refresh while all is well
    # Liveness: a new socket this often, so a zombie subscription lasts at most this long
    # (0 turns it off). Each rebuild is a resync for the subscriber: one extra claim or reload.
    # Jittered down to 3/4 of it, so a fleet started together does not rejoin in one burst
    # (Realtime limits channel joins per second per project).
    rebuild_every_s: float = 300.0


def channel_options() -> RealtimeChannelOptions:
    # Private: Realtime Authorization (RLS on realtime.messages) decides who may join.
    return {"config": {"broadcast": {"ack": False, "self": False},
                       "presence": {"key": "", "enabled": False}, "private": True}}



class BroadcastSubscription:
    """One `Transport.subscribe()`: a private Broadcast channel per topic on its own socket."""

    def __init__(self, realtime_url: str, apikey: str, topics: list[str], on_event: EventHandler,
                 on_state: StateHandler | None, *, token: TokenSource,
                 settings: RealtimeSettings | None = None) -> None:
        self._url = realtime_url
        self._apikey = apikey
        self._topics = list(dict.fromkeys(topics))
        self._on_event = on_event
        self._on_state = on_state
        self._token = token
        self._settings = settings or RealtimeSettings()
        self._state = ChannelState.DISCONNECTED
        self._announced = False  # the first state is reported even if it is DISCONNECTED
        self._queue: asyncio.Queue[Event | ChannelState] = asyncio.Queue()
        self._kick = asyncio.Event()
        self._client: AsyncRealtimeClient | None = None
        self._client_token: str | None = None
        self._generation = 0  # callbacks of a torn-down socket carry an older number
        self._joined: set[str] = set()
        self._broken = False
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._rebuild_at = 0.0  # monotonic: when the joined socket is replaced (liveness)
        self.connects = 0  # sockets attempted so far (diagnostics and tests)

    @property
    def state(self) -> ChannelState:
        return self._state

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._dispatch(), name="jobsys-realtime-dispatch")]
        self._start_watch()

    async def close(self) -> None:
        self._closed = True  # also ends the loop if a cancellation is lost (see _wait_kick)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._teardown()

    # Watchdog ----------------------------------------------------------------------------
    def _healthy(self) -> bool:
        return (self._client is not None and self._client.is_connected and not self._broken
                and self._joined.issuperset(self._topics))

    def _on_watch_done(self, task: asyncio.Task[None]) -> None:
        """Last line of defence: `_watch` guards each step, but if it ends anyway while the
        subscription is open, log it and start it again, so push is never left for dead."""
        if self._closed or task.cancelled():
            return
        log.error("realtime: watchdog ended unexpectedly (%r); restarting it", task.exception() or "returned")
        self._set_state(ChannelState.DISCONNECTED)
        # After a pause: a watchdog that keeps ending at once must not spin.
        asyncio.get_running_loop().call_later(self._settings.reconnect_min_s, self._start_watch)

    def _start_watch(self) -> None:
        if self._closed:
            return
        task = asyncio.create_task(self._watch(), name="jobsys-realtime-watchdog")
        task.add_done_callback(self._on_watch_done)
        self._tasks = [t for t in self._tasks if not t.done()] + [task]

    def _rebuild_due(self) -> bool:
        return self._settings.rebuild_every_s > 0 and time.monotonic() >= self._rebuild_at

    async def _watch(self) -> None:
        failures = 0
        while not self._closed:
            try:
                if self._healthy() and not self._rebuild_due():
                    await self._refresh_token()
                else:
                    if self._healthy():
                        log.info("realtime: scheduled socket rebuild (liveness)")
                    failures = 0 if await self._rebuild() else failures + 1
            except asyncio.CancelledError:
                raise
            except Exception:  # never fatal: a dead watchdog would leave push down with a stale state
                log.exception("realtime: watchdog step failed; rebuilding the socket")
                self._broken = True
                self._set_state(ChannelState.DISCONNECTED)
                failures += 1
            if failures:
                settings = self._settings
                delay_s = min(settings.reconnect_min_s * 2 ** (min(failures, 30) - 1), settings.reconnect_max_s)
                log.warning("realtime: not subscribed; retry %d in %.1fs", failures, delay_s)
                await asyncio.sleep(delay_s)
                continue
            wait_s = self._settings.check_interval_s
            if self._settings.rebuild_every_s > 0:
                wait_s = min(wait_s, max(0.0, self._rebuild_at - time.monotonic()))
            await self._wait_kick(wait_s)
            if self._kick.is_set():
                self._kick.clear()
                await asyncio.sleep(self._settings.reconnect_min_s)

    async def _wait_kick(self, timeout_s: float) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
        # that arrives as the awaited event fires, and close() would then wait forever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._kick.wait()

    async def _rebuild(self) -> bool:
        """A new socket and fresh joins. True when every topic is joined."""
        self._generation += 1
        generation = self._generation
        self._joined.clear()
        self._broken = False
        self._kick.clear()  # signals from the old socket are answered by this rebuild
        await self._teardown()
        settings = self._settings
        self.connects += 1
        try:
            # Built inside the guard: a bad URL raises here, and is retried like any failure.
            client = AsyncRealtimeClient(self._url, token=self._apikey, auto_reconnect=False, max_retries=1,
                                         hb_interval=settings.heartbeat_s,
                                         timeout=settings.join_timeout_s)  # type: ignore[arg-type]
            self._client = client
            self._client_token = await self._token()
            await client.set_auth(self._client_token)  # sent as access_token in every phx_join
            await client.connect()
            for topic in self._topics:
                channel = client.channel(topic, channel_options())
                channel.on_broadcast("*", functools.partial(self._on_broadcast, topic))
                # subscribe() returns once the join is answered, refused or timed out.
                async with asyncio.timeout(settings.join_timeout_s * 2):
                    await channel.subscribe(functools.partial(self._on_status, generation, topic))
                if topic not in self._joined:
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # anything a connect or join can raise: retried with backoff
            log.warning("realtime: connect failed (%s: %s)", type(exc).__name__, exc)
        if self._healthy():
            self._rebuild_at = time.monotonic() + self._settings.rebuild_every_s * random.uniform(0.75, 1.0)
            return True
        self._set_state(ChannelState.DISCONNECTED)
        return False

    async def _refresh_token(self) -> None:
        """A refreshed JWT goes to the joined channels before the old one expires (Realtime
        closes channels whose token expired)."""
        try:
            token = await self._token()
        except Exception as exc:
            log.warning("realtime: token refresh failed (%s); keeping the current one", exc)
            return
        if token != self._client_token and self._client is not None:
            self._client_token = token
            try:
                await self._client.set_auth(token)
            except Exception as exc:  # a socket that cannot take the new token is rebuilt with it
                log.warning("realtime: could not send the refreshed token (%s: %s); rebuilding",
                            type(exc).__name__, exc)
                self._broken = True

    async def _teardown(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    # Library callbacks (synchronous: record and enqueue only) ----------------------------
    def _on_status(self, generation: int, topic: str, status: RealtimeSubscribeStates,
                   error: Exception | None) -> None:
        if generation != self._generation:
            return  # a late timeout or error from a socket already replaced
        if status == RealtimeSubscribeStates.SUBSCRIBED:
            self._joined.add(topic)
            if self._joined.issuperset(self._topics):
                self._set_state(ChannelState.SUBSCRIBED, always=True)
            return
        log.warning("realtime: %s %s%s", topic, status.value.lower(), f" ({error})" if error else "")
        self._joined.discard(topic)
        self._broken = True
        self._set_state(ChannelState.DISCONNECTED)
        self._kick.set()

    def _on_broadcast(self, topic: str, message: BroadcastPayload) -> None:
        payload: Any = message.get("payload")
        self._queue.put_nowait(Event(topic=topic, event=message["event"],
                                     payload=payload if isinstance(payload, dict) else {}))

    def _set_state(self, state: ChannelState, *, always: bool = False) -> None:
        """SUBSCRIBED is reported on every (re)join (the subscriber resyncs each time);
        DISCONNECTED once per outage."""
        if state == self._state and self._announced and not always:
            return
        if state != self._state or not self._announced:
            log.info("push channel %s", state.value.lower())
        self._state = state
        self._announced = True
        self._queue.put_nowait(state)

    # Delivery --------------------------------------------------------------------------
    async def _dispatch(self) -> None:
        while True:
            item = await self._queue.get()
            if isinstance(item, Event):
                await aio.call_handler(self._on_event, item, log)
            elif self._on_state is not None:
                await aio.call_handler(self._on_state, item, log)
