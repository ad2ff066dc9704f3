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
    labels: dict[str, str] = dataclasses.field(default_factory=dict)


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

    async def open_url(self, request: OpenUrlRequest, should_stop: StopCheck) -> RunResult:
        """VIEW intent, keep foreground for duration_sec checking should_stop each second,
        screenshot, report. Raises DeviceError on a device fault."""

    async def close(self) -> None:
        """Release handles."""
