"""The hub's HTTP side: worker calls, the push socket, and (hub.evidence) screenshots.

Mounted by `jobsys up` / `jobsys dashboard` beside the dashboard, on the same port. Its
routes take worker tokens only: an operator's API token is not a worker token, and a
worker token opens nothing of the dashboard or the REST API.
"""

from __future__ import annotations

import json
import logging
import pathlib
import uuid
from typing import Any

import psycopg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from jobsys import errors, hub_protocol, rpc
from jobsys.transport.postgres import PostgresTransport
from jobsys_hub import evidence, tokens
from jobsys_hub.fanout import Fanout
from jobsys_hub.sockets import serve_socket

log = logging.getLogger(__name__)

# What a worker token may call: the library's functions (each checks its caller's role);
# never the hub's own lookup.
CALLABLE: dict[str, rpc.SqlFunction] = {f.name: f for f in rpc.ALL if f is not rpc.HUB_CLAIMS}


def error_response(exc: errors.JobsysError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, errors.Unauthorized) else None
    return JSONResponse({"error": exc.as_dict()}, status_code=exc.http_status, headers=headers)


def _too_large() -> JSONResponse:
    return JSONResponse({"error": {"code": "too_large", "message": "request body too large",
                                   "details": {"max_bytes": hub_protocol.MAX_CALL_BYTES}}}, status_code=413)


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it passes `limit` bytes (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


class Hub:
    """The hub of one process: `async with Hub(...) as hub`, then mount `hub.app`."""

    def __init__(self, transport: PostgresTransport, data_dir: pathlib.Path) -> None:
        self.transport = transport
        self.evidence_dir = data_dir / "evidence" / "hub"
        self.fanout = Fanout(transport.conninfo, restart_code=hub_protocol.CLOSE_PUSH_RESTART,
                             revoked_code=hub_protocol.CLOSE_REVOKED)
        self.app = Starlette(routes=[
            Route(hub_protocol.RPC_PATH.removeprefix(hub_protocol.MOUNT), self._call, methods=["POST"]),
            WebSocketRoute(hub_protocol.EVENTS_PATH.removeprefix(hub_protocol.MOUNT), self._events),
            *evidence.routes(self),
        ])

    async def __aenter__(self) -> Hub:
        await self._check_role_switch()
        self.fanout.start()
        return self

    async def _check_role_switch(self) -> None:
        """Every call runs under the authenticated role: say so at once when the hub's
        database user may not switch to it, rather than refusing every PC's call later."""
        try:
            async with await psycopg.AsyncConnection.connect(self.transport.conninfo) as conn:
                cur = await conn.execute("select pg_has_role(current_user, 'authenticated', 'member')")
                row = await cur.fetchone()
        except psycopg.Error as exc:
            log.warning("hub: could not check the database role (%s)", exc)
            return
        if not (row and row[0]):
            log.error("hub: the database user may not SET ROLE authenticated, so every PC's call will be "
                      "refused; run `grant authenticated to <this user>` (docs/hub.md)")

    async def __aexit__(self, *exc: object) -> None:
        await self.fanout.close()

    async def ready_check(self) -> str | None:
        """For GET /readyz: the hub's database listener is up (else PCs only poll)."""
        return None if self.fanout.up.is_set() else "the hub's push listener is reconnecting"

    async def account_id(self, token_hash: str) -> uuid.UUID:
        """The active account behind the token digest; Unauthorized otherwise."""
        claims = await self.transport.call(rpc.HUB_CLAIMS, {"p_token_hash": token_hash})
        return uuid.UUID(json.loads(claims)["sub"])

    async def call_as_worker(self, token_hash: str, function: rpc.SqlFunction, args: dict[str, Any]) -> Any:
        return await self.transport.call_rows_as_account(token_hash, function, args)

    async def _call(self, request: Request) -> Response:
        try:
            token_hash = tokens.presented_digest(request.headers)
            function = CALLABLE.get(request.path_params["function"])
            if function is None:
                raise errors.NotFound("no such function", {"function": request.path_params["function"][:100]})
            body = await read_body(request, hub_protocol.MAX_CALL_BYTES)
            if body is None:
                return _too_large()
            try:
                args = json.loads(body or b"{}")
            except (ValueError, RecursionError):  # RecursionError: nested too deep
                raise errors.InvalidInput("the body must be a JSON object of named arguments") from None
            if not isinstance(args, dict):
                raise errors.InvalidInput("the body must be a JSON object of named arguments")
            rows = await self.transport.call_json_as_account(token_hash, function, args)
        except errors.JobsysError as exc:
            return error_response(exc)
        return Response('{"rows":' + rows + "}", media_type="application/json")

    async def _authorize(self, token_hash: str, topics: list[str]) -> uuid.UUID:
        account = await self.account_id(token_hash)
        for topic in topics:
            rows = await self.call_as_worker(token_hash, rpc.MAY_RECEIVE, {"p_topic": topic})
            if not rows or not next(iter(rows[0].values())):
                raise errors.Forbidden(f"this PC may not receive {topic}")
        return account

    async def _events(self, websocket: WebSocket) -> None:
        try:
            token_hash = tokens.presented_digest(websocket.headers)
        except errors.Unauthorized as exc:
            await websocket.accept()
            await websocket.close(hub_protocol.CLOSE_UNAUTHORIZED, exc.message[:120])
            return
        await serve_socket(websocket, self.fanout, self._authorize, token_hash)
