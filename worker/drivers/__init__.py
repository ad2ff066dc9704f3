"""Device drivers: pick one by name.

The uiautomator2 driver is imported only when asked for, so the simulated demo runs
without the phone libraries installed.
"""

from __future__ import annotations

from typing import Any

from worker.drivers.base import (
    DeviceDriver,
    DeviceError,
    DeviceHealth,
    DeviceInfo,
    DeviceNotReady,
    OpenUrlRequest,
    RunResult,
    StopCheck,
    StopReason,
    Vitals,
)

DRIVER_NAMES = ("sim", "uiautomator2")

__all__ = [
    "DRIVER_NAMES",
    "DeviceDriver",
    "DeviceError",
    "DeviceHealth",
    "DeviceInfo",
    "DeviceNotReady",
    "OpenUrlRequest",
    "RunResult",
    "StopCheck",
    "StopReason",
    "Vitals",
    "create_driver",
]


def create_driver(name: str, **options: Any) -> DeviceDriver:
    """Build the driver called `name` with its constructor options."""
    if name == "sim":
        from worker.drivers import sim

        return sim.SimDriver(**options)
    if name == "uiautomator2":
        from worker.drivers import uiautomator2_driver

        return uiautomator2_driver.Uiautomator2Driver(**options)
    raise ValueError(f"unknown device driver {name!r}; expected one of {', '.join(DRIVER_NAMES)}")
