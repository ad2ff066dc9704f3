"""The devices this worker hosts: what the driver sees, what failed locally, and the ids
the server gave them. Reports go to the server only when something changed.

Probes run in their own tasks, never inside `refresh()` (which the heartbeat calls): a
phone that takes minutes to answer must not delay the heartbeat that keeps every other
device online and every lease alive. A device serves only after its probe has passed
since it appeared ("probe before service"); until then it is reported offline with the
label `probe: pending`. A device in error is probed again every `probe_retry_s`; after
`max_probe_failures` failed probes in a row it stays in error, with the reason, until it
is unplugged and plugged in again (or the worker restarts).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import typing
import uuid
from typing import Callable

from jobsys import aio
from jobsys.models import DeviceReport, RegisteredDevice
from worker.drivers.base import DeviceDriver, DeviceError, DeviceHealth, DeviceInfo

log = logging.getLogger("jobsys.worker.fleet")

PROBE_RETRY_S = 10.0  # a device in error is probed again this often
MAX_PROBE_FAILURES = 3  # failed probes in a row before the fleet stops probing a device
REASON_LABEL_MAX = 200  # the error reason travels as the label "error"
# The states the server takes. `unauthorized` is reported as such once DeviceReport accepts
# it, and as offline (with the label adb_state) before.
REPORTABLE_STATES = frozenset(typing.get_args(DeviceReport.model_fields["state"].annotation))


class Fleet:
    def __init__(self, driver: DeviceDriver, *, on_change: Callable[[], None] | None = None,
                 probe_retry_s: float = PROBE_RETRY_S, max_probe_failures: int = MAX_PROBE_FAILURES) -> None:
        self.driver = driver
        self._on_change = on_change
        self._probe_retry_s = probe_retry_s
        self._max_probe_failures = max_probe_failures
        self._seen: dict[str, DeviceInfo] = {}
        self._ready: set[str] = set()  # probe passed since the device appeared
        self._errors: dict[str, str] = {}  # serial -> why; cleared when a probe passes
        self._failures: collections.Counter[str] = collections.Counter()  # failed probes in a row
        self._next_probe_at: dict[str, float] = {}
        self._probing: dict[str, asyncio.Task[None]] = {}
        self._ids: dict[str, uuid.UUID] = {}
        self.version = 0  # bumped on every change the server has not been told of

    async def refresh(self) -> bool:
        """Ask the driver again and start the probes that are due. Never waits on a probe.
        True when anything changed."""
        before = self.reports()
        try:
            found = await self.driver.discover()
        except DeviceError as exc:
            log.warning("device discovery failed: %s", exc)
            return False
        self._seen = {info.serial: info for info in found}
        for serial in list(self._ready | set(self._errors) | set(self._failures)):
            info = self._seen.get(serial)
            if info is None or info.health is not DeviceHealth.ONLINE:
                self._forget(serial)  # gone or not usable: probed afresh when it returns
        now = time.monotonic()
        for serial, info in self._seen.items():
            if info.health is DeviceHealth.ONLINE and self._probe_due(serial, now):
                self._probing[serial] = asyncio.create_task(self._probe(serial), name=f"probe-{serial}")
        changed = self.reports() != before
        if changed:
            self.version += 1
        return changed

    def _probe_due(self, serial: str, now: float) -> bool:
        if serial in self._probing or self._failures[serial] >= self._max_probe_failures:
            return False
        if serial not in self._ready and serial not in self._errors:
            return True  # new: probe before service
        return serial in self._errors and now >= self._next_probe_at.get(serial, 0.0)

    async def _probe(self, serial: str) -> None:
        try:
            try:
                passed, reason = await self.driver.probe(serial), "probe failed"
            except DeviceError as exc:
                passed, reason = False, str(exc)
            except Exception as exc:  # a driver bug must not end the worker: the device stays out
                log.exception("probe of %s crashed", serial)
                passed, reason = False, f"probe crashed: {type(exc).__name__}: {exc}"
            info = self._seen.get(serial)
            if info is None or info.health is not DeviceHealth.ONLINE:
                return  # it went away meanwhile
            if passed:
                if serial in self._errors:
                    log.info("device %s passed its probe; healthy again", serial)
                self._errors.pop(serial, None)
                self._failures.pop(serial, None)
                self._ready.add(serial)
            else:
                self._failures[serial] += 1
                failures = self._failures[serial]
                if failures >= self._max_probe_failures:
                    reason = f"gave up after {failures} failed probes in a row: {reason}"
                self._errors[serial] = reason
                self._next_probe_at[serial] = time.monotonic() + self._probe_retry_s
                log.warning("device %s failed its probe (%d in a row): %s", serial, failures, reason)
            self.version += 1
            if self._on_change is not None:
                self._on_change()
        finally:
            self._probing.pop(serial, None)

    def _forget(self, serial: str) -> None:
        self._ready.discard(serial)
        self._errors.pop(serial, None)
        self._failures.pop(serial, None)
        self._next_probe_at.pop(serial, None)

    async def settle(self, timeout_s: float) -> None:
        """Wait (at most timeout_s) for the probes running now, e.g. before registering."""
        if self._probing:
            await asyncio.wait(list(self._probing.values()), timeout=timeout_s)

    async def close(self) -> None:
        """Stop the probes still running (a hung phone's probe is simply abandoned)."""
        await aio.cancel_and_wait(list(self._probing.values()))

    def mark_error(self, serial: str, reason: str) -> None:
        """A run failed on the device: keep it out of work until its probe passes."""
        if serial not in self._errors:
            log.warning("device %s marked unhealthy: %s", serial, reason)
            self._errors[serial] = reason
            self._next_probe_at[serial] = time.monotonic() + self._probe_retry_s
            self.version += 1

    def reports(self) -> list[DeviceReport]:
        out = []
        for serial, info in sorted(self._seen.items()):
            labels = dict(info.labels)
            state = info.health.value
            if info.health is DeviceHealth.ONLINE:
                if serial in self._errors:
                    state = "error"
                    labels["error"] = self._errors[serial][:REASON_LABEL_MAX]
                elif serial not in self._ready:
                    state = "offline"
                    labels["probe"] = "pending"
            elif state not in REPORTABLE_STATES:
                state = DeviceHealth.OFFLINE.value
            out.append(DeviceReport(serial=serial, state=state, model=info.model,  # type: ignore[arg-type]
                                    simulated=info.simulated, labels=labels))
        return out

    def remember_ids(self, devices: list[RegisteredDevice]) -> None:
        self._ids = {d.serial: d.id for d in devices}

    def knows_all(self) -> bool:
        return all(serial in self._ids for serial in self._seen)

    def healthy_ids(self, exclude_serials: set[str]) -> list[uuid.UUID]:
        """Ids of devices that may take work now: online, probed, not in error, not busy here."""
        return [self._ids[serial] for serial, info in sorted(self._seen.items())
                if info.health is DeviceHealth.ONLINE and serial in self._ready and serial not in self._errors
                and serial not in exclude_serials and serial in self._ids]

    def error_reason(self, serial: str) -> str | None:
        return self._errors.get(serial)

    @property
    def simulated(self) -> bool:
        return self.driver.simulated
