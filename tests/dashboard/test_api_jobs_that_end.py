"""REST API for issue 17: the new job fields, retry, clone and export of device runs."""

from __future__ import annotations

import csv
import io
import json

import httpx

from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.dashboard.test_api import assert_error
from tests.support.postgres import Db

JOB = {"target_url": "https://example.com/status", "duration_sec": 30}


async def test_create_takes_the_new_fields_and_the_resource_shows_them(api: httpx.AsyncClient, jobs: JobSystem,
                                                                       db: Db) -> None:
    await add_worker(jobs, "w1", 3)
    response = await api.post("/api/jobs", json={**JOB, "target_type": "all_devices", "target_value": 100,
                                                  "timeout_sec": 600, "topup_grace_sec": 5})
    assert response.status_code == 201, response.text
    job = response.json()["job"]
    assert (job["target_value"], job["target_count"]) == (None, 3)  # all_devices: target_value ignored
    assert (job["timeout_sec"], job["topup_grace_sec"], job["end_reason"]) == (600, 5, None)
    assert (job["waiting_for_devices"], job["ended_at"]) == (None, None)
    before = db.dump()
    bad = await api.post("/api/jobs", json={**JOB, "target_type": "all_devices", "target_value": 0})
    assert_error(bad, 422, "invalid_input")
    assert db.dump() == before
    schema = (await api.get("/openapi.json")).json()["components"]["schemas"]
    for field in ("status", "end_reason", "waiting_for_devices", "timeout_sec", "topup_grace_sec", "ended_at"):
        assert field in schema["Job"]["properties"], field
    assert "incomplete" in json.dumps(schema["JobStatus"])


async def test_retry_409_when_nothing_failed_then_requeues_failed_runs(api: httpx.AsyncClient, jobs: JobSystem,
                                                                       db: Db) -> None:
    session = await add_worker(jobs, "w1", 2)
    job_id = (await api.post("/api/jobs", json={**JOB, "topup_grace_sec": 0})).json()["job"]["id"]
    assert_error(await api.post(f"/api/jobs/{job_id}/retry"), 409, "conflict")
    for run in await jobs.claim_assignments(session.worker_id, start=True):
        await jobs.fail_assignment(run.assignment_id, run.attempt, "=cmd|' /C calc'!A0")
    await jobs.maintain(force=True)
    await jobs.maintain(force=True)
    ended = (await api.get(f"/api/jobs/{job_id}")).json()
    assert (ended["status"], ended["end_reason"]) == ("incomplete", "max_attempts")
    assert [j["id"] for j in (await api.get("/api/jobs", params={"status": "incomplete"})).json()["jobs"]] == [job_id]

    export = await api.get(f"/api/jobs/{job_id}/export", params={"format": "csv"})
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    text = export.content.decode("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text[1:])))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"failed"}
    assert {r["error"] for r in rows} == {"'=cmd|' /C calc'!A0"}  # neutralised for spreadsheets
    assert {r["worker_name"] for r in rows} == {"w1"}
    lines = (await api.get(f"/api/jobs/{job_id}/export", params={"format": "jsonl"})).text.splitlines()
    assert {json.loads(line)["error"] for line in lines} == {"=cmd|' /C calc'!A0"}  # verbatim

    retried = await api.post(f"/api/jobs/{job_id}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["retried"] == 2 and retried.json()["job"]["status"] == "active"
    assert db.counters_match() == []


async def test_clone_returns_201_with_a_new_job(api: httpx.AsyncClient, jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 2)
    job = (await api.post("/api/jobs", json={**JOB, "title": "nightly", "timeout_sec": 60})).json()["job"]
    response = await api.post(f"/api/jobs/{job['id']}/clone")
    assert response.status_code == 201, response.text
    clone = response.json()["job"]
    assert clone["id"] != job["id"] and response.headers["location"] == f"/api/jobs/{clone['id']}"
    assert (clone["title"], clone["timeout_sec"], clone["target_url"]) == ("nightly", 60, JOB["target_url"])
    missing = "00000000-0000-0000-0000-000000000000"
    assert_error(await api.post(f"/api/jobs/{missing}/clone"), 404, "not_found")
    assert_error(await api.get(f"/api/jobs/{missing}/export"), 404, "not_found")
