"""What a transport must do. Two implementations: Postgres (psycopg, LISTEN/NOTIFY) and
Supabase (PostgREST rpc + Realtime Broadcast).

A transport without push says so with `supports_push = False`; callers then poll.
Push is an optimisation: every consumer must also work from calls alone. Likewise a
transport with somewhere to keep evidence files returns a store from `evidence_store()`;
without one (None) evidence stays in the worker's local directory.
"""

from __future__ import annotations

import pathlib
import uuid
from typing import Any, Awaitable, Callable, Mapping, Protocol

from jobsys import rpc
from jobsys.events import ChannelState, Event

EventHandler = Callable[[Event], Awaitable[None] | None]
StateHandler = Callable[[ChannelState], Awaitable[None] | None]


class Subscription(Protocol):
    @property
    def state(self) -> ChannelState: ...

    async def close(self) -> None: ...


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
