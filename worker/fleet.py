"""The devices this worker hosts: what the driver sees, what failed locally, and the ids
the server gave them. Reports go to the server only when something changed.

Probes run in their own tasks, never inside `refresh()` (which the heartbeat calls): a
phone that takes minutes to answer must not delay the heartbeat that keeps every other
device online and every lease alive. A device serves only after its probe has passed
since it appeared ("probe before service"); until then it is reported offline with the
label `probe: pending`. A device in error is probed again every `probe_retry_s`; after
`max_probe_failures` failed probes in a row it stays in error, with the reason, until it
is unplugged and plugged in again (or the worker restarts).

Vitals (battery, charging, temperature, screen) are read the same way: in their own task,
at most once every `vitals_interval_s` per phone (the first right after its probe passes, so
the report that brings the phone online carries them); a failed read keeps the last one. A
state change is reported at once; a change of vitals alone at most once every
`vitals_report_s` for the whole worker, so a fleet of phones whose batteries tick does not
turn every heartbeat into a device report.

A phone being rebooted (begin_reboot .. end_reboot) takes no work, is reported offline with
the label `reboot: in progress` and is not probed by the fleet: the worker's reboot task
waits for it and probes it itself.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import time
import typing
import uuid
from typing import Callable

from jobsys import aio
from jobsys.models import DeviceReport, DeviceVitals, RegisteredDevice
from worker.drivers.base import DeviceDriver, DeviceError, DeviceHealth, DeviceInfo, DeviceNotReady, Vitals

log = logging.getLogger("jobsys.worker.fleet")

PROBE_RETRY_S = 10.0  # a device in error is probed again this often
MAX_PROBE_FAILURES = 3  # failed probes in a row before the fleet stops probing a device
REASON_LABEL_MAX = 200  # the error reason travels as the label "error"
VITALS_INTERVAL_S = 60.0  # per phone: dumpsys battery is cheap, but not every heartbeat
VITALS_REPORT_S = 60.0  # per worker: vitals alone never send reports more often than this
ADB_STATE_MAX_CHARS = 32  # DeviceVitals.adb_state
TEMPERATURE_RANGE_C = (-40.0, 150.0)  # DeviceVitals.temperature_c; a reading outside is a misread
# The states the server takes (unauthorized included: adb lists the phone, this PC may not
# use it; vitals.adb_state says which); anything else a driver says is reported offline.
REPORTABLE_STATES = frozenset(typing.get_args(DeviceReport.model_fields["state"].annotation))


@dataclasses.dataclass(frozen=True)
class Outbox:
    """Device reports for one registration or heartbeat, and the changes they carry."""

    reports: list[DeviceReport]
    version: int
    vitals_version: int


class Fleet:
    def __init__(self, driver: DeviceDriver, *, on_change: Callable[[], None] | None = None,
                 probe_retry_s: float = PROBE_RETRY_S, max_probe_failures: int = MAX_PROBE_FAILURES,
                 labels: dict[str, str] | None = None, vitals_interval_s: float = VITALS_INTERVAL_S,
                 vitals_report_s: float = VITALS_REPORT_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.driver = driver
        self._on_change = on_change
        self._probe_retry_s = probe_retry_s
        self._max_probe_failures = max_probe_failures
        self._labels = dict(labels or {})  # added to every device's (the worker's name as `pc`)
        self._vitals_interval_s = vitals_interval_s
        self._vitals_report_s = vitals_report_s
        self._clock = clock
        self._vitals: dict[str, Vitals] = {}  # serial -> last reading, while online
        self._vitals_due_at: dict[str, float] = {}
        self._reading: dict[str, asyncio.Task[None]] = {}
        # Serials held for a reboot -> whether any refresh since saw them gone (not online): right
        # after the command a phone still answers as before, so only a phone seen gone is back.
        self._rebooting: dict[str, bool] = {}
        self._seen: dict[str, DeviceInfo] = {}
        self._ready: set[str] = set()  # probe passed since the device appeared
        self._errors: dict[str, str] = {}  # serial -> why; cleared when a probe passes
        self._waiting: dict[str, str] = {}  # serial -> why its probe said "not yet" (booting)
        self._failures: collections.Counter[str] = collections.Counter()  # failed probes in a row
        self._next_probe_at: dict[str, float] = {}
        self._probing: dict[str, asyncio.Task[None]] = {}
        self._ids: dict[str, uuid.UUID] = {}
        self.version = 0  # bumped on every change of state or labels: reported at once
        self.vitals_version = 0  # bumped when a reading changed: reported at most every vitals_report_s
        self._reported: tuple[int, int] | None = None  # (version, vitals_version) the server has
        self._reported_at = -math.inf

    async def refresh(self) -> bool:
        """Ask the driver again and start the probes that are due. Never waits on a probe.
        True when anything changed."""
        before = self._states()
        try:
            found = await self.driver.discover()
        except DeviceError as exc:
            log.warning("device discovery failed: %s", exc)
            return False
        self._seen = {info.serial: info for info in found}
        for serial in self._rebooting:
            info = self._seen.get(serial)
            if info is None or info.health is not DeviceHealth.ONLINE:
                self._rebooting[serial] = True
        for serial in list(self._ready | set(self._errors) | set(self._failures) | set(self._vitals)
                           | set(self._waiting)):
            info = self._seen.get(serial)
            if info is None or info.health is not DeviceHealth.ONLINE:
                self._forget(serial)  # gone or not usable: probed afresh when it returns
        now = self._clock()
        for serial, info in self._seen.items():
            if info.health is not DeviceHealth.ONLINE:
                continue
            if self._probe_due(serial, now):
                self._probing[serial] = asyncio.create_task(self._probe(serial), name=f"probe-{serial}")
            elif self._vitals_due(serial, now):
                self._reading[serial] = asyncio.create_task(self._read_vitals(serial), name=f"vitals-{serial}")
        changed = self._states() != before
        if changed:
            self.version += 1
        return changed

    async def _relist(self, serial: str) -> None:
        """Read the driver's list again and keep only this device's entry. A whole refresh
        here rebuilt every device's report twice per passed probe (500 phones: ~7 s to
        register). A device found gone or no longer online is a change to report now: the
        next refresh compares against this entry and would not see it."""
        try:
            found = await self.driver.discover()
        except DeviceError:
            return  # the next refresh learns it
        info = next((i for i in found if i.serial == serial), None)
        if info is None:
            self._seen.pop(serial, None)  # the probe's answer is stale; the next refresh forgets the rest
        else:
            self._seen[serial] = info
        if info is None or info.health is not DeviceHealth.ONLINE:
            if serial in self._rebooting:
                self._rebooting[serial] = True
            self.version += 1
            if self._on_change is not None:
                self._on_change()

    def _probe_due(self, serial: str, now: float) -> bool:
        if (serial in self._probing or serial in self._rebooting
                or self._failures[serial] >= self._max_probe_failures):
            return False
        if serial not in self._ready and serial not in self._errors:
            return now >= self._next_probe_at.get(serial, -math.inf)  # new or booting: probe before service
        return serial in self._errors and now >= self._next_probe_at.get(serial, 0.0)

    async def _probe(self, serial: str) -> None:
        try:
            try:
                passed, reason = await self.driver.probe(serial), "probe failed"
            except DeviceNotReady as exc:  # not a failure: asked again at the retry interval
                if serial in self._seen and serial not in self._rebooting:
                    self._next_probe_at[serial] = self._clock() + self._probe_retry_s
                    if self._waiting.get(serial) != str(exc):  # reported and logged when it says anything new
                        self._waiting[serial] = str(exc)
                        self.version += 1
                        log.info("device %s is not ready yet: %s", serial, exc)
                return
            except DeviceError as exc:
                passed, reason = False, str(exc)
            except Exception as exc:  # a driver bug must not end the worker: the device stays out
                log.exception("probe of %s crashed", serial)
                passed, reason = False, f"probe crashed: {type(exc).__name__}: {exc}"
            if passed:  # what the probe learnt (the phone's labels) goes with the report bringing it online
                await self._relist(serial)
            info = self._seen.get(serial)
            if info is None or info.health is not DeviceHealth.ONLINE or serial in self._rebooting:
                return  # it went away meanwhile, or a reboot began: that answer is stale
            self._waiting.pop(serial, None)
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
                self._next_probe_at[serial] = self._clock() + self._probe_retry_s
                log.warning("device %s failed its probe (%d in a row): %s", serial, failures, reason)
            self.version += 1
            if passed and self._vitals_due(serial, self._clock(), probing=True):
                await self._read_vitals(serial)  # the report this probe brings carries them
            if self._on_change is not None:
                self._on_change()
        finally:
            self._probing.pop(serial, None)

    def _vitals_due(self, serial: str, now: float, probing: bool = False) -> bool:
        """Probed (passed or failed: an overheating phone in error is worth watching), not
        being probed or rebooted, no read in flight, and the last read long enough ago."""
        if (serial not in self._ready and serial not in self._errors) or serial in self._rebooting:
            return False
        if serial in self._reading or (serial in self._probing and not probing):
            return False
        return now >= self._vitals_due_at.get(serial, -math.inf)

    async def _read_vitals(self, serial: str) -> None:
        self._vitals_due_at[serial] = self._clock() + self._vitals_interval_s  # failed reads wait too
        try:
            reading = await self.driver.read_vitals(serial)
        except DeviceError as exc:
            log.info("device %s: vitals not read (%s); the last reading stays", serial, exc)
            return
        except Exception:  # a driver bug costs a reading, never the worker
            log.exception("reading the vitals of %s crashed", serial)
            return
        finally:
            if asyncio.current_task() is self._reading.get(serial):
                del self._reading[serial]
        info = self._seen.get(serial)
        if info is None or info.health is not DeviceHealth.ONLINE or serial in self._rebooting:
            return
        if self._vitals.get(serial) != reading:
            self._vitals[serial] = reading
            self.vitals_version += 1

    def _forget(self, serial: str) -> None:
        self._ready.discard(serial)
        self._errors.pop(serial, None)
        self._waiting.pop(serial, None)
        self._failures.pop(serial, None)
        self._next_probe_at.pop(serial, None)
        self._vitals.pop(serial, None)  # a reading from before it left says nothing now
        self._vitals_due_at.pop(serial, None)

    async def settle(self, timeout_s: float) -> None:
        """Wait (at most timeout_s) for the probes running now, e.g. before registering."""
        if self._probing:
            await asyncio.wait(list(self._probing.values()), timeout=timeout_s)

    async def close(self) -> None:
        """Stop the probes and reads still running (a hung phone's are simply abandoned)."""
        await aio.cancel_and_wait([*self._probing.values(), *self._reading.values()])

    def mark_error(self, serial: str, reason: str) -> None:
        """A run failed on the device: keep it out of work until its probe passes."""
        if serial not in self._errors:
            log.warning("device %s marked unhealthy: %s", serial, reason)
            self._errors[serial] = reason
            self._next_probe_at[serial] = self._clock() + self._probe_retry_s
            self.version += 1

    # Rebooting -----------------------------------------------------------------------------
    def begin_reboot(self, serial: str) -> None:
        """Out of work from now on and not probed here: it must pass a probe after it is back."""
        self._rebooting[serial] = False
        self._forget(serial)
        self.version += 1

    def end_reboot(self, serial: str, passed: bool) -> None:
        """The reboot is over: passed, the worker's own probe passed, so it serves again at
        once; else the fleet probes it as any other phone (when adb lists it)."""
        self._rebooting.pop(serial, None)
        if passed and serial in self._seen:
            self._errors.pop(serial, None)
            self._failures.pop(serial, None)
            self._ready.add(serial)
        self.version += 1
        if self._on_change is not None:
            self._on_change()

    def gone_since_reboot(self, serial: str) -> bool:
        """Whether a refresh since begin_reboot saw the device gone (offline or not listed)."""
        return self._rebooting.get(serial, False)

    def health(self, serial: str) -> DeviceHealth | None:
        """What the driver said at the last refresh (or a passed probe's re-read); None when it
        did not list the device."""
        info = self._seen.get(serial)
        return None if info is None else info.health

    # Reports -------------------------------------------------------------------------------
    def reports(self) -> list[DeviceReport]:
        return [self._report(serial, info, with_vitals=True) for serial, info in sorted(self._seen.items())]

    def _states(self) -> list[DeviceReport]:
        """The reports without vitals: what a change must be reported at once for."""
        return [self._report(serial, info, with_vitals=False) for serial, info in sorted(self._seen.items())]

    def _report(self, serial: str, info: DeviceInfo, with_vitals: bool) -> DeviceReport:
        labels = {**info.labels, **self._labels}
        state = info.health.value
        if serial in self._rebooting:
            state = DeviceHealth.OFFLINE.value
            labels["reboot"] = "in progress"
        elif info.health is DeviceHealth.ONLINE:
            if serial in self._errors:
                state = "error"
                labels["error"] = self._errors[serial][:REASON_LABEL_MAX]
            elif serial not in self._ready:
                state = "offline"
                waiting = self._waiting.get(serial)
                labels["probe"] = "pending" if waiting is None else f"pending: {waiting}"[:REASON_LABEL_MAX]
        elif state not in REPORTABLE_STATES:
            state = DeviceHealth.OFFLINE.value
        return DeviceReport(serial=serial, state=state, model=info.model,  # type: ignore[arg-type]
                            simulated=info.simulated, labels=labels,
                            vitals=self._vitals_report(serial, info) if with_vitals else None)

    def _vitals_report(self, serial: str, info: DeviceInfo) -> DeviceVitals | None:
        """The last reading (dropped when the phone left) and adb's word, within the model's bounds:
        a misread value is left out rather than refused with the whole report."""
        reading = self._vitals.get(serial)
        adb_state = info.adb_state[:ADB_STATE_MAX_CHARS] if info.adb_state else None
        if reading is None:
            return None if adb_state is None else DeviceVitals(adb_state=adb_state)
        temperature = reading.temperature_c
        if temperature is not None and not TEMPERATURE_RANGE_C[0] <= temperature <= TEMPERATURE_RANGE_C[1]:
            temperature = None
        battery = None if reading.battery_pct is None else min(max(int(reading.battery_pct), 0), 100)
        return DeviceVitals(battery_pct=battery, charging=reading.charging, temperature_c=temperature,
                            screen_on=reading.screen_on, adb_state=adb_state)

    def snapshot(self) -> Outbox:
        """Every device's report now (registration sends it whole)."""
        return Outbox(self.reports(), self.version, self.vitals_version)

    def outbox(self, force: bool = False) -> Outbox | None:
        """What this heartbeat should send: None when the server knows it all, or when only
        vitals changed and the last report went less than vitals_report_s ago."""
        reported = self._reported
        state_changed = reported is None or reported[0] != self.version
        vitals_changed = reported is None or reported[1] != self.vitals_version
        vitals_due = vitals_changed and self._clock() - self._reported_at >= self._vitals_report_s
        return self.snapshot() if force or state_changed or vitals_due else None

    def reported(self, outbox: Outbox) -> None:
        """The server took these reports."""
        self._reported = (outbox.version, outbox.vitals_version)
        self._reported_at = self._clock()

    def remember_ids(self, devices: list[RegisteredDevice]) -> None:
        self._ids = {d.serial: d.id for d in devices}

    def serial_of(self, device_id: uuid.UUID) -> str | None:
        return next((serial for serial, known in self._ids.items() if known == device_id), None)

    def knows_all(self) -> bool:
        return all(serial in self._ids for serial in self._seen)

    def healthy_ids(self, exclude_serials: set[str]) -> list[uuid.UUID]:
        """Ids of devices that may take work now: online, probed, not in error, not busy here."""
        return [self._ids[serial] for serial, info in sorted(self._seen.items())
                if info.health is DeviceHealth.ONLINE and serial in self._ready and serial not in self._errors
                and serial not in self._rebooting and serial not in exclude_serials and serial in self._ids]

    def error_reason(self, serial: str) -> str | None:
        return self._errors.get(serial)

    @property
    def simulated(self) -> bool:
        return self.driver.simulated
