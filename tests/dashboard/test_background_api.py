"""REST API for background AI batch jobs (spec §5): every endpoint over ASGI, against real
Postgres; results are settled through the runner's own functions (claim, report)."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterable
from typing import Any

import httpx

from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchJob, ItemResult
from jobsys.system import JobSystem
from tests.dashboard.test_api import assert_error
from tests.support.postgres import Db

TEMPLATE = "Summarise in three bullet points:\n{text}"
BATCH: dict[str, Any] = {"template": TEMPLATE, "items": [{"text": "first"}, {"text": "second"}]}
ROOT = "/api/background-jobs"


def texts(n: int, prefix: str = "text") -> list[dict[str, Any]]:
    return [{"text": f"{prefix} {i}"} for i in range(n)]


async def settle(
    batch: BatchJobs, job_id: uuid.UUID, failed: Iterable[int] = (), provider: str = "offline"
) -> BatchJob:
    """Act as a runner: claim the (oldest pending) job and report every item; the last report ends it."""
    claimed = await batch.claim_job("test-runner")
    assert claimed is not None and claimed.id == job_id, "settle the oldest pending job first"
    bad = set(failed)
    got = await batch.claim_items(job_id, claimed.lease_token, 1000)
    await batch.report(
        job_id,
        claimed.lease_token,
        [
            ItemResult(idx=i.idx, status="failed", error="400 INVALID_ARGUMENT: blocked prompt")
            if i.idx in bad
            else ItemResult(
                idx=i.idx,
                status="completed",
                output=f"draft {i.idx}",
                provider=provider,
                tokens_in=5,
                tokens_out=7,
                latency_ms=12,
            )
            for i in got
        ],
    )
    return await batch.get_job(job_id)


def dump_background(db: Db) -> list[tuple[Any, ...]]:
    """Every row of the background tables and of the device-job tables."""
    out = db.dump()
    for table in ("background_jobs", "background_job_items", "background_job_logs"):
        out.extend((table, *row) for row in db.rows(f"select * from jobsys.{table} order by 1"))
    return out


async def test_create_returns_201_with_the_job_and_stores_its_items(api: httpx.AsyncClient, db: Db) -> None:
    response = await api.post(
        ROOT,
        json={
            **BATCH,
            "title": "Weekly notes",
            "concurrency": 8,
            "system_instruction": "Be faithful to the text.",
        },
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert response.headers["location"] == f"{ROOT}/{job['id']}"
    assert (job["type"], job["status"], job["title"], job["total_items"], job["concurrency"]) == (
        "ai_batch",
        "pending",
        "Weekly notes",
        2,
        8,
    )
    assert (job["completed_items"], job["failed_items"], job["progress_percent"]) == (0, 0, 0)
    assert job["payload"]["template"] == TEMPLATE and job["payload"]["placeholders"] == ["text"]
    assert job["payload"]["system_instruction"] == "Be faithful to the text."
    assert job["offline"] is False and job["started_at"] is None
    stored = db.rows(
        "select idx, input from jobsys.background_job_items where job_id = %s order by idx", (job["id"],)
    )
    assert stored == [(0, {"text": "first"}), (1, {"text": "second"})]


async def test_list_filters_by_status_summarises_and_pages(api: httpx.AsyncClient, jobs: JobSystem) -> None:
    batch = BatchJobs.of(jobs)
    first = (await api.post(ROOT, json={**BATCH, "title": "first"})).json()
    second = (await api.post(ROOT, json={**BATCH, "title": "second"})).json()
    third = (await api.post(ROOT, json={**BATCH, "title": "third"})).json()
    await settle(batch, uuid.UUID(first["id"]), failed=[0, 1])  # every item failed: the job failed
    await api.post(f"{ROOT}/{third['id']}/cancel")

    everything = (await api.get(ROOT)).json()
    assert [j["title"] for j in everything["jobs"]] == ["third", "second", "first"]  # newest first
    assert everything["summary"] == {
        "total": 3,
        "pending": 1,
        "running": 0,
        "completed": 0,
        "failed": 1,
        "cancelled": 1,
    }
    for status, expected in (
        ("failed", [first["id"]]),
        ("pending", [second["id"]]),
        ("cancelled", [third["id"]]),
        ("running", []),
    ):
        listed = (await api.get(ROOT, params={"status": status})).json()
        assert [j["id"] for j in listed["jobs"]] == expected, status
        assert listed["summary"]["total"] == 3  # the summary is over all jobs
    page = (await api.get(ROOT, params={"limit": 1, "offset": 1})).json()
    assert [j["title"] for j in page["jobs"]] == ["second"]


async def test_get_one_job_and_unknown_or_malformed_ids(api: httpx.AsyncClient) -> None:
    job = (await api.post(ROOT, json=BATCH)).json()
    got = await api.get(f"{ROOT}/{job['id']}")
    assert got.status_code == 200 and got.json()["id"] == job["id"]
    assert got.json()["title"] == "Summarise in three bullet points: {text}"  # default: the template
    unknown = uuid.uuid4()
    for suffix in ("", "/logs", "/items", "/export"):
        assert_error(await api.get(f"{ROOT}/{unknown}{suffix}"), 404, "not_found")
        assert_error(await api.get(f"{ROOT}/not-a-uuid{suffix}"), 400, "invalid_id")
    for action in ("cancel", "retry"):
        assert_error(await api.post(f"{ROOT}/{unknown}/{action}"), 404, "not_found")
        assert_error(await api.post(f"{ROOT}/12345/{action}"), 400, "invalid_id")


async def test_logs_are_newest_first_and_paged(api: httpx.AsyncClient, jobs: JobSystem) -> None:
    job = (await api.post(ROOT, json={"template": TEMPLATE, "items": texts(6)})).json()
    await settle(BatchJobs.of(jobs), uuid.UUID(job["id"]), failed=[1, 3])
    newest = (await api.get(f"{ROOT}/{job['id']}/logs", params={"limit": 2})).json()
    assert newest["logs"][0]["message"].startswith("completed: 4 of 6 items succeeded, 2 failed")
    assert {line["level"] for line in newest["logs"]} <= {"info", "warning", "error"}
    seen = [line["id"] for line in newest["logs"]]
    before = newest["next_before_id"]
    while before is not None:
        older = (await api.get(f"{ROOT}/{job['id']}/logs", params={"limit": 2, "before_id": before})).json()
        seen += [line["id"] for line in older["logs"]]
        before = older["next_before_id"]
    assert seen == sorted(set(seen), reverse=True)
    everything = (await api.get(f"{ROOT}/{job['id']}/logs")).json()
    assert [line["id"] for line in everything["logs"]] == seen and everything["next_before_id"] is None
    errors = [line["message"] for line in everything["logs"] if line["level"] == "error"]
    assert len(errors) == 2 and all("blocked prompt" in message for message in errors)


async def test_items_are_paged_with_outputs_and_filtered(api: httpx.AsyncClient, jobs: JobSystem) -> None:
    job = (await api.post(ROOT, json={"template": TEMPLATE, "items": texts(12)})).json()
    await settle(BatchJobs.of(jobs), uuid.UUID(job["id"]), failed=[4])
    page = (await api.get(f"{ROOT}/{job['id']}/items", params={"limit": 5, "offset": 10})).json()
    assert page["total"] == 12 and [i["idx"] for i in page["items"]] == [10, 11]
    item = page["items"][0]
    assert (item["status"], item["output"], item["provider"], item["input"]) == (
        "completed",
        "draft 10",
        "offline",
        {"text": "text 10"},
    )
    assert (item["tokens_in"], item["tokens_out"], item["latency_ms"]) == (5, 7, 12)
    failed = (await api.get(f"{ROOT}/{job['id']}/items", params={"status": "failed"})).json()
    assert [(i["idx"], i["output"]) for i in failed["items"]] == [(4, None)] and failed["total"] == 1
    assert "blocked prompt" in failed["items"][0]["error"]


async def test_cancel_and_retry_follow_the_rules(api: httpx.AsyncClient, jobs: JobSystem, db: Db) -> None:
    batch = BatchJobs.of(jobs)
    partly = (await api.post(ROOT, json={"template": TEMPLATE, "items": texts(4)})).json()
    waiting = (await api.post(ROOT, json=BATCH)).json()

    assert_error(await api.post(f"{ROOT}/{partly['id']}/retry"), 409, "conflict")  # nothing failed yet
    settled = await settle(batch, uuid.UUID(partly["id"]), failed=[2])
    assert (settled.status.value, settled.failed_items) == ("completed", 1)
    assert_error(await api.post(f"{ROOT}/{partly['id']}/cancel"), 409, "conflict")  # finished

    retried = await api.post(f"{ROOT}/{partly['id']}/retry")
    assert retried.status_code == 200, retried.text
    body = retried.json()
    assert (body["status"], body["completed_items"], body["failed_items"], body["retry_count"]) == (
        "pending",
        3,
        0,
        1,
    )
    assert db.rows(
        "select idx, status from jobsys.background_job_items where job_id = %s order by idx", (partly["id"],)
    ) == [(0, "completed"), (1, "completed"), (2, "pending"), (3, "completed")]

    cancelled = await api.post(f"{ROOT}/{waiting['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["cancelled_items"] == 2
    before = dump_background(db)
    error = assert_error(await api.post(f"{ROOT}/{waiting['id']}/cancel"), 409, "conflict")
    assert error["message"]
    assert_error(
        await api.post(f"{ROOT}/{waiting['id']}/retry"), 409, "conflict"
    )  # cancelled: nothing failed
    assert dump_background(db) == before


async def test_export_downloads_csv_and_jsonl_with_the_provider(
    api: httpx.AsyncClient, jobs: JobSystem
) -> None:
    items = [{"text": "첫 번째 글", "source": "memo"}, {"text": "second, with a comma", "source": "mail"}]
    job = (await api.post(ROOT, json={"template": TEMPLATE, "items": items})).json()
    await settle(BatchJobs.of(jobs), uuid.UUID(job["id"]), failed=[1])

    response = await api.get(f"{ROOT}/{job['id']}/export", params={"format": "csv"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == f'attachment; filename="batch-{job["id"]}.csv"'
    assert response.content.startswith(b"\xef\xbb\xbf")  # BOM: spreadsheets read the Korean text right
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert [
        (r["idx"], r["status"], r["provider"], r["input.text"], r["input.source"], r["output"]) for r in rows
    ] == [
        ("0", "completed", "offline", "첫 번째 글", "memo", "draft 0"),
        ("1", "failed", "", "second, with a comma", "mail", ""),
    ]
    assert "blocked prompt" in rows[1]["error"]

    default = await api.get(f"{ROOT}/{job['id']}/export")
    assert default.content == response.content  # CSV unless asked otherwise

    lines = await api.get(f"{ROOT}/{job['id']}/export", params={"format": "jsonl"})
    assert lines.status_code == 200 and lines.headers["content-type"].startswith("application/x-ndjson")
    parsed = [json.loads(line) for line in lines.text.splitlines()]
    assert [(p["idx"], p["provider"], p["input"], p["output"]) for p in parsed] == [
        (0, "offline", items[0], "draft 0"),
        (1, "", items[1], ""),
    ]

    assert_error(await api.get(f"{ROOT}/{job['id']}/export", params={"format": "xlsx"}), 422, "invalid_input")


async def test_openapi_documents_the_background_routes(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/openapi.json")).json()
    paths = schema["paths"]
    assert set(paths[ROOT]) == {"get", "post"}
    assert set(paths[f"{ROOT}/{{job_id}}"]) == {"get"}
    for suffix in ("logs", "items", "export"):
        assert set(paths[f"{ROOT}/{{job_id}}/{suffix}"]) == {"get"}
    for action in ("cancel", "retry"):
        assert set(paths[f"{ROOT}/{{job_id}}/{action}"]) == {"post"}
    assert "BatchCreate" in schema["components"]["schemas"]
    assert paths[ROOT]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "BatchCreate"
    )
    assert all(
        op.get("tags") == ["background jobs"]
        for path, ops in paths.items()
        if path.startswith(ROOT)
        for op in ops.values()
    )


async def test_unknown_background_routes_and_methods_keep_the_error_shape(api: httpx.AsyncClient) -> None:
    job = (await api.post(ROOT, json=BATCH)).json()
    assert_error(await api.get(f"{ROOT}/{job['id']}/nothing"), 404, "not_found")
    assert_error(await api.delete(f"{ROOT}/{job['id']}"), 405, "method_not_allowed")
    assert_error(await api.get(f"{ROOT}/{job['id']}/cancel"), 405, "method_not_allowed")
    assert_error(await api.put(ROOT, json=BATCH), 405, "method_not_allowed")
