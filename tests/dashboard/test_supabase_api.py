"""The REST API in Supabase mode: `Authorization: Bearer <Supabase access token>`, checked
with Supabase Auth (our GoTrue double), cached briefly, operators only; each request then
calls PostgREST (our double, on the real test database) with the caller's own JWT."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
import urllib.error
import urllib.request
import uuid
from typing import Any, AsyncIterator

import httpx
import pytest

from jobsys.connect import connect_dashboard_from_env, connect_supabase
from jobsys.system import JobSystem
from nicegui_app.api import create_api_app
from nicegui_app.server import serve
from nicegui_app.supabase_auth import VERIFIED_CACHE_S, SupabaseAuth
from tests.core.helpers import add_worker
from tests.dashboard.supabase_auth_double import AuthDouble
from tests.dashboard.test_api import assert_error
from tests.support.postgres import Db
from tests.support.processes import free_port
from tests.support.waiting import wait_until
from tests.transport.conftest import SupabaseDoubles, rpc_calls, start_doubles
from tests.transport.tokens import ANON, SERVICE, make_token, user

OPERATOR_EMAIL = "ops@example.test"
WORKER_EMAIL = "pc-01@example.test"
NO_ROLE_EMAIL = "someone@example.test"


class Clock:
    """The verifier's clock, moved by hand: cache expiry without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Project:
    doubles: SupabaseDoubles
    auth: AuthDouble
    verifier: SupabaseAuth
    clock: Clock
    api: httpx.AsyncClient

    async def get(self, path: str, token: str | None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return await self.api.get(path, headers=headers, **kwargs)


@pytest.fixture
async def project(db_url: str) -> AsyncIterator[Project]:
    async with start_doubles(db_url) as doubles:
        auth = AuthDouble(doubles.router)
        auth.add(OPERATOR_EMAIL, "operator-pw", "operator")
        auth.add(WORKER_EMAIL, "worker-pw", "worker")
        auth.add(NO_ROLE_EMAIL, "pw", None)
        clock = Clock()
        verifier = await SupabaseAuth.connect(doubles.url, ANON.token, clock=clock)
        # The process's own system has the anon key alone: nothing in a request may use it.
        process_jobs = await connect_supabase(doubles.url, ANON.token, push=False)
        app = create_api_app(process_jobs, "", verifier)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api.test") as api:
            yield Project(doubles, auth, verifier, clock, api)
        await verifier.close()
        await process_jobs.close()


async def test_an_operator_token_is_accepted_and_the_calls_run_as_that_operator(
        project: Project, jobs: JobSystem, db: Db) -> None:
    await add_worker(jobs, "w1", 2)
    token = project.auth.access_token(OPERATOR_EMAIL)
    created = await project.api.post("/api/jobs", headers={"Authorization": f"Bearer {token}"},
                                     json={"target_url": "https://example.com/status", "duration_sec": 5})
    assert created.status_code == 201, created.text
    operator = project.auth.accounts[OPERATOR_EMAIL]
    assert created.json()["job"]["created_by"] == operator.user_id  # auth.uid() in SQL was the caller
    [call] = rpc_calls(project.doubles, "create_job")
    assert call.headers["authorization"] == f"Bearer {token}" and call.headers["apikey"] == ANON.token
    assert db.value("select count(*) from jobsys.jobs") == 1

    listed = await project.get("/api/jobs", token)
    assert listed.status_code == 200 and len(listed.json()["jobs"]) == 1
    batches = await project.get("/api/background-jobs", token)
    assert batches.status_code == 200, batches.text
    assert project.doubles.postgrest.calls[-1].headers["authorization"] == f"Bearer {token}"
    assert {c.headers["authorization"] for c in project.doubles.postgrest.calls} == {f"Bearer {token}"}


def _unauthorized_cases(auth: AuthDouble) -> dict[str, str | None]:
    revoked = auth.access_token(OPERATOR_EMAIL)
    auth.revoke(revoked)  # signed out: GoTrue no longer knows its session
    return {
        "no header": None,
        "not a JWT": "not-a-jwt",
        "expired": auth.access_token(OPERATOR_EMAIL, expires_in_s=-10),
        "revoked session": revoked,
        "forged (session unknown to Auth)": make_token({**user("forger", "operator").claims,
                                                        "session_id": str(uuid.uuid4())}),
        "the anon key": ANON.token,
    }


async def test_missing_invalid_expired_or_revoked_tokens_are_401_and_store_nothing(
        project: Project, jobs: JobSystem, db: Db) -> None:
    await add_worker(jobs, "w1", 1)
    before = db.dump()
    for case, token in _unauthorized_cases(project.auth).items():
        for method, path in [("GET", "/api/jobs"), ("POST", "/api/jobs"), ("GET", "/api/background-jobs"),
                             ("GET", "/api/nowhere")]:
            headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
            response = await project.api.request(method, path, headers=headers,
                                                 json={"target_url": "https://example.com", "duration_sec": 5})
            error = assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer", case
            assert token is None or token not in str(error), case  # never echoed
    assert db.dump() == before
    assert rpc_calls(project.doubles, "create_job") == []  # refused before any database call


async def test_a_valid_token_without_the_operator_role_is_403(project: Project, jobs: JobSystem, db: Db) -> None:
    await add_worker(jobs, "w1", 1)
    before = db.dump()
    for email in (WORKER_EMAIL, NO_ROLE_EMAIL):
        token = project.auth.access_token(email)
        response = await project.api.post("/api/jobs", headers={"Authorization": f"Bearer {token}"},
                                          json={"target_url": "https://example.com", "duration_sec": 5})
        error = assert_error(response, 403, "forbidden")
        assert "operator" in error["message"] and token not in str(error)
    service = await project.get("/api/jobs", SERVICE.token)  # not a user token: Auth does not vouch for it
    assert_error(service, 401, "unauthorized")
    assert db.dump() == before


async def test_the_embedded_api_token_means_nothing_in_supabase_mode(project: Project) -> None:
    for token in ("", "test-token-0123456789"):
        assert_error(await project.get("/api/devices", token), 401, "unauthorized")


async def test_checked_tokens_are_cached_briefly(project: Project) -> None:
    token = project.auth.access_token(OPERATOR_EMAIL)
    for _ in range(3):
        assert (await project.get("/api/devices", token)).status_code == 200
    assert project.auth.user_route.call_count == 1  # one round trip to Supabase Auth for three requests

    project.clock.now += VERIFIED_CACHE_S + 1
    assert (await project.get("/api/devices", token)).status_code == 200
    assert project.auth.user_route.call_count == 2

    project.auth.revoke(token)  # an admin signs the operator out: refused once the cache entry lapses
    project.clock.now += VERIFIED_CACHE_S + 1
    assert_error(await project.get("/api/devices", token), 401, "unauthorized")


async def test_refused_tokens_are_not_cached(project: Project) -> None:
    token = project.auth.access_token(WORKER_EMAIL)
    for _ in range(2):
        assert_error(await project.get("/api/devices", token), 403, "forbidden")
    bad = project.auth.access_token(OPERATOR_EMAIL)
    project.auth.revoke(bad)
    for _ in range(2):
        assert_error(await project.get("/api/devices", bad), 401, "unauthorized")
    assert project.auth.user_route.call_count == 3  # the worker's one valid check is cached; failures never


async def test_supabase_auth_unreachable_is_503_not_401(project: Project) -> None:
    project.auth.user_route.mock(side_effect=httpx.ConnectError("offline"))
    token = project.auth.access_token(OPERATOR_EMAIL)
    assert_error(await project.get("/api/jobs", token), 503, "unavailable")


async def test_supabase_auth_rate_limiting_is_503_not_401(project: Project) -> None:
    token = project.auth.access_token(OPERATOR_EMAIL)
    project.auth.rate_limited = {"user"}  # 429: the token may well be fine; the client retries later
    assert_error(await project.get("/api/jobs", token), 503, "unavailable")
    project.auth.rate_limited = set()
    assert (await project.get("/api/jobs", token)).status_code == 200


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """A plain urllib request: respx mocks httpx only, so this reaches the real server."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.url, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, url, exc.read().decode()


async def test_serve_runs_the_supabase_mode_on_a_real_port(
        clean_nicegui: None, db_url: str, jobs: JobSystem, tmp_path: pathlib.Path) -> None:
    await add_worker(jobs, "w1", 2)
    async with start_doubles(db_url) as doubles:
        auth = AuthDouble(doubles.router)
        auth.add(OPERATOR_EMAIL, "operator-pw", "operator")
        verifier = await SupabaseAuth.connect(doubles.url, ANON.token)
        process = await connect_dashboard_from_env(env={"SUPABASE_URL": doubles.url,
                                                        "SUPABASE_ANON_KEY": ANON.token})
        port = free_port()
        task = asyncio.create_task(serve(process, host="127.0.0.1", port=port, token="", storage_secret="s",
                                         storage_dir=tmp_path, supabase=verifier))
        base = f"http://127.0.0.1:{port}"

        async def up() -> bool:
            try:
                return (await asyncio.to_thread(fetch, f"{base}/login"))[0] == 200
            except OSError:
                return False

        await wait_until(up, what="server up")
        token = auth.access_token(OPERATOR_EMAIL)
        status, _, body = await asyncio.to_thread(fetch, f"{base}/api/devices", {"Authorization": f"Bearer {token}"})
        assert status == 200 and json.loads(body)["summary"]["connected"] == 2
        status, _, body = await asyncio.to_thread(fetch, f"{base}/api/devices")
        assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"
        status, _, body = await asyncio.to_thread(fetch, f"{base}/openapi.json")  # the docs too
        assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"
        operator = {"Authorization": f"Bearer {token}"}
        status, _, body = await asyncio.to_thread(fetch, f"{base}/openapi.json", operator)
        assert status == 200 and "/api/jobs" in json.loads(body)["paths"]
        status, final_url, page = await asyncio.to_thread(fetch, f"{base}/devices", {"Accept-Language": "en"})
        assert status == 200 and "/login" in final_url  # redirected to the login page
        assert "Email" in page and "API token" not in page

        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)
        await verifier.close()
        await process.close()
