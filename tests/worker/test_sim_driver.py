"""The simulated driver: stable serials, runs, stops, failures and a changing fleet."""

from __future__ import annotations

import asyncio
import pathlib
import struct
import zlib
from typing import Callable

import pytest

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
