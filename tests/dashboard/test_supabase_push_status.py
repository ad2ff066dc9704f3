"""The push channel's state in the dashboard header (connected / reconnecting / polling), in
Supabase mode: the channel is our Realtime double, dropped and refused on demand; without an
operator account for Realtime the dashboard polls and says so."""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

import pytest
from nicegui.testing import User

from jobsys import aio
from jobsys.connect import connect_dashboard_from_env
from jobsys.events import ChannelState
from jobsys.system import JobSystem
from jobsys.transport.supabase import SupabaseTransport
from nicegui_app.hub import PushStatus
from tests.core.helpers import add_worker
from tests.dashboard.supabase_auth_double import AuthDouble
from tests.dashboard.supabase_mode import (
    DASHBOARD,
    OPERATOR,
    SupabaseDashboard,
    log_in,
    simulated_user,
    supabase_dashboard,
)
from tests.support.waiting import wait_until
from tests.transport.conftest import start_doubles
from tests.transport.tokens import ANON

BADGES = ("push-connected", "push-reconnecting", "push-polling")


async def shows_only(user: User, marker: str, text: str) -> None:
    await user.should_see(text, marker=marker, retries=50)
    for other in BADGES:
        if other != marker:
            await user.should_not_see(marker=other)


@pytest.fixture
async def user(request: pytest.FixtureRequest, db_url: str,
               caplog: pytest.LogCaptureFixture) -> AsyncIterator[tuple[User, SupabaseDashboard]]:
    push = getattr(request, "param", True)
    async with supabase_dashboard(db_url, push=push) as dash, simulated_user(caplog) as simulated:
        yield simulated, dash


async def test_the_header_follows_drops_and_rejoins_of_the_realtime_channel(
        user: tuple[User, SupabaseDashboard]) -> None:
    simulated, dash = user
    await log_in(simulated, OPERATOR)
    await shows_only(simulated, "push-connected", "Live")

    dash.doubles.realtime.answer_joins = False  # the rejoin hangs until allowed again
    dash.doubles.realtime.drop_all()
    await wait_until(lambda: dash.hub.status is PushStatus.RECONNECTING, what="hub saw the drop")
    await shows_only(simulated, "push-reconnecting", "Reconnecting · refreshing every 3 s")

    dash.doubles.realtime.answer_joins = True
    await wait_until(lambda: dash.hub.state is ChannelState.SUBSCRIBED, what="rejoined")
    await shows_only(simulated, "push-connected", "Live")


async def test_the_korean_header_names_each_state(user: tuple[User, SupabaseDashboard]) -> None:
    simulated, dash = user
    await log_in(simulated, OPERATOR, language="ko")
    await shows_only(simulated, "push-connected", "실시간 연결됨")
    dash.hub.set_state(ChannelState.DISCONNECTED)
    await shows_only(simulated, "push-reconnecting", "재연결 중 · 3초마다 갱신")
    dash.hub.set_state(ChannelState.SUBSCRIBED)
    await shows_only(simulated, "push-connected", "실시간 연결됨")


@pytest.mark.parametrize("user", [False], indirect=True, ids=["no account for Realtime"])
async def test_without_an_account_for_realtime_the_dashboard_polls_and_says_so(
        user: tuple[User, SupabaseDashboard], jobs: JobSystem) -> None:
    simulated, dash = user
    assert not dash.services.jobs.transport.supports_push
    await add_worker(jobs, "w1", 1)
    await log_in(simulated, OPERATOR, language="ko")
    await shows_only(simulated, "push-polling", "폴링 · 3초마다 갱신")

    # What serve() runs: with no push, the server re-reads for the pages (fast here).
    polling = asyncio.create_task(dash.hub.run_safety_refresh(down_interval_s=0.05))
    try:
        await jobs.create_job(target_url="https://example.com/polled", duration_sec=5, title="Polled in")
        await simulated.should_see("Polled in", retries=100)
    finally:
        await aio.cancel_and_wait([polling])
    await shows_only(simulated, "push-polling", "폴링 · 3초마다 갱신")


async def test_the_dashboard_process_joins_realtime_only_with_an_operator_account(
        db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with start_doubles(db_url) as doubles:
        auth = AuthDouble(doubles.router)
        auth.add(DASHBOARD.email, DASHBOARD.password, "operator")
        project = {"SUPABASE_URL": doubles.url, "SUPABASE_ANON_KEY": ANON.token}

        signed_in = await connect_dashboard_from_env(
            env=project | {"JOBSYS_EMAIL": DASHBOARD.email, "JOBSYS_PASSWORD": DASHBOARD.password})
        assert isinstance(signed_in.transport, SupabaseTransport) and signed_in.transport.supports_push
        assert signed_in.transport.tokens.signed_in and auth.sign_in_route.call_count == 1
        await signed_in.close()

        with caplog.at_level(logging.WARNING, logger="jobsys.connect"):
            keyed = await connect_dashboard_from_env(env=project | {"SUPABASE_SERVICE_ROLE_KEY": "service-key"})
        assert isinstance(keyed.transport, SupabaseTransport) and not keyed.transport.supports_push
        assert await keyed.transport.tokens.token() == ANON.token  # never the service role key
        assert "poll every 3 s" in caplog.text
        await keyed.close()
