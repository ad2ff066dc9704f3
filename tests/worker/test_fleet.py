"""The fleet: probes in their own tasks (never inside refresh, which the heartbeat calls),
probe before service, give up after N failed probes with the reason, adb states reported."""

from __future__ import annotations

import asyncio
import uuid
from typing import Awaitable, Callable

from jobsys.models import RegisteredDevice
from tests.support.waiting import wait_until
from worker.drivers.base import DeviceError, DeviceHealth, DeviceInfo
from worker.fleet import Fleet

SAFETY_TIMEOUT_S = 10.0  # only against a hang; every awaited thing here returns at once


class ScriptedDriver:
    """A driver whose probes answer from a script and can be held at a gate."""

    name = "scripted"
    simulated = False

    def __init__(self, **devices: DeviceHealth) -> None:
        self.devices = dict(devices)
        self.gates: dict[str, asyncio.Event] = {}
        self.answers: dict[str, list[bool | Exception]] = {}
        self.probes: list[str] = []

    async def discover(self) -> list[DeviceInfo]:
        return [DeviceInfo(serial=s, health=h, labels={"adb_state": h.value}) for s, h in self.devices.items()]

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


def fleet_of(driver: ScriptedDriver, **options: float) -> tuple[Fleet, list[int]]:
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
    driver = ScriptedDriver(A=DeviceHealth.UNAUTHORIZED, B=DeviceHealth.OFFLINE, C=DeviceHealth.ERROR)
    fleet, _ = fleet_of(driver)

    await fleet.refresh()

    assert states(fleet) == {"A": "unauthorized", "B": "offline", "C": "error"}
    assert driver.probes == [] and fleet.healthy_ids(set()) == []


async def test_close_abandons_a_probe_that_never_ends() -> None:
    driver = ScriptedDriver(A=DeviceHealth.ONLINE)
    driver.gates["A"] = asyncio.Event()  # never set
    fleet, _ = fleet_of(driver)
    await fleet.refresh()
    await wait_until(lambda: driver.probes == ["A"], what="the probe started")

    await asyncio.wait_for(fleet.close(), SAFETY_TIMEOUT_S)
    assert not fleet._probing
