"""Evidence in Supabase mode: the worker uploads each run's screenshot to Storage (respx
answering `POST /storage/v1/object/<bucket>/<key>` as Storage does) and reports the storage
URI; when the upload fails the run is still reported, with the local path and the reason."""

from __future__ import annotations

import asyncio
import pathlib
import uuid
from typing import AsyncIterator

import httpx
import pytest
import respx

from jobsys.events import ChannelState
from jobsys.models import JobDetail, JobStatus
from jobsys.system import JobSystem
from jobsys.transport.supabase_storage import EVIDENCE_BUCKET, storage_uri
from tests.support.postgres import Db
from tests.support.waiting import wait_until
from tests.transport.conftest import SupabaseDoubles
from tests.transport.tokens import ANON, user
from worker.agent import Worker
from worker.options import WorkerOptions

OPERATOR = user("operator", "operator")
WORKER = user("pc-01", "worker")
UPLOAD_PREFIX = f"/storage/v1/object/{EVIDENCE_BUCKET}/"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def storage(doubles: SupabaseDoubles) -> respx.Route:
    """Storage's upload endpoint; each test says how it answers."""
    return doubles.router.post(path__startswith=UPLOAD_PREFIX, name="storage-upload")


def stored(request: httpx.Request) -> httpx.Response:
    key = request.url.path.removeprefix("/storage/v1/object/")
    return httpx.Response(200, json={"Key": key, "Id": str(uuid.uuid4())})


@pytest.fixture
async def worker(doubles: SupabaseDoubles, tmp_path: pathlib.Path) -> AsyncIterator[Worker]:
    jobs = await doubles.connect(WORKER)
    options = WorkerOptions(name="pc-01", evidence_dir=tmp_path / "evidence", sim_devices=2, sim_speed=50.0,
                            heartbeat_interval_s=0.5, poll_interval_s=0.2, safety_poll_s=0.2, shutdown_grace_s=5.0)
    agent = Worker(jobs, options)
    task = asyncio.create_task(agent.run())
    await wait_until(lambda: agent.push_state is ChannelState.SUBSCRIBED or task.done(), what="worker subscribed")
    yield agent
    agent.request_stop()
    await asyncio.wait_for(task, 30)
    await jobs.close()


async def run_job(doubles: SupabaseDoubles) -> JobDetail:
    operator = await doubles.connect(OPERATOR)
    created = await operator.create_job(target_url="https://example.com/status", duration_sec=1)
    assert created.assigned == 2

    async def finished() -> bool:
        return (await operator.get_job(created.job.id)).status is JobStatus.COMPLETED

    await wait_until(finished, timeout_s=30, what="job completed")
    detail = await operator.get_job(created.job.id)
    await operator.close()
    return detail


async def test_screenshots_go_to_storage_and_the_result_names_them(
        doubles: SupabaseDoubles, storage: respx.Route, worker: Worker, db: Db) -> None:
    storage.mock(side_effect=stored)
    detail = await run_job(doubles)

    assert worker.evidence is not None  # chosen by the transport alone, no configuration
    uploads = {call.request.url.path.removeprefix(UPLOAD_PREFIX): call.request for call in storage.calls}
    for run in detail.assignments:
        key = f"{worker.worker_id}/{run.id}-{run.attempt}.png"  # under the worker's own session (RLS)
        assert run.result is not None and run.result["evidence_path"] == storage_uri(key)
        assert "evidence_error" not in run.result
        sent = uploads[key]
        assert sent.headers["authorization"] == f"Bearer {WORKER.token}" and sent.headers["apikey"] == ANON.token
        assert PNG_SIGNATURE in sent.content
    assert len(uploads) == 2
    assert db.counters_match() == []


@pytest.mark.parametrize("failure", [
    httpx.Response(403, json={"statusCode": "403", "error": "Unauthorized",
                              "message": "new row violates row-level security policy"}),
    httpx.Response(503, text="<html>upstream unavailable</html>", headers={"content-type": "text/html"}),
    httpx.ConnectError("storage unreachable"),
], ids=["refused by RLS", "gateway error", "unreachable"])
async def test_a_failed_upload_still_reports_the_run_and_keeps_the_file(
        doubles: SupabaseDoubles, storage: respx.Route, worker: Worker, db: Db,
        failure: httpx.Response | Exception) -> None:
    if isinstance(failure, Exception):
        storage.mock(side_effect=failure)
    else:
        storage.mock(return_value=failure)
    detail = await run_job(doubles)

    assert (detail.completed_count, detail.failed_count) == (2, 0)  # the runs themselves succeeded
    assert storage.call_count == 2
    for run in detail.assignments:
        result = run.result
        assert result is not None and "upload failed" in result["evidence_error"]
        local = pathlib.Path(result["evidence_path"])
        assert local.is_file() and local.read_bytes().startswith(PNG_SIGNATURE)  # nothing lost
    assert db.counters_match() == []


async def test_the_embedded_worker_keeps_evidence_local(jobs: JobSystem, tmp_path: pathlib.Path) -> None:
    agent = Worker(jobs, WorkerOptions(name="local", evidence_dir=tmp_path))
    assert agent.evidence is None  # Postgres transport: the local data dir, as before
    await agent.driver.close()

