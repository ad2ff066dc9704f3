"""The devices this worker hosts: what the driver sees, what failed locally, and the ids
the server gave them. Reports go to the server only when something changed."""

from __future__ import annotations

import logging
import uuid

from jobsys.models import DeviceReport, RegisteredDevice
from worker.drivers.base import DeviceDriver, DeviceError, DeviceHealth, DeviceInfo

log = logging.getLogger("jobsys.worker.fleet")


class Fleet:
    def __init__(self, driver: DeviceDriver) -> None:
        self.driver = driver
        self._seen: dict[str, DeviceInfo] = {}
        self._errors: dict[str, str] = {}  # serial -> why; cleared when the probe passes
        self._ids: dict[str, uuid.UUID] = {}
        self.version = 0  # bumped on every change the server has not been told of

    async def refresh(self) -> bool:
        """Ask the driver again and re-probe devices in error. True when anything changed."""
        before = self.reports()
        try:
            found = await self.driver.discover()
        except DeviceError as exc:
            log.warning("device discovery failed: %s", exc)
            return False
        self._seen = {info.serial: info for info in found}
        for serial in list(self._errors):
            info = self._seen.get(serial)
            if info is None or info.health is not DeviceHealth.ONLINE:
                continue
            if await self.driver.probe(serial):
                log.info("device %s passed its probe; healthy again", serial)
                del self._errors[serial]
        changed = self.reports() != before
        if changed:
            self.version += 1
        return changed

    def mark_error(self, serial: str, reason: str) -> None:
        """A run failed on the device: keep it out of work until its probe passes."""
        if serial not in self._errors:
            log.warning("device %s marked unhealthy: %s", serial, reason)
            self._errors[serial] = reason
            self.version += 1

    def reports(self) -> list[DeviceReport]:
        out = []
        for serial, info in sorted(self._seen.items()):
            state = "error" if serial in self._errors and info.health is DeviceHealth.ONLINE else info.health.value
            out.append(DeviceReport(serial=serial, state=state, model=info.model,  # type: ignore[arg-type]
                                    simulated=info.simulated, labels=dict(info.labels)))
        return out

    def remember_ids(self, devices: list[RegisteredDevice]) -> None:
        self._ids = {d.serial: d.id for d in devices}

    def knows_all(self) -> bool:
        return all(serial in self._ids for serial in self._seen)

    def healthy_ids(self, exclude_serials: set[str]) -> list[uuid.UUID]:
        """Ids of devices that may take work now: online, not in error, not busy here."""
        return [self._ids[serial] for serial, info in sorted(self._seen.items())
                if info.health is DeviceHealth.ONLINE and serial not in self._errors
                and serial not in exclude_serials and serial in self._ids]

    @property
    def simulated(self) -> bool:
        return self.driver.simulated
