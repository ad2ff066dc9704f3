"""Hub transport: a worker PC's calls over HTTP to `jobsys up`, pushes over one WebSocket.

The PC holds only the hub's address and its own worker token (`jobsys workers add`); the
hub runs each call as that worker account, so the SQL functions' rules hold as they do
for a Supabase worker user. Protocol: jobsys/hub_protocol.py.

Calls are not retried here: a call that timed out may have run. Callers already treat
TransportError as "try again later" and Unauthorized (unknown or revoked token) as final.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import pathlib
import random
import ssl
from typing import Any, Mapping

import httpx
import websockets
from websockets.asyncio.client import ClientConnection, connect

from jobsys import errors, hub_protocol, rpc
from jobsys.events import ChannelState, Event
from jobsys.transport.base import EventHandler, EvidenceUploader, PushChannel, StateHandler
from jobsys.transport.json_values import json_args

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5.0


@dataclasses.dataclass(frozen=True)
class PushSettings:
    """The push socket's keep-alive and reconnection (tests shorten them)."""

    ping_interval_s: float = 10.0  # a half-open socket is noticed within interval + timeout
    ping_timeout_s: float = 10.0
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 10.0

    def backoff_s(self, attempt: int) -> float:
        """Exponential with full jitter, so a fleet reconnecting after a hub restart spreads out."""
        return random.uniform(self.reconnect_min_s,
                              min(self.reconnect_max_s, self.reconnect_min_s * 2 ** min(attempt, 20)))


ERRORS_BY_CODE: dict[str, type[errors.JobsysError]] = {
    cls.code: cls for cls in (errors.InvalidInput, errors.Unauthorized, errors.Forbidden, errors.NotFound,
                              errors.IllegalTransition, errors.StaleRun, errors.DeviceHeld, errors.TransportError)
}


def check_server_url(url: str) -> str:
    """The hub's base URL without a trailing slash; InvalidInput for anything but http(s)."""
    parsed = httpx.URL(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise errors.InvalidInput(f"--server must be the hub's http:// or https:// address, not {url!r}",
                                  {"field": "server"})
    return str(parsed).rstrip("/")


def error_from_response(response: httpx.Response) -> errors.JobsysError:
    """The typed error a hub answer carries (the API's error shape), or one by HTTP status."""
    try:
        body = response.json()["error"]
        code, message, details = str(body["code"]), str(body["message"]), body.get("details") or {}
    except (ValueError, KeyError, TypeError):
        code, message, details = "", f"hub answered HTTP {response.status_code}", {}
    error_type = ERRORS_BY_CODE.get(code)
    if error_type is None:
        error_type = {401: errors.Unauthorized, 403: errors.Forbidden, 404: errors.NotFound,
                      409: errors.IllegalTransition, 422: errors.InvalidInput}.get(response.status_code)
    if error_type is None:
        error_type = errors.TransportError if response.status_code >= 500 else errors.JobsysError
    return error_type(message, details if isinstance(details, dict) else {"detail": details})


def tls_context(ca_cert: pathlib.Path | None) -> ssl.SSLContext:
    """Verification of the hub's certificate: the system's trust store, or this PEM file."""
    try:
        return ssl.create_default_context(cafile=str(ca_cert) if ca_cert is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise errors.InvalidInput(f"cannot read the CA certificate {ca_cert}: {exc}", {"field": "ca_cert"}) from None


def _ws_url(server: str) -> str:
    return "ws" + server.removeprefix("http") + hub_protocol.EVENTS_PATH


class HubTransport:
    supports_push = True

    def __init__(self, server: str, token: str, *, push: bool = True,
                 push_settings: PushSettings | None = None, evidence_dir: pathlib.Path | None = None,
                 ca_cert: pathlib.Path | None = None) -> None:
        """`ca_cert`: a PEM file of certificates to trust for an https:// hub (a self-signed
        one); without it, the system's."""
        self.server = check_server_url(server)
        self._token = token
        self.supports_push = push
        self.push_settings = push_settings or PushSettings()
        self.evidence_dir = evidence_dir  # the worker's; screenshots wait in its upload queue
        self.tls = tls_context(ca_cert) if self.server.startswith("https:") else None
        self._http = httpx.AsyncClient(
            base_url=self.server, headers=hub_protocol.bearer(token), verify=self.tls or True,
            timeout=httpx.Timeout(CALL_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))

    async def close(self) -> None:
        await self._http.aclose()

    async def _post(self, function: rpc.SqlFunction, args: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        body = json_args(function, args or {})
        try:
            response = await self._http.post(hub_protocol.RPC_PATH.format(function=function.name), json=body)
        except httpx.HTTPError as exc:
            raise errors.TransportError(f"hub unavailable: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise error_from_response(response)
        try:
            rows = response.json()["rows"]
        except (ValueError, KeyError, TypeError):
            raise errors.TransportError("the hub's answer was not understood") from None
        return rows if isinstance(rows, list) else []

    async def call(self, function: rpc.SqlFunction, args: Mapping[str, Any] | None = None) -> Any:
        rows = await self._post(function, args)
        return next(iter(rows[0].values())) if rows else None

    async def call_rows(
        self, function: rpc.SqlFunction, args: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        return await self._post(function, args)

    async def subscribe(
        self, topics: list[str], on_event: EventHandler, on_state: StateHandler | None = None
    ) -> HubSubscription:
        subscription = HubSubscription(self.server, self._token, topics, on_event, on_state, self.push_settings,
                                       self.tls)
        if self.supports_push:
            subscription.start()
        return subscription

    def evidence_store(self) -> EvidenceUploader | None:
        """Screenshots go to the hub; while it is away they wait in a queue on disk
        (<evidence dir>/.upload-queue; jobsys.transport.hub_evidence)."""
        from jobsys.transport.hub_evidence import QUEUE_DIR_NAME, HubEvidenceStore  # it imports this module

        evidence_dir = self.evidence_dir
        if evidence_dir is None:
            from jobsys.embedded import default_data_dir

            evidence_dir = default_data_dir() / "evidence"
        return HubEvidenceStore(self.server, self._token, evidence_dir / QUEUE_DIR_NAME, tls=self.tls)



class HubSubscription(PushChannel):
    """One WebSocket to the hub for these topics; reconnects with backoff and jitter and
    reports SUBSCRIBED on every (re)connect, so the subscriber resyncs. A revoked or unknown
    token ends it for good (`final_error`); the caller's next call says the same."""

    task_name = "jobsys-hub-push"

    def __init__(self, server: str, token: str, topics: list[str], on_event: EventHandler,
                 on_state: StateHandler | None, settings: PushSettings, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(topics, on_event, on_state, log)
        self._url = _ws_url(server)
        self._tls = tls
        self._settings = settings
        self._token = token
        self.final_error: errors.JobsysError | None = None

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                async with connect(self._url, additional_headers=hub_protocol.bearer(self._token), ssl=self._tls,
                                   open_timeout=CONNECT_TIMEOUT_S, ping_interval=self._settings.ping_interval_s,
                                   ping_timeout=self._settings.ping_timeout_s,
                                   close_timeout=self._settings.ping_timeout_s, max_size=2**20) as ws:
                    await ws.send(json.dumps({"subscribe": self._topics}))
                    reply = json.loads(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT_S * 3))
                    if reply.get("type") != "subscribed":
                        raise websockets.ConnectionClosedError(None, None)
                    attempt = 0
                    await self._set_state(ChannelState.SUBSCRIBED)
                    await self._receive(ws)
            except asyncio.CancelledError:
                raise
            except websockets.ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                if code in hub_protocol.FINAL_CLOSE_CODES:
                    reason = exc.rcvd.reason if exc.rcvd is not None else ""
                    self.final_error = (errors.Unauthorized(reason or "token refused") if code in (
                        hub_protocol.CLOSE_UNAUTHORIZED, hub_protocol.CLOSE_REVOKED) else errors.Forbidden(reason))
                    log.error("push channel refused by the hub: %s", reason)
                    await self._set_state(ChannelState.DISCONNECTED)
                    return
                log.warning("push channel lost (%s); reconnecting", code)
            except (OSError, TimeoutError, ValueError, websockets.InvalidHandshake) as exc:
                log.warning("push channel unavailable (%s: %s); reconnecting", type(exc).__name__, exc)
            await self._set_state(ChannelState.DISCONNECTED)
            await asyncio.sleep(self._settings.backoff_s(attempt))
            attempt += 1

    async def _receive(self, ws: ClientConnection) -> None:
        async for raw in ws:
            try:
                body = json.loads(raw)
                event = Event(topic=body["topic"], event=body["event"], payload=body.get("payload") or {})
            except (ValueError, KeyError, TypeError):
                log.warning("ignored a malformed message from the hub")
                continue
            await self._deliver(event)
