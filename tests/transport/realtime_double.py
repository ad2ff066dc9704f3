"""Our Realtime double, not Supabase Realtime: a websockets server on loopback speaking
the Phoenix channel protocol as Realtime does with realtime-py (vsn 1.0.0, JSON objects
{topic, event, payload, ref, join_ref}), as far as jobsys uses it:

- `/realtime/v1/websocket?apikey=...&vsn=1.0.0`; anything else is refused at handshake;
- `heartbeat` on topic `phoenix` -> `phx_reply` ok;
- `phx_join` -> `phx_reply` ok {postgres_changes: []}, or error {reason: "Unauthorized: ..."}
  when a private join fails the authorization check (Realtime's own query, below, run
  against the test database so the migration's RLS policies decide), or no reply at all
  (`answer_joins = False`: the client's join times out);
- `broadcast` to joined sockets of the same topic and privacy, fed from
  realtime.messages through the stand-in trigger of tests/transport/sql/realtime_shape.sql;
- a join with an expired `exp` is refused ("InvalidJWTToken: Token has expired ..."), as is
  any join while `join_error` is set (e.g. Realtime's "unable to connect to the project
  database"); an `access_token` push is checked the same way (expiry, then the policies
  again), and a channel whose token fails gets a `system` error and a `phx_close`;
- broadcasts carry `meta: {id}` as Realtime adds it;
- faults on demand: server close (1000), node drain (1001), abrupt drop (TCP abort),
  `phx_close` / `phx_error` on a channel, token expiry (system error + phx_close), zombie
  sockets (heartbeats answered, broadcasts no longer delivered), server down and back on
  the same port.
- the JWT's signature is checked (the test secret of tests/transport/tokens.py) at join and
  on `access_token`;
- a socket that sent no heartbeat for `heartbeat_timeout_s` (Realtime: about 60 s) is
  closed; broadcasts past `max_messages_per_s` deliveries in a second are dropped silently
  (`dropped` counts them), the channel staying joined, as Realtime's quota does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import http
import json
import time
import urllib.parse
import uuid
from typing import Any, Awaitable, Callable, NotRequired, TypedDict

import psycopg
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from jobsys.auth import unverified_claims
from jobsys.errors import Forbidden
from tests.transport.tokens import signature_valid

WEBSOCKET_PATH = "/realtime/v1/websocket"
PROTOCOL_VSN = "1.0.0"
TOPIC_PREFIX = "realtime:"
FEED_CHANNEL = "realtime_test_double"


class PhoenixEvent(str, enum.Enum):
    JOIN = "phx_join"
    REPLY = "phx_reply"
    LEAVE = "phx_leave"
    CLOSE = "phx_close"
    ERROR = "phx_error"
    HEARTBEAT = "heartbeat"
    BROADCAST = "broadcast"
    SYSTEM = "system"
    ACCESS_TOKEN = "access_token"


class PhoenixMessage(TypedDict):
    topic: str
    event: str
    payload: dict[str, Any]
    ref: str | None
    join_ref: NotRequired[str | None]


Authorize = Callable[[str, dict[str, Any]], Awaitable[bool]]  # (topic, JWT claims) -> may read


async def realtime_can_read(conn: psycopg.AsyncConnection[Any], topic: str, claims: dict[str, Any]) -> dict[str, bool]:
    """Realtime's join-time read check (lib/realtime/tenants/authorization.ex): as the
    admin, insert a broadcast and a presence message for the topic; then, as the user
    (role, realtime.topic, request.jwt.claims set for the transaction), select them back;
    roll back. What RLS lets through is what the user may receive."""
    async with conn.transaction(force_rollback=True):
        rows = await (await conn.execute(
            "insert into realtime.messages (topic, extension) values (%s, 'broadcast'), (%s, 'presence')"
            " returning id, extension", (topic, topic))).fetchall()
        ids = {extension: message_id for message_id, extension in rows}
        await conn.execute(
            "select set_config('role', %s, true), set_config('realtime.topic', %s, true),"
            " set_config('request.jwt.claims', %s, true), set_config('request.headers', '{}', true)",
            (str(claims.get("role") or "anon"), topic, json.dumps(claims)))
        seen = {row[0] for row in await (await conn.execute(
            "select id from realtime.messages where topic = %s and ((extension = 'broadcast' and id = %s)"
            " or (extension = 'presence' and id = %s))", (topic, ids["broadcast"], ids["presence"]))).fetchall()}
    return {"broadcast": ids["broadcast"] in seen, "presence": ids["presence"] in seen}


def db_authorizer(db_url: str) -> Authorize:
    async def authorize(topic: str, claims: dict[str, Any]) -> bool:
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            return (await realtime_can_read(conn, topic, claims))["broadcast"]
    return authorize


@dataclasses.dataclass
class JoinRecord:
    topic: str
    private: bool
    access_token: str | None
    accepted: bool | None = None  # None: not answered


@dataclasses.dataclass(eq=False)  # hashable by identity: kept in a set
class _Socket:
    ws: ServerConnection
    apikey: str
    channels: dict[str, tuple[str | None, bool]] = dataclasses.field(default_factory=dict)  # topic -> join_ref, private
    zombie: bool = False  # heartbeats still answered, broadcasts silently dropped
    heartbeat: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)  # set by each heartbeat


class RealtimeDouble:
    def __init__(self, authorize: Authorize | None = None) -> None:
        self._authorize = authorize
        self._server: Server | None = None
        self._sockets: set[_Socket] = set()
        self._feed: asyncio.Task[None] | None = None
        self.port = 0
        self._stopping = False
        self.answer_joins = True
        self.join_error: str | None = None  # every join refused with this reason while set
        self.heartbeat_timeout_s: float | None = None  # Realtime closes a silent socket after ~60 s
        self.max_messages_per_s: int | None = None  # the project's quota: deliveries per second
        self.dropped = 0  # broadcasts the quota dropped
        self._window: tuple[int, int] = (0, 0)  # (second, deliveries in it)
        self.joins: list[JoinRecord] = []
        self.heartbeats = 0
        self.tokens_pushed: list[str] = []
        self.handshakes = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._stopping = False
        self._server = await serve(self._handle, "127.0.0.1", self.port, process_request=self._check)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Server down: listening stops and open sockets close (1001 going away). A client
        reconnecting at that moment may be mid-handshake, which websockets does not close;
        `_stopping` makes such a connection end at once instead of keeping the server up."""
        if self._server is not None:
            self._stopping = True
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def aclose(self) -> None:
        if self._feed is not None:
            self._feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feed
        await self.stop()

    # What the tests look at --------------------------------------------------------------
    def subscribers(self, topic: str) -> int:
        return sum(1 for s in self._sockets if TOPIC_PREFIX + topic in s.channels)

    def accepted_joins(self, topic: str) -> int:
        return sum(1 for j in self.joins if j.topic == topic and j.accepted)

    # Faults ------------------------------------------------------------------------------
    async def close_all(self, code: int = 1000) -> None:
        for socket in list(self._sockets):
            await socket.ws.close(code)

    def drop_all(self) -> None:
        for socket in list(self._sockets):
            socket.ws.transport.abort()

    async def close_channel(self, topic: str) -> None:
        await self._to_channel(topic, PhoenixEvent.CLOSE)

    async def error_channel(self, topic: str) -> None:
        await self._to_channel(topic, PhoenixEvent.ERROR)

    def make_zombies(self) -> int:
        """Sockets open now keep answering heartbeats but get no more broadcasts (the
        server-side subscription is gone); sockets opened later are healthy."""
        for socket in self._sockets:
            socket.zombie = True
        return len(self._sockets)

    async def expire_token(self, topic: str) -> None:
        """What Realtime does when a joined channel's JWT expires: a `system` error, then
        `phx_close`."""
        full = TOPIC_PREFIX + topic
        for socket in list(self._sockets):
            if full in socket.channels:
                await self._shut(socket, full, "Token has expired 0 seconds ago")

    async def _shut(self, socket: _Socket, full_topic: str, why: str) -> None:
        join_ref, _ = socket.channels.pop(full_topic)
        await self._send(socket, {"topic": full_topic, "event": PhoenixEvent.SYSTEM.value, "ref": None,
                                  "payload": {"channel": full_topic.removeprefix(TOPIC_PREFIX), "extension": "system",
                                              "message": why, "status": "error"}})
        await self._send(socket, {"topic": full_topic, "event": PhoenixEvent.CLOSE.value, "payload": {},
                                  "ref": join_ref, "join_ref": join_ref})

    async def _to_channel(self, topic: str, event: PhoenixEvent) -> None:
        full = TOPIC_PREFIX + topic
        for socket in list(self._sockets):
            if full in socket.channels:
                join_ref, _ = socket.channels.pop(full)
                await self._send(socket, {"topic": full, "event": event.value, "payload": {}, "ref": join_ref,
                                          "join_ref": join_ref})

    # Broadcast ---------------------------------------------------------------------------
    async def broadcast(self, topic: str, event: str, payload: dict[str, Any], *, private: bool = True) -> int:
        full = TOPIC_PREFIX + topic
        sent = 0
        for socket in list(self._sockets):
            joined = socket.channels.get(full)
            if joined is not None and joined[1] == private and not socket.zombie and self._over_quota():
                self.dropped += 1
            elif joined is not None and joined[1] == private and not socket.zombie:
                await self._send(socket, {"topic": full, "event": PhoenixEvent.BROADCAST.value, "ref": None,
                                          "payload": {"type": "broadcast", "event": event, "payload": payload,
                                                      "meta": {"id": str(uuid.uuid4())}}})
                sent += 1
        return sent

    def _over_quota(self) -> bool:
        """Counts one delivery against the per-second quota; True when it must be dropped."""
        if self.max_messages_per_s is None:
            return False
        second = int(time.monotonic())
        start, count = self._window if self._window[0] == second else (second, 0)
        self._window = (start, count + 1)
        return count >= self.max_messages_per_s

    async def feed_from(self, db_url: str) -> None:
        """Deliver what realtime.send() stores, once committed (replication stand-in)."""
        ready = asyncio.Event()

        async def run() -> None:
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
                await conn.execute(f"listen {FEED_CHANNEL}")
                ready.set()
                async for note in conn.notifies():
                    message = json.loads(note.payload)
                    await self.broadcast(message["topic"], message["event"], message["payload"] or {},
                                         private=bool(message["private"]))

        self._feed = asyncio.create_task(run())
        await ready.wait()

    # Protocol ----------------------------------------------------------------------------
    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        if self._stopping:
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "going away\n")
        url = urllib.parse.urlsplit(request.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path != WEBSOCKET_PATH:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        if not query.get("apikey") or query.get("vsn") != PROTOCOL_VSN:
            return connection.respond(http.HTTPStatus.FORBIDDEN, "apikey and vsn=1.0.0 required\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        if self._stopping:
            await ws.close(1001)
            return
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(ws.request.path).query))
        socket = _Socket(ws, query["apikey"])
        self._sockets.add(socket)
        self.handshakes += 1
        watcher = asyncio.create_task(self._close_when_silent(socket))
        try:
            async for raw in ws:
                await self._on_message(socket, json.loads(raw))
        except ConnectionClosed:
            pass
        finally:
            watcher.cancel()
            self._sockets.discard(socket)

    async def _close_when_silent(self, socket: _Socket) -> None:
        """Realtime's heartbeat timeout: no heartbeat for that long, and the socket is closed
        (for sockets opened while `heartbeat_timeout_s` is set)."""
        timeout_s = self.heartbeat_timeout_s
        if timeout_s is None:
            return
        while True:
            socket.heartbeat.clear()
            try:
                await asyncio.wait_for(socket.heartbeat.wait(), timeout_s)
            except TimeoutError:
                await socket.ws.close(1000, "heartbeat timeout")
                return

    async def _send(self, socket: _Socket, message: PhoenixMessage) -> None:
        with contextlib.suppress(ConnectionClosed):
            await socket.ws.send(json.dumps(message))

    async def _reply(self, socket: _Socket, message: PhoenixMessage, status: str, response: dict[str, Any]) -> None:
        await self._send(socket, {"topic": message["topic"], "event": PhoenixEvent.REPLY.value,
                                  "payload": {"status": status, "response": response},
                                  "ref": message.get("ref"), "join_ref": message.get("join_ref")})

    async def _on_message(self, socket: _Socket, message: PhoenixMessage) -> None:
        event = message["event"]
        if event == PhoenixEvent.HEARTBEAT and message["topic"] == "phoenix":
            self.heartbeats += 1
            socket.heartbeat.set()
            await self._reply(socket, message, "ok", {})
        elif event == PhoenixEvent.JOIN:
            await self._join(socket, message)
        elif event == PhoenixEvent.LEAVE:
            socket.channels.pop(message["topic"], None)
            await self._reply(socket, message, "ok", {})
        elif event == PhoenixEvent.ACCESS_TOKEN:
            token = str(message["payload"].get("access_token"))
            self.tokens_pushed.append(token)
            joined = socket.channels.get(message["topic"])
            if joined is not None:  # Realtime checks a new token as at join: expiry, then the policies
                refusal = await self._refusal(message["topic"].removeprefix(TOPIC_PREFIX), joined[1], token)
                if refusal is not None:
                    await self._shut(socket, message["topic"], refusal)

    async def _refusal(self, topic: str, private: bool, token: str) -> str | None:
        """Why this token may not hold this channel, or None."""
        if self.join_error is not None:
            return self.join_error
        try:
            claims = dict(unverified_claims(token))
        except Forbidden:
            return "InvalidJWTToken: the access token is not a JWT"
        if not signature_valid(token):
            return "InvalidJWTToken: Signature error"
        expired_s = int(time.time()) - int(claims.get("exp") or 0)
        if "exp" in claims and expired_s >= 0:
            return f"InvalidJWTToken: Token has expired {expired_s} seconds ago"
        if private and self._authorize is not None and not await self._authorize(topic, claims):
            return f"Unauthorized: You do not have permissions to read from this Channel topic: {topic}"
        return None

    async def _join(self, socket: _Socket, message: PhoenixMessage) -> None:
        topic = message["topic"].removeprefix(TOPIC_PREFIX)
        payload = message["payload"]
        private = bool((payload.get("config") or {}).get("private"))
        token = payload.get("access_token") or socket.apikey
        record = JoinRecord(topic, private, payload.get("access_token"))
        self.joins.append(record)
        if not self.answer_joins:
            return
        refusal = await self._refusal(topic, private, token)
        if refusal is not None:
            record.accepted = False
            await self._reply(socket, message, "error", {"reason": refusal})
            return
        record.accepted = True
        socket.channels[message["topic"]] = (message.get("join_ref"), private)
        await self._reply(socket, message, "ok", {"postgres_changes": []})
