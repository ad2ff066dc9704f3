"""Simulated devices for the demo, tests and benchmarks.

Every result is labelled simulated so the dashboard never passes them off as phones.
`speed` compresses time (speed=100 runs a 5 s job in 50 ms) and `seed` makes the
latency and failure draws repeatable. Devices can be added, removed and marked
unhealthy at runtime so tests can play phones coming and going.
"""

from __future__ import annotations

import asyncio
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
            serials.append(serial)
        if serials:
            self._notify()
        return serials

    def remove_device(self, serial: str) -> None:
        """Unplug: the device vanishes from discover() and a run on it fails."""
        self._health.pop(serial, None)
        self._notify()

    def set_health(self, serial: str, health: base.DeviceHealth) -> None:
        if serial not in self._health:
            raise KeyError(serial)
        self._health[serial] = health
        self._notify()

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
                labels={"driver": self.name},
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

    async def open_url(
        self, request: base.OpenUrlRequest, should_stop: base.StopCheck
    ) -> base.RunResult:
        started = time.monotonic()
        self._require_online(request.serial)
        will_fail = self._random.random() < self._failure_rate
        await self._sleep(self._draw_latency_s())
        if will_fail:
            raise base.DeviceError(f"simulated failure on {request.serial}")

        remaining_s = max(request.duration_sec, 0.0)
        while remaining_s > 0:
            reason = should_stop()
            if reason is not None:
                return self._result(started, None, stopped=reason)
            step_s = min(STEP_S, remaining_s)
            await self._sleep(step_s)
            remaining_s -= step_s
            self._require_online(request.serial)  # a phone unplugged mid-run fails it

        evidence = write_evidence_png(request.evidence_dir, request.evidence_name)
        return self._result(started, str(evidence))

    async def close(self) -> None:
        return None

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
