"""Dashboard login in Supabase mode: operators sign in with email and password through
Supabase Auth (our GoTrue double); pages then call PostgREST (our double, real Postgres)
with that operator's JWT, refreshed before it expires; the browser's storage holds only a
session id; log out revokes the session."""

from __future__ import annotations

import json
from typing import AsyncIterator

import pytest
from nicegui import app
from nicegui.testing import User

from jobsys.auth import Credentials, unverified_claims
from jobsys.system import JobSystem
from nicegui_app import auth
from tests.core.helpers import add_worker
from tests.dashboard.supabase_mode import (
    NO_ROLE,
    OPERATOR,
    WORKER,
    SupabaseDashboard,
    log_in,
    simulated_user,
    supabase_dashboard,
)
from tests.support.pages import element
from tests.support.waiting import wait_until


@pytest.fixture
async def dash(db_url: str) -> AsyncIterator[SupabaseDashboard]:
    async with supabase_dashboard(db_url) as started:
        yield started


@pytest.fixture
async def user(dash: SupabaseDashboard, caplog: pytest.LogCaptureFixture) -> AsyncIterator[User]:
    async with simulated_user(caplog) as simulated:
        yield simulated


def tokens_of(dash: SupabaseDashboard, email: str) -> list[str]:
    return [t for t in dash.auth.issued if unverified_claims(t).get("email") == email]


async def test_operators_log_in_with_supabase_and_pages_call_as_them(
        user: User, dash: SupabaseDashboard, jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 2)
    await user.open("/devices")
    await user.should_see(marker="email")
    await user.should_not_see(marker="token")  # no API token in this mode

    await log_in(user, OPERATOR, "/devices")
    await user.should_see(marker="device-groups", retries=50)
    await wait_until(lambda: element(user, "connected-count").text == "2 devices connected", what="device count")
    await user.should_see(OPERATOR.email, marker="operator")

    [signed_in] = tokens_of(dash, OPERATOR.email)
    assert dash.calls_by("device_groups") == {signed_in}  # the operator's JWT, not the dashboard's own

    stored = app.storage.user[auth.SESSION_KEY]
    assert dash.supabase.session(stored) is not None
    kept = str(dict(app.storage.user))
    for secret in (signed_in, OPERATOR.password, *dash.auth.refresh_tokens):
        assert secret not in kept  # only the session id reaches NiceGUI's storage


async def test_wrong_password_and_accounts_without_the_operator_role_are_refused(
        user: User, dash: SupabaseDashboard) -> None:
    await log_in(user, Credentials(OPERATOR.email, "wrong"))
    await user.should_see("Wrong email or password", retries=50)
    for account in (WORKER, NO_ROLE):
        await log_in(user, account)  # a fresh page each time: the message is this attempt's
        await user.should_see("This account is not an operator", retries=50)
    tried = [json.loads(c.request.content)["email"] for c in dash.auth.sign_in_route.calls]
    assert tried[-3:] == [OPERATOR.email, WORKER.email, NO_ROLE.email]
    assert auth.SESSION_KEY not in app.storage.user
    await user.should_not_see(marker="connected-count")


async def test_the_korean_login_explains_a_missing_role(user: User, dash: SupabaseDashboard) -> None:
    await log_in(user, WORKER, language="ko")
    await user.should_see("운영자 계정이 아닙니다", retries=50)


async def test_the_operator_jwt_is_refreshed_before_it_expires(
        user: User, dash: SupabaseDashboard, jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 1)
    dash.auth.expires_in_s = 30  # inside jobsys.auth.REFRESH_MARGIN_S: due at the first call
    await log_in(user, OPERATOR)
    await user.should_see(marker="connected-count", retries=50)
    assert dash.auth.refresh_route.call_count >= 1
    [signed_in, *refreshed] = tokens_of(dash, OPERATOR.email)
    assert refreshed and signed_in not in dash.calls_by("device_groups")
    assert dash.calls_by("device_groups") <= set(refreshed)


async def test_log_out_ends_the_server_side_session_and_revokes_it(user: User, dash: SupabaseDashboard) -> None:
    await log_in(user, OPERATOR)
    await user.should_see(marker="connected-count", retries=50)
    stored = app.storage.user[auth.SESSION_KEY]
    [token] = tokens_of(dash, OPERATOR.email)

    user.find(marker="logout").click()
    await user.should_see(marker="email", retries=50)
    assert dash.auth.logout_route.call_count == 1
    sent = dash.auth.logout_route.calls.last.request
    assert sent.headers["authorization"] == f"Bearer {token}" and sent.url.params["scope"] == "local"
    assert dash.supabase.session(stored) is None

    app.storage.user[auth.SESSION_KEY] = stored  # a copied session id is worth nothing now
    await user.open("/")
    await user.should_see(marker="email")
    await user.should_not_see(marker="connected-count")


async def test_a_session_supabase_ended_sends_the_operator_back_to_login(
        user: User, dash: SupabaseDashboard) -> None:
    dash.auth.expires_in_s = 30  # every page load refreshes
    await log_in(user, OPERATOR)
    await user.should_see(marker="connected-count", retries=50)
    stored = app.storage.user[auth.SESSION_KEY]
    dash.auth.revoke(tokens_of(dash, OPERATOR.email)[-1])  # an admin signed the operator out

    await user.open("/devices")
    await user.should_see(marker="email", retries=50)
    assert dash.supabase.session(stored) is None and auth.SESSION_KEY not in app.storage.user


async def test_a_rate_limited_refresh_does_not_log_the_operator_out(
        user: User, dash: SupabaseDashboard) -> None:
    dash.auth.expires_in_s = 30  # every page load wants a refresh
    await log_in(user, OPERATOR)
    await user.should_see(marker="connected-count", retries=50)
    stored = app.storage.user[auth.SESSION_KEY]
    dash.auth.rate_limited = {"refresh_token"}  # 429 with Retry-After: "later", not "revoked"
    refreshes = dash.auth.refresh_route.call_count

    await user.open("/devices")
    await user.should_see(marker="connected-count", retries=50)  # the current token still serves
    await user.open("/devices")
    await user.should_see(marker="connected-count", retries=50)
    assert dash.supabase.session(stored) is not None and app.storage.user[auth.SESSION_KEY] == stored
    assert dash.auth.refresh_route.call_count == refreshes + 1  # then it waits for Retry-After
