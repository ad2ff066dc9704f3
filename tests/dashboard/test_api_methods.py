"""Every path under /api answers in the API's error shape, whatever the method, in the whole
dashboard app (NiceGUI mounted at /, whose HTML 404 must never answer an /api path):

- a method a documented path does not offer: 405 `method_not_allowed` with `Allow` listing
  what it offers (HEAD wherever GET is);
- HEAD of a GET route: what GET answers (status and headers), without the body;
- an unknown path under /api: 404 `not_found`;
- no token: 401 first, for every path and method, so a caller without the token learns
  neither which paths exist nor which methods they take.
"""

from __future__ import annotations

import asyncio
import pathlib
import uuid
from typing import AsyncIterator

import httpx
import pytest

from jobsys.batch.facade import BatchJobs
from jobsys.system import JobSystem
from nicegui_app.api import create_api_app
from tests.core.helpers import add_worker
from tests.dashboard.test_api import assert_error
from tests.support.processes import free_port
from tests.support.waiting import wait_until

TOKEN = "methods-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Every method a client may send; QUERY and PROPFIND stand for the ones no framework knows.
PROBES = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "QUERY", "PROPFIND")
# The app's own OpenAPI: path -> the methods it documents (built without a database).
SCHEMA = create_api_app(None, TOKEN).openapi()  # type: ignore[arg-type]
DOCUMENTED = {path: {method.upper() for method in operations} for path, operations in SCHEMA["paths"].items()}
UNKNOWN_PATHS = ["/api", "/api/", "/api/nothing", "/api/jobs/extra/segments",
                 "/api/background-jobs/00000000-0000-0000-0000-000000000001/nothing"]


def allow_header(methods: set[str]) -> str:
    return ", ".join(sorted(methods | ({"HEAD"} if "GET" in methods else set())))


@pytest.fixture
async def dashboard_app(clean_nicegui: None, jobs: JobSystem) -> AsyncIterator[httpx.AsyncClient]:
    """The whole app `jobsys up` serves (API and NiceGUI pages), over ASGI."""
    from nicegui_app.app import build_app
    from nicegui_app.hub import EventHub
    from nicegui_app.services import Services

    app = build_app(Services(jobs=jobs, hub=EventHub(), token=TOKEN), storage_secret="methods test")
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dashboard.test") as client:
        yield client


async def _concrete(path: str, jobs: JobSystem) -> str:
    """The path with its {job_id} (or {device_id}) set to a stored one of the right kind (so
    GET answers 200)."""
    path = path.replace("{assignment_id}/{attempt}", "1/1")  # a run without a screenshot: 404
    if "{device_id}" in path:
        session = await add_worker(jobs, "w-device", 1)
        return path.replace("{device_id}", str(session.devices[0].id))
    if "{job_id}" not in path:
        return path
    if path.startswith("/api/background-jobs"):
        job_id = (await BatchJobs.of(jobs).create_job(template="Summarise: {text}", items=[{"text": "a"}])).id
    else:
        await add_worker(jobs, "w1", 1)
        job_id = (await jobs.create_job(target_url="https://example.com", duration_sec=5)).job.id
    return path.replace("{job_id}", str(job_id))


def test_the_openapi_lists_the_routes_this_test_walks() -> None:
    assert len(DOCUMENTED) >= 10 and all(path.startswith("/api/") for path in DOCUMENTED)


@pytest.mark.parametrize("path", sorted(DOCUMENTED))
async def test_methods_a_path_does_not_offer_get_405_with_allow(
        dashboard_app: httpx.AsyncClient, jobs: JobSystem, path: str) -> None:
    documented = DOCUMENTED[path]
    url = await _concrete(path, jobs)
    for method in PROBES:
        if method in documented or (method == "HEAD" and "GET" in documented):
            continue
        response = await dashboard_app.request(method, url, headers=AUTH)
        if method == "HEAD":
            assert (response.status_code, response.content) == (405, b""), (method, url)
            assert response.headers["content-type"] == "application/json"
        else:
            assert_error(response, 405, "method_not_allowed")
        assert response.headers.get("allow") == allow_header(documented), (method, url)


@pytest.mark.parametrize("path", sorted(path for path, methods in DOCUMENTED.items() if "GET" in methods))
async def test_head_answers_like_get_without_the_body(
        dashboard_app: httpx.AsyncClient, jobs: JobSystem, path: str) -> None:
    missing = await _concrete(path.replace("{job_id}", str(uuid.uuid4())).replace("{device_id}", str(uuid.uuid4())),
                              jobs)
    for url in (await _concrete(path, jobs), missing):  # found, not found
        got = await dashboard_app.get(url, headers=AUTH)
        head = await dashboard_app.head(url, headers=AUTH)
        assert got.status_code in (200, 404) and got.content, url
        assert head.status_code == got.status_code, url
        assert dict(head.headers) == dict(got.headers), url  # content-length too: GET's
        assert head.content == b"", url


@pytest.mark.parametrize("path", UNKNOWN_PATHS)
async def test_an_unknown_api_path_is_a_json_404_for_every_method(
        dashboard_app: httpx.AsyncClient, path: str) -> None:
    for method in PROBES:
        response = await dashboard_app.request(method, path, headers=AUTH)
        if method == "HEAD":
            assert (response.status_code, response.content) == (404, b""), path
            assert response.headers["content-type"] == "application/json"
        else:
            assert_error(response, 404, "not_found")


@pytest.mark.parametrize("path", [*sorted(DOCUMENTED), *UNKNOWN_PATHS])
async def test_without_the_token_every_path_and_method_is_401_first(
        dashboard_app: httpx.AsyncClient, path: str) -> None:
    url = path.replace("{job_id}", str(uuid.uuid4()))
    for method in PROBES:
        response = await dashboard_app.request(method, url)
        assert response.status_code == 401, (method, url, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert "allow" not in response.headers  # nothing about the methods
        if method == "HEAD":
            assert response.content == b""
        else:
            assert_error(response, 401, "unauthorized")


async def test_head_and_options_on_a_real_port(
        clean_nicegui: None, jobs: JobSystem, tmp_path: pathlib.Path) -> None:
    """Through uvicorn: HEAD keeps GET's Content-Length and sends no body; OPTIONS is a JSON 405."""
    from nicegui_app.server import serve

    await add_worker(jobs, "w1", 2)
    port = free_port()
    task = asyncio.create_task(serve(jobs, host="127.0.0.1", port=port, token=TOKEN, storage_secret="s",
                                     storage_dir=tmp_path))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5, headers=AUTH) as client:

            async def up() -> bool:
                try:
                    return (await client.get("/api/devices")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(up, what="server up")
            got = await client.get("/api/devices")
            head = await client.head("/api/devices")
            assert head.status_code == 200 and head.content == b""
            assert head.headers["content-length"] == got.headers["content-length"] == str(len(got.content))
            options = await client.options("/api/jobs")
            assert_error(options, 405, "method_not_allowed")
            assert options.headers["allow"] == "GET, HEAD, POST"
            trace = await client.request("TRACE", "/api/jobs")
            assert_error(trace, 405, "method_not_allowed")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)


@pytest.mark.parametrize(("language", "title", "home"), [("ko-KR,ko;q=0.9", "페이지를 찾을 수 없습니다", "작업 관리로 돌아가기"),
                                                         ("en-US,en;q=0.9", "Page not found", "Back to jobs")])
async def test_an_unknown_page_is_a_404_in_the_readers_language_with_a_way_home(
        dashboard_app: httpx.AsyncClient, language: str, title: str, home: str) -> None:
    got = await dashboard_app.get("/no/such/page", headers={"Accept-Language": language})
    assert got.status_code == 404 and got.headers["content-type"].startswith("text/html")
    assert title in got.text and home in got.text and "HTTPException" not in got.text
    api = await dashboard_app.get("/api/no/such/route", headers=AUTH)  # the API keeps its JSON
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"
