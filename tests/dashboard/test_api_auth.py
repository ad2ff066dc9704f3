"""Auth: every API route needs the bearer token; the embedded token is made once and kept 0600."""

from __future__ import annotations

import os
import pathlib
import stat
import uuid
from typing import Any

import httpx
import pytest

from jobsys.system import JobSystem
from nicegui_app.auth import ENV_API_TOKEN, TOKEN_FILE_NAME, load_or_create_token
from tests.core.helpers import add_worker
from tests.dashboard.conftest import TOKEN
from tests.dashboard.test_api import assert_error
from tests.support.postgres import Db

ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/api/jobs", {"json": {"target_url": "https://example.com", "duration_sec": 5}}),
    ("GET", "/api/jobs", {}),
    ("GET", f"/api/jobs/{uuid.uuid4()}", {}),
    ("PATCH", f"/api/jobs/{uuid.uuid4()}", {"json": {"status": "paused"}}),
    ("DELETE", f"/api/jobs/{uuid.uuid4()}", {}),
    ("GET", "/api/devices", {}),
    ("GET", "/api/unknown", {}),
]
BAD_CREDENTIALS: dict[str, str | bytes | None] = {
    "no header": None,
    "wrong token": f"Bearer {TOKEN}x",
    "token prefix only": f"Bearer {TOKEN[:-1]}",
    "basic scheme": f"Basic {TOKEN}",
    "bearer without token": "Bearer ",
    "token without scheme": TOKEN,
    "non-ascii token": "Bearer 토큰".encode(),
}


async def test_every_route_refuses_missing_or_wrong_token(
    api: httpx.AsyncClient, jobs: JobSystem, db: Db
) -> None:
    await add_worker(jobs, "w1", 2)
    before = db.dump()
    for method, path, kwargs in ROUTES:
        for case, header in BAD_CREDENTIALS.items():
            raw = header.encode() if isinstance(header, str) else header
            headers = [] if raw is None else [(b"authorization", raw)]
            response = await api.send(
                httpx.Request(method, f"http://api.test{path}", headers=headers, **kwargs)
            )
            error = assert_error(response, 401, "unauthorized")
            assert TOKEN not in str(error), case  # never echoed
            assert response.headers["www-authenticate"] == "Bearer", (method, path, case)
    assert db.dump() == before


async def test_right_token_is_accepted(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/devices")).status_code == 200


def test_token_is_generated_once_and_kept_private(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_API_TOKEN, raising=False)
    token, created = load_or_create_token(tmp_path / "data")
    assert created and len(token) >= 40
    path = tmp_path / "data" / TOKEN_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(tmp_path / "data") == (token, False)


def test_environment_token_wins(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_API_TOKEN, "from-the-environment")
    assert load_or_create_token(tmp_path) == ("from-the-environment", False)
    assert not (tmp_path / TOKEN_FILE_NAME).exists()


def test_loose_or_empty_token_file_is_repaired(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_API_TOKEN, raising=False)
    path = tmp_path / TOKEN_FILE_NAME
    path.write_text("kept-token\n")
    os.chmod(path, 0o644)
    assert load_or_create_token(tmp_path) == ("kept-token", False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("")
    token, created = load_or_create_token(tmp_path)
    assert created and token != "kept-token" and path.read_text().strip() == token
