"""Device detail page (/devices/{id}, issue 19): state and reason, vitals now and the last 24 h
as a chart, the worker's and the operator's labels apart, the device's history, its last runs
with screenshots, the same actions as the list, live updates, and a 404 page in the UI's
language for an unknown device."""

from __future__ import annotations

import dataclasses
import pathlib
import uuid

import pytest
from nicegui import ui
from nicegui.testing import User

from jobsys import hub_protocol
from jobsys.models import DeviceReport, DeviceVitals
from jobsys.system import JobSystem
from tests.dashboard import context
from tests.dashboard.pages import login
from tests.support.pages import element, text_of, texts
from tests.support.postgres import Db
from tests.support.waiting import wait_until

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@pytest.fixture
def evidence_dir(dashboard: object, tmp_path: pathlib.Path) -> pathlib.Path:
    """The hub's screenshots, in the services main.py installs (so: before `user`)."""
    path = tmp_path / "evidence" / "hub"
    path.mkdir(parents=True)
    context.current = dataclasses.replace(context.current, evidence_dir=path)
    return path


def phone(vitals: DeviceVitals | None = None) -> DeviceReport:
    return DeviceReport(
        serial="phone-1", model="Pixel 7", simulated=True, labels={"android": "13"}, vitals=vitals
    )


async def test_shows_state_vitals_chart_labels_history_and_runs(
    evidence_dir: pathlib.Path, user: User, jobs: JobSystem, db: Db
) -> None:
    session = await jobs.register_worker(
        "rack", [phone(DeviceVitals(battery_pct=80, temperature_c=30))], hostname="test"
    )
    device_id = session.devices[0].id
    # Two runs: one completed with a hub screenshot, one failed.
    shot_job = (
        await jobs.create_job(target_url="https://example.com/lobby", duration_sec=5, title="Lobby screen")
    ).job
    (shot,) = await jobs.claim_assignments(session.worker_id, start=True)
    (evidence_dir / f"{shot.assignment_id}-{shot.attempt}.png").write_bytes(PNG)
    await jobs.complete_assignment(
        shot.assignment_id,
        shot.attempt,
        {"evidence_path": hub_protocol.evidence_uri(shot.assignment_id, shot.attempt, "image/png")},
    )
    await jobs.create_job(target_url="https://example.com/menu", duration_sec=5, title="Menu board")
    (failed,) = await jobs.claim_assignments(session.worker_id, start=True)
    await jobs.fail_assignment(failed.assignment_id, failed.attempt, "screen locked")
    # Earlier readings of the day, then the battery runs low: the phone takes no new runs.
    db.run(
        "insert into jobsys.device_vitals (device_id, at, battery_pct, temperature_c, charging) values "
        "(%(d)s, now() - interval '3 hours', 95, 29.5, true), "
        "(%(d)s, now() - interval '2 hours', 60, 33, false)",
        {"d": device_id},
    )
    await jobs.heartbeat(
        session.worker_id,
        [
            phone(
                DeviceVitals(
                    battery_pct=12, charging=True, temperature_c=38, screen_on=False, adb_state="device"
                )
            )
        ],
    )
    await jobs.set_device_labels(device_id, {"rack": "A"})
    await jobs.request_device_reboot(device_id)
    await jobs.device_rebooted(session.worker_id, device_id)

    await login(user, f"/devices/{device_id}")
    await user.should_see(marker="device-state", retries=50)
    assert text_of(user, "device-detail-serial") == "phone-1"
    with user.scope(marker="device-state"):
        assert text_of(user, "device-status") == "배터리 부족"
        assert text_of(user, "device-reason") == "배터리 12% (기준 15% 미만)"
        await user.should_see("Pixel 7")
        await user.should_see("워커 rack")
        for action in ("device-drain", "device-disable", "device-reboot", "device-edit-labels"):
            await user.should_see(marker=action)
    assert {"배터리 12%", "충전 중", "38°C", "화면 꺼짐", "adb 상태: device"} <= set(
        texts(user, "device-vitals")
    )
    assert "android=13" in texts(user, "device-worker-labels") and "rack=A" not in texts(
        user, "device-worker-labels"
    )
    assert "rack=A" in texts(user, "device-operator-labels") and "android=13" not in texts(
        user, "device-operator-labels"
    )

    chart = element(user, "device-vitals-chart")
    assert isinstance(chart, ui.echart)
    battery, temperature = chart.options["series"]
    assert (battery["name"], temperature["name"]) == ("배터리 (%)", "온도 (°C)")
    assert [point[1] for point in battery["data"]] == [95, 60, 80]  # oldest first, the registration's last
    assert [point[1] for point in temperature["data"]] == [29.5, 33, 30]

    history = texts(user, "device-events")
    for shown in ("상태 변경: 배터리 부족", "배터리 12% (기준 15% 미만)", "재부팅 요청", "재부팅 완료"):
        assert shown in history, (shown, history)

    runs = texts(user, "device-runs")
    for shown in ("Lobby screen", "완료", "Menu board", "실패", "screen locked"):
        assert shown in runs, (shown, runs)
    page_url = f"/screenshots/{shot.assignment_id}/{shot.attempt}"
    thumbnail = element(user, f"run-screenshot-{shot.assignment_id}")
    assert isinstance(thumbnail, ui.image) and thumbnail.source == page_url
    await user.should_not_see(marker=f"run-screenshot-{failed.assignment_id}")
    user.find(marker=f"run-screenshot-{shot.assignment_id}").click()
    await user.should_see(marker="screenshot-full", retries=50)
    assert element(user, "screenshot-full").source == page_url
    assert shot_job.title in runs


async def test_actions_change_the_database_and_the_page_follows(user: User, jobs: JobSystem, db: Db) -> None:
    session = await jobs.register_worker("rack", [phone()], hostname="test")
    device_id = session.devices[0].id
    await login(user, f"/devices/{device_id}", language="en")
    await user.should_see(marker="device-state", retries=50)
    assert text_of(user, "device-status") == "Idle"
    await user.should_see("Nothing reported in the last 24 hours")

    # A change made elsewhere (the API, the CLI) is pushed to the page.
    await jobs.set_device_labels(device_id, {"group": "qa"})
    await wait_until(lambda: "group=qa" in texts(user, "device-operator-labels"), what="label pushed")

    user.find(marker="device-disable").click()
    await user.should_see(marker="device-confirm-ok", retries=50)
    assert "phone-1" in text_of(user, "device-confirm-question")
    user.find(marker="device-confirm-ok").click()
    await wait_until(
        lambda: db.value("select state from jobsys.devices where id = %s", (device_id,)) == "disabled",
        what="disabled",
    )
    await wait_until(lambda: texts(user, "device-status") == ["Disabled"], what="disabled shown")
    assert text_of(user, "device-reason") == "disabled by an operator"
    assert "State: Disabled" in texts(user, "device-events")

    user.find(marker="device-enable").click()
    await wait_until(
        lambda: db.value("select state from jobsys.devices where id = %s", (device_id,)) == "online",
        what="enabled",
    )
    await wait_until(lambda: texts(user, "device-status") == ["Idle"], what="idle shown")

    await user.should_see(marker="device-reboot", retries=50)
    user.find(marker="device-reboot").click()
    await user.should_see(marker="device-confirm-ok", retries=50)
    user.find(marker="device-confirm-ok").click()
    await wait_until(
        lambda: db.value(
            "select reboot_requested_at is not null from jobsys.devices where id = %s", (device_id,)
        ),
        what="reboot requested",
    )
    await wait_until(lambda: "Reboot requested" in texts(user, "device-events"), what="reboot in history")

    await user.should_see(marker="device-edit-labels", retries=50)
    user.find(marker="device-edit-labels").click()
    await user.should_see(marker="labels-input", retries=50)
    user.find(marker="labels-input").clear().type("group=qa\nrack=B")
    user.find(marker="labels-save").click()
    await user.should_not_see(marker="labels-input", retries=50)
    assert db.value("select operator_labels from jobsys.devices where id = %s", (device_id,)) == {
        "group": "qa",
        "rack": "B",
    }
    await wait_until(lambda: "rack=B" in texts(user, "device-operator-labels"), what="labels saved")


@pytest.mark.parametrize(
    ("language", "words"), [("ko", "기기를 찾을 수 없습니다"), ("en", "Device not found")]
)
async def test_an_unknown_device_is_a_404_page_in_the_ui_language(
    user: User, jobs: JobSystem, language: str, words: str
) -> None:
    await login(user, language=language)
    for path in (f"/devices/{uuid.uuid4()}", "/devices/not-a-uuid"):
        response = await user.http_client.get(path)
        assert response.status_code == 404, path
        assert words in response.text, path


async def test_needs_a_login_and_then_leads_to_the_device(user: User, jobs: JobSystem) -> None:
    session = await jobs.register_worker("rack", [phone()], hostname="test")
    path = f"/devices/{session.devices[0].id}"
    response = await user.http_client.get(path)
    assert (response.status_code, response.headers["location"]) == (
        303,
        f"/login?to={path.replace('/', '%2F')}",
    )
    await login(user, path)  # the login page leads back to the device
    await user.should_see(marker="device-state", retries=50)
    assert text_of(user, "device-detail-serial") == "phone-1"
