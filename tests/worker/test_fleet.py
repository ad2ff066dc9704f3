"""The fleet: probes in their own tasks (never inside refresh, which the heartbeat calls),
probe before service, give up after N failed probes with the reason, adb states reported;
vitals read in their own tasks at most once per interval per phone and reported on their
own at most once per interval per worker; labels; a device held for a reboot."""

from __future__ import annotations

import asyncio
import uuid
from typing import Awaitable, Callable

import pytest

from jobsys.models import DeviceVitals, RegisteredDevice
from tests.support.waiting import wait_until
from worker.drivers.base import DeviceError, DeviceHealth, DeviceInfo, DeviceNotReady, Vitals
from worker.fleet import Fleet

SAFETY_TIMEOUT_S = 10.0  # only against a hang; every awaited thing here returns at once


class ScriptedDriver:
    """A driver whose probes answer from a script and can be held at a gate."""

    name = "scripted"
    simulated = False

    def __init__(self, **devices: DeviceHealth) -> None:
        self.devices = dict(devices)
        self.adb_states: dict[str, str] = {}  # adb's word when it is not the health's
        self.gates: dict[str, asyncio.Event] = {}
        self.answers: dict[str, list[bool | Exception]] = {}
        self.probes: list[str] = []
        self.vitals: dict[str, Vitals | Exception] = {}
        self.vitals_gates: dict[str, asyncio.Event] = {}
        self.reads: list[str] = []

    async def discover(self) -> list[DeviceInfo]:
        return [DeviceInfo(serial=s, health=h, labels={"model": "Pixel 7"},
                           adb_state=self.adb_states.get(s, "device" if h is DeviceHealth.ONLINE else h.value))
                for s, h in self.devices.items()]

    async def read_vitals(self, serial: str) -> Vitals:
        self.reads.append(serial)
        gate = self.vitals_gates.get(serial)
        if gate is not None:
            await gate.wait()
        answer = self.vitals.get(serial, Vitals(battery_pct=80, charging=True, temperature_c=30.0, screen_on=False))
        if isinstance(answer, Exception):
            raise answer
        return answer

    def watch(self, on_change: Callable[[], Awaitable[None]]) -> Awaitable[None] | None:
        return None

    async def probe(self, serial: str) -> bool:
        self.probes.append(serial)
        gate = self.gates.get(serial)
        if gate is not None:
            await gate.wait()
        answers = self.answers.get(serial) or [True]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def close(self) -> None:
        return None


def states(fleet: Fleet) -> dict[str, str]:
    return {r.serial: r.state for r in fleet.reports()}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fleet_of(driver: ScriptedDriver, **options: object) -> tuple[Fleet, list[int]]:
    changes: list[int] = []
    fleet = Fleet(driver, on_change=lambda: changes.append(1), **options)  # type: ignore[arg-type]
    fleet.remember_ids([RegisteredDevice(id=uuid.uuid4(), serial=s, state="online") for s in driver.devices])
    return fleet, changes


async def test_refresh_never_waits_on_a_probe_and_a_device_serves_only_after_it() -> None:
    driver = ScriptedDriver(A=DeviceHealth.ONLINE, B=DeviceHealth.ONLINE)
    driver.gates["B"] = asyncio.Event()  # B's probe takes as long as the test wants
    fleet, changes = fleet_of(driver)

    await asyncio.wait_for(fleet.refresh(), SAFETY_TIMEOUT_S)  # returns while B's probe is held
    await wait_until(lambda: states(fleet)["A"] == "online", what="A probed")
    assert states(fleet)["B"] == "offline"
    assert fleet.reports()[1].labels["probe"] == "pending"
    assert len(fleet.healthy_ids(set())) == 1  # only A may take work

    await asyncio.wait_for(fleet.refresh(), SAFETY_TIMEOUT_S)  # a second heartbeat: still not waiting
    assert driver.probes.count("B") == 1  # one probe at a time per device

    driver.gates["B"].set()
    await wait_until(lambda: states(fleet)["B"] == "online", what="B probed")
    assert len(fleet.healthy_ids(set())) == 2 and len(changes) == 2  # each probe woke the heartbeat
    await fleet.close()


async def test_failed_probes_leave_the_device_in_error_and_stop_after_n_with_the_reason() -> None:
    driver = ScriptedDriver(A=DeviceHealth.ONLINE)
    driver.answers["A"] = [DeviceError("A: the UiAutomation service is held by another process")]
    fleet, _ = fleet_of(driver, probe_retry_s=0.0, max_probe_failures=3)

    for expected in (1, 2, 3):
        await fleet.refresh()
        await wait_until(lambda: len(driver.probes) == expected and not fleet._probing, what=f"probe {expected}")
        assert states(fleet)["A"] == "error"
    reason = fleet.reports()[0].labels["error"]
    assert reason.startswith("gave up after 3 failed probes in a row") and "UiAutomation" in reason

    await fleet.refresh()
    await fleet.refresh()
    assert len(driver.probes) == 3  # no more probing: it stays in error with the reason

    driver.devices["A"] = DeviceHealth.OFFLINE  # unplugged ...
    await fleet.refresh()
    driver.devices["A"] = DeviceHealth.ONLINE  # ... and plugged in again: a fresh start
    driver.answers["A"] = [True]
    await fleet.refresh()
    await wait_until(lambda: states(fleet)["A"] == "online", what="probed again after the replug")
    await fleet.close()


async def test_a_phone_still_booting_is_probed_again_and_never_given_up_on() -> None:
    driver = ScriptedDriver(A=DeviceHealth.ONLINE)
    driver.answers["A"] = [DeviceNotReady("A: still booting (sys.boot_completed is not 1 yet)")] * 5 + [True]
    fleet, _ = fleet_of(driver, probe_retry_s=0.0, max_probe_failures=3)

    for expected in range(1, 6):  # more "not yet" answers than failures it would give up after
        await fleet.refresh()
        await wait_until(lambda: len(driver.probes) == expected and not fleet._probing, what=f"probe {expected}")
        [report] = fleet.reports()
        assert report.state == "offline" and report.labels["probe"].startswith("pending: A: still booting")
    await fleet.refresh()
    await wait_until(lambda: states(fleet)["A"] == "online", what="booted")
    await fleet.close()


async def test_a_run_failure_keeps_the_device_out_until_a_later_probe_passes() -> None:
    driver = ScriptedDriver(A=DeviceHealth.ONLINE)
    fleet, _ = fleet_of(driver, probe_retry_s=0.0)
    await fleet.refresh()
    await wait_until(lambda: states(fleet).get("A") == "online", what="first probe")

    fleet.mark_error("A", "A: screen locked")
    assert states(fleet)["A"] == "error" and fleet.healthy_ids(set()) == []
    assert fleet.reports()[0].labels["error"] == "A: screen locked"

    await fleet.refresh()
    await wait_until(lambda: states(fleet)["A"] == "online", what="the re-probe")
    assert driver.probes == ["A", "A"]
    await fleet.close()


async def test_adb_states_are_reported_and_unauthorized_devices_are_never_probed() -> None:
    driver = ScriptedDriver(A=DeviceHealth.UNAUTHORIZED, B=DeviceHealth.OFFLINE, C=DeviceHealth.ERROR,
                            D=DeviceHealth.UNAUTHORIZED)
    driver.adb_states["D"] = "no permissions"  # Linux without udev rules
    fleet, _ = fleet_of(driver)

    await fleet.refresh()

    assert states(fleet) == {"A": "unauthorized", "B": "offline", "C": "error", "D": "unauthorized"}
    vitals = {r.serial: r.vitals for r in fleet.reports()}
    assert vitals["A"] == DeviceVitals(adb_state="unauthorized")
    assert vitals["D"] == DeviceVitals(adb_state="no permissions")  # which of the two it is
    assert vitals["B"] == DeviceVitals(adb_state="offline")
    assert driver.probes == [] and driver.reads == [] and fleet.healthy_ids(set()) == []


async def test_close_abandons_a_probe_that_never_ends() -> None:
    driver = ScriptedDriver(A=DeviceHealth.ONLINE)
    driver.gates["A"] = asyncio.Event()  # never set
    fleet, _ = fleet_of(driver)
    await fleet.refresh()
    await wait_until(lambda: driver.probes == ["A"], what="the probe started")

    await asyncio.wait_for(fleet.close(), SAFETY_TIMEOUT_S)
    assert not fleet._probing


# --- labels -----------------------------------------------------------------------------------


async def test_the_fleets_labels_are_added_to_every_devices_own() -> None:
    driver = ScriptedDriver(A=DeviceHealth.ONLINE, B=DeviceHealth.UNAUTHORIZED)
    fleet, _ = fleet_of(driver, labels={"pc": "pc-7"})
    await fleet.refresh()

    assert {r.serial: r.labels for r in fleet.reports()} == {
        "A": {"model": "Pixel 7", "pc": "pc-7", "probe": "pending"},
        "B": {"model": "Pixel 7", "pc": "pc-7"},
    }
    await fleet.close()


# --- vitals -----------------------------------------------------------------------------------


async def online(driver: ScriptedDriver, **options: object) -> tuple[Fleet, FakeClock]:
    clock = FakeClock()
    fleet, _ = fleet_of(driver, clock=clock, **options)
    await fleet.refresh()
    await wait_until(lambda: all(s == "online" for s in states(fleet).values()) and not fleet._probing,
                     what="probed")
    return fleet, clock


async def test_the_first_vitals_come_with_the_report_that_brings_the_phone_online() -> None:
    driver = ScriptedDriver(A=DeviceHealth.ONLINE)
    driver.vitals["A"] = Vitals(battery_pct=64, charging=False, temperature_c=37.5, screen_on=True)
    fleet, _ = await online(driver)

    [report] = fleet.reports()
    assert report.state == "online" and driver.reads == ["A"]
    assert report.vitals == DeviceVitals(battery_pct=64, charging=False, temperature_c=37.5, screen_on=True,
                                         adb_state="device")
    await fleet.close()


async def test_vitals_are_read_at_most_once_per_interval_per_phone() -> None:
    driver = ScriptedDriver(A=DeviceHealth.ONLINE, B=DeviceHealth.ONLINE)
    fleet, clock = await online(driver, vitals_interval_s=60.0)
    assert sorted(driver.reads) == ["A", "B"]  # right after each probe

    for _ in range(5):  # heartbeats within the minute read nothing
        clock.now += 10.0
        await fleet.refresh()
    assert not fleet._reading and sorted(driver.reads) == ["A", "B"]

    clock.now += 10.0  # 60 s after the first read
    await fleet.refresh()
    await wait_until(lambda: not fleet._reading, what="the reads")
    assert sorted(driver.reads) == ["A", "A", "B", "B"]
    await fleet.close()


async def test_a_read_never_holds_up_refresh_and_a_failed_read_keeps_the_last_reading() -> None:
    driver = ScriptedDriver(A=DeviceHealth.ONLINE)
    driver.vitals["A"] = Vitals(battery_pct=50)
    fleet, clock = await online(driver, vitals_interval_s=60.0)

    driver.vitals_gates["A"] = asyncio.Event()  # the phone takes as long as the test wants
    clock.now += 60.0
    await asyncio.wait_for(fleet.refresh(), SAFETY_TIMEOUT_S)  # returns with the read still held
    await wait_until(lambda: len(driver.reads) == 2, what="the second read began")
    assert "A" in fleet._reading and fleet.reports()[0].vitals.battery_pct == 50  # type: ignore[union-attr]
    driver.vitals["A"] = DeviceError("A: not answering")
    driver.vitals_gates["A"].set()
    await wait_until(lambda: not fleet._reading, what="the failed read")
    assert fleet.reports()[0].vitals.battery_pct == 50  # type: ignore[union-attr]

    clock.now += 59.0  # a failed read waits its interval too
    await fleet.refresh()
    assert len(driver.reads) == 2
    await fleet.close()


async def test_a_change_of_vitals_alone_is_reported_at_most_once_per_interval_state_changes_at_once() -> None:
    driver = ScriptedDriver(A=DeviceHealth.ONLINE, B=DeviceHealth.ONLINE)
    fleet, clock = await online(driver, vitals_interval_s=10.0, vitals_report_s=60.0)
    first = fleet.outbox()
    assert first is not None  # nothing reported yet
    fleet.reported(first)
    assert fleet.outbox() is None

    sent = []
    for battery in (79, 78, 77, 76, 75, 74, 73):  # a reading that changes every 10 s heartbeat
        clock.now += 10.0
        driver.vitals["A"] = Vitals(battery_pct=battery)
        await fleet.refresh()
        await wait_until(lambda: not fleet._reading, what="the read")
        outbox = fleet.outbox()
        if outbox is not None:
            fleet.reported(outbox)
            sent.append(outbox.reports[0].vitals.battery_pct)  # type: ignore[union-attr]
    assert sent == [74]  # once, 60 s after the last report, with the newest reading

    clock.now += 10.0
    driver.devices["B"] = DeviceHealth.OFFLINE  # a state change goes with the next heartbeat
    await fleet.refresh()
    outbox = fleet.outbox()
    assert outbox is not None and {r.serial: r.state for r in outbox.reports} == {"A": "online", "B": "offline"}
    fleet.reported(outbox)
    assert fleet.outbox() is None and fleet.outbox(force=True) is not None
    await fleet.close()


async def test_a_phone_that_leaves_loses_its_reading_and_misread_values_are_left_out() -> None:
    driver = ScriptedDriver(A=DeviceHealth.ONLINE)
    driver.vitals["A"] = Vitals(battery_pct=120, charging=True, temperature_c=-273.1, screen_on=False)
    fleet, _ = await online(driver)

    assert fleet.reports()[0].vitals == DeviceVitals(battery_pct=100, charging=True, screen_on=False,
                                                     adb_state="device")
    driver.devices["A"] = DeviceHealth.OFFLINE
    await fleet.refresh()
    assert fleet.reports()[0].vitals == DeviceVitals(adb_state="offline")
    await fleet.close()


# --- reboot -----------------------------------------------------------------------------------


async def test_a_rebooting_device_takes_no_work_is_not_probed_and_serves_again_after_it() -> None:
    driver = ScriptedDriver(A=DeviceHealth.ONLINE)
    fleet, _ = await online(driver)
    probes = len(driver.probes)

    fleet.begin_reboot("A")
    assert fleet.healthy_ids(set()) == []
    [report] = fleet.reports()
    assert report.state == "offline" and report.labels["reboot"] == "in progress"
    driver.devices["A"] = DeviceHealth.OFFLINE
    await fleet.refresh()
    driver.devices["A"] = DeviceHealth.ONLINE  # back: the worker's reboot task probes it, not the fleet
    await fleet.refresh()
    assert len(driver.probes) == probes and fleet.healthy_ids(set()) == []

    fleet.end_reboot("A", passed=True)
    assert states(fleet) == {"A": "online"} and len(fleet.healthy_ids(set())) == 1
    assert "reboot" not in fleet.reports()[0].labels
    await fleet.close()



async def test_a_passed_probe_does_not_rebuild_every_devices_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every passed probe used to refresh the whole fleet, rebuilding every device's report
    twice: N probes, 2N² reports (500 simulated phones took ~7 s to register)."""
    built = 0
    report = Fleet._report

    def counting(self: Fleet, *args: object, **kwargs: object) -> object:
        nonlocal built
        built += 1
        return report(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Fleet, "_report", counting)
    devices = 60
    driver = ScriptedDriver(**{f"D{i:02}": DeviceHealth.ONLINE for i in range(devices)})
    fleet, _ = fleet_of(driver)
    await fleet.refresh()
    await fleet.settle(SAFETY_TIMEOUT_S)
    assert len(fleet.healthy_ids(set())) == devices and not fleet._probing
    assert built <= 2 * devices, built  # the refresh's own comparison; none per probe
    await fleet.close()


class LearningDriver(ScriptedDriver):
    """Its probe learns the phone's labels, which the listing then carries (as uiautomator2's)."""

    learnt = False

    async def probe(self, serial: str) -> bool:
        passed = await super().probe(serial)
        self.learnt = True
        return passed

    async def discover(self) -> list[DeviceInfo]:
        found = await super().discover()
        learnt = {"sdk": "34"} if self.learnt else {}
        return [DeviceInfo(serial=i.serial, health=i.health, labels={**i.labels, **learnt}, adb_state=i.adb_state)
                for i in found]


async def test_the_report_bringing_a_phone_online_carries_what_its_probe_learnt() -> None:
    driver = LearningDriver(A=DeviceHealth.ONLINE)
    seen: list[dict[str, str]] = []
    fleet = Fleet(driver, on_change=lambda: seen.extend(r.labels for r in fleet.reports() if r.state == "online"))
    await fleet.refresh()
    await wait_until(lambda: bool(seen), what="A online")
    assert seen[0] == {"model": "Pixel 7", "sdk": "34"}
    await fleet.close()


async def test_a_phone_gone_while_its_probe_ran_is_reported_gone() -> None:
    driver = ScriptedDriver(A=DeviceHealth.ONLINE)
    driver.gates["A"] = asyncio.Event()
    fleet, changes = fleet_of(driver)
    await fleet.refresh()
    fleet.reported(fleet.snapshot())  # the server has A as "probe: pending"
    del driver.devices["A"]  # unplugged while its probe runs
    driver.gates["A"].set()
    await wait_until(lambda: not fleet._probing, what="A's probe over")
    await fleet.refresh()
    outbox = fleet.outbox()
    assert outbox is not None and outbox.reports == [] and changes  # the server hears it at once
    await fleet.close()
