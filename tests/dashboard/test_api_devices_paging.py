"""GET /api/devices at scale (issue 20): pages with an opaque cursor that walk every device
exactly once, filters (state, pc, label, q) in the query, the old shape kept (devices and
the fleet's summary), and bad input refused with our error shape and nothing changed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.dashboard.test_api import assert_error
from tests.support.postgres import Db


async def walk(api: httpx.AsyncClient, params: dict[str, Any]) -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        response = await api.get("/api/devices", params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"devices", "summary", "next_cursor", "total"}
        devices += body["devices"]
        cursor = body["next_cursor"]
        if cursor is None:
            return devices
        assert body["devices"][-1]["serial"] not in cursor  # opaque: not the serial as it is


async def test_pages_walk_every_device_once_with_filters(api: httpx.AsyncClient, jobs: JobSystem, db: Db) -> None:
    rack1 = await add_worker(jobs, "rack-1", 5)
    await add_worker(jobs, "rack-2", 3, state="error")
    await jobs.set_device_labels(rack1.devices[0].id, {"floor": "2"})
    await jobs.set_device_labels(rack1.devices[1].id, {"floor": "2", "rack": "A"})
    everything = sorted(f"rack-1-{i:03d}" for i in range(5)) + sorted(f"rack-2-{i:03d}" for i in range(3))

    first = (await api.get("/api/devices", params={"limit": 3})).json()
    assert [d["serial"] for d in first["devices"]] == everything[:3]
    assert first["total"] == 8 and first["summary"]["total"] == 8 and first["summary"]["error"] == 3
    for limit in (1, 3, 8, 1000):
        assert [d["serial"] for d in await walk(api, {"limit": limit})] == everything
    assert len((await api.get("/api/devices")).json()["devices"]) == 8  # default limit: 100

    def serials(params: dict[str, Any]) -> Any:
        return walk(api, {"limit": 2, **params})

    assert [d["serial"] for d in await serials({"state": "error"})] == everything[5:]
    assert [d["serial"] for d in await serials({"state": "connected"})] == everything[:5]
    assert [d["serial"] for d in await serials({"pc": "rack-2"})] == everything[5:]
    assert [d["serial"] for d in await serials({"pc": str(rack1.worker_id)})] == everything[:5]
    assert [d["serial"] for d in await serials({"label": "floor=2"})] == everything[:2]
    assert [d["serial"] for d in await serials({"label": ["floor=2", "rack=A"]})] == everything[1:2]
    assert [d["serial"] for d in await serials({"q": "2-00"})] == everything[5:]
    filtered = (await api.get("/api/devices", params={"state": "error", "limit": 1})).json()
    assert filtered["total"] == 3 and filtered["summary"]["total"] == 8  # total: matching; summary: the fleet


@pytest.mark.parametrize("params, status, code, field", [
    ({"limit": 0}, 422, "invalid_input", "limit"),
    ({"limit": 1001}, 422, "invalid_input", "limit"),
    ({"limit": "many"}, 422, "invalid_input", "limit"),
    ({"state": "sleeping"}, 422, "invalid_input", "state"),
    ({"cursor": "%%%"}, 400, "invalid_cursor", "cursor"),
    ({"cursor": "eA" * 200}, 400, "invalid_cursor", "cursor"),
    ({"label": "no-equals"}, 422, "invalid_input", "label"),
    ({"label": "bad key=1"}, 422, "invalid_input", "label"),
    ({"q": "x" * 201}, 422, "invalid_input", "q"),
])
async def test_bad_input_is_refused_and_changes_nothing(
    api: httpx.AsyncClient, jobs: JobSystem, db: Db, params: dict[str, Any], status: int, code: str, field: str
) -> None:
    await add_worker(jobs, "rack-1", 2)
    before = db.dump()
    error = assert_error(await api.get("/api/devices", params=params), status, code)
    assert field in str(error["details"]) or field in str(error["message"]), error
    assert db.dump() == before
