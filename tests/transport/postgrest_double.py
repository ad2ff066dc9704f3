"""Our PostgREST double, not PostgREST: a respx side effect that answers
`POST /rest/v1/rpc/<fn>` the way PostgREST's documentation says it does, by running the
function in the real test database.

What it reproduces, because jobsys depends on it:
- the profile headers pick the schema, which must be exposed (supabase/config.toml [api]
  schemas), else 406 PGRST106;
- the bearer JWT's `role` claim becomes `SET LOCAL ROLE`, its claims `request.jwt.claims`
  (one transaction per request); an expired token is 401 PGRST303; a request without
  `apikey` is refused as the Supabase gateway refuses it;
- JSON keys are named arguments, converted with the function's own argument types via
  json_to_record (the schema cache's types, read from pg_proc, not from jobsys.rpc);
  no matching overload is 404 PGRST202;
- scalar results are the JSON value, set-returning ones a JSON array, void is 204;
- database errors are {code, message, details, hint} with PostgREST's SQLSTATE -> HTTP
  status table.
- the role's statement_timeout (`statement_timeouts`, as Supabase sets 8 s for
  `authenticated`) is set for the request, and `slow_s` makes every call sleep first, so
  a call can really be cancelled with SQLSTATE 57014 (HTTP 500);
- `gateway_status` answers every request with a proxy's HTML error page (Cloudflare's 520-524,
  a 502 from the API gateway), as Supabase's edge does when PostgREST is unreachable.
- the JWT's signature is checked (HS256, the test secret of tests/transport/tokens.py):
  a bad one is 401 PGRST301;
- functions are looked up in a schema cache read at `open()`, as PostgREST's: a function
  created later is 404 PGRST202 until `reload_schema()` (PostgREST: `notify pgrst, 'reload
  schema'`);
What it does not: table endpoints, GET rpc, Prefer headers.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
import tomllib
from typing import Any

import httpx
import psycopg
import psycopg_pool
from psycopg import sql

from jobsys.auth import unverified_claims
from jobsys.transport.supabase import PostgrestErrorBody
from tests.transport.tokens import signature_valid

RPC_PREFIX = "/rest/v1/rpc/"


def exposed_schemas(config_toml: pathlib.Path) -> list[str]:
    return list(tomllib.loads(config_toml.read_text(encoding="utf-8"))["api"]["schemas"])


def http_status(sqlstate: str, role: str) -> int:
    """PostgREST's table (docs.postgrest.org, Errors > HTTP Status Codes)."""
    exact = {"23503": 409, "23505": 409, "25006": 405, "53400": 500, "P0001": 400,
             "42883": 404, "42P01": 404, "42P17": 500}
    if sqlstate == "42501":
        return 401 if role == "anon" else 403
    if sqlstate in exact:
        return exact[sqlstate]
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])
    by_class = {"08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500, "38": 500,
                "39": 500, "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500, "57": 500, "58": 500,
                "F0": 500, "HV": 500, "P0": 500, "XX": 500}
    return by_class.get(sqlstate[:2], 400)


def error(status: int, code: str, message: str, details: str | None = None,
          hint: str | None = None) -> httpx.Response:
    body: PostgrestErrorBody = {"code": code, "details": details, "hint": hint, "message": message}
    return httpx.Response(status, json=body)


@dataclasses.dataclass(frozen=True)
class Signature:
    schema: str
    name: str
    params: dict[str, str]  # name -> SQL type, declaration order
    required: frozenset[str]
    returns_set: bool
    returns_void: bool


@dataclasses.dataclass
class Recorded:
    function: str
    headers: httpx.Headers
    body: Any
    status: int


class PostgrestDouble:
    def __init__(self, db_url: str, schemas: list[str]) -> None:
        self.schemas = schemas
        self.calls: list[Recorded] = []
        self.statement_timeouts: dict[str, str] = {}  # Postgres role -> statement_timeout, e.g. "8s"
        self.slow_s = 0.0  # every call sleeps this long in the database first
        self.gateway_status: int | None = None
        self._pool = psycopg_pool.AsyncConnectionPool(db_url, min_size=1, max_size=8, open=False)
        self._cache: dict[tuple[str, str], list[tuple[Any, ...]]] = {}  # (schema, name) -> pg_proc rows

    async def open(self) -> None:
        await self._pool.open()
        await self.reload_schema()

    async def reload_schema(self) -> None:
        """Read the functions of every schema again (PostgREST on `notify pgrst, 'reload schema'`)."""
        async with self._pool.connection() as conn:
            rows = await (await conn.execute("""
                select n.nspname, p.proname, p.proargnames[1:p.pronargs],
                       array(select format_type(t, null) from unnest(p.proargtypes) t),
                       p.pronargs - p.pronargdefaults, p.proretset, p.prorettype = 'void'::regtype
                from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                where n.nspname not in ('pg_catalog', 'information_schema')""")).fetchall()
        cache: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        for schema, name, *rest in rows:
            cache.setdefault((schema, name), []).append(tuple(rest))
        self._cache = cache

    async def close(self) -> None:
        await self._pool.close()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        response = await self._answer(request, body)
        self.calls.append(Recorded(request.url.path.removeprefix(RPC_PREFIX), request.headers, body,
                                   response.status_code))
        return response

    async def _answer(self, request: httpx.Request, body: Any) -> httpx.Response:
        if self.gateway_status is not None:
            return httpx.Response(self.gateway_status, headers={"content-type": "text/html; charset=UTF-8"},
                                  text=f"<!DOCTYPE html><html><head><title>{self.gateway_status}: origin error"
                                       "</title></head><body>cloudflare</body></html>")
        if not (request.headers.get("apikey") or request.url.params.get("apikey")):
            return httpx.Response(401, json={"message": "No API key found in request",
                                             "hint": "No `apikey` request header or url param was found."})
        schema = request.headers.get("content-profile") or self.schemas[0]
        if schema not in self.schemas:
            return error(406, "PGRST106", "Invalid schema: " + schema,
                         hint="Only the following schemas are exposed: " + ", ".join(self.schemas))
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if token and not signature_valid(token):
            return error(401, "PGRST301", "JWSError JWSInvalidSignature")
        claims: dict[str, Any] = dict(unverified_claims(token)) if token else {}
        if claims.get("exp") and claims["exp"] < time.time():
            return error(401, "PGRST303", "JWT expired")
        role = str(claims.get("role") or "anon")
        name = request.url.path.removeprefix(RPC_PREFIX)
        if not isinstance(body, dict):
            return error(400, "PGRST102", "An object is expected for rpc arguments")
        signature = self._resolve(schema, name, set(body))
        async with self._pool.connection() as conn:
            if signature is None:
                keys = ", ".join(sorted(body))
                return error(404, "PGRST202", f"Could not find the function {schema}.{name}({keys}) in the schema cache",
                             details=f"Searched for the function {schema}.{name} with parameters {keys} or with a "
                                     "single unnamed json/jsonb parameter, but no matches were found in the schema cache.",
                             hint=None)
            try:
                async with conn.transaction():
                    await conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
                    if role in self.statement_timeouts:  # PostgREST applies the role's settings
                        await conn.execute("select set_config('statement_timeout', %s, true)",
                                           (self.statement_timeouts[role],))
                    if self.slow_s:
                        await conn.execute("select pg_sleep(%s)", (self.slow_s,))
                    await conn.execute(
                        "select set_config('request.jwt.claims', %s, true), set_config('request.method', 'POST', true),"
                        " set_config('request.path', %s, true), set_config('search_path', %s, true)",
                        (json.dumps(claims), request.url.path, f"{schema}, public, extensions"))
                    text = await self._execute(conn, signature, body)
            except psycopg.Error as exc:
                diag = exc.diag
                sqlstate = exc.sqlstate or "XX000"
                return error(http_status(sqlstate, role), sqlstate,
                             diag.message_primary or str(exc), diag.message_detail, diag.message_hint)
        if signature.returns_void:
            return httpx.Response(204)
        return httpx.Response(200, content=text.encode(),
                              headers={"content-type": "application/json; charset=utf-8"})

    def _resolve(self, schema: str, name: str, keys: set[str]) -> Signature | None:
        for names, types, required_count, returns_set, returns_void in self._cache.get((schema, name), []):
            params = dict(zip(names or [], types))
            required = frozenset((names or [])[:required_count])
            if keys <= set(params) and required <= keys:
                return Signature(schema, name, params, required, returns_set, returns_void)
        return None

    async def _execute(self, conn: psycopg.AsyncConnection[Any], fn: Signature, body: dict[str, Any]) -> str:
        target = sql.SQL("{}.{}").format(sql.Identifier(fn.schema), sql.Identifier(fn.name))
        names = [n for n in fn.params if n in body]
        call = sql.SQL("{}({})").format(target, sql.SQL(", ").join(
            sql.SQL("{} := pgrst_args.{}").format(sql.Identifier(n), sql.Identifier(n)) for n in names))
        args_from = sql.SQL("json_to_record(%(body)s::json) as pgrst_args({})").format(sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(fn.params[n])) for n in names))
        if not names:
            call, args_from = sql.SQL("{}()").format(target), sql.SQL("(select) as pgrst_args")
        if fn.returns_set:
            query = sql.SQL("select coalesce(json_agg(pgrst_row), '[]')::text from "
                            "(select pgrst_call.* from {}, lateral {} pgrst_call) pgrst_row").format(args_from, call)
        elif fn.returns_void:
            query = sql.SQL("select {} from {}").format(call, args_from)
        else:
            query = sql.SQL("select coalesce(json_agg(pgrst_scalar) -> 0, 'null')::text from "
                            "(select {} as pgrst_scalar from {}) pgrst_call").format(call, args_from)
        row = await (await conn.execute(query, {"body": json.dumps(body)} if names else None)).fetchone()
        return "" if fn.returns_void or row is None else str(row[0])
