"""Screenshots in hub mode: a worker PC uploads each run's screenshot to the hub with its
worker token (jobsys_hub.evidence), the hub keeps it under its data dir keyed by run, and
operators fetch it from the REST API (nicegui_app.screenshots), never with a worker token.
While the hub is away the worker keeps uploads in a bounded queue on disk and delivers them
when it is back (jobsys.transport.hub_evidence).

Real hub (uvicorn on loopback) on the test database; the hub "goes away" behind a TCP
gate of the test's own that hangs up on every connection until it is opened."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import pathlib
import socket
from typing import AsyncIterator, Iterator

import httpx
import pytest

from jobsys import errors, hub_protocol
from jobsys.connect import connect_hub
from jobsys.events import ChannelState
from jobsys.models import ClaimedAssignment, DeviceReport, JobStatus
from jobsys.system import JobSystem
from jobsys.transport.hub_evidence import QUEUE_DIR_NAME, HubEvidenceStore
from tests.support.hub import RunningHub, running_hub
from tests.support.postgres import Db
from tests.support.waiting import wait_until
from worker.agent import Worker
from worker.drivers.sim import write_evidence_png
from worker.options import WorkerOptions

API_TOKEN = "evidence-api-token-0123456789"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 64
FAST_RETRY = {"retry_min_s": 0.05, "retry_max_s": 0.2}


@pytest.fixture
async def hub(db_url: str, tmp_path: pathlib.Path) -> AsyncIterator[RunningHub]:
    async with running_hub(db_url, tmp_path / "hub") as started:
        yield started


@pytest.fixture
async def api(jobs: JobSystem, hub: RunningHub) -> AsyncIterator[httpx.AsyncClient]:
    """The operator's REST API, serving the hub's screenshots, with the API token on every request."""
    from nicegui_app.api import create_api_app

    app = create_api_app(jobs, API_TOKEN, evidence_dir=hub.hub.evidence_dir)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api.test",
                                 headers=hub_protocol.bearer(API_TOKEN)) as client:
        yield client


def stored(hub: RunningHub) -> list[str]:
    """Every file in the hub's evidence directory, temporary ones included."""
    directory = hub.hub.evidence_dir
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


async def claimed_run(hub: RunningHub, operator: JobSystem, name: str) -> tuple[str, ClaimedAssignment]:
    """A worker account on the hub with one device, a job for it, and its claimed run."""
    token = await hub.enrol(name)
    async with await connect_hub(hub.url, token, push=False) as worker:
        session = await worker.register_worker(name, [DeviceReport(serial=f"{name}-0", simulated=True)])
        await operator.create_job(target_url="https://example.com/status", duration_sec=5)
        [run] = await worker.claim_assignments(session.worker_id, start=True)
    return token, run


def put(hub: RunningHub, token: str, run: ClaimedAssignment, body: object,
        content_type: str = "image/png", attempt: int | None = None) -> httpx.Request:
    path = hub_protocol.EVIDENCE_PATH.format(assignment_id=run.assignment_id,
                                             attempt=run.attempt if attempt is None else attempt)
    return httpx.Request("PUT", hub.url + path, content=body,  # type: ignore[arg-type]
                         headers={**hub_protocol.bearer(token), "content-type": content_type})


async def send(request: httpx.Request) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.send(request)


class Gate:
    """A TCP relay in front of the hub: shut, it hangs up on every connection (the hub is
    unreachable), or with `hang` keeps it open and never answers; open, it relays both ways."""

    def __init__(self, target_url: str) -> None:
        self._target_port = httpx.URL(target_url).port
        self.is_open = False
        self.hang = False
        self._released = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.hang:
            await self._released.wait()
        if not self.is_open:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def close(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.close()


@pytest.fixture
async def gate(hub: RunningHub) -> AsyncIterator[tuple[Gate, str]]:
    relay = Gate(hub.url)
    url = await relay.start()
    yield relay, url
    relay.close()


# The whole path -------------------------------------------------------------------------
async def test_a_hub_worker_uploads_each_runs_screenshot_and_operators_fetch_it(
        hub: RunningHub, jobs: JobSystem, api: httpx.AsyncClient, tmp_path: pathlib.Path, db: Db) -> None:
    token = await hub.enrol("pc-01")
    options = WorkerOptions(name="pc-01", evidence_dir=tmp_path / "pc", sim_devices=2, sim_speed=50.0,
                            heartbeat_interval_s=0.5, poll_interval_s=0.2, safety_poll_s=0.2, shutdown_grace_s=5.0)
    worker_jobs = await connect_hub(hub.url, token, evidence_dir=options.evidence_dir)
    agent = Worker(worker_jobs, options)
    assert isinstance(agent.evidence, HubEvidenceStore)  # chosen by the transport alone
    task = asyncio.create_task(agent.run())
    try:
        await wait_until(lambda: agent.push_state is ChannelState.SUBSCRIBED or task.done(), what="worker subscribed")
        created = await jobs.create_job(target_url="https://example.com/status", duration_sec=1)
        assert created.assigned == 2

        async def finished() -> bool:
            return (await jobs.get_job(created.job.id)).status is JobStatus.COMPLETED

        await wait_until(finished, timeout_s=30, what="job completed")
    finally:
        agent.request_stop()
        await asyncio.wait_for(task, 30)
        await worker_jobs.close()

    detail = (await api.get(f"/api/jobs/{created.job.id}")).json()
    local_files = {p.name: p.read_bytes() for p in (options.evidence_dir / str(created.job.id)).iterdir()}
    assert len(local_files) == 2
    for run in detail["assignments"]:
        run_id, attempt = run["id"], run["attempt"]
        assert run["result"]["evidence_path"] == f"hub:evidence/{run_id}-{attempt}.png"
        assert "evidence_error" not in run["result"]
        assert run["screenshot_url"] == f"/api/runs/{run_id}/{attempt}/screenshot"
        shot = await api.get(run["screenshot_url"])
        assert shot.status_code == 200 and shot.headers["content-type"] == "image/png"
        assert shot.headers["x-content-type-options"] == "nosniff"
        [local] = [body for name, body in local_files.items() if name.endswith(f"-{run_id}-{attempt}.png")]
        assert shot.content == local == (hub.hub.evidence_dir / f"{run_id}-{attempt}.png").read_bytes()
    assert stored(hub) == sorted(f"{r['id']}-{r['attempt']}.png" for r in detail["assignments"])
    assert not list((options.evidence_dir / QUEUE_DIR_NAME).glob("*"))  # nothing waited

    export = await api.get(f"/api/jobs/{created.job.id}/export", params={"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(export.content.decode("utf-8").removeprefix("\ufeff"))))
    assert sorted(r["screenshot_url"] for r in rows) == sorted(r["screenshot_url"] for r in detail["assignments"])
    assert db.counters_match() == []


async def test_uploads_store_each_image_type_and_a_second_upload_replaces_the_first(
        hub: RunningHub, jobs: JobSystem, api: httpx.AsyncClient) -> None:
    token, run = await claimed_run(hub, jobs, "pc-a")
    for body, content_type, suffix in ((PNG, "image/png", ".png"), (JPEG, "image/jpeg", ".jpg"),
                                       (WEBP, "image/webp", ".webp")):
        answer = await send(put(hub, token, run, body, content_type))
        assert answer.status_code == 200, answer.text
        name = f"{run.assignment_id}-{run.attempt}{suffix}"
        assert answer.json() == {"uri": "hub:evidence/" + name}
        assert stored(hub) == [name]  # one screenshot per run: the newer replaces the older
        shot = await api.get(hub_protocol.SCREENSHOT_URL.format(assignment_id=run.assignment_id, attempt=run.attempt))
        assert (shot.status_code, shot.headers["content-type"], shot.content) == (200, content_type, body)


# Refusals store nothing -------------------------------------------------------------------
@pytest.mark.parametrize("chunked", [False, True], ids=["declared length", "streamed"])
async def test_an_oversized_upload_is_refused_with_413_and_nothing_is_stored(
        hub: RunningHub, jobs: JobSystem, chunked: bool) -> None:
    token, run = await claimed_run(hub, jobs, "pc-a")
    body = PNG + b"\x00" * (hub_protocol.EVIDENCE_MAX_BYTES + 1 - len(PNG))

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1 << 20):
            yield body[start:start + (1 << 20)]

    answer = await send(put(hub, token, run, stream() if chunked else body))
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "too_large"
    assert stored(hub) == []


@pytest.mark.parametrize(("content_type", "body"), [
    ("text/plain", PNG),  # not an image type
    ("image/gif", b"GIF89a" + b"\x00" * 16),  # an image, not one the hub takes
    ("image/png", b"<html>not a picture</html>"),  # the bytes are no image
    ("image/jpeg", PNG),  # the bytes are another type than declared
    ("image/png", b""),
], ids=["text", "gif", "html bytes", "mismatched magic", "empty"])
async def test_a_non_image_upload_is_refused_with_415_and_nothing_is_stored(
        hub: RunningHub, jobs: JobSystem, content_type: str, body: bytes) -> None:
    token, run = await claimed_run(hub, jobs, "pc-a")
    answer = await send(put(hub, token, run, body, content_type))
    assert answer.status_code == 415 and answer.json()["error"]["code"] == "unsupported_media_type"
    assert stored(hub) == []


async def test_a_run_of_another_pc_or_attempt_is_refused_and_nothing_is_stored(
        hub: RunningHub, jobs: JobSystem) -> None:
    token_a, run_a = await claimed_run(hub, jobs, "pc-a")
    token_b, run_b = await claimed_run(hub, jobs, "pc-b")
    assert run_a.assignment_id != run_b.assignment_id

    answer = await send(put(hub, token_b, run_a, PNG))  # B's token, A's run
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden"
    ghost = run_a.model_copy(update={"assignment_id": run_b.assignment_id + 1000})
    assert (await send(put(hub, token_a, ghost, PNG))).status_code == 403  # no such run
    stale = await send(put(hub, token_a, run_a, PNG, attempt=run_a.attempt + 1))  # not the run's attempt
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "stale_run"
    assert stored(hub) == []

    store = HubEvidenceStore(hub.url, token_b, pathlib.Path(hub.hub.evidence_dir).parent / "queue-b")
    shot = write_evidence_png(pathlib.Path(hub.hub.evidence_dir).parent / "pc-b", "shot")
    with pytest.raises(errors.Forbidden):
        await store.upload("w", run_a.assignment_id, run_a.attempt, shot)
    await store.close()
    assert stored(hub) == [] and not store.queue_dir.exists()  # refused, so not queued either


async def test_an_unknown_or_revoked_token_is_refused_with_401(hub: RunningHub, jobs: JobSystem,
                                                               tmp_path: pathlib.Path) -> None:
    token, run = await claimed_run(hub, jobs, "pc-a")
    unknown = await send(put(hub, "not-a-token-of-anyone", run, PNG))
    assert unknown.status_code == 401 and unknown.headers["www-authenticate"] == "Bearer"
    no_token = put(hub, token, run, PNG)
    del no_token.headers["authorization"]
    assert (await send(no_token)).status_code == 401

    await hub.admin.revoke_worker_account("pc-a")
    revoked = await send(put(hub, token, run, PNG))
    assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "unauthorized"
    store = HubEvidenceStore(hub.url, token, tmp_path / "queue")
    with pytest.raises(errors.Unauthorized):
        await store.upload("w", run.assignment_id, run.attempt, write_evidence_png(tmp_path, "shot"))
    await store.close()
    assert stored(hub) == [] and not store.queue_dir.exists()


# The queue on the worker ------------------------------------------------------------------
async def test_while_the_hub_is_away_uploads_wait_on_disk_and_are_delivered_when_it_is_back(
        hub: RunningHub, jobs: JobSystem, api: httpx.AsyncClient, gate: tuple[Gate, str],
        tmp_path: pathlib.Path) -> None:
    relay, gate_url = gate
    token, run = await claimed_run(hub, jobs, "pc-a")
    shot = write_evidence_png(tmp_path / "pc", "shot")
    store = HubEvidenceStore(gate_url, token, tmp_path / "pc" / QUEUE_DIR_NAME, **FAST_RETRY)
    try:
        uri = await store.upload("w", run.assignment_id, run.attempt, shot)
        assert uri == f"hub:evidence/{run.assignment_id}-{run.attempt}.png"  # the run's report goes ahead
        [queued] = store.queued()
        assert (queued.assignment_id, queued.attempt) == (run.assignment_id, run.attempt)
        assert queued.path.read_bytes() == shot.read_bytes() and store.hub_away
        assert stored(hub) == []

        relay.is_open = True
        await wait_until(lambda: store.queued() == [] and stored(hub) != [], what="the queued upload delivered")
        assert stored(hub) == [f"{run.assignment_id}-{run.attempt}.png"]
        assert store.delivered == 1 and not store.hub_away
        url = hub_protocol.screenshot_url(uri)
        assert url is not None
        assert (await api.get(url)).content == shot.read_bytes()
    finally:
        await store.close()


async def test_a_hub_that_never_answers_does_not_hold_the_run_up(
        hub: RunningHub, jobs: JobSystem, gate: tuple[Gate, str], tmp_path: pathlib.Path) -> None:
    relay, gate_url = gate
    relay.hang = True  # accepts the connection, then says nothing
    token, run = await claimed_run(hub, jobs, "pc-a")
    store = HubEvidenceStore(gate_url, token, tmp_path / "pc" / QUEUE_DIR_NAME, inline_timeout_s=0.2, **FAST_RETRY)
    try:
        uri = await store.upload("w", run.assignment_id, run.attempt, write_evidence_png(tmp_path / "pc", "shot"))
        assert uri == f"hub:evidence/{run.assignment_id}-{run.attempt}.png"  # given up inline, queued
        assert len(store.queued()) == 1 and store.hub_away
    finally:
        await store.close()


async def test_a_new_worker_process_delivers_what_the_last_one_left_queued(
        hub: RunningHub, jobs: JobSystem, gate: tuple[Gate, str], tmp_path: pathlib.Path) -> None:
    relay, gate_url = gate
    token, run = await claimed_run(hub, jobs, "pc-a")
    queue_dir = tmp_path / "pc" / QUEUE_DIR_NAME
    first = HubEvidenceStore(gate_url, token, queue_dir, **FAST_RETRY)
    await first.upload("w", run.assignment_id, run.attempt, write_evidence_png(tmp_path / "pc", "shot"))
    await first.close()  # the worker stops while the hub is still away
    assert len(first.queued()) == 1 and stored(hub) == []

    relay.is_open = True
    second = HubEvidenceStore(gate_url, token, queue_dir, **FAST_RETRY)  # the next start
    try:
        await wait_until(lambda: second.queued() == [] and stored(hub) != [], what="the left-over upload delivered")
        assert stored(hub) == [f"{run.assignment_id}-{run.attempt}.png"]
    finally:
        await second.close()


async def test_a_full_queue_drops_its_oldest_uploads_with_a_warning(
        tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket_nobody_listens_on() as dead_url:
        store = HubEvidenceStore(dead_url, "token", tmp_path / QUEUE_DIR_NAME, max_files=2, **FAST_RETRY)
        shot = write_evidence_png(tmp_path, "shot")
        try:
            with caplog.at_level(logging.WARNING, logger="jobsys.transport.hub_evidence"):
                for run_id in (1, 2, 3):
                    assert await store.upload("w", run_id, 1, shot) == f"hub:evidence/{run_id}-1.png"
                await store.upload("w", 3, 1, shot)  # the same run again replaces its entry
            assert [q.assignment_id for q in store.queued()] == [2, 3]
            dropped = [r.getMessage() for r in caplog.records if "evidence_queue_full" in r.getMessage()]
            assert len(dropped) == 1 and "run=1 attempt=1" in dropped[0]

            store.max_bytes = 2 * shot.stat().st_size  # a byte bound too: room for two
            store.max_files = 100
            await store.upload("w", 4, 1, shot)
            assert [q.assignment_id for q in store.queued()] == [3, 4]
        finally:
            await store.close()


async def test_what_the_hub_would_refuse_is_never_queued(tmp_path: pathlib.Path) -> None:
    with socket_nobody_listens_on() as dead_url:
        store = HubEvidenceStore(dead_url, "token", tmp_path / QUEUE_DIR_NAME, **FAST_RETRY)
        text = tmp_path / "shot.png"
        text.write_bytes(b"not a picture")
        big = tmp_path / "big.png"
        big.write_bytes(PNG + b"\x00" * hub_protocol.EVIDENCE_MAX_BYTES)
        try:
            for path in (text, big):
                with pytest.raises(errors.InvalidInput):
                    await store.upload("w", 1, 1, path)
            assert store.queued() == []
        finally:
            await store.close()


# Operators only -----------------------------------------------------------------------------
async def test_a_worker_token_cannot_fetch_a_screenshot(hub: RunningHub, jobs: JobSystem,
                                                        api: httpx.AsyncClient) -> None:
    token, run = await claimed_run(hub, jobs, "pc-a")
    assert (await send(put(hub, token, run, PNG))).status_code == 200
    url = hub_protocol.SCREENSHOT_URL.format(assignment_id=run.assignment_id, attempt=run.attempt)
    assert (await api.get(url)).status_code == 200

    as_worker = await api.get(url, headers=hub_protocol.bearer(token))
    assert as_worker.status_code == 401 and as_worker.content != PNG
    assert (await api.get(url, headers={"Authorization": ""})).status_code == 401
    hub_path = hub_protocol.EVIDENCE_PATH.format(assignment_id=run.assignment_id, attempt=run.attempt)
    async with httpx.AsyncClient() as client:  # the hub takes uploads only: nothing to read there
        from_hub = await client.get(hub.url + hub_path, headers=hub_protocol.bearer(token))
    assert from_hub.status_code == 405 and from_hub.content != PNG


async def test_the_operator_route_takes_run_numbers_only(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/runs/1/1/screenshot")).status_code == 404  # no such screenshot
    for bad in ("/api/runs/..%2F..%2Fapi_token/1/screenshot", "/api/runs/0/1/screenshot",
                "/api/runs/1/-1/screenshot", f"/api/runs/{2**63}/1/screenshot", "/api/runs/1/1.png/screenshot"):
        answer = await api.get(bad)
        assert answer.status_code in (404, 422), bad
        assert answer.headers["content-type"].startswith("application/json"), bad


@contextlib.contextmanager
def socket_nobody_listens_on() -> Iterator[str]:
    """An address that refuses connections: a port taken and released."""
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    yield f"http://127.0.0.1:{port}"


async def test_the_sweep_deletes_screenshots_of_runs_that_no_longer_exist(
        tmp_path: pathlib.Path, jobs: JobSystem) -> None:
    from jobsys_hub.evidence import sweep

    session = await jobs.register_worker("pc", [DeviceReport(serial="s1", simulated=True)], hostname="h")
    await jobs.create_job(target_url="https://example.com/", duration_sec=5)
    [run] = await jobs.claim_assignments(session.worker_id)
    kept = tmp_path / f"{run.assignment_id}-1.png"
    gone = tmp_path / f"{run.assignment_id + 1000}-1.png"
    partial = tmp_path / f".{run.assignment_id + 1000}-1.png.tmp"  # being written: not a stored name
    for path in (kept, gone, partial):
        path.write_bytes(b"x")
    assert await sweep(jobs, tmp_path) == 1
    assert kept.exists() and not gone.exists() and partial.exists()
