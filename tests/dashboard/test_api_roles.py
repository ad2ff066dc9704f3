"""Issue 21: each staff role against the REST routes, with embedded accounts' tokens as the
bearer: a viewer reads only, an operator also runs jobs and AI batches, an admin also
manages devices, PCs and accounts and reads the audit log. Refusals are 403 and change nothing."""

from __future__ import annotations

from typing import Any, AsyncIterator

import httpx
import pytest

from jobsys.system import JobSystem
from nicegui_app.api import create_api_app
from tests.core.helpers import add_worker
from tests.support.postgres import Db

JOB = {"target_url": "https://example.com/roles", "duration_sec": 5}
BATCH = {"template": "Summarise: {text}", "items": [{"text": "a"}]}
OK, FORBIDDEN = "ok", 403
# route -> expected answer per role: "ok" (2xx) or 403
MATRIX: list[tuple[str, str, Any, dict[str, Any]]] = [
    ("GET", "/api/jobs", None, {"viewer": OK, "operator": OK, "admin": OK}),
    ("GET", "/api/devices", None, {"viewer": OK, "operator": OK, "admin": OK}),
    ("GET", "/api/background-jobs", None, {"viewer": OK, "operator": OK, "admin": OK}),
    ("GET", "/api/worker-accounts", None, {"viewer": OK, "operator": OK, "admin": OK}),
    ("GET", "/metrics", None, {"viewer": OK, "operator": OK, "admin": OK}),
    ("POST", "/api/jobs", JOB, {"viewer": FORBIDDEN, "operator": OK, "admin": OK}),
    ("POST", "/api/background-jobs", BATCH, {"viewer": FORBIDDEN, "operator": OK, "admin": OK}),
    ("PATCH", "/api/devices/{device}", {"labels": {"rack": "A"}}, {"viewer": FORBIDDEN, "operator": FORBIDDEN,
                                                                   "admin": OK}),
    ("PATCH", "/api/devices/{device}", {"drain": True}, {"viewer": FORBIDDEN, "operator": FORBIDDEN, "admin": OK}),
    ("POST", "/api/devices/{device}/reboot", None, {"viewer": FORBIDDEN, "operator": FORBIDDEN, "admin": OK}),
    ("POST", "/api/worker-accounts", {"name": "pc-{role}"}, {"viewer": FORBIDDEN, "operator": FORBIDDEN,
                                                             "admin": OK}),
    ("GET", "/api/audit", None, {"viewer": FORBIDDEN, "operator": FORBIDDEN, "admin": OK}),
]


@pytest.fixture
async def as_role(jobs: JobSystem) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    app = create_api_app(jobs, "t" * 24)
    clients: dict[str, httpx.AsyncClient] = {}
    for role in ("viewer", "operator", "admin"):
        token = (await jobs.add_operator_account(f"{role}-account", role)).token
        clients[role] = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api.test",
                                          headers={"Authorization": f"Bearer {token}"})
    yield clients
    for client in clients.values():
        await client.aclose()


async def test_each_role_against_each_route(jobs: JobSystem, db: Db, as_role: dict[str, httpx.AsyncClient]) -> None:
    session = await add_worker(jobs, "w1", 3)
    devices = iter(d.id for d in session.devices)
    wrong: list[str] = []
    for method, path, body, expected in MATRIX:
        device = next(devices) if "{device}" in path and "drain" not in str(body) else session.devices[0].id
        for role, want in expected.items():
            url = path.format(device=device)
            payload = None if body is None else {k: (v.replace("{role}", role) if isinstance(v, str) else v)
                                                 for k, v in body.items()}
            before = db.dump() if want == FORBIDDEN else None
            response = await as_role[role].request(method, url, json=payload)
            got = OK if response.is_success else response.status_code
            if got != want:
                wrong.append(f"{role} {method} {url}: {response.status_code} {response.text[:120]}")
            if before is not None and db.dump() != before:
                wrong.append(f"{role} {method} {url}: refused but the database changed")
    assert wrong == []
