"""The Supabase transport's HTTP side: what it sends (path, headers, body) and how it reads
what PostgREST, Supabase Auth and Storage answer, including their error bodies."""

from __future__ import annotations

import json
import pathlib
import time
import uuid
from typing import Any, Iterator

import httpx
import pytest
import respx

from jobsys import (
    Forbidden,
    IllegalTransition,
    InvalidInput,
    JobsysError,
    NotFound,
    StaleRun,
    TransportError,
    rpc,
)
from jobsys.auth import Credentials, JobsysRole
from jobsys.connect import connect_from_env, connect_supabase
from jobsys.errors import StatementTimeout
from jobsys.models import DeviceReport
from jobsys.system import JobSystem
from jobsys.transport.postgres import PostgresTransport
from jobsys.transport.supabase import RETRIES_ON_CONFLICT, PostgrestErrorBody, SupabaseTransport
from jobsys.transport.supabase_storage import EVIDENCE_BUCKET, EvidenceStore
from tests.support.postgres import Db
from tests.transport.conftest import SupabaseDoubles, rpc_calls
from tests.transport.tokens import ANON, Identity, forged, make_token, user

URL = "http://supabase.test"
OPERATOR = user("operator", "operator")
WORKER = user("worker", "worker")


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=URL, assert_all_called=False) as router:
        yield router


async def operator_system(push: bool = False) -> JobSystem:
    return await connect_supabase(URL, ANON.token, access_token=OPERATOR.token, push=push)


# What goes out -------------------------------------------------------------------------
async def test_calls_are_postgrest_rpc_posts_in_the_jobsys_schema(doubles: SupabaseDoubles) -> None:
    operator, worker = await doubles.connect(OPERATOR), await doubles.connect(WORKER)
    session = await worker.register_worker("w", [DeviceReport(serial="s1")], hostname="pc")
    await operator.create_job(target_url="https://example.com/a", duration_sec=7,
                              target_type="device_count", target_value=1)
    await worker.claim_assignments(session.worker_id, [session.devices[0].id])

    [create] = rpc_calls(doubles, "create_job")
    assert create.headers["apikey"] == ANON.token
    assert create.headers["authorization"] == f"Bearer {OPERATOR.token}"
    assert create.headers["content-profile"] == create.headers["accept-profile"] == rpc.SCHEMA
    assert create.headers["content-type"] == "application/json"
    assert create.body == {"p_target_url": "https://example.com/a", "p_duration_sec": 7,
                           "p_target_type": "device_count", "p_target_value": 1, "p_title": "example.com/a",
                           "p_action": "open_url", "p_max_attempts": None, "p_timeout_sec": None,
                           "p_topup_grace_sec": None, "p_start_at": None, "p_device_labels": None,
                           "p_priority": 0}
    [claim] = rpc_calls(doubles, "claim_assignments")
    assert claim.headers["authorization"] == f"Bearer {WORKER.token}"
    assert claim.body == {"p_worker_id": str(session.worker_id), "p_device_ids": [str(session.devices[0].id)],
                          "p_limit": None, "p_start": False}  # UUIDs as text, arrays as JSON arrays, None as null
    assert doubles.router["rpc"].calls.last.request.url.path == "/rest/v1/rpc/claim_assignments"
    await operator.close()
    await worker.close()


async def test_unexposed_schema_is_reported(doubles: SupabaseDoubles) -> None:
    doubles.postgrest.schemas = ["public"]  # as if config.toml [api] schemas lacked jobsys
    operator = await doubles.connect(OPERATOR)
    with pytest.raises(JobsysError, match="schema exposed") as info:
        await operator.list_jobs()
    assert info.value.details["code"] == "PGRST106"
    await operator.close()


# What comes back -----------------------------------------------------------------------
async def test_results_as_postgrest_shapes_them(api: respx.MockRouter) -> None:
    api.post("/rest/v1/rpc/mark_stale").respond(200, json=3)
    api.post("/rest/v1/rpc/claim_assignments").respond(200, json=[])
    api.post("/rest/v1/rpc/delete_job").respond(204)  # void
    jobs = await operator_system()
    assert await jobs.mark_stale() == 3
    assert await jobs.transport.call_rows(rpc.CLAIM_ASSIGNMENTS, {"p_worker_id": str(uuid.uuid4())}) == []
    assert await jobs.delete_job(uuid.uuid4()) is None
    await jobs.close()


def postgrest_error(code: str, message: str, details: str | None = None, hint: str | None = None) -> PostgrestErrorBody:
    return {"code": code, "details": details, "hint": hint, "message": message}


ERROR_CASES: list[tuple[str, int, Any, type[JobsysError]]] = [
    ("JS400", 400, postgrest_error("JS400", "duration_sec must be 1..86400", '{"field": "duration_sec"}'), InvalidInput),
    ("JS403", 400, postgrest_error("JS403", "operator role required", "{}"), Forbidden),
    ("JS404", 400, postgrest_error("JS404", "job not found", '{"job_id": "x"}'), NotFound),
    ("JS409", 400, postgrest_error("JS409", "cannot pause a cancelled job", '{"status": "cancelled"}'),
     IllegalTransition),
    ("JS410", 400, postgrest_error("JS410", "the run moved on", '{"attempt": 2}'), StaleRun),
    ("22P02", 400, postgrest_error("22P02", 'invalid input syntax for type uuid: "x"'), InvalidInput),
    ("42501 anon", 401, postgrest_error("42501", "permission denied for function list_jobs"), Forbidden),
    ("PGRST303", 401, postgrest_error("PGRST303", "JWT expired"), Forbidden),
    ("PGRST301", 401, postgrest_error("PGRST301", "No suitable key or wrong key type"), Forbidden),
    ("PGRST202", 404, postgrest_error("PGRST202", "Could not find the function jobsys.list_jobs in the schema cache",
                                      hint="Perhaps you meant to call ..."), JobsysError),
    ("PGRST001", 503, postgrest_error("PGRST001", "Database client error. Retrying the connection."), TransportError),
    ("P0001", 400, postgrest_error("P0001", "raised without a code"), JobsysError),
    ("XX000", 500, postgrest_error("XX000", "internal error"), JobsysError),
    ("57014", 500, postgrest_error("57014", "canceling statement due to statement timeout"), StatementTimeout),
]


@pytest.mark.parametrize("status, body, expected", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
async def test_postgrest_errors_become_the_same_typed_errors(api: respx.MockRouter, status: int, body: Any,
                                                             expected: type[JobsysError]) -> None:
    api.post("/rest/v1/rpc/list_jobs").respond(status, json=body)
    jobs = await operator_system()
    with pytest.raises(JobsysError) as info:
        await jobs.list_jobs()
    assert type(info.value) is expected
    assert info.value.message == body["message"] or body["message"] in info.value.message
    if expected is IllegalTransition:
        assert info.value.details == {"status": "cancelled"}  # details JSON text parsed, as from psycopg
    await jobs.close()


@pytest.mark.parametrize("status", [502, 503, 504, 520, 522, 524])
async def test_gateway_errors_without_a_postgrest_body_are_transport_errors(api: respx.MockRouter,
                                                                          status: int) -> None:
    api.post("/rest/v1/rpc/list_jobs").respond(status, text="<html>upstream unavailable</html>",
                                              headers={"content-type": "text/html"})
    jobs = await operator_system()
    with pytest.raises(TransportError):
        await jobs.list_jobs()
    await jobs.close()


@pytest.mark.parametrize("failure", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
                                     httpx.RemoteProtocolError("reset")], ids=lambda e: type(e).__name__)
async def test_network_failures_are_transport_errors(api: respx.MockRouter, failure: Exception) -> None:
    api.post("/rest/v1/rpc/list_jobs").mock(side_effect=failure)
    jobs = await operator_system()
    with pytest.raises(TransportError):
        await jobs.list_jobs()
    await jobs.close()


async def test_deadlocks_are_retried_inside_and_then_reported(api: respx.MockRouter) -> None:
    deadlock = httpx.Response(500, json=postgrest_error("40P01", "deadlock detected"))
    route = api.post("/rest/v1/rpc/mark_stale")
    route.side_effect = [deadlock, deadlock, httpx.Response(200, json=0)]
    jobs = await operator_system()
    assert await jobs.mark_stale() == 0
    assert route.call_count == 3
    route.side_effect = [deadlock] * (RETRIES_ON_CONFLICT + 1)
    with pytest.raises(TransportError):
        await jobs.mark_stale()
    await jobs.close()


async def test_a_statement_timeout_is_a_retryable_typed_error(doubles: SupabaseDoubles) -> None:
    """Supabase cancels `authenticated` calls after its statement_timeout (8 s); the worker
    retries TransportErrors at its next round instead of stopping on a generic error."""
    doubles.postgrest.statement_timeouts = {"authenticated": "50ms"}
    doubles.postgrest.slow_s = 5.0  # cancelled by the database at 50 ms
    worker = await doubles.connect(WORKER)
    with pytest.raises(StatementTimeout) as info:
        await worker.register_worker("w", [DeviceReport(serial="s1")], hostname="pc")
    assert isinstance(info.value, TransportError) and info.value.details["code"] == "57014"
    assert rpc_calls(doubles, "register_worker")[-1].status == 500
    doubles.postgrest.slow_s = 0.0
    session = await worker.register_worker("w", [DeviceReport(serial="s1")], hostname="pc")  # rolled back: retry works
    assert len(session.devices) == 1
    await worker.close()


async def test_a_function_missing_from_the_schema_cache_says_what_to_do(doubles: SupabaseDoubles, db: Db) -> None:
    """PostgREST knows functions from its schema cache: one created after it loaded (a
    migration pushed while it ran) is PGRST202 until the cache is reloaded."""
    db.run("create function jobsys.cache_probe() returns integer language sql as 'select 7'")
    probe = rpc.SqlFunction("cache_probe", {})
    operator = await doubles.connect(OPERATOR)
    with pytest.raises(JobsysError, match="migrations applied") as info:
        await operator.transport.call(probe)
    assert info.value.details["code"] == "PGRST202"
    await doubles.postgrest.reload_schema()  # notify pgrst, 'reload schema'
    assert await operator.transport.call(probe) == 7
    await operator.close()


async def test_a_token_whose_claims_were_altered_is_refused(doubles: SupabaseDoubles) -> None:
    """PostgREST checks the signature: a worker cannot make itself an operator by editing its JWT."""
    jobs = await connect_supabase(doubles.url, ANON.token, push=False,
                                  access_token=forged(WORKER.token, app_metadata={"jobsys_role": "operator"}))
    with pytest.raises(Forbidden) as info:
        await jobs.list_jobs()
    assert info.value.details["code"] == "PGRST301"
    await jobs.close()


async def test_a_gateway_error_page_from_the_edge_is_a_transport_error(doubles: SupabaseDoubles) -> None:
    doubles.postgrest.gateway_status = 522  # Cloudflare: connection to the origin timed out
    operator = await doubles.connect(OPERATOR)
    with pytest.raises(TransportError) as info:
        await operator.list_jobs()
    assert info.value.details["code"] == "522"
    doubles.postgrest.gateway_status = None
    assert (await operator.list_jobs()) is not None
    await operator.close()


# Sign-in and tokens --------------------------------------------------------------------
def session_body(identity: Identity, *, expires_in: int = 3600, refresh_token: str = "refresh-1") -> dict[str, Any]:
    claims = {**identity.claims, "exp": int(time.time()) + expires_in}
    return {"access_token": make_token(claims), "token_type": "bearer", "expires_in": expires_in,
            "expires_at": int(time.time()) + expires_in, "refresh_token": refresh_token,
            "user": {"id": claims["sub"], "aud": "authenticated", "role": "authenticated",
                     "email": claims["email"], "app_metadata": claims["app_metadata"], "user_metadata": {},
                     "created_at": "2026-01-01T00:00:00Z"}}


def password_route(api: respx.MockRouter) -> respx.Route:
    return api.post("/auth/v1/token", params={"grant_type": "password"})


async def test_a_worker_signs_in_and_calls_with_its_own_jwt(api: respx.MockRouter) -> None:
    body = session_body(WORKER)
    sign_in = password_route(api).respond(200, json=body)
    rpc_route = api.post("/rest/v1/rpc/list_devices").respond(200, json={"devices": [], "summary": {}})
    jobs = await connect_supabase(URL, ANON.token, credentials=Credentials("worker@example.test", "pw"),
                                  role=JobsysRole.WORKER, push=False)
    sent_credentials = json.loads(sign_in.calls.last.request.content)
    assert (sent_credentials["email"], sent_credentials["password"]) == ("worker@example.test", "pw")
    await jobs.transport.call(rpc.LIST_DEVICES)
    sent = rpc_route.calls.last.request.headers
    assert sent["authorization"] == f"Bearer {body['access_token']}" and sent["apikey"] == ANON.token
    await jobs.close()


async def test_wrong_role_or_bad_password_fails_at_connect(api: respx.MockRouter) -> None:
    password_route(api).respond(200, json=session_body(OPERATOR))
    with pytest.raises(Forbidden, match="needs worker"):
        await connect_supabase(URL, ANON.token, credentials=Credentials("op@example.test", "pw"),
                               role=JobsysRole.WORKER, push=False)
    password_route(api).respond(400, json={"code": "invalid_credentials", "error_code": "invalid_credentials",
                                          "msg": "Invalid login credentials"})
    with pytest.raises(Forbidden):
        await connect_supabase(URL, ANON.token, credentials=Credentials("w@example.test", "bad"), push=False)
    password_route(api).mock(side_effect=httpx.ConnectError("offline"))
    # Auth unreachable at start is not fatal (a PC booting before its network): calls fail as
    # retryable until the backoff lets the next sign-in out.
    offline = await connect_supabase(URL, ANON.token, credentials=Credentials("w@example.test", "pw"), push=False)
    with pytest.raises(TransportError, match="unreachable"):
        await offline.mark_stale()
    await offline.close()


async def test_tokens_are_refreshed_before_expiry_and_sign_in_repeats_when_revoked(api: respx.MockRouter) -> None:
    first = session_body(WORKER, expires_in=30, refresh_token="r1")  # inside the refresh margin already
    refreshed = session_body(WORKER, expires_in=3600, refresh_token="r2")
    sign_in = password_route(api).respond(200, json=first)
    refresh = api.post("/auth/v1/token", params={"grant_type": "refresh_token"}).respond(200, json=refreshed)
    rpc_route = api.post("/rest/v1/rpc/mark_stale").respond(200, json=0)
    jobs = await connect_supabase(URL, ANON.token, credentials=Credentials("w@example.test", "pw"), push=False)
    await jobs.mark_stale()
    assert json.loads(refresh.calls.last.request.content)["refresh_token"] == "r1"
    assert rpc_route.calls.last.request.headers["authorization"] == f"Bearer {refreshed['access_token']}"

    transport = jobs.transport
    assert isinstance(transport, SupabaseTransport)
    transport.tokens._session = transport.tokens._session.model_copy(update={"expires_at": int(time.time())})
    refresh.respond(400, json={"code": "refresh_token_not_found", "error_code": "refresh_token_not_found",
                               "msg": "Invalid Refresh Token: Refresh Token Not Found"})
    await jobs.mark_stale()  # revoked refresh token: signs in again with the password
    assert sign_in.call_count == 2
    await jobs.close()


# Choosing the transport --------------------------------------------------------------------
async def test_connect_from_env_picks_the_transport(api: respx.MockRouter, db_url: str) -> None:
    password_route(api).respond(200, json=session_body(WORKER))
    env = {"SUPABASE_URL": URL, "SUPABASE_ANON_KEY": ANON.token, "JOBSYS_EMAIL": "w@example.test",
           "JOBSYS_PASSWORD": "pw"}
    on_supabase = await connect_from_env(JobsysRole.WORKER, push=False, env=env)
    assert isinstance(on_supabase.transport, SupabaseTransport)
    await on_supabase.close()

    on_postgres = await connect_from_env(env={"JOBSYS_DATABASE_URL": db_url}, push=False)
    assert isinstance(on_postgres.transport, PostgresTransport)
    await on_postgres.close()

    with pytest.raises(Forbidden, match="never uses"):
        await connect_from_env(JobsysRole.WORKER, env={"SUPABASE_URL": URL, "SUPABASE_ANON_KEY": ANON.token,
                                                       "SUPABASE_SERVICE_ROLE_KEY": "service-key"})
    with pytest.raises(InvalidInput):
        await connect_from_env(env={})
    admin = await connect_from_env(allow_service_role=True, push=False,
                                   env={"SUPABASE_URL": URL, "SUPABASE_SERVICE_ROLE_KEY": "service-key"})
    route = api.post("/rest/v1/rpc/mark_stale").respond(200, json=0)
    await admin.mark_stale()
    assert route.calls.last.request.headers["authorization"] == "Bearer service-key"
    await admin.close()


# Evidence in Storage -------------------------------------------------------------------
async def test_evidence_goes_to_the_private_bucket_as_the_worker(api: respx.MockRouter,
                                                                 tmp_path: pathlib.Path) -> None:
    worker_id = uuid.uuid4()
    shot = tmp_path / "shot.png"
    shot.write_bytes(b"\x89PNG fake")
    key = f"{worker_id}/41-2.png"
    route = api.post(f"/storage/v1/object/{EVIDENCE_BUCKET}/{key}").respond(
        200, json={"Key": f"{EVIDENCE_BUCKET}/{key}", "Id": str(uuid.uuid4())})
    jobs = await connect_supabase(URL, ANON.token, access_token=WORKER.token, push=False)
    assert isinstance(jobs.transport, SupabaseTransport)
    store = EvidenceStore(jobs.transport)
    assert await store.upload(worker_id, 41, 2, shot) == f"supabase-storage://{EVIDENCE_BUCKET}/{key}"
    sent = route.calls.last.request
    assert sent.headers["authorization"] == f"Bearer {WORKER.token}" and sent.headers["apikey"] == ANON.token
    assert b"\x89PNG fake" in sent.content

    route.respond(400, json={"statusCode": "409", "error": "Duplicate", "message": "The resource already exists"})
    assert await store.upload(worker_id, 41, 2, shot)  # a retried upload already stored: done
    route.respond(400, json={"statusCode": "403", "error": "Unauthorized",
                             "message": "new row violates row-level security policy"})
    with pytest.raises(Forbidden):
        await store.upload(worker_id, 41, 2, shot)
    await store.close()
    await jobs.close()
