"""REST API: every endpoint of spec §5 for device jobs and devices, over ASGI."""

from __future__ import annotations

import uuid

import httpx

from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.support.postgres import Db

JOB = {"target_url": "https://example.com/status?x=1", "duration_sec": 30}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    return body["error"]  # type: ignore[no-any-return]


async def test_create_returns_201_with_job_and_assigned(api: httpx.AsyncClient, jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 4)
    response = await api.post("/api/jobs", json={**JOB, "target_type": "percentage", "target_value": 50})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["assigned"] == 2
    job = body["job"]
    assert job["title"] == "example.com/status"  # derived from the URL
    assert job["status"] == "active"
    assert job["target_count"] == 2
    assert (job["assigned_count"], job["running_count"], job["completed_count"], job["failed_count"]) == (
        2,
        0,
        0,
        0,
    )
    assert response.headers["location"] == f"/api/jobs/{job['id']}"


async def test_create_each_target_type(api: httpx.AsyncClient, jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 5)
    cases: list[tuple[dict[str, object], int, int]] = [
        ({"target_type": "all_devices"}, 5, 5),
        ({"target_type": "percentage", "target_value": 30}, 2, 2),
        ({"target_type": "device_count", "target_value": 8}, 8, 5),
    ]
    for target, target_count, assigned in cases:
        response = await api.post("/api/jobs", json={**JOB, **target, "title": "  Status check  "})
        assert response.status_code == 201, response.text
        assert response.json()["job"]["target_count"] == target_count
        assert response.json()["assigned"] == assigned
        assert response.json()["job"]["title"] == "Status check"


async def test_create_without_devices_is_409_and_stores_nothing(api: httpx.AsyncClient, db: Db) -> None:
    before = db.dump()
    assert_error(await api.post("/api/jobs", json=JOB), 409, "conflict")
    assert db.dump() == before


async def test_list_filters_by_status_and_searches(api: httpx.AsyncClient, jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 2)
    first = (await api.post("/api/jobs", json={**JOB, "title": "Alpha check"})).json()["job"]
    await api.post("/api/jobs", json={**JOB, "target_url": "https://beta.example.org/"})
    assert (await api.patch(f"/api/jobs/{first['id']}", json={"status": "paused"})).status_code == 200

    everything = (await api.get("/api/jobs")).json()
    assert [j["title"] for j in everything["jobs"]] == ["beta.example.org", "Alpha check"]  # newest first
    assert everything["summary"] == {"total": 2, "scheduled": 0, "active": 1, "paused": 1, "completed": 0, "incomplete": 0,
                                     "cancelled": 0, "waiting_for_devices": 0}

    paused = (await api.get("/api/jobs", params={"status": "paused"})).json()
    assert [j["id"] for j in paused["jobs"]] == [first["id"]]
    found = (await api.get("/api/jobs", params={"q": "beta"})).json()
    assert [j["title"] for j in found["jobs"]] == ["beta.example.org"]
    page = (await api.get("/api/jobs", params={"limit": 1, "offset": 1})).json()
    assert [j["title"] for j in page["jobs"]] == ["Alpha check"]


async def test_search_takes_the_text_literally(api: httpx.AsyncClient, jobs: JobSystem) -> None:
    """% and _ are characters to find, not wildcards; case does not matter."""
    await add_worker(jobs, "w1", 2)
    for title in ("Sale 50% off", "Sale 50 items", "a_b check", "axb check"):
        assert (await api.post("/api/jobs", json={**JOB, "title": title})).status_code == 201

    async def titles(q: str) -> list[str]:
        return [j["title"] for j in (await api.get("/api/jobs", params={"q": q})).json()["jobs"]]

    assert await titles("50%") == ["Sale 50% off"]
    assert await titles("a_b") == ["a_b check"]
    assert await titles("A_B CHECK") == ["a_b check"]
    assert await titles("%") == ["Sale 50% off"]


async def test_get_includes_per_device_assignments(api: httpx.AsyncClient, jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 3)
    job = (await api.post("/api/jobs", json=JOB)).json()["job"]
    detail = (await api.get(f"/api/jobs/{job['id']}")).json()
    assert detail["id"] == job["id"]
    assert sorted(a["serial"] for a in detail["assignments"]) == ["w1-000", "w1-001", "w1-002"]
    assert {a["status"] for a in detail["assignments"]} == {"pending"}


async def test_patch_moves_status_and_edits_title(api: httpx.AsyncClient, jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 2)
    job_id = (await api.post("/api/jobs", json=JOB)).json()["job"]["id"]

    paused = await api.patch(f"/api/jobs/{job_id}", json={"status": "paused"})
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert {a.status.value for a in (await jobs.get_job(job_id)).assignments} == {"paused"}

    resumed = await api.patch(f"/api/jobs/{job_id}", json={"status": "active", "title": "Renamed"})
    assert resumed.json()["status"] == "active" and resumed.json()["title"] == "Renamed"

    renamed = await api.patch(f"/api/jobs/{job_id}", json={"title": "Only the title"})
    assert renamed.json()["title"] == "Only the title" and renamed.json()["status"] == "active"

    cancelled = await api.patch(f"/api/jobs/{job_id}", json={"status": "cancelled"})
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["cancelled_count"] == 2


async def test_illegal_transition_is_409_and_changes_nothing(
    api: httpx.AsyncClient, jobs: JobSystem, db: Db
) -> None:
    await add_worker(jobs, "w1", 1)
    job_id = (await api.post("/api/jobs", json=JOB)).json()["job"]["id"]
    await api.patch(f"/api/jobs/{job_id}", json={"status": "cancelled"})
    before = db.dump()
    for body in (
        {"status": "paused"},
        {"status": "active"},
        {"status": "cancelled"},
        {"status": "paused", "title": "must not be stored"},
    ):
        error = assert_error(await api.patch(f"/api/jobs/{job_id}", json=body), 409, "conflict")
        assert error["details"]["status"] == "cancelled"  # type: ignore[index]
    assert db.dump() == before


async def test_delete_then_get_is_404(api: httpx.AsyncClient, jobs: JobSystem, db: Db) -> None:
    await add_worker(jobs, "w1", 2)
    job_id = (await api.post("/api/jobs", json=JOB)).json()["job"]["id"]
    response = await api.delete(f"/api/jobs/{job_id}")
    assert response.status_code == 204 and response.content == b""
    assert_error(await api.get(f"/api/jobs/{job_id}"), 404, "not_found")
    assert_error(await api.delete(f"/api/jobs/{job_id}"), 404, "not_found")
    assert_error(await api.patch(f"/api/jobs/{job_id}", json={"status": "paused"}), 404, "not_found")
    assert db.value("select count(*) from jobsys.job_assignments") == 0


async def test_unknown_and_malformed_ids(api: httpx.AsyncClient) -> None:
    assert_error(await api.get(f"/api/jobs/{uuid.uuid4()}"), 404, "not_found")
    for bad in ("123", "not-a-uuid", "x" * 5000, "%00", "1' or '1'='1"):
        assert_error(await api.get(f"/api/jobs/{bad}"), 400, "invalid_id")


async def test_devices_with_worker_status_and_summary(
    api: httpx.AsyncClient, jobs: JobSystem, db: Db
) -> None:
    session = await add_worker(jobs, "rack-1", 3)
    await add_worker(jobs, "rack-2", 1, state="error")
    job_id = (
        await api.post("/api/jobs", json={**JOB, "target_type": "device_count", "target_value": 1})
    ).json()["job"]["id"]
    [claimed] = await jobs.claim_assignments(session.worker_id, limit=1)
    await jobs.start_assignment(claimed.assignment_id, claimed.attempt)
    stale = next(s for s in ("rack-1-000", "rack-1-001") if s != claimed.serial)
    db.run(
        "update jobsys.devices set last_heartbeat_at = now() - interval '1 hour' where serial = %s", (stale,)
    )

    body = (await api.get("/api/devices")).json()
    assert body["summary"] == {
        "total": 4,
        "connected": 2,
        "idle": 1,
        "busy": 1,
        "offline": 1,
        "error": 1,
        "disabled": 0,
        "unauthorized": 0,
        "draining": 0,
        "quarantined": 0,
        "low_battery": 0,
        "overheated": 0,
    }
    by_serial = {d["serial"]: d for d in body["devices"]}
    busy = by_serial[claimed.serial]
    assert busy["status"] == "busy" and busy["current_job_id"] == job_id
    assert busy["worker_name"] == "rack-1" and busy["worker_id"] == str(session.worker_id)
    assert by_serial[stale]["status"] == "offline"
    assert by_serial["rack-2-000"]["status"] == "error"
    assert all(d["simulated"] and d["last_heartbeat_at"] for d in body["devices"])


async def test_openapi_documents_every_route_with_bearer_auth(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/openapi.json")).json()
    device_paths = {p for p in schema["paths"]  # the others: test_background_api, test_api_worker_accounts
                    if not p.startswith(("/api/background-jobs", "/api/worker-accounts"))}
    assert device_paths == {"/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/retry",
                            "/api/jobs/{job_id}/clone", "/api/jobs/{job_id}/export", "/api/devices",
                            "/api/devices/{device_id}", "/api/devices/{device_id}/reboot", "/api/device-labels",
                            "/api/audit",
                            "/api/runs/{assignment_id}/{attempt}/screenshot"}
    assert set(schema["paths"]["/api/jobs"]) == {"get", "post"}
    assert set(schema["paths"]["/api/jobs/{job_id}"]) == {"get", "patch", "delete"}
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "JobCreate" in schema["components"]["schemas"]
    docs = await api.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_unknown_route_and_wrong_method_keep_the_error_shape(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/api/nothing-here"), 404, "not_found")
    assert_error(await api.put("/api/jobs"), 405, "method_not_allowed")
    assert_error(await api.post("/api/devices", json={}), 405, "method_not_allowed")
