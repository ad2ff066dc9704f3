"""Supabase transport: PostgREST `rpc()` for calls, Realtime Broadcast for push.

The production path. Calls reach the same SQL functions as the Postgres transport, by
the same names and named-argument dicts (PostgREST passes JSON keys as named arguments),
in the `jobsys` schema, which the project must expose (supabase/config.toml [api]
schemas; docs/supabase.md). Errors come back as the same typed jobsys errors: the SQL
functions' SQLSTATEs (JS400..JS410) pass through PostgREST as the error body's `code`.
Push comes from `jobsys.emit()` -> `realtime.send(..., private => true)`, on the same
topics and events as pg_notify; see realtime_watchdog for how channels stay joined.

Postgres Changes are not used: every event is already emitted by the SQL function that
made the change, with the payload consumers need, and Broadcast needs no publication or
per-row RLS evaluation for each subscriber.

A process needs no database connection in this mode (Windows worker PCs included): only
the project URL, the anon key and its own user's credentials.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import itertools
import json
import logging
import random
from typing import TYPE_CHECKING, Any, Mapping, TypedDict

import httpx
import realtime as realtime_py  # the module; `realtime` below is a settings argument
from postgrest.exceptions import APIError

from jobsys import errors, rpc
from jobsys.auth import AuthUnavailable, Credentials, JobsysRole, TokenKeeper
from jobsys.transport.base import EventHandler, StateHandler
from jobsys.transport.json_values import json_args
from jobsys.transport.realtime_watchdog import BroadcastSubscription, RealtimeSettings
from supabase import AsyncClient, AsyncClientOptions, acreate_client

if TYPE_CHECKING:
    from jobsys.transport.supabase_storage import EvidenceStore

log = logging.getLogger(__name__)

RETRIES_ON_CONFLICT = 5  # deadlock / serialization failures roll back, so a retry is safe
CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})
STATEMENT_TIMEOUT_SQLSTATE = "57014"  # query_canceled: Supabase's per-role statement_timeout
# realtime-py before 2.34.0 returns from subscribe() before the join reply and misses a clean
# server close; before 2.33.0 it sends a stale token in phx_join (supabase-py #1655).
REALTIME_MIN_VERSION = (2, 34, 1)
REALTIME_MAX_MAJOR = 3
CLIENT_REQUIREMENT = "supabase>=2.34.1,<3"


def _release(version: str) -> tuple[int, ...]:
    """The leading numeric release of a version string ("2.34.1rc1" -> (2, 34, 1))."""
    parts: list[int] = []
    for piece in version.split("."):
        digits = "".join(itertools.takewhile(str.isdigit, piece))
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break
    return tuple(parts)


def check_client_version(installed: str | None = None) -> None:
    """Refuse to start on a realtime-py whose behaviour the watchdog does not expect: with
    an older one push silently never subscribes or keeps a dead channel."""
    version = installed if installed is not None else str(getattr(realtime_py, "__version__", ""))
    release = _release(version)
    if not release or release < REALTIME_MIN_VERSION or release[0] >= REALTIME_MAX_MAJOR:
        raise errors.JobsysError(
            f"jobsys needs realtime (supabase-py's Realtime client) 2.34.1 or newer below 3, found "
            f"{version or 'an unknown version'}: pip install '{CLIENT_REQUIREMENT}'",
            {"realtime": version, "required": CLIENT_REQUIREMENT})


class PostgrestCode(str, enum.Enum):
    """PostgREST's own error codes that jobsys treats specially."""

    DB_CONNECTION = "PGRST000"
    DB_INTERNAL_CONNECTION = "PGRST001"
    SCHEMA_CACHE_LOAD = "PGRST002"
    POOL_TIMEOUT = "PGRST003"
    SCHEMA_NOT_EXPOSED = "PGRST106"
    FUNCTION_NOT_FOUND = "PGRST202"
    JWT_INVALID = "PGRST301"
    ANON_DISABLED = "PGRST302"
    JWT_CLAIMS_INVALID = "PGRST303"


UNAVAILABLE_CODES = frozenset({PostgrestCode.DB_CONNECTION, PostgrestCode.DB_INTERNAL_CONNECTION,
                               PostgrestCode.SCHEMA_CACHE_LOAD, PostgrestCode.POOL_TIMEOUT})
AUTH_CODES = frozenset({PostgrestCode.JWT_INVALID, PostgrestCode.ANON_DISABLED,
                        PostgrestCode.JWT_CLAIMS_INVALID})


class PostgrestErrorBody(TypedDict):
    """An error as PostgREST returns it (and postgrest-py's APIError carries it)."""

    code: str
    message: str
    details: str | None
    hint: str | None


def map_api_error(exc: APIError) -> errors.JobsysError:
    """A PostgREST error as the typed error the Postgres transport raises for the same
    failure. `code` is the SQLSTATE for database errors, PGRSTxxx for PostgREST's own, or
    the HTTP status when the body was not PostgREST's (a gateway error page)."""
    code = exc.code or ""
    message = exc.message or code or "request failed"
    detail = exc.details if exc.details is None or isinstance(exc.details, str) else json.dumps(exc.details)
    if code == STATEMENT_TIMEOUT_SQLSTATE:  # rolled back, so retryable; a generic error would stop a worker
        return errors.StatementTimeout(
            f"the database cancelled the call after its statement timeout ({message}); retry later",
            {"code": code})
    typed = errors.from_sqlstate(code, message, detail)
    if typed is not None:
        return typed
    if code in AUTH_CODES or code in ("401", "403"):
        return errors.Forbidden(message, {"code": code})
    gateway_5xx = len(code) == 3 and code.startswith("5")  # a non-PostgREST body: code is the HTTP status
    if code in UNAVAILABLE_CODES or code.startswith(("08", "53", "57P")) or gateway_5xx:
        return errors.TransportError(f"Supabase API unavailable: {message}", {"code": code})
    if code in (PostgrestCode.FUNCTION_NOT_FOUND, PostgrestCode.SCHEMA_NOT_EXPOSED):
        return errors.JobsysError(
            f"{message} (are the migrations applied and the jobsys schema exposed? see docs/supabase.md)",
            {"code": code, "hint": exc.hint})
    return errors.JobsysError(f"database error {code}: {message}", {"code": code, "hint": exc.hint})


@dataclasses.dataclass(frozen=True)
class SupabaseSettings:
    url: str
    key: str  # the anon key (the service role key only in admin scripts)
    realtime: RealtimeSettings = dataclasses.field(default_factory=RealtimeSettings)


class SupabaseTransport:
    supports_push = True

    def __init__(self, client: AsyncClient, settings: SupabaseSettings, tokens: TokenKeeper, *,
                 push: bool = True) -> None:
        self._client = client
        self.settings = settings
        self.tokens = tokens
        self.supports_push = push
        self._subscriptions: set[BroadcastSubscription] = set()

    @classmethod
    async def connect(cls, url: str, key: str, *, credentials: Credentials | None = None,
                      access_token: str | None = None, expected_role: JobsysRole | None = None,
                      push: bool = True, realtime: RealtimeSettings | None = None) -> SupabaseTransport:
        """A transport acting as a signed-in user (`credentials`: workers, the dashboard's
        own session), as the holder of `access_token` (an API request's user), or with the
        key alone. Signs in now, so wrong credentials or role fail here and not at the first
        call; Auth rate limiting or unreachable does not stop the start (see TokenKeeper)."""
        check_client_version()
        client = await acreate_client(url, key, options=AsyncClientOptions(
            schema=rpc.SCHEMA, auto_refresh_token=False, persist_session=False))
        tokens = TokenKeeper(client, credentials=credentials, expected_role=expected_role,
                             fixed_token=None if credentials else (access_token or key))
        transport = cls(client, SupabaseSettings(url, key, realtime or RealtimeSettings()), tokens, push=push)
        if credentials is not None:
            try:
                await tokens.token()
            except AuthUnavailable as exc:
                # Rate limited or unreachable at start (a fleet restarting after a power cut):
                # start anyway; calls fail as retryable until the keeper's backoff lets it in.
                log.warning("starting without a session: %s", exc.message)
            except BaseException:
                await transport.close()
                raise
        return transport

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.close()
        self._subscriptions.clear()
        await self._client.postgrest.aclose()
        await self._client.auth.close()

    async def __aenter__(self) -> SupabaseTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _rpc(self, function: rpc.SqlFunction, args: Mapping[str, Any]) -> Any:
        body = json_args(function, args)
        for attempt in range(RETRIES_ON_CONFLICT + 1):
            token = await self.tokens.token()
            api = self._client.schema(rpc.SCHEMA).auth(token)  # Content-Profile / Accept-Profile: jobsys
            try:
                response = await api.rpc(function.name, body).execute()
                return response.data
            except APIError as exc:
                if exc.code not in CONFLICT_SQLSTATES:
                    raise map_api_error(exc) from exc
                if attempt == RETRIES_ON_CONFLICT:
                    raise errors.TransportError(f"{function.name}: too much contention, try again") from exc
                # Full jitter, as the Postgres transport: losers of one deadlock do not return in step.
                await asyncio.sleep(random.uniform(0, min(0.25, 0.01 * 2**attempt)))
            except httpx.TransportError as exc:  # connect errors, timeouts, dropped connections
                raise errors.TransportError(f"Supabase API unreachable: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    async def call(self, function: rpc.SqlFunction, args: Mapping[str, Any] | None = None) -> Any:
        data = await self._rpc(function, args or {})
        if function.returns_set:  # the first column of the first row, as the Postgres transport
            return next(iter(data[0].values())) if data else None
        return data

    async def call_rows(
        self, function: rpc.SqlFunction, args: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        data = await self._rpc(function, args or {})
        if not isinstance(data, list):
            raise errors.JobsysError(f"{function.name} returned {type(data).__name__}, expected rows")
        return data

    async def subscribe(
        self, topics: list[str], on_event: EventHandler, on_state: StateHandler | None = None
    ) -> BroadcastSubscription:
        subscription = BroadcastSubscription(
            str(self._client.realtime_url), self.settings.key, topics, on_event, on_state,
            token=self.tokens.token, settings=self.settings.realtime)
        if self.supports_push:
            subscription.start()
            self._subscriptions.add(subscription)
        return subscription

    def evidence_store(self) -> EvidenceStore:
        """Supabase Storage, as this transport's user (a worker writes under its own id)."""
        from jobsys.transport.supabase_storage import EvidenceStore  # it imports this module

        return EvidenceStore(self)

    @property
    def client(self) -> AsyncClient:
        """The underlying supabase-py client (Storage uploads use it)."""
        return self._client
