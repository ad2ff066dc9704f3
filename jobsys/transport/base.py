"""What a transport must do. Three implementations: Postgres (psycopg, LISTEN/NOTIFY),
Supabase (PostgREST rpc + Realtime Broadcast) and the hub (HTTP + one WebSocket).

A transport without push says so with `supports_push = False`; callers then poll.
Push is an optimisation: every consumer must also work from calls alone. Likewise a
transport with somewhere to keep evidence files returns a store from `evidence_store()`;
without one (None) evidence stays in the worker's local directory.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import uuid
from typing import Any, Awaitable, Callable, Mapping, Protocol

from jobsys import aio, rpc
from jobsys.events import ChannelState, Event

EventHandler = Callable[[Event], Awaitable[None] | None]
StateHandler = Callable[[ChannelState], Awaitable[None] | None]


class Subscription(Protocol):
    @property
    def state(self) -> ChannelState: ...

    async def close(self) -> None: ...


class PushChannel:
    """What a reconnecting push subscription shares: its state, reported to `on_state` on every
    (re)connect and loss, and the one task that runs it (`_run`, the transport's own loop)."""

    task_name = "jobsys-push"

    def __init__(self, topics: list[str], on_event: EventHandler, on_state: StateHandler | None,
                 log: logging.Logger) -> None:
        self._topics = list(topics)
        self._on_event = on_event
        self._on_state = on_state
        self._log = log
        self._state = ChannelState.DISCONNECTED
        self._task: asyncio.Task[None] | None = None

    @property
    def state(self) -> ChannelState:
        return self._state

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def close(self) -> None:
        if self._task is not None:
            await aio.cancel_and_wait([self._task])
            self._task = None

    async def _run(self) -> None:
        raise NotImplementedError

    async def _set_state(self, state: ChannelState) -> None:
        if state != self._state:
            self._state = state
            self._log.info("push channel %s", state.value.lower())
        if self._on_state is not None:
            await aio.call_handler(self._on_state, state, self._log)

    async def _deliver(self, event: Event) -> None:
        await aio.call_handler(self._on_event, event, self._log)


class EvidenceUploader(Protocol):
    """Where a worker puts a run's evidence file (Supabase: Storage). The caller closes it."""

    async def upload(self, worker_id: uuid.UUID | str, assignment_id: int, attempt: int,
                     path: pathlib.Path) -> str:
        """Store the file; returns how the run's result names it (a URI)."""

    async def close(self) -> None: ...


class Transport(Protocol):
    supports_push: bool

    async def call(self, function: rpc.SqlFunction, args: Mapping[str, Any] | None = None) -> Any:
        """Call a function returning one value (usually jsonb, returned parsed)."""

    async def call_rows(
        self, function: rpc.SqlFunction, args: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Call a set-returning function; one dict per row."""

    async def subscribe(
        self, topics: list[str], on_event: EventHandler, on_state: StateHandler | None = None
    ) -> Subscription:
        """Deliver events of these topics until closed. on_state is told SUBSCRIBED on every
        (re)connect, so the subscriber can resync, and DISCONNECTED when push is down."""

    def evidence_store(self) -> EvidenceUploader | None:
        """A new evidence store acting as this transport's user (the caller closes it), or
        None when evidence has nowhere to go but the worker's local directory."""

    async def close(self) -> None: ...
