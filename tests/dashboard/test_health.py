"""GET /healthz and /readyz: no token; readiness names what fails (the database, its
migrations, the push channels) and comes back when they do."""

from __future__ import annotations

import pathlib
import signal
import subprocess
from typing import Any

import httpx

from jobsys.system import JobSystem
from nicegui_app.api import create_api_app
from tests.support.postgres import Db, pg_start, pg_stop
from tests.support.processes import free_port, get_json, kill_all, spawn_hub
from tests.support.waiting import wait_until


def _client(jobs: JobSystem) -> httpx.AsyncClient:
    app = create_api_app(jobs, "a-token-nobody-sends-here")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


async def test_healthz_and_readyz_need_no_token(jobs: JobSystem) -> None:
    async with _client(jobs) as api:
        assert (await api.get("/healthz")).json() == {"status": "ok"}
        ready = await api.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "checks": {"database": "ok"}, "failing": []}


async def test_readyz_names_migrations_that_are_behind(jobs: JobSystem, db: Db) -> None:
    newest = db.value("select max(version) from supabase_migrations.schema_migrations")
    db.run("delete from supabase_migrations.schema_migrations where version = %s", (newest,))
    async with _client(jobs) as api:
        ready = await api.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["failing"] == ["database"]
    assert "migrations behind" in ready.json()["checks"]["database"] and newest in ready.json()["checks"]["database"]


async def test_readyz_turns_503_while_postgres_is_down_and_back_after(
        own_postgres: tuple[Any, str], tmp_path: pathlib.Path) -> None:
    server, db_url = own_postgres
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    up: subprocess.Popen[str] = spawn_hub(db_url, tmp_path / "up", port)
    try:
        await wait_until(lambda: (get_json(url + "/readyz") or (0, {}))[0] == 200, timeout_s=60, what="ready")
        status, body = get_json(url + "/readyz") or (0, {})
        assert set(body["checks"]) == {"database", "push", "hub_push"} and body["failing"] == []

        pg_stop(server)
        try:
            await wait_until(lambda: (get_json(url + "/readyz") or (0, {}))[0] == 503, timeout_s=30, what="not ready")
            status, body = get_json(url + "/readyz") or (0, {})
            assert "database" in body["failing"] and body["status"] == "not_ready"
            assert httpx.get(url + "/healthz", timeout=5).json() == {"status": "ok"}  # no database call
        finally:
            pg_start(server)
        await wait_until(lambda: (get_json(url + "/readyz") or (0, {}))[0] == 200, timeout_s=60, what="ready again")
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0
    finally:
        kill_all([up])
