"""What a transport must do. Two implementations: Postgres (psycopg, LISTEN/NOTIFY) and
Supabase (PostgREST rpc + Realtime Broadcast).

A transport without push says so with `supports_push = False`; callers then poll.
Push is an optimisation: every consumer must also work from calls alone.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping, Protocol

from jobsys import rpc
from jobsys.events import ChannelState, Event

EventHandler = Callable[[Event], Awaitable[None] | None]
StateHandler = Callable[[ChannelState], Awaitable[None] | None]


class Subscription(Protocol):
    @property
    def state(self) -> ChannelState: ...

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

    async def close(self) -> None: ...
