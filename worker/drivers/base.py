"""What every device driver must do.

A driver finds devices, probes their health and runs one action on one device.
It knows nothing of the database: the worker turns its answers into SQL calls.
Blocking drivers (uiautomator2) run their calls off the event loop themselves.
"""

from __future__ import annotations

import dataclasses
import enum
import pathlib
import re
from typing import Awaitable, Callable, Protocol


class DeviceHealth(str, enum.Enum):
    """Health as the worker reports it to the server (devices.state)."""

    ONLINE = "online"  # connected and probe passed: may run work
    OFFLINE = "offline"  # gone, or adb says offline
    UNAUTHORIZED = "unauthorized"  # adb sees it but may not use it: USB debugging not allowed, no permissions
    ERROR = "error"  # connected but the last probe or run failed


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    serial: str
    health: DeviceHealth
    model: str = ""
    simulated: bool = False
    # Facts about the phone, targetable by jobs: read once per phone (manufacturer, model,
    # android_version, sdk, abi) plus what adb's device list says (usb, product, ...).
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    # adb's own word for the phone (device, unauthorized, offline, no permissions, ...);
    # None for a driver without adb. Travels as vitals.adb_state, not as a label: it changes.
    adb_state: str | None = None


@dataclasses.dataclass(frozen=True)
class Vitals:
    """One reading of a phone's battery, heat and screen; None where the phone did not say."""

    battery_pct: int | None = None
    charging: bool | None = None
    temperature_c: float | None = None
    screen_on: bool | None = None


class StopReason(str, enum.Enum):
    PAUSED = "paused"  # only checked before start: running work finishes on pause
    CANCELLED = "cancelled"
    SHUTDOWN = "shutdown"


# Called about once a second during a run; returns why to stop, or None to go on.
StopCheck = Callable[[], "StopReason | None"]


@dataclasses.dataclass(frozen=True)
class OpenUrlRequest:
    serial: str
    url: str
    duration_sec: float
    evidence_dir: pathlib.Path  # where the screenshot goes (created if missing)
    evidence_name: str  # file stem, e.g. "<job>-<device>-<attempt>"


@dataclasses.dataclass(frozen=True)
class RunResult:
    """Outcome of one action. `stopped` is set when a StopCheck ended it early."""

    foreground_package: str | None
    elapsed_sec: float
    evidence_path: str | None
    stopped: StopReason | None = None
    simulated: bool = False
    packages_seen: tuple[str, ...] = ()  # every app seen in front during the run, in order

    def as_json(self) -> dict[str, object]:
        return {
            "foreground_package": self.foreground_package,
            "packages_seen": list(self.packages_seen),
            "elapsed_sec": round(self.elapsed_sec, 3),
            "evidence_path": self.evidence_path,
            "stopped": self.stopped.value if self.stopped else None,
            "simulated": self.simulated,
        }


UNSAFE_FILE_CHARS = re.compile(r'[:<>"/\\|?*\s]')  # not allowed in Windows file names


def safe_file_stem(stem: str) -> str:
    """A file name valid everywhere: network serials (host:port) carry a colon."""
    return UNSAFE_FILE_CHARS.sub("_", stem)


class DeviceError(Exception):
    """The device could not do the action; the message is shown to operators."""


class DeviceNotReady(DeviceError):
    """The device is on its way (still booting): probed again later, and not counted as a
    failed probe, so a phone plugged in mid-boot is not given up on."""


class DeviceDriver(Protocol):
    name: str
    simulated: bool

    async def discover(self) -> list[DeviceInfo]:
        """Every device this PC sees now, healthy or not."""

    def watch(self, on_change: Callable[[], Awaitable[None]]) -> Awaitable[None] | None:
        """Optional: a coroutine that calls on_change when devices come or go (None = poll)."""

    async def probe(self, serial: str) -> bool:
        """Health check before a device serves (and again while it is in error): True when
        healthy; False, or DeviceError with the reason, when not. The fleet runs probes in
        their own tasks, never inside a heartbeat."""

    async def read_vitals(self, serial: str) -> Vitals:
        """Battery, charging, temperature and screen now. The fleet calls it at most once a
        minute per phone, in its own task (never inside a heartbeat); DeviceError when the
        phone did not answer (the last reading stays)."""

    async def reboot(self, serial: str) -> None:
        """Ask the phone to restart and return; the worker then waits for it to go away,
        come back and pass its probe. DeviceError when the phone refused or is not there."""

    async def open_url(self, request: OpenUrlRequest, should_stop: StopCheck) -> RunResult:
        """VIEW intent, keep foreground for duration_sec checking should_stop each second,
        screenshot, report. Raises DeviceError on a device fault."""

    async def close(self) -> None:
        """Release handles."""
