"""Pages need the token: a login page takes it, wrong tokens are refused, log out ends it."""

from __future__ import annotations

import pytest
from nicegui import app
from nicegui.testing import User

from jobsys import Forbidden
from jobsys.system import JobSystem
from nicegui_app import auth
from nicegui_app.pages import guard
from tests.dashboard.conftest import TOKEN
from tests.dashboard.pages import login


async def test_pages_redirect_to_login_without_a_session(user: User) -> None:
    for path in ("/", "/devices"):
        await user.open(path)
        await user.should_see(marker="token")
        await user.should_not_see(marker="connected-count")


async def test_wrong_token_is_refused(user: User) -> None:
    user.http_client.headers["Accept-Language"] = "en"
    await user.open("/devices")
    user.find(marker="token").type("not-the-token")
    user.find(marker="login").click()
    await user.should_see("Wrong token", retries=20)
    await user.should_not_see(marker="connected-count")


async def test_login_leads_to_the_page_asked_for_and_logout_ends_the_session(user: User) -> None:
    await login(user, "/devices")
    await user.should_see(marker="device-groups")
    stored = app.storage.user.get(auth.SESSION_KEY)
    assert stored == auth.fingerprint(TOKEN) and TOKEN not in str(app.storage.user)  # only a fingerprint

    await user.open("/")  # the session holds across pages
    await user.should_see(marker="job-list")

    user.find(marker="logout").click()
    await user.should_see(marker="token", retries=20)
    await user.open("/")
    await user.should_see(marker="token")


async def test_an_account_token_logs_in_with_its_role_and_is_refused_once_revoked(user: User, jobs: JobSystem,
                                                                               dashboard: object) -> None:
    viewer = await jobs.add_operator_account("vera", "viewer")
    user.http_client.headers["Accept-Language"] = "en"
    await user.open("/")
    user.find(marker="token").type(viewer.token)
    user.find(marker="login").click()
    await user.should_see(marker="job-list", retries=20)
    await user.should_see("vera (viewer)")  # the header names the account and its role
    stored = str(app.storage.user.get(auth.SESSION_KEY))
    assert stored.startswith(auth.ACCOUNT_PREFIX) and viewer.token not in str(app.storage.user)
    page_jobs = guard.page_jobs()
    assert page_jobs is not None
    with pytest.raises(Forbidden):  # the page acts as the viewer: the SQL refuses a write
        await page_jobs.create_job(target_url="https://example.com/", duration_sec=5)
    await jobs.revoke_operator_account("vera")
    await user.open("/")
    await user.should_see(marker="token", retries=20)  # revoked: back to the login page


async def test_the_login_keeps_the_whole_address_asked_for(user: User) -> None:
    await user.open("/?status=paused&q=lobby")
    await user.should_see(marker="token")
    user.find(marker="token").type(TOKEN)
    user.find(marker="login").click()
    await user.should_see(marker="job-list", retries=20)
    assert user.back_history[-1] == "/?status=paused&q=lobby"
