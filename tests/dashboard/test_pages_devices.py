"""Devices page and the header's live device count; fleet management (issue 19): statuses and
their reasons, vitals, worker and operator labels apart, and the actions (drain, disable,
enable, reboot, label edit) changing the database."""

from __future__ import annotations

import pytest
from nicegui.testing import User

from jobsys.models import DeviceReport, DeviceVitals
from jobsys.system import JobSystem
from nicegui_app.pages import devices as devices_page
from tests.core.helpers import add_worker
from tests.dashboard.pages import finish_runs, login
from tests.support.pages import element, text_of, texts
from tests.support.postgres import Db
from tests.support.waiting import wait_until


async def test_header_count_follows_devices_coming_and_going(user: User, jobs: JobSystem, db: Db) -> None:
    await login(user, language="en")
    assert element(user, "connected-count").text == "0 devices connected"
    first = await add_worker(jobs, "rack-1", 4)
    await wait_until(
        lambda: element(user, "connected-count").text == "4 devices connected", what="4 connected"
    )
    await add_worker(jobs, "rack-2", 2)
    await wait_until(
        lambda: element(user, "connected-count").text == "6 devices connected", what="6 connected"
    )
    await jobs.stop_worker(first.worker_id)
    await wait_until(
        lambda: element(user, "connected-count").text == "2 devices connected", what="2 connected"
    )
    # A device whose heartbeat went stale is marked offline by maintenance, which says so by push.
    db.run(
        "update jobsys.devices set last_heartbeat_at = now() - interval '1 hour' where serial = 'rack-2-000'"
    )
    await jobs.mark_stale()
    await wait_until(
        lambda: element(user, "connected-count").text == "1 devices connected", what="1 connected"
    )


async def test_devices_grouped_by_worker_with_state_job_and_badge(
    user: User, jobs: JobSystem, db: Db
) -> None:
    db.setting("progress_event_interval_ms", 0)  # the run starting is pushed at once
    rack1 = await add_worker(jobs, "rack-1", 2)
    rack2 = await add_worker(jobs, "rack-2", 1, state="error")
    await login(user, "/devices")
    await user.should_see("워커 rack-1")
    await user.should_see("워커 rack-2")
    with user.scope(marker=f"worker-{rack1.worker_id}"):
        await user.should_see(marker="device-rack-1-000")
        await user.should_see(marker="device-rack-1-001")
        await user.should_not_see(marker="device-rack-2-000")
        await user.should_see("대기")
    with user.scope(marker=f"worker-{rack2.worker_id}"):
        await user.should_see("오류")
    with user.scope(marker="device-rack-1-000"):
        await user.should_see("시뮬레이션")  # simulated devices are always labelled
        await user.should_see("마지막 응답:")

    job = (
        await jobs.create_job(
            target_url="https://example.com", duration_sec=5, target_type="device_count", target_value=1
        )
    ).job
    await finish_runs(jobs, rack1.worker_id, running=1)
    busy = next(a.serial for a in (await jobs.get_job(job.id)).assignments)
    await wait_until(
        lambda: f"현재 작업: {str(job.id)[:8]}" in texts(user, f"device-{busy}"), what="busy device"
    )
    assert "작업 중" in texts(user, f"device-{busy}")


# Fleet management (issue 19) ---------------------------------------------------------------


def device_state(db: Db, serial: str) -> str:
    return str(db.value("select state from jobsys.devices where serial = %s", (serial,)))


async def click_in(user: User, serial: str, marker: str) -> None:
    """Click a device's action button on the list (the rows are rebuilt on each refresh, so
    wait for it first)."""
    await user.should_see(marker=f"device-{serial}", retries=50)
    with user.scope(marker=f"device-{serial}"):
        await user.should_see(marker=marker, retries=50)
        user.find(marker=marker).click()


async def test_statuses_reasons_vitals_and_labels_shown_in_korean(
    user: User, jobs: JobSystem, db: Db
) -> None:
    # A phone quarantined the real way: its last run failed (quarantine after one failure here).
    db.setting("quarantine_after_failures", 1)
    flaky = await add_worker(jobs, "flaky", 1)
    await jobs.create_job(
        target_url="https://example.com", duration_sec=5, target_type="device_count", target_value=1
    )
    await finish_runs(jobs, flaky.worker_id, failed=1)
    assert device_state(db, "flaky-000") == "quarantined"

    reports = [
        DeviceReport(
            serial="rack-ok",
            simulated=True,
            labels={"android": "13"},
            vitals=DeviceVitals(battery_pct=80, charging=True, temperature_c=31.5),
        ),
        DeviceReport(serial="rack-unauth", state="unauthorized", simulated=True),
        DeviceReport(serial="rack-low", simulated=True, vitals=DeviceVitals(battery_pct=10, charging=False)),
        DeviceReport(
            serial="rack-hot", simulated=True, vitals=DeviceVitals(battery_pct=90, temperature_c=50)
        ),
        DeviceReport(serial="rack-off", simulated=True),
    ]
    session = await jobs.register_worker("rack", reports, hostname="test")
    ids = {d.serial: d.id for d in session.devices}
    await jobs.set_device_state(ids["rack-off"], "disabled")
    await jobs.set_device_labels(ids["rack-ok"], {"rack": "A"})

    await login(user, "/devices")
    await user.should_see(marker="device-rack-ok", retries=50)
    summary = {
        key: text_of(user, f"device-summary-{key}-value")
        for key in ("total", "idle", "unauthorized", "low_battery", "overheated", "quarantined", "disabled")
    }
    assert summary == {
        "total": "6",
        "idle": "1",
        "unauthorized": "1",
        "low_battery": "1",
        "overheated": "1",
        "quarantined": "1",
        "disabled": "1",
    }
    expected = {
        "rack-unauth": ["권한 없음", "adb 권한 없음: 휴대폰에서 USB 디버깅을 허용하세요"],
        "rack-low": ["배터리 부족", "배터리 10% (기준 15% 미만)", "배터리 10%", "충전 안 함"],
        "rack-hot": ["과열", "배터리 온도 50°C (기준 45°C 초과)", "50°C"],
        "rack-off": ["비활성", "운영자가 비활성화함"],
        "flaky-000": ["격리됨", "연속 1회 실패 (마지막 오류: screen locked)"],
        "rack-ok": ["대기", "배터리 80%", "충전 중", "31.5°C"],
    }
    for serial, shown in expected.items():
        row = texts(user, f"device-{serial}")
        for text in shown:
            assert text in row, (serial, text, row)
    with user.scope(marker="device-flaky-000"):
        await user.should_see(marker="device-quarantined-until")
        assert text_of(user, "device-quarantined-until").endswith("까지 격리")
    # The worker's labels and the operator's, apart; and a link to the device's page.
    with user.scope(marker="device-rack-ok"):
        assert "android=13" in texts(user, "device-worker-labels")
        assert "rack=A" not in texts(user, "device-worker-labels")
        assert "rack=A" in texts(user, "device-operator-labels")
        assert element(user, "device-link").props["href"] == f"/devices/{ids['rack-ok']}"
        await user.should_see(marker="device-disable")
        await user.should_not_see(marker="device-enable")  # nothing to enable
    with user.scope(marker="device-rack-off"):
        await user.should_see(marker="device-enable")
        await user.should_not_see(marker="device-disable")


async def test_drain_disable_and_enable_through_the_buttons(user: User, jobs: JobSystem, db: Db) -> None:
    db.setting("progress_event_interval_ms", 0)
    session = await add_worker(jobs, "rack", 2)
    job = (
        await jobs.create_job(
            target_url="https://example.com", duration_sec=60, target_type="device_count", target_value=1
        )
    ).job
    await finish_runs(jobs, session.worker_id, running=1)
    busy = next(a for a in (await jobs.get_job(job.id)).assignments if a.status.value == "running")
    await login(user, "/devices")

    # Drain: the run goes on, then the phone is disabled.
    await click_in(user, busy.serial, "device-drain")
    await wait_until(lambda: device_state(db, busy.serial) == "draining", what="draining")
    await wait_until(lambda: "마무리 중" in texts(user, f"device-{busy.serial}"), what="draining shown")
    await user.should_see(f"{busy.serial} 기기는 실행 중인 작업을 마친 뒤 비활성화됩니다", retries=50)
    assert "실행 중인 작업을 마치면 비활성화됩니다" in texts(user, f"device-{busy.serial}")
    assert db.value("select status from jobsys.job_assignments where id = %s", (busy.id,)) == "running"

    await click_in(user, busy.serial, "device-enable")
    await wait_until(lambda: device_state(db, busy.serial) == "online", what="enabled again")
    await wait_until(lambda: "작업 중" in texts(user, f"device-{busy.serial}"), what="busy again")

    # Disable asks first (it stops the run): cancelling changes nothing.
    await click_in(user, busy.serial, "device-disable")
    await user.should_see(marker="device-confirm-question", retries=50)
    assert busy.serial in text_of(user, "device-confirm-question")
    user.find(marker="device-confirm-cancel").click()
    await user.should_not_see(marker="device-confirm-question", retries=50)
    assert device_state(db, busy.serial) == "online"

    await click_in(user, busy.serial, "device-disable")
    await user.should_see(marker="device-confirm-ok", retries=50)
    user.find(marker="device-confirm-ok").click()
    await wait_until(lambda: device_state(db, busy.serial) == "disabled", what="disabled")
    # Its run stopped there and went back to the queue.
    assert (
        db.value(
            "select count(*) from jobsys.job_assignments where device_id = %s and status = 'running'",
            (busy.device_id,),
        )
        == 0
    )
    assert (
        db.value("select running_assignment_id from jobsys.devices where id = %s", (busy.device_id,)) is None
    )
    await wait_until(lambda: "비활성" in texts(user, f"device-{busy.serial}"), what="disabled shown")
    await wait_until(lambda: text_of(user, "device-summary-disabled-value") == "1", what="summary")

    await click_in(user, busy.serial, "device-enable")
    await wait_until(lambda: device_state(db, busy.serial) == "online", what="enabled")
    await wait_until(lambda: "대기" in texts(user, f"device-{busy.serial}"), what="idle shown")

    # Draining a phone that runs nothing disables it at once, and says so.
    idle = next(d.serial for d in (await jobs.list_devices()).devices if d.serial != busy.serial)
    await click_in(user, idle, "device-drain")
    await wait_until(lambda: device_state(db, idle) == "disabled", what="drained at once")
    await user.should_see(f"{idle} 기기를 비활성화했습니다", retries=50)


async def test_reboot_through_the_button_and_refused_while_busy(user: User, jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "rack", 2)  # a registered worker with a live session
    await jobs.create_job(
        target_url="https://example.com", duration_sec=60, target_type="device_count", target_value=1
    )
    await finish_runs(jobs, session.worker_id, running=1)
    busy, idle = (
        db.value("select serial from jobsys.devices where running_assignment_id is not null"),
        db.value("select serial from jobsys.devices where running_assignment_id is null"),
    )
    await login(user, "/devices")

    await click_in(user, idle, "device-reboot")
    await user.should_see(marker="device-confirm-question", retries=50)
    assert "재부팅할까요?" in text_of(user, "device-confirm-question")
    user.find(marker="device-confirm-ok").click()
    await wait_until(
        lambda: db.value(
            "select reboot_requested_at is not null from jobsys.devices where serial = %s", (idle,)
        ),
        what="reboot requested",
    )
    await user.should_see(f"{idle} 기기의 재부팅을 요청했습니다", retries=50)
    await wait_until(
        lambda: any(t.startswith("재부팅 요청됨:") for t in texts(user, f"device-{idle}")),
        what="reboot request shown",
    )
    assert (await jobs.heartbeat(session.worker_id)).reboot == [
        db.value("select id from jobsys.devices where serial = %s", (idle,))
    ]  # the worker is told

    await click_in(user, busy, "device-reboot")
    await user.should_see(marker="device-confirm-ok", retries=50)
    user.find(marker="device-confirm-ok").click()
    await user.should_see(
        "실행 중인 작업이 있어 지금은 재부팅할 수 없습니다. 먼저 '마무리 후 비활성화'를 하세요.", retries=50
    )
    assert db.value("select reboot_requested_at from jobsys.devices where serial = %s", (busy,)) is None


async def test_label_edit_saves_operator_labels_and_refuses_bad_ones(
    user: User, jobs: JobSystem, db: Db
) -> None:
    session = await jobs.register_worker(
        "rack", [DeviceReport(serial="phone-1", simulated=True, labels={"android": "13"})], hostname="test"
    )
    device_id = session.devices[0].id
    await login(user, "/devices")

    await click_in(user, "phone-1", "device-edit-labels")
    await user.should_see(marker="labels-input", retries=50)
    assert "android=13" in texts(user, "labels-dialog-worker")  # the worker's, for reference
    user.find(marker="labels-input").type("rack=A\ngroup = qa")
    user.find(marker="labels-save").click()
    await user.should_not_see(marker="labels-input", retries=50)
    assert db.value("select operator_labels from jobsys.devices where id = %s", (device_id,)) == {
        "rack": "A",
        "group": "qa",
    }
    await wait_until(lambda: "rack=A" in texts(user, "device-operator-labels"), what="labels shown")
    assert "group=qa" in texts(user, "device-operator-labels")
    assert "rack=A" not in texts(user, "device-worker-labels")

    before = db.dump()
    await click_in(user, "phone-1", "device-edit-labels")
    await user.should_see(marker="labels-input", retries=50)
    assert element(user, "labels-input").value == "group=qa\nrack=A"  # what is stored, to edit
    user.find(marker="labels-input").clear().type("no equals sign")
    assert text_of(user, "labels-error") == "1번째 줄이 키=값 형식이 아닙니다"
    assert not element(user, "labels-save").enabled
    user.find(marker="labels-input").clear().type("bad key=1")
    assert element(user, "labels-save").enabled
    user.find(marker="labels-save").click()
    await wait_until(
        lambda: (
            text_of(user, "labels-error") == "라벨 키는 1~64자의 영문자, 숫자와 _ . : / - 만 쓸 수 있습니다"
        ),
        what="bad key refused",
    )
    user.find(marker="labels-input").clear().type("android=14")  # the worker's key
    user.find(marker="labels-save").click()
    await wait_until(
        lambda: text_of(user, "labels-error") == "'android' 라벨은 워커가 보고하는 라벨이라 바꿀 수 없습니다",
        what="worker key refused",
    )
    await user.should_see(marker="labels-input")  # still open
    assert db.dump() == before  # nothing stored
    user.find(marker="labels-cancel").click()
    await user.should_not_see(marker="labels-input", retries=50)
    assert db.value("select operator_labels from jobsys.devices where id = %s", (device_id,)) == {
        "rack": "A",
        "group": "qa",
    }


# Devices at scale (issue 20) ---------------------------------------------------------------


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Pages of 2 and PCs that open by themselves only up to 3 matching devices, so a handful
    of devices shows what 10,000 would; returns the addresses the page puts in the bar."""
    monkeypatch.setattr(devices_page, "PAGE_SIZE", 2)
    monkeypatch.setattr(devices_page, "AUTO_OPEN_MAX", 3)
    shown: list[str] = []
    monkeypatch.setattr(devices_page, "set_address", shown.append)
    return shown


def shown_serials(user: User, worker_marker: str) -> list[str]:
    """The device rows a PC card shows, top to bottom (none while the PC is not listed)."""
    cards = [e for e in user.client.elements.values() if worker_marker in e._markers]
    if not cards:
        return []
    column = cards[0]
    found = [m.removeprefix("device-") for e in column.descendants() for m in e._markers
             if m.startswith("device-") and m.removeprefix("device-").startswith("rack")]
    return found


def open_group(user: User, worker_marker: str) -> None:
    with user.scope(marker=worker_marker):
        expansion = next(iter(user.find(marker="group-expansion").elements))
    expansion.value = True  # what a click on its header does


async def test_pcs_show_counts_and_open_a_page_at_a_time(
    user: User, jobs: JobSystem, db: Db, small_pages: list[str]
) -> None:
    rack1 = await add_worker(jobs, "rack-1", 5)
    rack2 = await add_worker(jobs, "rack-2", 2, state="error")
    await jobs.set_device_state(rack1.devices[0].id, "disabled")
    await login(user, "/devices")
    one, two = f"worker-{rack1.worker_id}", f"worker-{rack2.worker_id}"
    await user.should_see(marker=one, retries=50)
    # 7 devices > 3: the PCs stay closed, with their counts from the aggregate.
    assert shown_serials(user, one) == [] and shown_serials(user, two) == []
    with user.scope(marker=one):
        assert text_of(user, "group-connected") == "4/5"
        assert texts(user, "group-counts") == ["대기 4", "비활성 1"]
    with user.scope(marker=two):
        assert texts(user, "group-counts") == ["오류 2"]
    assert text_of(user, "device-summary-total-value") == "7"

    open_group(user, one)
    await wait_until(lambda: shown_serials(user, one) == ["rack-1-000", "rack-1-001"], what="first page")
    with user.scope(marker=one):
        assert text_of(user, "group-more") == "더 보기 (2/5대)"
        user.find(marker="group-more").click()
    await wait_until(lambda: len(shown_serials(user, one)) == 4, what="second page")
    with user.scope(marker=one):
        user.find(marker="group-more").click()
    await wait_until(lambda: shown_serials(user, one) == [f"rack-1-{i:03d}" for i in range(5)], what="all")
    with user.scope(marker=one):
        await user.should_not_see(marker="group-more")
    assert shown_serials(user, two) == []  # a closed PC's rows are never read

    # Live: the counts and the open rows follow a change (no reload).
    await jobs.set_device_state(rack1.devices[1].id, "disabled")
    await wait_until(lambda: "비활성 2" in texts(user, one), what="count follows")
    await wait_until(lambda: "비활성" in texts(user, "device-rack-1-001"), what="row follows")
    assert text_of(user, "device-summary-disabled-value") == "2"


async def test_filters_live_in_the_address_and_narrow_the_pcs(
    user: User, jobs: JobSystem, db: Db, small_pages: list[str]
) -> None:
    rack1 = await add_worker(jobs, "rack-1", 5)
    rack2 = await add_worker(jobs, "rack-2", 2, state="error")
    await jobs.set_device_labels(rack1.devices[2].id, {"floor": "2"})
    one, two = f"worker-{rack1.worker_id}", f"worker-{rack2.worker_id}"
    await login(user)
    await user.open("/devices?state=error")  # a shared link: its filter comes with it
    await wait_until(lambda: shown_serials(user, two) == ["rack-2-000", "rack-2-001"], what="errors")
    await user.should_not_see(marker=one)  # no match on rack-1: not listed
    assert element(user, "devices-state").value == "error"
    assert text_of(user, "devices-matching") == "조건에 맞는 기기 2대"

    user.find(marker="devices-state").elements.pop().set_value("")
    await user.should_see(marker=one, retries=50)
    assert small_pages[-1] == "/devices"
    user.find(marker="devices-labels").type("floor=2")
    await wait_until(lambda: shown_serials(user, one) == ["rack-1-002"], what="label filter")
    assert small_pages[-1] == "/devices?label=floor%3D2"
    await user.should_not_see(marker=two)

    user.find(marker="devices-labels").clear().type("nonsense")  # not k=v: said, and not applied
    await user.should_see("라벨은 키=값 형식으로, 여러 개는 쉼표로 구분해 쓰세요", retries=50)
    assert small_pages[-1] in ("/devices", "/devices?label=floor%3D2")
    user.find(marker="devices-labels").clear()
    user.find(marker="devices-search").type("2-00")
    await wait_until(lambda: shown_serials(user, two) == ["rack-2-000", "rack-2-001"], what="search")
    assert small_pages[-1] == "/devices?q=2-00"

    await user.open(f"/devices?label=floor={'x' * 300}")  # beyond the label bounds: ignored, not a broken page
    await user.should_see(marker=one, retries=50)  # both PCs listed: the fleet, unfiltered
    await user.should_see(marker=two, retries=50)
    await user.open("/devices?pc=rack-1&label=floor=2")  # reload: PC and label survive
    await wait_until(lambda: shown_serials(user, one) == ["rack-1-002"], what="reloaded")
    await user.should_not_see(marker=two)
    assert element(user, "devices-pc").value == "rack-1"
    assert element(user, "devices-labels").value == "floor=2"
