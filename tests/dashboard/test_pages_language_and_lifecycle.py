"""Language (from Accept-Language, switchable, remembered) and page lifecycle (listeners
leave with the page; a long-open page does not grow)."""

from __future__ import annotations

from nicegui import app
from nicegui.testing import User

from jobsys.events import DASHBOARD_TOPIC, ChannelState, Event, EventName
from jobsys.system import JobSystem
from nicegui_app.i18n import TEXTS, from_accept_language
from nicegui_app.services import Services
from tests.core.helpers import add_worker
from tests.dashboard.pages import login
from tests.support.pages import element
from tests.support.postgres import Db
from tests.support.waiting import wait_until


def test_both_languages_label_everything() -> None:
    assert set(TEXTS["ko"]) == set(TEXTS["en"])


def test_accept_language_picks_the_preferred_supported_language() -> None:
    assert from_accept_language("ko-KR,ko;q=0.9,en-US;q=0.8") == "ko"
    assert from_accept_language("en-US,en;q=0.9,ko;q=0.8") == "en"
    assert from_accept_language("fr-FR, ko;q=0.5, en;q=0.4") == "ko"
    assert from_accept_language("en;q=0.2, ko;q=0.7") == "ko"
    assert from_accept_language("ko;q=0, en;q=0.1") == "en"
    assert from_accept_language("fr, de") == "en"
    assert from_accept_language(None) == "en"
    assert from_accept_language("ko;q=abc") == "en"


async def test_language_follows_the_browser_then_the_switch(user: User, jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 2)
    await login(user, language="en-US,en;q=0.9")
    await user.should_see("Total jobs")
    await user.should_see("2 devices connected")

    element(user, "language").value = "ko"  # the operator switches
    await user.should_see("총 작업", retries=50)
    await user.should_see("연결된 기기 2대")
    for label in ("작업 관리", "진행 중", "일시정지", "완료", "새 작업 생성"):
        await user.should_see(label)

    await user.open("/devices")  # remembered across pages, over the browser's preference
    await user.should_see("연결된 기기 2대")
    element(user, "language").value = "en"
    await user.should_see("2 devices connected", retries=50)
    assert app.storage.user["lang"] == "en"


async def test_listeners_leave_with_the_page(user: User, jobs: JobSystem, dashboard: Services) -> None:
    hub = dashboard.hub
    assert len(hub) == 0
    await add_worker(jobs, "w1", 1)
    job = (await jobs.create_job(target_url="https://example.com", duration_sec=5)).job
    await login(user)
    assert len(hub) == 2  # the header's device count and the job list
    # Leave with dialogs open: their waiting handlers must end quietly (no ERROR log).
    user.find(marker="new-job").click()
    await user.should_see(marker="new-job-url", retries=20)
    with user.scope(marker=f"job-{job.id}"):
        user.find(marker="delete").click()
    await user.should_see(marker="confirm-delete", retries=20)
    client = user.client
    assert client is not None
    # The browser goes away: NiceGUI deletes the client after its reconnect timeout.
    for socket_id in list(client._socket_to_document_id):
        client.handle_disconnect(socket_id)
    await wait_until(lambda: len(hub) == 0, timeout_s=15, what="listeners removed")


async def test_a_long_open_page_does_not_grow(user: User, jobs: JobSystem, dashboard: Services) -> None:
    await add_worker(jobs, "w1", 3)
    job = (await jobs.create_job(target_url="https://example.com", duration_sec=5)).job
    await login(user)
    client = user.client
    assert client is not None
    await user.should_see(marker=f"job-{job.id}")
    elements_before = len(client.elements)
    listeners_before = len(dashboard.hub)

    burst = Event(topic=DASHBOARD_TOPIC, event=EventName.JOB_PROGRESS.value, payload={"job_id": str(job.id)})
    for round_ in range(20):  # an hour of traffic in small: bursts, each coalesced
        for _ in range(50):
            dashboard.hub.publish(burst)
        await jobs.rename_job(job.id, f"Renamed {round_}")
        await wait_until(
            lambda r=round_: element(user, "job-title").text == f"Renamed {r}",  # type: ignore[misc]
            what=f"round {round_}",
        )
    assert len(client.elements) == elements_before
    assert len(dashboard.hub) == listeners_before


async def test_resubscribed_channel_rereads_what_was_missed(
    user: User, jobs: JobSystem, dashboard: Services, db: Db
) -> None:
    await add_worker(jobs, "w1", 1)
    job = (await jobs.create_job(target_url="https://example.com", duration_sec=5, title="Before")).job
    await login(user)
    await user.should_see("Before")
    dashboard.hub.set_state(ChannelState.DISCONNECTED)
    await user.should_see(marker="live-down")  # the header says push is down
    await user.should_not_see(marker="live")
    db.run(
        "update jobsys.jobs set title = 'Changed while push was down' where id = %s", (job.id,)
    )  # no event
    await add_worker(jobs, "w2", 2)
    dashboard.hub.set_state(ChannelState.SUBSCRIBED)
    await user.should_see("Changed while push was down", retries=50)
    await wait_until(
        lambda: element(user, "connected-count").text == "연결된 기기 3대", what="device count resync"
    )
    await user.should_see(marker="live")
    await user.should_not_see(marker="live-down")
