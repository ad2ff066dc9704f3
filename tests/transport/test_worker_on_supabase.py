"""The worker and a dashboard-style subscriber on the Supabase transport, unchanged but for
configuration: every call goes through our PostgREST double as the worker's or the
operator's own user, every push through our Realtime double fed by realtime.send."""

from __future__ import annotations

import pathlib
from typing import AsyncIterator, Awaitable, Callable

import pytest

from jobsys.auth import AuthState, Credentials, JobsysRole
from jobsys.connect import connect_supabase
from jobsys.events import ChannelState, Event, EventName
from jobsys.models import JobStatus
from jobsys.transport.supabase import SupabaseTransport
from tests.support.postgres import Db
from tests.support.runners import WorkerPool, until_ready
from tests.support.waiting import wait_until
from tests.dashboard.supabase_auth_double import AuthDouble
from tests.transport.conftest import FAST_REALTIME, SupabaseDoubles
from tests.transport.tokens import ANON, user
from worker.agent import Worker
from worker.options import WorkerOptions

OPERATOR = user("operator", "operator")
StartWorker = Callable[..., Awaitable[Worker]]


@pytest.fixture
async def start_worker(doubles: SupabaseDoubles, db: Db, tmp_path: pathlib.Path) -> AsyncIterator[StartWorker]:
    pool = WorkerPool()

    async def start(name: str = "w1", devices: int = 3, *, poll_interval_s: float = 0.2) -> Worker:
        jobs = await doubles.connect(user(name, "worker"))
        assert isinstance(jobs.transport, SupabaseTransport)  # no database connection in this process
        options = WorkerOptions(name=name, evidence_dir=tmp_path / "evidence", sim_devices=devices, sim_speed=50.0,
                                heartbeat_interval_s=0.5, poll_interval_s=poll_interval_s,
                                safety_poll_s=poll_interval_s, shutdown_grace_s=5.0)
        worker = Worker(jobs, options)
        task = pool.run(worker, jobs)
        await until_ready(task, lambda: worker.push_state is ChannelState.SUBSCRIBED, "worker subscribed")
        return worker

    yield start
    await pool.stop_all()


async def test_a_job_runs_to_completion_with_live_dashboard_progress(
        doubles: SupabaseDoubles, start_worker: StartWorker, db: Db) -> None:
    await start_worker(devices=3)
    operator = await doubles.connect(OPERATOR)
    progress: list[Event] = []
    dashboard = await operator.subscribe_dashboard(progress.append)
    await wait_until(lambda: dashboard.state is ChannelState.SUBSCRIBED, what="dashboard subscribed")

    created = await operator.create_job(target_url="https://example.com/health", duration_sec=2)
    assert created.assigned == 3

    def finished() -> bool:
        return any(e.event == EventName.JOB_PROGRESS and e.payload.get("status") == JobStatus.COMPLETED.value
                   and e.payload.get("completed_count") == 3 for e in progress)

    await wait_until(finished, timeout_s=30, what="completed progress pushed to the dashboard")
    detail = await operator.get_job(created.job.id)
    assert (detail.status, detail.completed_count, detail.failed_count) == (JobStatus.COMPLETED, 3, 0)
    assert db.counters_match() == []
    await dashboard.close()
    await operator.close()


async def test_after_a_push_outage_the_resubscribe_resyncs_the_worker(
        doubles: SupabaseDoubles, start_worker: StartWorker) -> None:
    # Polling so slow it cannot be what finds the job: only the resync on SUBSCRIBED can.
    worker = await start_worker(devices=2, poll_interval_s=3600.0)
    doubles.realtime.answer_joins = False
    doubles.realtime.drop_all()
    await wait_until(lambda: worker.push_state is ChannelState.DISCONNECTED, what="worker saw the outage")

    operator = await doubles.connect(OPERATOR)
    created = await operator.create_job(target_url="https://example.com", duration_sec=1)  # its push is lost
    doubles.realtime.answer_joins = True
    await wait_until(lambda: worker.push_state is ChannelState.SUBSCRIBED, what="worker subscribed again")

    async def completed() -> bool:
        return (await operator.get_job(created.job.id)).status is JobStatus.COMPLETED

    try:
        await wait_until(completed, timeout_s=30, what="job completed after the resync")
    except AssertionError as exc:  # say where it stuck
        detail = await operator.get_job(created.job.id)
        raise AssertionError(f"{exc}; created={created.assigned} job={detail.model_dump_json()}"
                             f" runs={list(worker.runs)}") from exc
    await operator.close()


async def test_pushes_dropped_by_the_realtime_quota_are_covered_by_the_safety_poll(
        doubles: SupabaseDoubles, start_worker: StartWorker) -> None:
    """Realtime drops broadcasts over the project's messages-per-second quota while the channel
    stays SUBSCRIBED; the worker's safety poll still finds the work (docs/supabase.md §7)."""
    worker = await start_worker(devices=2, poll_interval_s=0.5)  # the safety poll, shortened
    doubles.realtime.max_messages_per_s = 0  # every push dropped
    operator = await doubles.connect(OPERATOR)
    created = await operator.create_job(target_url="https://example.com/quota", duration_sec=1)

    async def completed() -> bool:
        return (await operator.get_job(created.job.id)).status is JobStatus.COMPLETED

    await wait_until(completed, timeout_s=30, what="job completed without a single push")
    assert doubles.realtime.dropped > 0 and worker.push_state is ChannelState.SUBSCRIBED
    await operator.close()


async def test_a_worker_signed_in_with_a_password_keeps_working_while_auth_rate_limits(
        doubles: SupabaseDoubles, db: Db, tmp_path: pathlib.Path) -> None:
    """Auth answering 429 to every refresh and sign-in (a fleet behind one NAT) must not stop
    the worker: it keeps its still-valid token, does not hammer Auth, and finishes its work."""
    auth = AuthDouble(doubles.router, expires_in_s=45)  # inside the refresh margin: refreshes are due at once
    auth.add("pc-01@example.test", "pw", "worker")
    jobs = await connect_supabase(doubles.url, ANON.token, credentials=Credentials("pc-01@example.test", "pw"),
                                  role=JobsysRole.WORKER, realtime=FAST_REALTIME)
    auth.rate_limited = {"password", "refresh_token"}
    auth.retry_after_s = 3600
    pool = WorkerPool()
    options = WorkerOptions(name="pc-01", evidence_dir=tmp_path / "evidence", sim_devices=2, sim_speed=50.0,
                            heartbeat_interval_s=0.5, poll_interval_s=0.2, safety_poll_s=0.2, shutdown_grace_s=5.0)
    worker = Worker(jobs, options)
    task = pool.run(worker, jobs)
    try:
        await until_ready(task, lambda: worker.push_state is ChannelState.SUBSCRIBED, "worker subscribed")
        operator = await doubles.connect(OPERATOR)
        created = await operator.create_job(target_url="https://example.com/limited", duration_sec=1)

        async def completed() -> bool:
            return (await operator.get_job(created.job.id)).status is JobStatus.COMPLETED

        await wait_until(completed, timeout_s=30, what="job completed while Auth rate-limits")
        assert not task.done()  # a Forbidden from the token would have stopped the worker
        assert auth.sign_in_route.call_count == 1 and auth.refresh_route.call_count == 1  # then it waits
        assert isinstance(jobs.transport, SupabaseTransport)
        assert jobs.transport.tokens.state is AuthState.RETRYING
        # A supervisor sees why (the worker's readiness names the auth check).
        assert (worker.readiness()["auth"] or "").startswith("retrying")
        await operator.close()
    finally:
        await pool.stop_all()
