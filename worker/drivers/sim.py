"""Simulated devices for the demo, tests and benchmarks.

Every result is labelled simulated so the dashboard never passes them off as phones.
`speed` compresses time (speed=100 runs a 5 s job in 50 ms) and `seed` makes the
latency and failure draws repeatable. Devices can be added, removed and marked
unhealthy at runtime so tests can play phones coming and going.

Battery and heat are modelled deterministically (SimVitalsModel): every device second of a
run drains the battery and warms the phone; an idle phone charges and cools, on the clock
(scaled by `speed`). `set_vitals` puts one phone anywhere (low battery, hot) so tests can
exercise the server's battery and heat rules and watch the phone recover. A reboot takes
the device offline for `reboot_s` device seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import pathlib
import random
import struct
import time
import zlib
from typing import Awaitable, Callable

from worker.drivers import base

STEP_S = 1.0  # how often a run checks should_stop, in device seconds
DEFAULT_LATENCY_S = (0.05, 0.3)  # intent start-up, in device seconds
FOREGROUND_PACKAGE = "sim.browser"
SIM_MODEL = "Simulated device"
EVIDENCE_SIZE_PX = 8
REBOOT_S = 20.0  # device seconds a simulated reboot keeps the device offline
# What a real driver reads with getprop, fixed so jobs can target them in tests.
SIM_LABELS = {"manufacturer": "jobsys", "model": "Simulated", "android_version": "14", "sdk": "34",
              "abi": "x86_64"}


@dataclasses.dataclass(frozen=True)
class SimVitalsModel:
    """Starting values and rates, per device second. The defaults keep a phone well inside
    the server's limits (15 %, 45 °C) for hours of running; tests choose their own."""

    battery_pct: float = 80.0
    temperature_c: float = 30.0
    ambient_c: float = 30.0  # an idle phone cools down to this
    max_temperature_c: float = 50.0  # a running phone heats up to this at most
    drain_pct_per_s: float = 0.01  # while running
    charge_pct_per_s: float = 0.02  # while idle (on USB)
    heat_c_per_s: float = 0.01  # while running
    cool_c_per_s: float = 0.05  # while idle


@dataclasses.dataclass
class _SimVitals:
    battery_pct: float
    temperature_c: float
    idle_since: float | None  # device time the phone last went idle; None while running


class SimDriver:
    name = "sim"
    simulated = True

    def __init__(
        self,
        count: int,
        name_seed: str,
        latency_sec: float | tuple[float, float] = DEFAULT_LATENCY_S,
        failure_rate: float = 0.0,
        speed: float = 1.0,
        seed: int | None = None,
        vitals: SimVitalsModel | None = None,
        reboot_s: float = REBOOT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError("failure_rate must be within 0..1")
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self._name_seed = name_seed
        self._latency_sec = latency_sec
        self._failure_rate = failure_rate
        self._speed = speed
        self._random = random.Random(seed)
        self._model = vitals or SimVitalsModel()
        self.reboot_s = reboot_s  # inf: a rebooted device never comes back (tests)
        self.reboots: list[str] = []  # serials rebooted, in order
        self._clock = clock
        self._vitals: dict[str, _SimVitals] = {}
        self._returns: dict[str, asyncio.TimerHandle] = {}  # rebooting serial -> its return
        self._health: dict[str, base.DeviceHealth] = {}  # insertion order = serial order
        self._next_index = 1
        self._changed: asyncio.Event | None = None
        self.add_devices(count)

    # --- runtime fleet changes (tests, demo) -------------------------------------------

    def add_devices(self, n: int) -> list[str]:
        """Plug in n more devices; serials continue the numbering, never reuse one."""
        serials = []
        for _ in range(n):
            serial = f"sim-{self._name_seed}-{self._next_index:03d}"
            self._next_index += 1
            self._health[serial] = base.DeviceHealth.ONLINE
            self._vitals[serial] = _SimVitals(self._model.battery_pct, self._model.temperature_c, self._now())
            serials.append(serial)
        if serials:
            self._notify()
        return serials

    def remove_device(self, serial: str) -> None:
        """Unplug: the device vanishes from discover() and a run on it fails."""
        self._health.pop(serial, None)
        self._vitals.pop(serial, None)
        handle = self._returns.pop(serial, None)
        if handle is not None:
            handle.cancel()
        self._notify()

    def set_health(self, serial: str, health: base.DeviceHealth) -> None:
        if serial not in self._health:
            raise KeyError(serial)
        self._health[serial] = health
        self._notify()

    def set_vitals(self, serial: str, *, battery_pct: float | None = None,
                   temperature_c: float | None = None) -> None:
        """Put one phone's battery or temperature anywhere (a low battery, a hot phone); the
        model goes on from there."""
        vitals = self._settled(serial)
        if battery_pct is not None:
            vitals.battery_pct = battery_pct
        if temperature_c is not None:
            vitals.temperature_c = temperature_c

    @property
    def serials(self) -> list[str]:
        return list(self._health)

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    # --- DeviceDriver -----------------------------------------------------------------

    async def discover(self) -> list[base.DeviceInfo]:
        return [
            base.DeviceInfo(
                serial=serial,
                health=health,
                model=SIM_MODEL,
                simulated=True,
                labels={"driver": self.name, **SIM_LABELS},
            )
            for serial, health in self._health.items()
        ]

    def watch(self, on_change: Callable[[], Awaitable[None]]) -> Awaitable[None] | None:
        # The event exists from this call on, so no change made before the task runs is lost.
        self._changed = changed = asyncio.Event()
        return self._watch(changed, on_change)

    async def _watch(self, changed: asyncio.Event, on_change: Callable[[], Awaitable[None]]) -> None:
        try:
            while True:
                await changed.wait()
                changed.clear()
                await on_change()
        finally:
            if self._changed is changed:
                self._changed = None

    async def probe(self, serial: str) -> bool:
        return self._health.get(serial) == base.DeviceHealth.ONLINE

    async def read_vitals(self, serial: str) -> base.Vitals:
        self._require_online(serial)
        vitals = self._settled(serial)
        running = vitals.idle_since is None
        return base.Vitals(battery_pct=round(vitals.battery_pct), charging=not running,
                           temperature_c=round(vitals.temperature_c, 1), screen_on=running)

    async def reboot(self, serial: str) -> None:
        """Offline now, online again after reboot_s device seconds (never, for inf)."""
        self._require_online(serial)
        self.reboots.append(serial)
        self.set_health(serial, base.DeviceHealth.OFFLINE)
        if math.isfinite(self.reboot_s):
            loop = asyncio.get_running_loop()
            self._returns[serial] = loop.call_later(self.reboot_s / self._speed, self._back, serial)

    def _back(self, serial: str) -> None:
        self._returns.pop(serial, None)
        if serial in self._health:  # not unplugged meanwhile
            self.set_health(serial, base.DeviceHealth.ONLINE)

    async def open_url(
        self, request: base.OpenUrlRequest, should_stop: base.StopCheck
    ) -> base.RunResult:
        started = time.monotonic()
        self._require_online(request.serial)
        will_fail = self._random.random() < self._failure_rate
        await self._sleep(self._draw_latency_s())
        if will_fail:
            raise base.DeviceError(f"simulated failure on {request.serial}")

        self._settled(request.serial).idle_since = None  # running: drains and heats per step
        try:
            remaining_s = max(request.duration_sec, 0.0)
            while remaining_s > 0:
                reason = should_stop()
                if reason is not None:
                    return self._result(started, None, stopped=reason)
                step_s = min(STEP_S, remaining_s)
                await self._sleep(step_s)
                remaining_s -= step_s
                self._ran(request.serial, step_s)
                self._require_online(request.serial)  # a phone unplugged mid-run fails it

            evidence = write_evidence_png(request.evidence_dir, request.evidence_name)
            return self._result(started, str(evidence))
        finally:
            vitals = self._vitals.get(request.serial)
            if vitals is not None:
                vitals.idle_since = self._now()

    async def close(self) -> None:
        for handle in self._returns.values():
            handle.cancel()
        self._returns.clear()

    # --- the battery and heat model ----------------------------------------------------

    def _now(self) -> float:
        """Device time: the clock scaled by speed."""
        return self._clock() * self._speed

    def _settled(self, serial: str) -> _SimVitals:
        """The phone's vitals brought up to now: idle time since the last look charges and cools it."""
        vitals = self._vitals.get(serial)
        if vitals is None:
            raise base.DeviceError(f"simulated device {serial} is not connected")
        if vitals.idle_since is not None:
            now = self._now()
            idle_s = max(now - vitals.idle_since, 0.0)
            vitals.idle_since = now
            model = self._model
            vitals.battery_pct = min(vitals.battery_pct + model.charge_pct_per_s * idle_s, 100.0)
            if vitals.temperature_c > model.ambient_c:
                vitals.temperature_c = max(vitals.temperature_c - model.cool_c_per_s * idle_s, model.ambient_c)
        return vitals

    def _ran(self, serial: str, device_s: float) -> None:
        """device_s seconds of a run: counted in steps, so the same run always costs the same."""
        vitals = self._vitals.get(serial)
        if vitals is None:
            return
        model = self._model
        vitals.battery_pct = max(vitals.battery_pct - model.drain_pct_per_s * device_s, 0.0)
        if vitals.temperature_c < model.max_temperature_c:
            vitals.temperature_c = min(vitals.temperature_c + model.heat_c_per_s * device_s,
                                       model.max_temperature_c)

    # --- helpers ----------------------------------------------------------------------

    def _require_online(self, serial: str) -> None:
        health = self._health.get(serial)
        if health is None:
            raise base.DeviceError(f"simulated device {serial} is not connected")
        if health != base.DeviceHealth.ONLINE:
            raise base.DeviceError(f"simulated device {serial} is {health.value}")

    def _draw_latency_s(self) -> float:
        if isinstance(self._latency_sec, tuple):
            low_s, high_s = self._latency_sec
            return self._random.uniform(low_s, high_s)
        return float(self._latency_sec)

    async def _sleep(self, device_s: float) -> None:
        await asyncio.sleep(device_s / self._speed)

    def _result(
        self,
        started: float,
        evidence_path: str | None,
        stopped: base.StopReason | None = None,
    ) -> base.RunResult:
        return base.RunResult(
            foreground_package=FOREGROUND_PACKAGE,
            elapsed_sec=(time.monotonic() - started) * self._speed,  # in device seconds
            evidence_path=evidence_path,
            stopped=stopped,
            simulated=True,
        )


def write_evidence_png(directory: pathlib.Path, stem: str) -> pathlib.Path:
    """Write a tiny real PNG so evidence handling is exercised end to end without Pillow."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}.png"
    path.write_bytes(_png_bytes(EVIDENCE_SIZE_PX, EVIDENCE_SIZE_PX))
    return path


def _png_bytes(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    # 8-bit greyscale, a diagonal gradient; each row starts with filter type 0.
    rows = b"".join(
        b"\x00" + bytes((x + y) * 255 // (width + height - 2 or 1) for x in range(width))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
