"""The simulated driver: stable serials, runs, stops, failures and a changing fleet."""

from __future__ import annotations

import asyncio
import pathlib
import struct
import zlib
from typing import Callable

import pytest

from tests.support.waiting import wait_until
from worker.drivers import base, create_driver, sim

FAST_SPEED = 1000.0  # a 5 s simulated job takes 5 ms
WAIT_TIMEOUT_S = 5.0  # safety deadline only; the awaited event normally fires at once


def make_driver(**options: object) -> sim.SimDriver:
    settings: dict[str, object] = {
        "count": 3,
        "name_seed": "pc1",
        "latency_sec": 0.0,
        "speed": FAST_SPEED,
        "seed": 7,
    }
    settings.update(options)
    return sim.SimDriver(**settings)  # type: ignore[arg-type]


def request_for(serial: str, tmp_path: pathlib.Path, duration_sec: float = 5.0) -> base.OpenUrlRequest:
    return base.OpenUrlRequest(
        serial=serial,
        url="https://example.com/",
        duration_sec=duration_sec,
        evidence_dir=tmp_path / "evidence",
        evidence_name=f"job-{serial}-1",
    )


class StopAfter:
    """A StopCheck that counts its calls and answers `reason` from call number `call` on."""

    def __init__(self, call: int | None = None, reason: base.StopReason = base.StopReason.CANCELLED,
                 on_call: Callable[[int], None] | None = None) -> None:
        self.calls = 0
        self._call = call
        self._reason = reason
        self._on_call = on_call

    def __call__(self) -> base.StopReason | None:
        self.calls += 1
        if self._on_call is not None:
            self._on_call(self.calls)
        if self._call is not None and self.calls >= self._call:
            return self._reason
        return None


def read_png(path: pathlib.Path) -> tuple[int, int, bytes]:
    """Parse the PNG strictly enough to prove it is valid: signature, CRCs, pixel data."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks = 8, []
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        kind = data[offset + 4:offset + 8]
        body = data[offset + 8:offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc
        chunks.append((kind, body))
        offset += 12 + length
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height = struct.unpack(">II", chunks[0][1][:8])
    return width, height, zlib.decompress(chunks[1][1])


@pytest.mark.asyncio
async def test_serials_are_stable_for_a_name_seed() -> None:
    first = await make_driver(seed=1).discover()
    second = await make_driver(seed=2).discover()

    assert [d.serial for d in first] == ["sim-pc1-001", "sim-pc1-002", "sim-pc1-003"]
    assert [d.serial for d in second] == [d.serial for d in first]
    assert all(d.simulated and d.health == base.DeviceHealth.ONLINE for d in first)
    assert [d.serial for d in await make_driver(name_seed="pc2").discover()][0] == "sim-pc2-001"


@pytest.mark.asyncio
async def test_open_url_checks_each_step_and_writes_a_real_png(tmp_path: pathlib.Path) -> None:
    driver = make_driver()
    stop = StopAfter()

    result = await driver.open_url(request_for("sim-pc1-001", tmp_path, duration_sec=5.0), stop)

    assert stop.calls == 5  # one check per simulated second
    assert result.stopped is None
    assert result.simulated is True
    assert result.foreground_package == "sim.browser"
    assert result.evidence_path == str(tmp_path / "evidence" / "job-sim-pc1-001-1.png")
    width, height, pixels = read_png(pathlib.Path(result.evidence_path))
    assert len(pixels) == height * (width + 1)  # one filter byte per greyscale row
    assert result.as_json()["simulated"] is True


@pytest.mark.asyncio
async def test_open_url_stops_at_the_step_where_stop_is_asked(tmp_path: pathlib.Path) -> None:
    stop = StopAfter(call=3, reason=base.StopReason.SHUTDOWN)

    result = await make_driver().open_url(request_for("sim-pc1-002", tmp_path, duration_sec=60.0), stop)

    assert stop.calls == 3
    assert result.stopped == base.StopReason.SHUTDOWN
    assert result.evidence_path is None
    assert not (tmp_path / "evidence").exists()


@pytest.mark.asyncio
async def test_failure_rate_one_always_fails_and_zero_never(tmp_path: pathlib.Path) -> None:
    with pytest.raises(base.DeviceError, match="simulated failure"):
        await make_driver(failure_rate=1.0).open_url(request_for("sim-pc1-001", tmp_path), StopAfter())

    reliable = make_driver(failure_rate=0.0)
    for _ in range(20):
        await reliable.open_url(request_for("sim-pc1-001", tmp_path, duration_sec=1.0), StopAfter())


@pytest.mark.asyncio
async def test_same_seed_gives_the_same_failures(tmp_path: pathlib.Path) -> None:
    async def outcomes(driver: sim.SimDriver) -> list[bool]:
        results = []
        for _ in range(30):
            try:
                await driver.open_url(request_for("sim-pc1-001", tmp_path, duration_sec=1.0), StopAfter())
                results.append(True)
            except base.DeviceError:
                results.append(False)
        return results

    first = await outcomes(make_driver(failure_rate=0.5, seed=42))
    second = await outcomes(make_driver(failure_rate=0.5, seed=42))

    assert first == second
    assert True in first and False in first


@pytest.mark.asyncio
async def test_devices_come_and_go(tmp_path: pathlib.Path) -> None:
    driver = make_driver(count=1)

    assert driver.add_devices(2) == ["sim-pc1-002", "sim-pc1-003"]
    driver.remove_device("sim-pc1-002")
    driver.set_health("sim-pc1-003", base.DeviceHealth.ERROR)
    assert driver.add_devices(1) == ["sim-pc1-004"]  # serials are never reused

    devices = {d.serial: d.health for d in await driver.discover()}
    assert devices == {
        "sim-pc1-001": base.DeviceHealth.ONLINE,
        "sim-pc1-003": base.DeviceHealth.ERROR,
        "sim-pc1-004": base.DeviceHealth.ONLINE,
    }
    assert await driver.probe("sim-pc1-001") is True
    assert await driver.probe("sim-pc1-003") is False
    assert await driver.probe("sim-pc1-002") is False
    with pytest.raises(base.DeviceError, match="not connected"):
        await driver.open_url(request_for("sim-pc1-002", tmp_path), StopAfter())
    with pytest.raises(base.DeviceError, match="error"):
        await driver.open_url(request_for("sim-pc1-003", tmp_path), StopAfter())


@pytest.mark.asyncio
async def test_unplugging_during_a_run_fails_it(tmp_path: pathlib.Path) -> None:
    driver = make_driver()

    def unplug_on_second_check(call: int) -> None:
        if call == 2:
            driver.remove_device("sim-pc1-001")

    stop = StopAfter(on_call=unplug_on_second_check)
    with pytest.raises(base.DeviceError, match="not connected"):
        await driver.open_url(request_for("sim-pc1-001", tmp_path, duration_sec=10.0), stop)
    assert stop.calls == 2


@pytest.mark.asyncio
async def test_watch_reports_fleet_changes() -> None:
    driver = make_driver(count=1)
    seen: list[list[str]] = []
    changed = asyncio.Event()

    async def on_change() -> None:
        seen.append([d.serial for d in await driver.discover()])
        changed.set()

    watcher = driver.watch(on_change)
    assert watcher is not None
    task = asyncio.ensure_future(watcher)
    try:
        driver.add_devices(1)
        await asyncio.wait_for(changed.wait(), WAIT_TIMEOUT_S)
        changed.clear()
        driver.remove_device("sim-pc1-001")
        await asyncio.wait_for(changed.wait(), WAIT_TIMEOUT_S)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert seen == [["sim-pc1-001", "sim-pc1-002"], ["sim-pc1-002"]]


def test_create_driver_builds_by_name() -> None:
    driver = create_driver("sim", count=2, name_seed="lab")
    assert isinstance(driver, sim.SimDriver)
    assert driver.simulated is True and driver.serials == ["sim-lab-001", "sim-lab-002"]
    with pytest.raises(ValueError, match="unknown device driver"):
        create_driver("appium")


# --- labels, battery and heat, reboot ------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.asyncio
async def test_simulated_devices_report_fixed_labels_jobs_can_target() -> None:
    [device] = await make_driver(count=1).discover()

    assert device.labels == {"driver": "sim", "manufacturer": "jobsys", "model": "Simulated",
                             "android_version": "14", "sdk": "34", "abi": "x86_64"}


@pytest.mark.asyncio
async def test_a_run_drains_and_heats_per_second_and_an_idle_phone_charges_and_cools(tmp_path: pathlib.Path) -> None:
    clock = FakeClock()
    model = sim.SimVitalsModel(battery_pct=50.0, temperature_c=30.0, ambient_c=30.0, drain_pct_per_s=1.0,
                               charge_pct_per_s=0.5, heat_c_per_s=0.5, cool_c_per_s=0.25)
    fast = make_driver(count=1, vitals=model, clock=clock, speed=FAST_SPEED)  # the clock stands still
    serial = "sim-pc1-001"
    assert await fast.read_vitals(serial) == base.Vitals(battery_pct=50, charging=True, temperature_c=30.0,
                                                         screen_on=False)
    during: list[base.Vitals] = []

    async def look() -> None:
        during.append(await fast.read_vitals(serial))

    looks: list[asyncio.Task[None]] = []
    # At the fifth check: read while the run goes on (the look runs at the run's next step).
    stop = StopAfter(on_call=lambda call: looks.append(asyncio.ensure_future(look())) if call == 5 else None)
    await fast.open_url(request_for(serial, tmp_path, duration_sec=10.0), stop)
    await asyncio.gather(*looks)
    # 4 seconds run by then; running: screen on, not charging
    assert during == [base.Vitals(battery_pct=46, charging=False, temperature_c=32.0, screen_on=True)]
    after_run = await fast.read_vitals(serial)
    assert after_run == base.Vitals(battery_pct=40, charging=True, temperature_c=35.0, screen_on=False)

    clock.now += 8.0 / FAST_SPEED  # 8 device seconds idle
    assert await fast.read_vitals(serial) == base.Vitals(battery_pct=44, charging=True, temperature_c=33.0,
                                                         screen_on=False)
    clock.now += 1000.0 / FAST_SPEED  # long idle: full, and no cooler than the room
    assert await fast.read_vitals(serial) == base.Vitals(battery_pct=100, charging=True, temperature_c=30.0,
                                                         screen_on=False)


@pytest.mark.asyncio
async def test_a_test_can_drive_a_phone_below_the_battery_floor_and_above_the_heat_ceiling_and_back() -> None:
    clock = FakeClock()
    model = sim.SimVitalsModel(charge_pct_per_s=1.0, cool_c_per_s=0.5)
    driver = make_driver(count=2, vitals=model, clock=clock, speed=1.0)

    driver.set_vitals("sim-pc1-001", battery_pct=10.0)
    driver.set_vitals("sim-pc1-002", temperature_c=47.0)
    low, hot = await driver.read_vitals("sim-pc1-001"), await driver.read_vitals("sim-pc1-002")
    assert low.battery_pct == 10 and hot.temperature_c == 47.0
    assert (await driver.read_vitals("sim-pc1-001")).temperature_c == 30.0  # the other values are untouched

    clock.now += 5.0  # idle: charging and cooling
    low, hot = await driver.read_vitals("sim-pc1-001"), await driver.read_vitals("sim-pc1-002")
    assert low.battery_pct == 15 and hot.temperature_c == 44.5


@pytest.mark.asyncio
async def test_a_reboot_takes_the_device_offline_and_it_comes_back() -> None:
    driver = make_driver(count=2, reboot_s=20.0)  # 20 ms at FAST_SPEED

    await driver.reboot("sim-pc1-001")
    health = {d.serial: d.health for d in await driver.discover()}
    assert health == {"sim-pc1-001": base.DeviceHealth.OFFLINE, "sim-pc1-002": base.DeviceHealth.ONLINE}
    assert await driver.probe("sim-pc1-001") is False and driver.reboots == ["sim-pc1-001"]
    with pytest.raises(base.DeviceError, match="offline"):
        await driver.reboot("sim-pc1-001")  # not while it is down

    await wait_until(lambda: driver.probe("sim-pc1-001"), timeout_s=WAIT_TIMEOUT_S, what="back after the reboot")
    assert driver.reboots == ["sim-pc1-001"]


@pytest.mark.asyncio
async def test_a_device_set_never_to_come_back_stays_offline_and_an_unplugged_one_cannot_reboot() -> None:
    driver = make_driver(count=2, reboot_s=float("inf"))

    await driver.reboot("sim-pc1-001")
    assert not driver._returns and await driver.probe("sim-pc1-001") is False

    driver.remove_device("sim-pc1-002")
    with pytest.raises(base.DeviceError, match="not connected"):
        await driver.reboot("sim-pc1-002")
    await driver.close()
