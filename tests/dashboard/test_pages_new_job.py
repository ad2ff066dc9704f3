"""New job dialog: validated as you type, title from the URL, live target hints, each target
type, API errors inline, and the device-label filter with live counts."""

from __future__ import annotations

import datetime as dt

from nicegui.testing import User

from jobsys.models import DeviceReport, TargetType
from jobsys.system import JobSystem
from nicegui_app.pages.new_job_dialog import expected_devices
from tests.core.helpers import add_worker
from tests.dashboard.pages import login
from tests.support.pages import element
from tests.support.postgres import Db
from tests.support.waiting import wait_until

URL = "https://example.com/watch?v=42"


async def open_dialog(user: User) -> None:
    user.find(marker="new-job").click()
    await user.should_see(marker="new-job-url", retries=20)


def create_enabled(user: User) -> bool:
    return bool(element(user, "new-job-create").enabled)


def test_expected_devices_matches_the_database_rule() -> None:
    assert [expected_devices(10, p) for p in (1, 10, 30, 33, 100)] == [1, 1, 3, 4, 10]
    assert expected_devices(7, 50) == 4 and expected_devices(0, 50) == 0


async def test_create_with_each_target_type(user: User, jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 10)
    await login(user)
    cases = [
        (TargetType.ALL_DEVICES, None, "연결된 모든 기기: 10대", 10),
        (TargetType.PERCENTAGE, "30", "예상 기기 수: 3대 (연결된 10대 중)", 3),
        (TargetType.DEVICE_COUNT, "4", "요청 4대 (연결된 기기 10대)", 4),
    ]
    for target, value, hint, target_count in cases:
        await open_dialog(user)
        user.find(marker="new-job-url").type(URL)
        assert element(user, "new-job-title").value == "example.com/watch"  # filled from the URL
        element(user, "new-job-target").value = target.value
        if value is not None:
            marker = "new-job-percentage" if target is TargetType.PERCENTAGE else "new-job-count"
            user.find(marker=marker).clear().type(value)
        assert element(user, "new-job-hint").text == hint
        assert create_enabled(user)
        user.find(marker="new-job-create").click()
        await user.should_not_see(marker="new-job-url", retries=50)  # closed on success

        listing = await jobs.list_jobs()
        job = listing.jobs[0]
        assert (job.target_type, job.target_count, job.title, job.duration_sec) == (
            target,
            target_count,
            "example.com/watch",
            30,
        )
        await user.should_see(marker=f"job-{job.id}", retries=50)  # the list shows it without a reload
        with user.scope(marker=f"job-{job.id}"):
            await user.should_see(f"0/{target_count}대 (0%)")
    assert len((await jobs.list_jobs()).jobs) == 3


async def test_title_is_editable_and_then_kept(user: User, jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 1)
    await login(user)
    await open_dialog(user)
    user.find(marker="new-job-url").type("https://example.com/a")
    user.find(marker="new-job-title").clear().type("Lobby screen")
    user.find(marker="new-job-url").type("bc")  # the URL changes again: the operator's title stays
    assert element(user, "new-job-title").value == "Lobby screen"
    user.find(marker="new-job-duration").clear().type("45")
    user.find(marker="new-job-create").click()
    await user.should_not_see(marker="new-job-url", retries=50)
    job = (await jobs.list_jobs()).jobs[0]
    assert (job.title, job.target_url, job.duration_sec) == ("Lobby screen", "https://example.com/abc", 45)


async def test_expected_count_follows_devices_coming_and_going(user: User, jobs: JobSystem) -> None:
    first = await add_worker(jobs, "w1", 10)
    await login(user, language="en")
    await open_dialog(user)
    element(user, "new-job-target").value = TargetType.PERCENTAGE.value
    user.find(marker="new-job-percentage").clear().type("50")
    assert element(user, "new-job-hint").text == "Expected devices: 5 (of 10 connected)"

    await add_worker(jobs, "w2", 3)
    await wait_until(
        lambda: element(user, "new-job-hint").text == "Expected devices: 7 (of 13 connected)",
        what="hint after devices came",
    )
    await jobs.stop_worker(first.worker_id)
    await wait_until(
        lambda: element(user, "new-job-hint").text == "Expected devices: 2 (of 3 connected)",
        what="hint after devices went",
    )
    element(user, "new-job-target").value = TargetType.ALL_DEVICES.value
    assert element(user, "new-job-hint").text == "All connected devices: 3"


async def test_invalid_input_keeps_create_disabled(user: User, jobs: JobSystem, db: Db) -> None:
    await add_worker(jobs, "w1", 3)
    await login(user, language="en")
    await open_dialog(user)
    before = db.dump()
    url = user.find(marker="new-job-url")
    assert not create_enabled(user)  # empty form

    for bad in (
        "example.com",
        "ftp://example.com/file",
        "https://",
        "https://exa mple.com",
        "javascript:alert(1)",
    ):
        url.clear().type(bad)
        assert element(user, "new-job-url").error == "Enter a valid URL starting with http:// or https://", (
            bad
        )
        assert not create_enabled(user), bad
    url.clear().type(URL)
    assert element(user, "new-job-url").error is None
    assert create_enabled(user)

    def stays_disabled(marker: str, text: str) -> None:
        user.find(marker=marker).clear().type(text)
        assert not create_enabled(user), (marker, text)

    stays_disabled("new-job-duration", "0")
    stays_disabled("new-job-duration", "86401")
    stays_disabled("new-job-duration", "2.5")
    user.find(marker="new-job-duration").clear().type("30")
    stays_disabled("new-job-title", "t" * 201)
    user.find(marker="new-job-title").clear()
    element(user, "new-job-target").value = TargetType.PERCENTAGE.value
    stays_disabled("new-job-percentage", "0")
    stays_disabled("new-job-percentage", "101")
    assert element(user, "new-job-hint").text == ""
    element(user, "new-job-target").value = TargetType.DEVICE_COUNT.value
    user.find(marker="new-job-count").clear()
    assert not create_enabled(user)
    stays_disabled("new-job-count", "100001")

    user.find(marker="new-job-create").click()  # a disabled button does nothing
    assert db.dump() == before
    user.find(marker="new-job-count").clear().type("2")
    assert create_enabled(user)


async def test_api_error_is_shown_inline_and_nothing_is_stored(user: User, db: Db) -> None:
    await login(user, language="en")  # no device connected: the database refuses the job
    await open_dialog(user)
    before = db.dump()
    user.find(marker="new-job-url").type(URL)
    assert element(user, "new-job-hint").text == "All connected devices: 0"
    user.find(marker="new-job-create").click()
    await user.should_see("No healthy device is connected to run this job on", retries=50)  # server_errors.py
    await user.should_see(marker="new-job-url")  # still open, the input kept
    assert element(user, "new-job-url").value == URL
    assert create_enabled(user)  # may try again once devices are there
    assert db.dump() == before

    user.find(marker="new-job-cancel").click()
    await user.should_not_see(marker="new-job-url", retries=50)


async def test_more_options_set_the_time_limit_grace_and_start(user: User, jobs: JobSystem, db: Db) -> None:
    await add_worker(jobs, "w1", 2)
    await login(user)
    await open_dialog(user)
    user.find(marker="new-job-url").type(URL)
    user.find(marker="new-job-timeout").type("600")
    user.find(marker="new-job-grace").type("0")
    user.find(marker="new-job-start-at").type("tomorrow at nine")  # no zone, not a time
    assert not create_enabled(user)
    before = db.dump()
    user.find(marker="new-job-start-at").clear().type("2099-01-01T09:00+09:00")  # past the 365-day bound
    assert not create_enabled(user) and db.dump() == before
    user.find(marker="new-job-start-at").clear().type("2030-01-01T09:00+09:00")
    assert not create_enabled(user)  # still over a year ahead of today
    start = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)).replace(microsecond=0)
    user.find(marker="new-job-start-at").clear().type(start.astimezone(dt.timezone(dt.timedelta(hours=9))).isoformat())
    assert create_enabled(user)
    user.find(marker="new-job-priority").clear().type("11")  # beyond 10
    assert not create_enabled(user)
    user.find(marker="new-job-priority").clear().type("7")
    assert create_enabled(user)
    user.find(marker="new-job-create").click()
    await user.should_not_see(marker="new-job-url", retries=50)
    job = (await jobs.list_jobs()).jobs[0]
    assert (job.status.value, job.timeout_sec, job.topup_grace_sec, job.start_at, job.priority) == (
        "scheduled", 600, 0, start, 7)


def label_options(user: User) -> list[str]:
    return list(element(user, "new-job-labels").options.values())


async def test_device_label_filter_counts_hint_and_created_job(user: User, jobs: JobSystem) -> None:
    reports = [DeviceReport(serial=f"p{i}", simulated=True, labels={"android": "13" if i < 4 else "14"})
               for i in range(5)]
    session = await jobs.register_worker("w1", reports, hostname="test")
    ids = {d.serial: d.id for d in session.devices}
    for serial in ("p0", "p1", "p4"):
        await jobs.set_device_labels(ids[serial], {"rack": "A"})
    await jobs.set_device_labels(ids["p2"], {"rack": "B"})
    await login(user)
    await open_dialog(user)
    user.find(marker="new-job-url").type(URL)
    # The fleet's label pairs with the healthy devices carrying each (worker's and operator's labels).
    await wait_until(lambda: "rack=A: 3대" in label_options(user), what="label choices")
    assert {"rack=B: 1대", "android=13: 4대", "android=14: 1대"} <= set(label_options(user))
    assert element(user, "new-job-hint").text == "연결된 모든 기기: 5대"

    element(user, "new-job-labels").value = ["rack=A"]
    await wait_until(lambda: element(user, "new-job-hint").text == "라벨이 맞는 연결된 기기: 3대", what="hint")
    await wait_until(lambda: "android=13: 2대" in label_options(user), what="counts among rack=A")
    element(user, "new-job-labels").value = ["rack=A", "android=13"]  # both: AND
    await wait_until(lambda: element(user, "new-job-hint").text == "라벨이 맞는 연결된 기기: 2대", what="AND")
    element(user, "new-job-target").value = TargetType.PERCENTAGE.value
    user.find(marker="new-job-percentage").clear().type("50")
    assert element(user, "new-job-hint").text == "예상 기기 수: 1대 (라벨이 맞는 연결된 2대 중)"

    # Live: a phone gets the label elsewhere, and the counts follow.
    await jobs.set_device_labels(ids["p3"], {"rack": "A"})
    await wait_until(lambda: element(user, "new-job-hint").text == "예상 기기 수: 2대 (라벨이 맞는 연결된 3대 중)",
                     what="hint after a label was set")
    assert "rack=A: 3대" in label_options(user)

    element(user, "new-job-target").value = TargetType.ALL_DEVICES.value
    assert create_enabled(user)
    user.find(marker="new-job-create").click()
    await user.should_not_see(marker="new-job-url", retries=50)
    job = (await jobs.list_jobs()).jobs[0]
    assert (job.device_labels, job.target_count) == ({"rack": "A", "android": "13"}, 3)
    assigned = {a.serial for a in (await jobs.get_job(job.id)).assignments}
    assert assigned == {"p0", "p1", "p3"}


async def test_device_label_filter_one_value_per_key_and_no_match_warning(
        user: User, jobs: JobSystem) -> None:
    session = await jobs.register_worker(
        "w1", [DeviceReport(serial=f"p{i}", simulated=True) for i in range(2)], hostname="test")
    await jobs.set_device_labels(session.devices[0].id, {"rack": "A"})
    await jobs.set_device_labels(session.devices[1].id, {"rack": "B"})
    await login(user, language="en")
    await open_dialog(user)
    await wait_until(lambda: "rack=B: 1 devices" in label_options(user), what="label choices")
    element(user, "new-job-labels").value = ["rack=A"]
    element(user, "new-job-labels").value = ["rack=A", "rack=B"]  # a second value of a key replaces the first
    assert element(user, "new-job-labels").value == ["rack=B"]
    await wait_until(lambda: element(user, "new-job-hint").text == "Connected devices with these labels: 1",
                     what="hint for rack=B")

    await jobs.set_device_state(session.devices[1].id, "disabled")  # the only rack=B phone goes away
    await wait_until(lambda: element(user, "new-job-hint").text == "Connected devices with these labels: 0",
                     what="hint after the phone went")
    assert element(user, "new-job-warning").text.startswith("No connected device carries these labels")
    await wait_until(lambda: "rack=B: 0 devices (of 1)" in label_options(user), what="healthy of all")
    element(user, "new-job-labels").value = []
    await wait_until(lambda: element(user, "new-job-hint").text == "All connected devices: 1",
                     what="no filter")
    await user.should_not_see(marker="new-job-warning")
