"""Pages need the token: a login page takes it, wrong tokens are refused, log out ends it."""

from __future__ import annotations

from nicegui import app
from nicegui.testing import User

from nicegui_app import auth
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
