"""Postgres transport: psycopg 3 async pool for calls, LISTEN/NOTIFY for push.

Works with any Postgres the migrations were applied to: the embedded pgserver, a
self-hosted Supabase, or a direct connection to a hosted one (session mode if pooled,
since LISTEN needs a session).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import random
from typing import Any, Mapping

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from jobsys import errors, rpc
from jobsys.events import ChannelState, Event
from jobsys.transport.base import EventHandler, PushChannel, StateHandler

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 5.0
KEEPALIVE_S = 10.0  # an idle LISTEN connection runs a query this often to notice a dead link
# Deadlock (40P01) and serialization failures (40001) are retried inside, never shown: every
# call is one function in one autocommit transaction, which Postgres rolled back whole, so
# running it again is safe. Nothing else is retried (a retry could repeat a side effect).
# A retry is not silent, though: the functions take their locks in one order
# (docs/state_machine.md), so a deadlock is a bug. Each is counted (conflicts_retried) and
# logged as a warning naming the function.
RETRIES_ON_CONFLICT = 5
CONFLICT_BACKOFF_S = 0.01  # first wait, doubled per attempt, with full jitter
CONFLICT_BACKOFF_MAX_S = 0.25
POOL_MAX_SIZE = 10
POOL_TIMEOUT_S = 5.0  # a call waits this long for a connection, then fails as unavailable


# The call's text per function and set of arguments given: composing it (quoting, joining)
# cost more client CPU than the rest of a short call.
_STATEMENTS: dict[tuple[str, tuple[tuple[str, str], ...]], sql.SQL] = {}


def _statement(function: rpc.SqlFunction, args: Mapping[str, Any]) -> sql.SQL:
    unknown = set(args) - set(function.params)
    if unknown:
        raise errors.InvalidInput(f"unknown argument(s) for {function.name}: {sorted(unknown)}")
    given = tuple((name, kind) for name, kind in function.params.items() if name in args)
    key = (function.name, given)
    statement = _STATEMENTS.get(key)
    if statement is None:
        named = [sql.SQL("{} => {}::{}").format(sql.Identifier(name), sql.Placeholder(name), sql.SQL(kind))
                 for name, kind in given]
        statement = _STATEMENTS[key] = sql.SQL(sql.SQL("select * from {}.{}({})").format(
            sql.Identifier(rpc.SCHEMA), sql.Identifier(function.name), sql.SQL(", ").join(named)
        ).as_string())
    return statement


# How the hub runs a call as a worker account, the way PostgREST runs a request: the
# account's claims and the authenticated role, local to the call's transaction. hub_claims
# runs first, as the hub's own role (JS401 for an unknown or revoked token).
# Per kind of account, the statement that turns its token's digest into the claims the call
# runs with: a PC's worker account (the hub) or an embedded operator account (the dashboard).
_AS_ACCOUNT = {kind: sql.SQL("select set_config('request.jwt.claims', {}.{}(%(token_hash)s), true), "
                             "set_config('role', 'authenticated', true)").format(
                   sql.Identifier(rpc.SCHEMA), sql.Identifier(claims))
               for kind, claims in (("worker", "hub_claims"), ("operator", "operator_claims"))}


def _adapt(function: rpc.SqlFunction, args: Mapping[str, Any]) -> dict[str, Any]:
    return {k: Jsonb(v) if function.params.get(k) == "jsonb" and v is not None else v for k, v in args.items()}


def conflict_backoff_s(attempt: int) -> float:
    """Full jitter: contenders that lost the same deadlock do not come back in lockstep."""
    return random.uniform(0, min(CONFLICT_BACKOFF_MAX_S, CONFLICT_BACKOFF_S * 2**attempt))


def map_error(exc: psycopg.Error) -> errors.JobsysError:
    diag = exc.diag
    typed = errors.from_sqlstate(exc.sqlstate, diag.message_primary or str(exc), diag.message_detail)
    if typed is not None:
        return typed
    if isinstance(exc, (psycopg.DataError, psycopg.ProgrammingError)) and exc.sqlstate is None:
        # Refused by psycopg before sending (a NUL byte in text, an object where a text goes):
        # bad input, not a fault.
        return errors.InvalidInput(str(exc))
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return errors.TransportError(f"database unavailable: {diag.message_primary or exc}")
    return errors.JobsysError(f"database error {exc.sqlstate}: {diag.message_primary or exc}")


class PostgresTransport:
    supports_push = True

    def __init__(self, conninfo: str, *, pool_max_size: int = POOL_MAX_SIZE, push: bool = True) -> None:
        self.conninfo = conninfo
        self.supports_push = push
        self._pool = psycopg_pool.AsyncConnectionPool(
            conninfo, min_size=1, max_size=pool_max_size, open=False, timeout=POOL_TIMEOUT_S,
            kwargs={"autocommit": True},
        )
        self._opened = False
        # Conflicts absorbed by a retry, by SQLSTATE (the storm test reports them).
        self.conflicts_retried: collections.Counter[str] = collections.Counter()

    async def open(self) -> PostgresTransport:
        if not self._opened:
            await self._pool.open(wait=False)
            self._opened = True
        return self

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()
            self._opened = False

    async def __aenter__(self) -> PostgresTransport:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _execute(self, what: str, statement: sql.Composable, params: Mapping[str, Any],
                       token_hash: str | None = None, account: str = "worker") -> list[dict[str, Any]]:
        """One statement in one transaction (as the `account` kind of account behind
        `token_hash`, if given), retried on deadlock and serialization failures; `what` names
        it in errors."""
        for attempt in range(RETRIES_ON_CONFLICT + 1):
            try:
                async with self._pool.connection() as conn:
                    cur = conn.cursor(row_factory=dict_row)
                    if token_hash is None:
                        await cur.execute(statement, params)
                        return await cur.fetchall()
                    # One round trip for BEGIN, the account's claims, the call and COMMIT
                    # (pipeline mode): the call's locks are not held across three more.
                    claims = conn.cursor()
                    async with conn.pipeline() as pipeline:
                        async with conn.transaction():
                            await claims.execute(_AS_ACCOUNT[account], {"token_hash": token_hash})
                            await cur.execute(statement, params)
                        await pipeline.sync()
                    return await cur.fetchall()
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
                if attempt == RETRIES_ON_CONFLICT:
                    raise errors.TransportError(f"{what}: too much contention, try again") from exc
                self.conflicts_retried[exc.sqlstate or "?"] += 1
                log.warning("%s: %s (%s), retrying", what, exc.sqlstate, type(exc).__name__)
                await asyncio.sleep(conflict_backoff_s(attempt))
            except psycopg_pool.PoolTimeout as exc:
                raise errors.TransportError(f"database unavailable: {exc}") from exc
            except psycopg.Error as exc:
                raise map_error(exc) from exc
        raise AssertionError("unreachable")

    async def _call(self, function: rpc.SqlFunction, args: Mapping[str, Any]) -> list[dict[str, Any]]:
        return await self._execute(function.name, _statement(function, args), _adapt(function, args))

    async def call(self, function: rpc.SqlFunction, args: Mapping[str, Any] | None = None) -> Any:
        rows = await self._call(function, args or {})
        if not rows:
            return None
        return next(iter(rows[0].values()))

    async def call_rows(
        self, function: rpc.SqlFunction, args: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        return await self._call(function, args or {})

    async def call_rows_as_account(self, token_hash: str, function: rpc.SqlFunction,
                                   args: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """A call as the worker account whose token has this SHA-256 digest (the connection's
        own role must be allowed to switch to `authenticated`). Unauthorized for an unknown or
        revoked token; nothing else changes then."""
        args = args or {}
        return await self._execute(function.name, _statement(function, args), _adapt(function, args), token_hash)

    async def call_json_as_account(self, token_hash: str, function: rpc.SqlFunction,
                                   args: Mapping[str, Any] | None = None) -> str:
        """The hub's call: as call_rows_as_account, the rows as a JSON array that Postgres
        writes, so the hub passes them on without decoding and encoding them again."""
        args = args or {}
        statement = sql.SQL("select coalesce(json_agg(r), '[]')::text as rows from ({}) r").format(
            _statement(function, args))
        [row] = await self._execute(function.name, statement, _adapt(function, args), token_hash)
        return str(row["rows"])

    async def select_as_account(self, token_hash: str, query: sql.Composable,
                                params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """A read the hub makes as a worker account, under row level security as the
        account's own calls are (jobsys_hub.evidence: is this run one of this PC's?).
        Unauthorized for an unknown or revoked token."""
        return await self._execute("a read as a worker account", query, params, token_hash)

    async def operator_claims(self, token_hash: str) -> dict[str, Any]:
        """The claims of the embedded operator account behind this digest (Unauthorized for an
        unknown or revoked one), asked as this connection's own role (the service)."""
        return dict(json.loads(await self.call(rpc.OPERATOR_CLAIMS, {"p_token_hash": token_hash})))

    def as_operator(self, token_hash: str) -> OperatorCalls:
        return OperatorCalls(self, token_hash)

    async def subscribe(
        self, topics: list[str], on_event: EventHandler, on_state: StateHandler | None = None
    ) -> Listener:
        listener = Listener(self.conninfo, topics, on_event, on_state)
        if self.supports_push:
            listener.start()
        return listener

    def evidence_store(self) -> None:
        """None: evidence stays in the worker's local directory, which the operator can read."""
        return None



class OperatorCalls:
    """A Transport whose every call runs as one embedded operator account (the claims of
    jobsys.operator_claims, in the call's transaction), so the account's role is checked by
    the SQL as for a Supabase user. Push stays the process's (the dashboard's subscription)."""

    def __init__(self, base: PostgresTransport, token_hash: str) -> None:
        self._base = base
        self._token_hash = token_hash
        self.supports_push = base.supports_push  # subscribe() is the base transport's

    async def call(self, function: rpc.SqlFunction, args: Mapping[str, Any] | None = None) -> Any:
        rows = await self.call_rows(function, args)
        return next(iter(rows[0].values())) if rows else None

    async def call_rows(self, function: rpc.SqlFunction,
                        args: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        args = args or {}
        return await self._base._execute(function.name, _statement(function, args), _adapt(function, args),
                                         self._token_hash, account="operator")

    async def subscribe(self, topics: list[str], on_event: EventHandler,
                        on_state: StateHandler | None = None) -> Listener:
        return await self._base.subscribe(topics, on_event, on_state)

    def evidence_store(self) -> None:
        return None

    async def close(self) -> None:
        """The connections are the base transport's."""


class Listener(PushChannel):
    """LISTEN on a dedicated connection; reconnects with backoff, reports its state."""

    task_name = "jobsys-listener"

    def __init__(
        self, conninfo: str, topics: list[str], on_event: EventHandler, on_state: StateHandler | None
    ) -> None:
        super().__init__(topics, on_event, on_state, log)
        self._conninfo = conninfo
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _run(self) -> None:
        backoff = RECONNECT_MIN_S
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    self._conn = conn
                    for topic in self._topics:
                        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(topic)))
                    backoff = RECONNECT_MIN_S
                    await self._set_state(ChannelState.SUBSCRIBED)
                    while True:
                        async for note in conn.notifies(timeout=KEEPALIVE_S):
                            await self._notified(note)
                        await conn.execute("select 1")  # keep-alive: raises if the link is dead
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                log.warning("push channel lost (%s); reconnecting in %.1fs", type(exc).__name__, backoff)
            finally:
                self._conn = None
            await self._set_state(ChannelState.DISCONNECTED)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_S)

    async def _notified(self, note: psycopg.Notify) -> None:
        try:
            body = json.loads(note.payload)
            event = Event(topic=note.channel, event=body["event"], payload=body.get("payload") or {})
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed notification on %s", note.channel)
            return
        await self._deliver(event)
