"""One LISTEN connection per hub process, fanned out to the workers' WebSockets.

Each socket subscribes to its topics; the connection LISTENs to the union (plus the hub's
own topic, where revocations arrive). Postgres delivers every NOTIFY to every listening
session, so two hubs on one database each get every event: the hub keeps no state a
second hub would need.

When the connection is lost, every socket is closed with CLOSE_PUSH_RESTART: events may
have been missed, and a reconnecting worker resyncs. A socket is confirmed only while the
connection is up, so a worker never believes in push that is not there.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import uuid
from typing import Any, Protocol

import psycopg
from psycopg import sql

from jobsys import aio

log = logging.getLogger(__name__)

APPLICATION_NAME = "jobsys-hub-push"  # how the listener shows in pg_stat_activity
HUB_TOPIC = "jobsys:hub"  # account_revoked: {"account_id"}
POLL_S = 0.2  # how often the listener looks up from notifications to (UN)LISTEN new topics
KEEPALIVE_S = 10.0
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 5.0


class Peer(Protocol):
    """A connected worker socket, as the fan-out sees it."""

    account_id: uuid.UUID

    def deliver(self, message: dict[str, Any]) -> None:
        """Queue a message; never blocks (a peer too slow to keep up closes itself)."""

    async def close(self, code: int, reason: str) -> None: ...


class Fanout:
    def __init__(self, conninfo: str, *, restart_code: int, revoked_code: int) -> None:
        self._conninfo = conninfo
        self._restart_code = restart_code
        self._revoked_code = revoked_code
        self._peers: dict[str, set[Peer]] = collections.defaultdict(set)
        self._listening: set[str] = set()
        self._changed = asyncio.Event()
        self.up = asyncio.Event()
        self._synced = asyncio.Condition()  # notified after each change of what is listened to
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hub fan-out")

    async def close(self) -> None:
        if self._task is not None:
            await aio.cancel_and_wait([self._task])
            self._task = None

    async def add(self, peer: Peer, topics: list[str], timeout_s: float) -> bool:
        """Subscribe the peer; True once the connection LISTENs to every topic, False if
        that did not happen within the timeout (the peer stays added: remove it)."""
        for topic in topics:
            self._peers[topic].add(peer)
        self._changed.set()
        wanted = set(topics)
        try:
            async with asyncio.timeout(timeout_s), self._synced:
                await self._synced.wait_for(lambda: self.up.is_set() and wanted <= self._listening)
        except TimeoutError:
            return False
        return True

    def remove(self, peer: Peer) -> None:
        for topic in [t for t, peers in self._peers.items() if peer in peers]:
            self._peers[topic].discard(peer)
            if not self._peers[topic]:
                del self._peers[topic]
        self._changed.set()

    @property
    def peer_count(self) -> int:
        return len({peer for peers in self._peers.values() for peer in peers})

    async def _sync_listens(self, conn: psycopg.AsyncConnection[Any]) -> None:
        wanted = set(self._peers) | {HUB_TOPIC}
        for topic in sorted(wanted - self._listening):
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(topic)))
            self._listening.add(topic)
        for topic in sorted(self._listening - wanted):
            # Out of the set before the await: a socket subscribing meanwhile must wait for the
            # next pass to LISTEN again, not be confirmed on a topic being dropped.
            self._listening.discard(topic)
            await conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(topic)))
        await self._notify_synced()

    async def _notify_synced(self) -> None:
        async with self._synced:
            self._synced.notify_all()

    async def _run(self) -> None:
        backoff = RECONNECT_MIN_S
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True,
                                                                application_name=APPLICATION_NAME) as conn:
                    self._listening.clear()
                    self.up.set()
                    await self._sync_listens(conn)
                    backoff = RECONNECT_MIN_S
                    log.info("hub push listener connected")
                    idle_s = 0.0
                    while True:
                        async for note in conn.notifies(timeout=POLL_S):
                            await self._deliver(note)
                        if self._changed.is_set():
                            self._changed.clear()
                            await self._sync_listens(conn)
                        idle_s += POLL_S
                        if idle_s >= KEEPALIVE_S:
                            idle_s = 0.0
                            await conn.execute("select 1")  # raises if the link is dead
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                log.warning("hub push listener lost (%s); reconnecting in %.1fs", type(exc).__name__, backoff)
            except Exception:  # a bug must not leave sockets open on a listener that is gone
                log.exception("hub push listener failed; reconnecting in %.1fs", backoff)
            self.up.clear()
            self._listening.clear()
            await self._close_all("push listener restarting; resync")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_S)

    async def _close_all(self, reason: str) -> None:
        peers = {peer for peers in self._peers.values() for peer in peers}
        await asyncio.gather(*(peer.close(self._restart_code, reason) for peer in peers),
                             return_exceptions=True)

    async def _deliver(self, note: psycopg.Notify) -> None:
        try:
            body = json.loads(note.payload)
            message = {"type": "event", "topic": note.channel, "event": body["event"],
                       "payload": body.get("payload") or {}}
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed notification on %s", note.channel)
            return
        if note.channel == HUB_TOPIC:
            await self._on_hub_event(message)
            return
        for peer in list(self._peers.get(note.channel, ())):
            peer.deliver(message)

    async def _on_hub_event(self, message: dict[str, Any]) -> None:
        if message["event"] != "account_revoked":
            return
        account = str(message["payload"].get("account_id"))
        revoked = {peer for peers in self._peers.values() for peer in peers if str(peer.account_id) == account}
        await asyncio.gather(*(peer.close(self._revoked_code, "this PC's token was revoked")
                               for peer in revoked), return_exceptions=True)

