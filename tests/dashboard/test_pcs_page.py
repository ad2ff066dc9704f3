"""The PC page (PC / PCs): each worker account with its live sessions, the add dialog that
shows the token once with the command to run, and revoke behind a confirmation. The PCs join a
real hub with their tokens, as `jobsys worker --server ... --token ...` does."""

from __future__ import annotations

import hashlib
import pathlib
from typing import Any

from nicegui.testing import User

from jobsys.connect import connect_hub
from jobsys.models import DeviceReport
from jobsys.system import JobSystem
from tests.dashboard.pages import login
from tests.dashboard.test_api_worker_accounts import token_stored_nowhere
from tests.support.hub import running_hub
from tests.support.pages import element, texts
from tests.support.postgres import Db
from tests.support.waiting import wait_until


async def join(hub_url: str, token: str, name: str, devices: int,
               push: str = "connected") -> tuple[JobSystem, Any]:
    """A PC joining the hub with its token, reporting its version and push state."""
    pc = await connect_hub(hub_url, token, push=False)
    reports = [DeviceReport(serial=f"{name}-{i}", simulated=True) for i in range(devices)]
    session = await pc.register_worker(name, reports, hostname=f"{name}-host")
    await pc.heartbeat(session.worker_id, meta={"version": "1.2.3", "push": push})
    return pc, session


def shown_anywhere(user: User, text: str) -> bool:
    """Whether any element of the page holds `text` (as its text or a property, e.g. ui.code's content)."""
    assert user.client is not None
    return any(text in f"{getattr(e, 'text', '')} {getattr(e, 'content', '')} {e.props}"
               for e in user.client.elements.values())


async def test_lists_accounts_with_sessions_and_follows_a_pc_joining(
        user: User, jobs: JobSystem, db_url: str, tmp_path: pathlib.Path, dashboard: Any) -> None:
    async with running_hub(db_url, tmp_path) as hub:
        rack_a = await jobs.add_worker_account("rack-a")
        rack_b = await jobs.add_worker_account("rack-b")
        card_a, card_b = f"pc-{rack_a.account.id}", f"pc-{rack_b.account.id}"  # cards are marked by id
        pc_a, session_a = await join(hub.url, rack_a.token, "rack-a", devices=2)
        try:
            await login(user, "/pcs")
            await user.should_see("PC 추가")
            with user.scope(marker=card_a):
                await user.should_see("기기 2대")
                await user.should_see("마지막 접속:")
                await user.should_see(marker=f"session-{session_a.worker_id}")
            session_texts = texts(user, f"session-{session_a.worker_id}")
            for shown in ("rack-a-host", "버전 1.2.3", "연결됨", "정상"):
                assert shown in session_texts, (shown, session_texts)
            with user.scope(marker=card_b):
                await user.should_see("아직 접속하지 않음")
                await user.should_see("실행 중인 워커가 없습니다")
                await user.should_see("기기 0대")

            # A PC joining, its push state (reported by heartbeat when it changes) and a PC
            # added elsewhere are pushed (device_status): no reload, no safety refresh.
            pc_b, session_b = await join(hub.url, rack_b.token, "rack-b", devices=1, push="polling")
            try:
                await wait_until(lambda: "rack-b-host" in texts(user, card_b), what="rack-b's session")
                await wait_until(lambda: "폴링 중" in texts(user, f"session-{session_b.worker_id}"),
                                 what="rack-b polling")
                await jobs.add_worker_account("rack-c")
                await user.should_see("rack-c")
                assert "기기 1대" in texts(user, card_b)
            finally:
                await pc_b.close()
        finally:
            await pc_a.close()


async def test_the_header_links_the_pc_page_in_english(user: User) -> None:
    await login(user, "/", language="en")
    link = element(user, "nav-pcs")
    assert link.text == "PCs" and link.props["href"] == "/pcs"
    user.find(marker="nav-pcs").click()
    await user.should_see("Add a PC", retries=50)
    await user.should_see(marker="pc-none")


async def test_add_dialog_shows_the_command_once_and_the_token_works(
        user: User, jobs: JobSystem, db: Db, db_url: str, tmp_path: pathlib.Path) -> None:
    await jobs.add_worker_account("taken")
    await login(user, "/pcs")
    user.find(marker="pc-add").click()
    await user.should_see(marker="pc-name", retries=20)
    create = element(user, "pc-add-create")
    assert not create.enabled  # nothing typed yet
    user.find(marker="pc-name").type("   ")
    assert not create.enabled  # blank
    user.find(marker="pc-name").clear().type("bad\x01name")
    assert not create.enabled  # a control character
    user.find(marker="pc-name").clear().type("taken")
    assert create.enabled
    user.find(marker="pc-add-create").click()
    await wait_until(lambda: "already exists" in element(user, "pc-add-error").text,
                     what="the inline refusal")
    assert sorted(a.name for a in (await jobs.list_worker_accounts()).accounts) == ["taken"]

    user.find(marker="pc-name").clear().type("새 PC")
    user.find(marker="pc-add-create").click()
    await user.should_see(marker="pc-command", retries=50)
    await user.should_see("토큰은 지금 한 번만 표시됩니다", retries=20)
    command = element(user, "pc-command").content
    prefix = "jobsys worker --server http://"
    assert command.startswith(prefix) and " --token jsw_" in command, command
    token = command.split(" --token ")[1]
    assert db.value("select token_hash from jobsys.worker_accounts where name = '새 PC'") == \
        hashlib.sha256(token.encode()).hexdigest()
    assert token_stored_nowhere(db, token)
    [added] = [a for a in (await jobs.list_worker_accounts()).accounts if a.name == "새 PC"]
    await user.should_see(marker=f"pc-{added.id}", retries=50)  # listed behind the dialog already
    assert shown_anywhere(user, token)

    user.find(marker="pc-token-close").click()
    await user.should_not_see(marker="pc-command", retries=50)
    assert not shown_anywhere(user, token)  # gone from the page: it cannot be shown again

    async with running_hub(db_url, tmp_path) as hub:  # the token it showed is the PC's
        pc, _ = await join(hub.url, token, "new-pc", devices=1)
        try:
            await wait_until(lambda: "new-pc-host" in texts(user, f"pc-{added.id}"),
                             what="the new PC's session")
        finally:
            await pc.close()


async def test_revoke_asks_first_then_ends_the_sessions(
        user: User, jobs: JobSystem, db: Db, db_url: str, tmp_path: pathlib.Path) -> None:
    async with running_hub(db_url, tmp_path) as hub:
        enrolled = await jobs.add_worker_account("rack r")  # a space: cards are marked by id, not name
        card = f"pc-{enrolled.account.id}"
        pc, _ = await join(hub.url, enrolled.token, "rack-r", devices=3)
        try:
            await login(user, "/pcs", language="en")
            with user.scope(marker=card):
                await user.should_see("3 devices")
                user.find(marker="pc-revoke").click()
            await user.should_see(marker="pc-confirm-question", retries=20)
            question = element(user, "pc-confirm-question").text
            assert "rack r" in question and "workers cut off: 1" in question and "offline: 3" in question
            user.find(marker="pc-revoke-cancel").click()
            await user.should_not_see(marker="pc-confirm-question", retries=20)
            assert db.value("select revoked_at from jobsys.worker_accounts") is None

            with user.scope(marker=card):
                user.find(marker="pc-revoke").click()
            await user.should_see(marker="pc-revoke-confirm", retries=20)
            user.find(marker="pc-revoke-confirm").click()
            await user.should_not_see(marker=card, retries=50)
            assert db.value("select revoked_at from jobsys.worker_accounts") is not None
            assert db.value("select count(*) from jobsys.devices where state = 'online'") == 0
            await user.should_see(marker="pc-none")

            user.find(marker="pc-show-revoked").click()
            await user.should_see(marker=card, retries=50)
            with user.scope(marker=card):
                await user.should_see("Revoked")
                await user.should_not_see(marker="pc-revoke")
        finally:
            await pc.close()
