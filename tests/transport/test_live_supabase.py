"""Live contract tests against a real Supabase project: the only tests that touch Supabase
itself (PostgREST, Realtime, Auth, Storage). Everything else in tests/transport runs
against our doubles.

Needs a project with the migrations pushed (docs/supabase.md) and
SUPABASE_URL, SUPABASE_ANON_KEY, SUPABASE_SERVICE_ROLE_KEY in the environment. The service
role key only creates and deletes the throwaway users (and signs one out); the scenarios
run as them. Besides the acceptance scenario: a private join the policies refuse, a user
signed out by an admin (the worker signs in again, an operator's session ends), and, with
JOBSYS_LIVE_SHORT_JWT=1 on a project whose JWT expiry is set short (Auth settings, e.g.
60 s), channels that outlive their first token.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pathlib
import secrets
import time
import uuid
from typing import AsyncIterator

import pytest

from jobsys import Forbidden, NotFound
from jobsys.auth import Credentials, JobsysRole, TokenKeeper, create_user
from jobsys.connect import connect_supabase
from jobsys.events import DASHBOARD_TOPIC, ChannelState, Event, EventName, worker_topic
from jobsys.models import DeviceReport, JobStatus
from jobsys.system import JobSystem
from jobsys.transport.supabase import SupabaseTransport
from jobsys.transport.supabase_storage import EvidenceStore
from tests.support.waiting import wait_until

ENV = ("SUPABASE_URL", "SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY")
LIVE_DEADLINE_S = 30.0  # a hosted project over the internet: generous deadlines, never sleeps

pytestmark = pytest.mark.skipif(
    not all(os.environ.get(name) for name in ENV),
    reason="live Supabase tests need SUPABASE_URL, SUPABASE_ANON_KEY and SUPABASE_SERVICE_ROLE_KEY "
           "(a project with the jobsys migrations pushed); skipped, so the Supabase path is verified "
           "here only against the local doubles")


@dataclasses.dataclass
class Live:
    operator: JobSystem
    worker: JobSystem
    url: str
    anon: str
    service: str
    emails: dict[JobsysRole, str]
    password: str


@pytest.fixture
async def live_project() -> AsyncIterator[Live]:
    url, anon, service = (os.environ[name] for name in ENV)
    run = uuid.uuid4().hex[:8]
    password = secrets.token_urlsafe(18)
    emails = {role: f"jobsys-live-{role.value}-{run}@example.com" for role in JobsysRole}
    ids = [await create_user(url, service, email, password, role) for role, email in emails.items()]
    operator = await connect_supabase(url, anon, credentials=Credentials(emails[JobsysRole.OPERATOR], password),
                                      role=JobsysRole.OPERATOR)
    worker = await connect_supabase(url, anon, credentials=Credentials(emails[JobsysRole.WORKER], password),
                                    role=JobsysRole.WORKER)
    try:
        yield Live(operator, worker, url, anon, service, emails, password)
    finally:
        await operator.close()
        await worker.close()
        from supabase import AsyncClientOptions, acreate_client

        admin = await acreate_client(url, service, options=AsyncClientOptions(auto_refresh_token=False,
                                                                             persist_session=False))
        for user_id in ids:
            await admin.auth.admin.delete_user(user_id)


@pytest.fixture
async def live(live_project: Live) -> tuple[JobSystem, JobSystem]:
    return live_project.operator, live_project.worker


def keeper_of(system: JobSystem) -> TokenKeeper:
    assert isinstance(system.transport, SupabaseTransport)
    return system.transport.tokens


def refresh_due_now(tokens: TokenKeeper) -> None:
    """Make the next call refresh (as an hour-old session would), without waiting an hour."""
    session = tokens._session
    assert session is not None
    tokens._session = session.model_copy(update={"expires_at": int(time.time())})


async def test_acceptance_on_a_real_project(live: tuple[JobSystem, JobSystem], tmp_path: pathlib.Path) -> None:
    operator, worker = live
    session = await worker.register_worker(f"live-{uuid.uuid4().hex[:6]}",
                                           [DeviceReport(serial=f"live-test-{uuid.uuid4().hex[:8]}", simulated=True)])
    events: list[Event] = []
    worker_sub = await worker.subscribe_worker(session.worker_id, events.append)
    dashboard_sub = await operator.subscribe_dashboard(events.append)
    await wait_until(lambda: worker_sub.state is ChannelState.SUBSCRIBED
                     and dashboard_sub.state is ChannelState.SUBSCRIBED,
                     timeout_s=LIVE_DEADLINE_S, what="both private channels joined")

    created = await operator.create_job(target_url="https://example.com/live", duration_sec=1,
                                        target_type="device_count", target_value=1)
    job_id = created.job.id
    assert created.assigned == 1
    await wait_until(lambda: any(e.topic == worker_topic(session.worker_id) and e.event == EventName.ASSIGNMENT
                                 for e in events), timeout_s=LIVE_DEADLINE_S, what="assignment pushed")
    await wait_until(lambda: any(e.topic == DASHBOARD_TOPIC and e.payload.get("job_id") == str(job_id)
                                 for e in events), timeout_s=LIVE_DEADLINE_S, what="progress pushed")

    with pytest.raises(Forbidden):
        await worker.pause_job(job_id)
    assert (await operator.pause_job(job_id)).status is JobStatus.PAUSED
    assert await worker.claim_assignments(session.worker_id) == []
    assert (await operator.resume_job(job_id)).status is JobStatus.ACTIVE
    [run] = await worker.claim_assignments(session.worker_id)
    await worker.start_assignment(run.assignment_id, run.attempt)

    shot = tmp_path / "shot.png"
    shot.write_bytes(b"\x89PNG live test")
    assert isinstance(worker.transport, SupabaseTransport) and isinstance(operator.transport, SupabaseTransport)
    store = EvidenceStore(worker.transport)
    uri = await store.upload(session.worker_id, run.assignment_id, run.attempt, shot)
    await store.close()
    await worker.complete_assignment(run.assignment_id, run.attempt, {"evidence_path": uri})
    assert (await operator.get_job(job_id)).status is JobStatus.COMPLETED
    signer = EvidenceStore(operator.transport)
    assert (await signer.signed_url(uri.split("/", 3)[3])).startswith("http")
    await signer.close()

    await operator.delete_job(job_id)
    with pytest.raises(NotFound):
        await operator.get_job(job_id)
    await worker.stop_worker(session.worker_id)
    await asyncio.gather(worker_sub.close(), dashboard_sub.close())


async def test_a_private_join_the_policies_refuse_stays_down(live: tuple[JobSystem, JobSystem]) -> None:
    _, worker = live
    subscription = await worker.subscribe_dashboard(lambda event: None)  # operators only
    await wait_until(lambda: getattr(subscription, "connects", 0) >= 2, timeout_s=LIVE_DEADLINE_S,
                     what="the refused join retried")
    assert subscription.state is ChannelState.DISCONNECTED
    await subscription.close()


async def test_a_user_signed_out_by_an_admin(live_project: Live) -> None:
    from supabase import AsyncClientOptions, acreate_client

    worker_tokens = keeper_of(live_project.worker)
    old = await worker_tokens.token()
    admin = await acreate_client(live_project.url, live_project.service, options=AsyncClientOptions(
        auto_refresh_token=False, persist_session=False))
    await admin.auth.admin.sign_out(old, "global")  # every refresh token of the user revoked
    refresh_due_now(worker_tokens)
    await live_project.worker.list_devices()  # the refresh is refused: the worker signs in again
    assert await worker_tokens.token() != old

    project = live_project
    operator_session = await connect_supabase(project.url, project.anon, credentials=Credentials(
        project.emails[JobsysRole.OPERATOR], project.password), role=JobsysRole.OPERATOR, push=False)
    tokens = keeper_of(operator_session)
    session_only = TokenKeeper(tokens._client, session=tokens._session)  # a dashboard page: no password
    await admin.auth.admin.sign_out(await tokens.token(), "global")
    refresh_due_now(session_only)
    with pytest.raises(Forbidden, match="session ended"):
        await session_only.token()
    await operator_session.close()


@pytest.mark.skipif(os.environ.get("JOBSYS_LIVE_SHORT_JWT") != "1",
                    reason="set JOBSYS_LIVE_SHORT_JWT=1 on a project whose JWT expiry is short (e.g. 60 s)")
async def test_channels_outlive_their_first_token(live: tuple[JobSystem, JobSystem]) -> None:
    operator, _ = live
    tokens = keeper_of(operator)
    first = await tokens.token()
    events: list[Event] = []
    subscription = await operator.subscribe_dashboard(events.append)
    await wait_until(lambda: subscription.state is ChannelState.SUBSCRIBED, timeout_s=LIVE_DEADLINE_S,
                     what="joined")
    session = tokens._session
    assert session is not None and session.expires_at is not None
    expiry_s = max(0.0, session.expires_at - time.time())

    async def past_first_expiry() -> bool:
        return time.time() > (session.expires_at or 0) and await tokens.token() != first

    await wait_until(past_first_expiry, timeout_s=expiry_s + LIVE_DEADLINE_S, what="the first token expired")
    await wait_until(lambda: subscription.state is ChannelState.SUBSCRIBED, timeout_s=LIVE_DEADLINE_S,
                     what="subscribed with a later token")
    created = await operator.create_job(target_url="https://example.com/live-expiry", duration_sec=1,
                                        target_type="device_count", target_value=1)
    await wait_until(lambda: any(e.payload.get("job_id") == str(created.job.id) for e in events),
                     timeout_s=LIVE_DEADLINE_S, what="an event after the first token expired")
    with contextlib.suppress(Exception):
        await operator.delete_job(created.job.id)
    await subscription.close()
