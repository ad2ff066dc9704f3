"""A worker's push socket on the hub: subscribe once, then receive its topics' events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any, Awaitable, Callable

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from jobsys_hub.fanout import Fanout
from jobsys import errors, hub_protocol

log = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT_S = 10.0  # for the client's subscribe message, and for LISTEN to cover it
QUEUE_MAX = 1000  # events waiting for one slow socket; beyond, it is closed and resyncs
CLOSE_TOO_SLOW = 1013  # "try again later"

# (token digest, topics) -> the account id, once every topic is allowed; raises otherwise.
Authorize = Callable[[str, list[str]], Awaitable[uuid.UUID]]


class WorkerSocket:
    """One connected worker, as the fan-out's Peer."""

    def __init__(self, websocket: WebSocket, account_id: uuid.UUID) -> None:
        self.account_id = account_id
        self._ws = websocket
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_MAX)
        self._closed = asyncio.Event()
        self._closing: asyncio.Task[None] | None = None

    def deliver(self, message: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            if self._closing is None:  # kept, so the task is not collected before it runs
                self._closing = asyncio.create_task(self.close(CLOSE_TOO_SLOW, "too far behind; reconnect and resync"))

    async def close(self, code: int, reason: str) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(Exception):  # already gone: nothing to tell
            if self._ws.application_state == WebSocketState.CONNECTED:
                await self._ws.close(code, reason)

    async def pump(self) -> None:
        """Send queued events until closed or the client goes away."""
        receiver = asyncio.create_task(self._drain_incoming())
        closed = asyncio.create_task(self._closed.wait())
        try:
            while not self._closed.is_set():
                getter = asyncio.create_task(self._queue.get())
                done, _ = await asyncio.wait({getter, receiver, closed}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    return
                await self._ws.send_text(json.dumps(getter.result(), separators=(",", ":")))
        except (WebSocketDisconnect, RuntimeError, OSError):
            return
        finally:
            for task in (receiver, closed):
                task.cancel()

    async def _drain_incoming(self) -> None:
        """Read (and ignore) what the client sends after subscribing; returns when it goes."""
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            while True:
                message = await self._ws.receive()
                if message["type"] == "websocket.disconnect":
                    return


async def _read_subscribe(websocket: WebSocket) -> list[str]:
    async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
        text = await websocket.receive_text()
    try:
        body = json.loads(text)
    except ValueError:
        raise errors.InvalidInput("the first message must be JSON: {\"subscribe\": [topics]}") from None
    topics = body.get("subscribe") if isinstance(body, dict) else None
    if (not isinstance(topics, list) or not 1 <= len(topics) <= hub_protocol.MAX_TOPICS
            or not all(isinstance(t, str) and 0 < len(t) <= 100 for t in topics)):
        raise errors.InvalidInput(f"subscribe takes 1-{hub_protocol.MAX_TOPICS} topic names")
    return list(dict.fromkeys(topics))


async def serve_socket(websocket: WebSocket, fanout: Fanout, authorize: Authorize, token_hash: str) -> None:
    await websocket.accept()
    try:
        topics = await _read_subscribe(websocket)
        account_id = await authorize(token_hash, topics)
    except WebSocketDisconnect:
        return
    except TimeoutError:  # a slow link, not a broken client: it may try again
        await websocket.close(CLOSE_TOO_SLOW, "no subscribe message in time")
        return
    except errors.JobsysError as exc:
        code = {errors.Unauthorized: hub_protocol.CLOSE_UNAUTHORIZED,
                errors.Forbidden: hub_protocol.CLOSE_FORBIDDEN_TOPIC}.get(type(exc), hub_protocol.CLOSE_BAD_REQUEST)
        if isinstance(exc, errors.TransportError):
            code = hub_protocol.CLOSE_PUSH_RESTART
        await websocket.close(code, exc.message[:120])
        return
    peer = WorkerSocket(websocket, account_id)
    try:
        if not await fanout.add(peer, topics, SUBSCRIBE_TIMEOUT_S):
            await peer.close(hub_protocol.CLOSE_PUSH_RESTART, "push listener not connected; poll and retry")
            return
        await websocket.send_text(json.dumps({"type": "subscribed", "topics": topics}))
        await peer.pump()
    finally:
        fanout.remove(peer)
        await peer.close(1000, "bye")
