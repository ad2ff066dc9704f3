"""Auth: every API route needs the bearer token. Where the embedded token is kept (as a hash):
test_secrets_at_rest.py."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from jobsys.system import JobSystem
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
