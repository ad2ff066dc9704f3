"""The worker process: registers its devices, listens for pushes, claims work through the
database, runs one assignment per device at a time, heartbeats, and shuts down cleanly.

Side tasks (claim loop, heartbeat, reporter, device watcher) are watched: one failing
stops the worker, as in Procrastinate. A push only wakes the claim loop; the claim is
always made through the database, and a poll runs every 3 s while push is down.

An operator's reboot request arrives as a push (device_reboot) or in a heartbeat's reply
(`reboot`), whichever comes first; each is handled once, in a task of its own: the phone
takes no work, is rebooted, must go away, come back and pass its probe within
`reboot_timeout_s`, and the server gets the answer (device_rebooted, with the reason when
it failed). A device with a run on it is skipped: the server refuses reboots of busy phones.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
import uuid

from jobsys import __version__, aio, errors
from jobsys.metrics import WorkerMetrics
from jobsys.events import ChannelState, Event, EventName
from jobsys.models import ClaimedAssignment, RefusedDevice
from jobsys.system import JobSystem, Subscription
from worker.drivers import DeviceDriver, DeviceError, DeviceHealth, StopReason, create_driver
from worker.executor import execute
from worker.fleet import Fleet
from worker.options import WorkerOptions
from worker.reporter import Reporter

log = logging.getLogger("jobsys.worker")

REGISTER_RETRY_MAX_S = 5.0
DRAIN_TIMEOUT_S = 10.0  # at shutdown, how long to keep trying to deliver buffered reports
STARTUP_PROBE_WAIT_S = 5.0  # before the first registration: probes that finish by then count
READY_HEARTBEATS = 3  # not ready once this many heartbeat intervals passed without an answer
HARD_STOP_WAIT_S = 3.0  # past the grace: runs see SHUTDOWN within a step; one stuck on a phone is cancelled
REBOOT_ANSWER_RETRY_MAX_S = 5.0  # device_rebooted waits for the database with this backoff at most
REBOOT_ANSWER_AT_STOP_S = 3.0  # at shutdown: how long an interrupted reboot's answer may take


@dataclasses.dataclass
class RunSlot:
    run: ClaimedAssignment
    task: asyncio.Task[None]
    stop: StopReason | None = None


class Worker:
    def __init__(self, jobs: JobSystem, options: WorkerOptions, driver: DeviceDriver | None = None) -> None:
        self.jobs = jobs
        self.options = options
        self.driver = driver or create_driver(options.driver, **options.driver_options())
        # Probes run in their own tasks; a finished one wakes the heartbeat to report it.
        # Every device carries the PC's name as the label `pc`, so jobs can target a PC.
        self.fleet = Fleet(self.driver, on_change=lambda: self._devices_changed.set(),
                           probe_retry_s=options.heartbeat_interval_s, labels={"pc": options.name},
                           vitals_interval_s=options.vitals_interval_s, vitals_report_s=options.vitals_report_s)
        self.reporter = Reporter(jobs)
        self.evidence = jobs.evidence_store()  # Supabase mode: screenshots go to Storage
        self.worker_id: uuid.UUID | None = None
        self.push_state = ChannelState.DISCONNECTED
        self.runs: dict[str, RunSlot] = {}  # serial -> the run on that device
        self.metrics = WorkerMetrics(lambda: self.push_state is ChannelState.SUBSCRIBED)
        self.paused_jobs: set[uuid.UUID] = set()
        # Serials the server refused: a live session of another worker account holds them.
        # Reported again with every heartbeat until they join (that session went stale or let
        # go of them, or an operator released them).
        self.refused: set[str] = set()
        self.registered = asyncio.Event()
        self._wake = asyncio.Event()
        self._devices_changed = asyncio.Event()
        self._stop_requested = asyncio.Event()
        # This worker's heartbeat and its claims take turns at the database. Both lock the
        # worker's device rows, and a claim skips rows another transaction holds (skip
        # locked): a claim that overlapped the worker's own heartbeat found no device free,
        # returned nothing although runs were pending, and with push up nothing woke the
        # claim loop again before the safety poll. A claim is one short call; the heartbeat
        # waits at most for that, never for a phone.
        self._db_turn = asyncio.Lock()
        # Reports in flight when a claim came up short: the device they free may still be
        # running on the server, so the claim is made again once one of them is delivered.
        self._claim_after_reports: set[int] = set()
        self._claiming = True
        self._hard_stop = False
        self._subscription: Subscription | None = None
        self._reported_meta: dict[str, str] | None = None
        self._answered_at: float | None = None  # monotonic time of the last registration or heartbeat
        self.reboots: dict[uuid.UUID, asyncio.Task[None]] = {}  # device id -> its reboot, while it runs
        self._busy_reboots: set[uuid.UUID] = set()  # skipped because a run was on the device (logged once)

    # Lifecycle -------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop_requested.set()

    async def run(self) -> None:
        await self.fleet.refresh()
        await self.fleet.settle(STARTUP_PROBE_WAIT_S)  # a phone slower than that joins at a later heartbeat
        await self._register()
        await self._subscribe()
        side_tasks = [
            asyncio.create_task(self._claim_loop(), name="claim-loop"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self.reporter.run(), name="reporter"),
        ]
        watcher = self.driver.watch(self._on_devices_changed)
        if watcher is not None:
            side_tasks.append(asyncio.ensure_future(watcher))
        self._wake.set()
        try:
            # A failed side task raises aio.TaskFailed: "worker stopped because <task> failed".
            await aio.supervise(side_tasks, self._stop_requested, wind_down=self._finish_runs, name="worker",
                                log=log)
        finally:
            await self._close()

    async def _register(self) -> None:
        backoff_s = 0.2
        while True:
            outbox = self.fleet.snapshot()
            try:
                session = await self.jobs.register_worker(self.options.name, outbox.reports,
                                                          hostname=socket.gethostname())
                break
            except errors.TransportError as exc:
                log.warning("register waits for the database (%s); retry in %.1fs", exc.message, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, REGISTER_RETRY_MAX_S)
        self.worker_id = session.worker_id
        self._answered_at = time.monotonic()
        self._reported_meta = None  # a new session: say it again
        self.reporter.bind(session.worker_id)
        self.fleet.remember_ids(session.devices)
        self.fleet.reported(outbox)
        self._note_refused(session.refused)
        self.registered.set()
        log.info("worker_registered id=%s name=%s devices=%d driver=%s%s", session.worker_id, self.options.name,
                 len(session.devices), self.driver.name, " (simulated)" if self.driver.simulated else "")

    async def _subscribe(self) -> None:
        """Push for this session's topic (again after a new registration: a new topic)."""
        if not self.options.push:
            return
        assert self.worker_id is not None
        if self._subscription is not None:
            await self._subscription.close()
        self.push_state = ChannelState.DISCONNECTED  # poll until the new channel says it is up
        self._subscription = await self.jobs.subscribe_worker(self.worker_id, self._on_event, self._on_state)

    async def _finish_runs(self) -> None:
        """Stop claiming, let running work finish (up to the grace period) and deliver its
        reports, while the side tasks (the reporter above all) still run."""
        log.info("worker_stopping running=%d grace_s=%.0f", len(self.runs), self.options.shutdown_grace_s)
        self._claiming = False
        await self._abandon_reboots()
        running = [slot.task for slot in self.runs.values()]
        if running:
            _, late = await asyncio.wait(running, timeout=self.options.shutdown_grace_s)
            if late:
                self._hard_stop = True  # the driver sees SHUTDOWN within a second and returns
                _, stuck = await asyncio.wait(late, timeout=HARD_STOP_WAIT_S)
                if stuck:  # waiting on a phone that does not answer: never wait for it
                    log.warning("worker_stopping abandoning %d run(s) stuck on a phone", len(stuck))
                    for task in stuck:
                        task.cancel()  # the executor releases the run
                    await asyncio.wait(stuck, timeout=HARD_STOP_WAIT_S)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                await self.reporter.drain()

    async def _close(self) -> None:
        """After the side tasks ended: unsubscribe, end the session, release the devices."""
        if self._subscription is not None:
            await self._subscription.close()
        await self.fleet.close()
        if self.worker_id is not None:
            with contextlib.suppress(errors.JobsysError):
                await self.jobs.stop_worker(self.worker_id)
        await self.driver.close()  # never waits on a phone
        if self.evidence is not None:
            await self.evidence.close()
        log.info("worker_stopped reports_sent=%d", self.reporter.sent)

    # Push ------------------------------------------------------------------------------
    def _on_state(self, state: ChannelState) -> None:
        self.push_state = state
        self._wake.set()  # on (re)subscribe: resync by claiming; on loss: switch to 3 s polling

    def _on_event(self, event: Event) -> None:
        job_id = event.payload.get("job_id")
        if event.event in (EventName.ASSIGNMENT, EventName.JOB_RESUMED):
            if job_id:
                self.paused_jobs.discard(uuid.UUID(job_id))
            self._wake.set()
        elif event.event == EventName.JOB_PAUSED and job_id:
            # Nothing is queued locally (a device claims only when free), so pausing needs
            # no local work: the server has paused the job's pending runs already.
            self.paused_jobs.add(uuid.UUID(job_id))
        elif event.event == EventName.JOB_CANCELLED and job_id:
            self._stop_job(uuid.UUID(job_id))
        elif event.event == EventName.RUN_STOPPED and isinstance(event.payload.get("assignment_id"), int):
            self._stop_runs({event.payload["assignment_id"]})
        elif event.event == EventName.DEVICE_REBOOT and event.payload.get("device_id"):
            self._request_reboot(uuid.UUID(str(event.payload["device_id"])), event.payload.get("serial"))

    def _stop_job(self, job_id: uuid.UUID) -> None:
        for slot in self.runs.values():
            if slot.run.job_id == job_id:
                slot.stop = StopReason.CANCELLED

    def _stop_runs(self, assignment_ids: set[int]) -> None:
        for slot in self.runs.values():
            if slot.run.assignment_id in assignment_ids:
                slot.stop = StopReason.CANCELLED

    # Claiming --------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        while True:
            interval_s = (self.options.safety_poll_s if self.push_state is ChannelState.SUBSCRIBED
                          else self.options.poll_interval_s)
            await aio.wait_event(self._wake, interval_s)
            self._wake.clear()
            if self._claiming:
                await self._claim_round()

    async def _claim_round(self) -> None:
        assert self.worker_id is not None
        try:
            # start=True: a device begins as soon as it has its run, so claim and start are one call.
            # The free devices are chosen and the runs launched inside the turn: a reboot begins in
            # the turn too, so a device is never both claimed for and rebooted.
            async with self._db_turn:
                free = self.fleet.healthy_ids(set(self.runs))
                if not free:
                    return
                claimed = await self.jobs.claim_assignments(self.worker_id, free, start=True)
                for run in claimed:
                    self._launch(run)
        except errors.TransportError as exc:
            log.warning("claim waits for the database: %s", exc.message)
            return
        if len(claimed) < len(free):
            self._claim_after_reports.update(self.reporter.pending_ids())

    def _launch(self, run: ClaimedAssignment) -> None:
        slot_holder: list[RunSlot] = []

        def should_stop() -> StopReason | None:
            slot = slot_holder[0]
            return slot.stop or (StopReason.SHUTDOWN if self._hard_stop else None)

        task = asyncio.create_task(self._execute(run, should_stop), name=f"run-{run.assignment_id}")
        slot = RunSlot(run, task)
        slot_holder.append(slot)
        self.runs[run.serial] = slot

    async def _execute(self, run: ClaimedAssignment, should_stop: object) -> None:
        claimed_at = time.monotonic()
        try:
            outcome = await execute(run, jobs=self.jobs, driver=self.driver, fleet=self.fleet,
                                    reporter=self.reporter, should_stop=should_stop,  # type: ignore[arg-type]
                                    evidence_dir=self.options.evidence_dir, evidence_store=self.evidence,
                                    worker_id=self.worker_id)
            self.metrics.finished(outcome, time.monotonic() - claimed_at)
        except Exception:
            self.metrics.finished("crashed", time.monotonic() - claimed_at)
            log.exception("run %s crashed in the worker; its lease will expire and it re-runs", run.assignment_id)
        finally:
            self.runs.pop(run.serial, None)
            self._wake.set()  # the device is free: claim its next run

    # Heartbeat and devices ---------------------------------------------------------------
    async def _on_devices_changed(self) -> None:
        self._devices_changed.set()

    async def _heartbeat_loop(self) -> None:
        assert self.worker_id is not None
        while True:
            await aio.wait_event(self._devices_changed, self.options.heartbeat_interval_s)
            self._devices_changed.clear()
            await self.heartbeat_once()

    async def heartbeat_once(self) -> None:
        assert self.worker_id is not None
        await self.fleet.refresh()
        # State changes go at once; vitals alone at most every vitals_report_s. Refused phones
        # are reported again each time, so they join as soon as they may.
        outbox = self.fleet.outbox(force=bool(self.refused))
        devices = None if outbox is None else outbox.reports
        meta = self._session_meta()
        try:
            async with self._db_turn:
                # Listed inside the turn, after any claim's runs are launched: a running run
                # the heartbeat does not list is one this worker never heard of, and loses
                # its lease (a claim whose answer was lost on the way).
                running = [slot.run.assignment_id for slot in self.runs.values()] + self.reporter.pending_ids()
                reply = await self.jobs.heartbeat(self.worker_id, devices, running,
                                                  meta=None if meta == self._reported_meta else meta)
        except errors.NotFound:
            log.warning("worker session unknown to the server; registering again")
            await self._register()
            await self._subscribe()
            return
        except errors.TransportError as exc:
            self.metrics.heartbeat_failures.inc()
            log.warning("heartbeat waits for the database: %s", exc.message)
            return
        self._reported_meta = meta
        self._answered_at = time.monotonic()
        # The polling path of device_reboot. Handled with no await since the turn ended, so a
        # reboot answered (in the turn too) before this reply is still in self.reboots or no
        # longer listed: a request is never taken twice.
        for device_id in reply.reboot:
            self._request_reboot(device_id, None)
        if outbox is not None:
            self.fleet.reported(outbox)
            self._note_refused(reply.refused)
            if not self.fleet.knows_all():
                self.fleet.remember_ids(await self.jobs.worker_devices(self.worker_id))
            self._wake.set()
        delivered = self._claim_after_reports - set(self.reporter.pending_ids())
        if delivered:  # a device those reports free may take its next run now
            self._claim_after_reports -= delivered
            self._wake.set()
        self._stop_runs(set(reply.stop))

    # Reboot ----------------------------------------------------------------------------------
    def _request_reboot(self, device_id: uuid.UUID, serial: str | None) -> None:
        """An operator asked to reboot a device: start its reboot unless one runs already, or
        the worker is stopping (its reboots are abandoned and answered as such)."""
        if device_id in self.reboots or self._stop_requested.is_set():
            return  # the push and the heartbeat both said so: handled once
        known = self.fleet.serial_of(device_id)
        serial = known or serial
        if serial is None:
            log.warning("device_reboot_unknown device=%s: not a device of this session", device_id)
            return
        self.reboots[device_id] = asyncio.create_task(self._reboot(device_id, serial), name=f"reboot-{serial}")

    async def _reboot(self, device_id: uuid.UUID, serial: str) -> None:
        try:
            async with self._db_turn:  # no claim runs meanwhile: the device is busy or out of work
                busy = serial in self.runs
                if not busy:
                    self.fleet.begin_reboot(serial)
            if busy:  # left pending: a later heartbeat lists it again once the run is over
                if device_id not in self._busy_reboots:
                    log.warning("device_reboot_skipped serial=%s: a run is on it (the server refuses reboots"
                                " of busy devices)", serial)
                    self._busy_reboots.add(device_id)
                return
            self._busy_reboots.discard(device_id)
            self._devices_changed.set()  # report it offline, rebooting, now
            log.info("device_rebooting serial=%s", serial)
            try:
                error = await self._reboot_and_wait(serial)
            except Exception as exc:  # a driver bug: answered all the same, or the request comes back
                log.exception("reboot of %s crashed", serial)
                error = f"the reboot crashed in the worker: {type(exc).__name__}: {exc}"
            self.fleet.end_reboot(serial, passed=error is None)
            if error is None:
                log.info("device_rebooted serial=%s", serial)
                with contextlib.suppress(errors.JobsysError):  # the heartbeat loop meets it too
                    await self.heartbeat_once()  # the server hears it is online before it hears it is back
            else:
                log.warning("device_reboot_failed serial=%s: %s", serial, error)
            await self._answer_reboot(device_id, error)
        finally:
            self.reboots.pop(device_id, None)
            self._wake.set()  # back in service (or not): claim for it

    async def _reboot_and_wait(self, serial: str) -> str | None:
        """Reboot, then wait for the phone to leave adb's list, return and pass its probe.
        None when it did; else why not."""
        timeout_s = self.options.reboot_timeout_s
        deadline = time.monotonic() + timeout_s
        try:
            await self.driver.reboot(serial)
        except DeviceError as exc:
            return f"the phone did not reboot: {exc}"
        # Right after the command the phone may still answer as before, so a probe counts only
        # once a refresh (this loop's, or a heartbeat's woken by adb's device tracker) has seen
        # it gone: adb listed it offline or not at all.
        last_probe: str | None = None
        while True:
            await self.fleet.refresh()
            gone = self.fleet.gone_since_reboot(serial)
            if gone and self.fleet.health(serial) is DeviceHealth.ONLINE:
                try:
                    async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
                        if await self.driver.probe(serial):
                            await self.fleet.refresh()  # the labels it read come with the report
                            return None
                    last_probe = "probe failed"
                except DeviceError as exc:
                    last_probe = str(exc)
                except TimeoutError:
                    last_probe = "probe did not finish in time"
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                if not gone:
                    return f"the phone did not go offline within {timeout_s:.0f} s of the reboot command"
                if last_probe is None:
                    return f"the phone did not come back within {timeout_s:.0f} s"
                return f"the phone did not come back within {timeout_s:.0f} s (last probe: {last_probe})"
            await asyncio.sleep(min(self.options.reboot_poll_s, left_s))  # pacing the adb polls

    async def _answer_reboot(self, device_id: uuid.UUID, error: str | None) -> None:
        """device_rebooted, retried while the database is away."""
        backoff_s = 0.2
        while True:
            assert self.worker_id is not None
            try:
                async with self._db_turn:  # see heartbeat_once: no reply still to handle lists it
                    await self.jobs.device_rebooted(self.worker_id, device_id, error)
                return
            except errors.TransportError as exc:
                log.warning("device_rebooted waits for the database (%s); retry in %.1fs", exc.message, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, REBOOT_ANSWER_RETRY_MAX_S)
            except errors.JobsysError as exc:  # e.g. the request was withdrawn: nothing to retry
                log.warning("device_rebooted refused for device %s: %s", device_id, exc.message)
                return

    async def _abandon_reboots(self) -> None:
        """At shutdown: stop waiting for rebooting phones and tell the server, briefly."""
        pending = dict(self.reboots)
        if not pending:
            return
        await aio.cancel_and_wait(pending.values())
        for device_id in pending:
            with contextlib.suppress(errors.JobsysError, TimeoutError):
                async with asyncio.timeout(REBOOT_ANSWER_AT_STOP_S):
                    assert self.worker_id is not None
                    await self.jobs.device_rebooted(self.worker_id, device_id,
                                                    "the worker stopped before the phone came back")

    def readiness(self) -> dict[str, str | None]:
        """For a supervisor (`jobsys worker --health-port`): each check None when fine, else why not."""
        silent_s = None if self._answered_at is None else time.monotonic() - self._answered_at
        stale = silent_s is not None and silent_s > READY_HEARTBEATS * self.options.heartbeat_interval_s
        return {
            "registered": None if self.registered.is_set() else "not registered yet",
            "database": f"no heartbeat answered for {silent_s:.0f} s" if stale else None,
            "push": (None if not self.options.push or self.push_state is ChannelState.SUBSCRIBED
                     else "push channel down; polling"),
            "auth": self.jobs.auth_problem(),  # Supabase mode: the login refused, or Auth unavailable
        }

    def _session_meta(self) -> dict[str, str]:
        """What the PC view shows of this session; sent when it changes."""
        return {"version": __version__,
                "push": "connected" if self.push_state is ChannelState.SUBSCRIBED else "polling"}

    def _note_refused(self, refused: list[RefusedDevice]) -> None:
        """A warning once per refused serial, not once per heartbeat; a note when it joins."""
        now = {r.serial: r for r in refused}
        for serial, r in sorted(now.items()):
            if serial not in self.refused:
                log.warning("device_refused serial=%s code=%s: %s; it joins this worker when that session"
                            " goes stale or stops listing it, or an operator releases it",
                            serial, r.code, r.reason)
        for serial in sorted(self.refused - set(now)):
            log.info("device_no_longer_refused serial=%s", serial)
        self.refused = set(now)
