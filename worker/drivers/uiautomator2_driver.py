"""Real Android phones over adb, driven with adbutils and uiautomator2.

adbutils lists the phones and streams plug/unplug events; every phone gets its own lane
(one daemon thread, worker/drivers/lanes.py), so a phone that stops answering holds up no
other phone, no heartbeat and no shutdown. Every library call has an explicit timeout.

A phone serves only after its probe: booted (sys.boot_completed), its properties read once
(the labels manufacturer, model, android_version, sdk, abi), uiautomator2 connected through
the configured adb server (a held UiAutomation service is freed and the connect retried
once), the screen checked (woken, not locked, put back as it was) and the browser resolved
(the configured package, else the phone's default browser, else Chrome).

Vitals (dumpsys battery, dumpsys power) and a reboot (adb's `reboot`) run on the phone's
lane like everything else; the fleet decides when to read vitals (at most once a minute).

A run opens the URL in that browser and nowhere else (`-p`, one reused tab), wakes the
screen, and fails rather than report a false success: a lock screen, the "Open with"
chooser, the launcher, another app or Chrome's first-run screen in front, or a black
screenshot. It lasts `duration_sec` on the clock from when the page is in front, and
afterwards (success, failure or cancel) the phone goes home, the browser is stopped and
the screen is put back. Any library error becomes a DeviceError with a message for
operators.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import dataclasses
import logging
import re
import socket
import threading
import time
from typing import Any, Awaitable, Callable, TypeVar

import adbutils
import uiautomator2
import uiautomator2.exceptions

from worker.drivers import android, base, lanes

log = logging.getLogger(__name__)

STEP_S = 1.0  # how often a run checks should_stop and the foreground app
CALL_TIMEOUT_S = 30.0  # one adb call (and every socket a phone's calls open)
CONNECT_TIMEOUT_S = 120.0  # first connect pushes u2.jar and starts the on-device server (30 s wait)
ADB_SERVER_TIMEOUT_S = 10.0  # the adb server itself (listing devices): it answers at once or is stuck
FOREGROUND_WAIT_S = 10.0  # how long the browser may take to come to the front after the intent
TRANSIENT_FOREGROUND_ERRORS = 1  # unreadable foreground polls tolerated in a row (window transitions)
TRACK_RETRY_S = 3.0  # wait before re-opening track-devices after adb went away
SCREENSHOT_SUFFIX = ".png"  # screencap -p
ADB_ONLINE_STATE = "device"
ADB_UNAUTHORIZED_STATES = {"unauthorized": "unauthorized", "no": "no permissions"}  # "no permissions (...)"
TAG_KEY = re.compile(r"^[a-z_]+$")  # devices-l tags; skips the words of "no permissions (...); see [http...]"
HELD_SERVICE_ERRORS = (uiautomator2.exceptions.AccessibilityServiceAlreadyRegisteredError,
                       uiautomator2.exceptions.LaunchUiAutomationError)

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclasses.dataclass
class _Phone:
    name: str  # the serial reported to the server (unique on this PC)
    address: tuple[str, int | None]  # adb serial, and the transport id when the serial is shared
    device: android.PhoneDevice
    lane: lanes.Lane
    connect_lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    handle: Any = None  # the uiautomator2 Device, once connected
    browser: str | None = None  # resolved at probe
    labels: dict[str, str] | None = None  # from getprop, read at the first probe


@dataclasses.dataclass
class _Watch:
    """How the foreground watch ended."""

    elapsed_s: float
    packages: tuple[str, ...]
    stopped: base.StopReason | None = None


class Uiautomator2Driver:
    name = "uiautomator2"
    simulated = False

    def __init__(
        self,
        adb_client: adbutils.AdbClient | None = None,
        connect: Callable[[adbutils.AdbDevice], Any] = uiautomator2.connect,
        adb_host: str = "127.0.0.1",
        adb_port: int = 5037,
        browser_package: str | None = None,
        step_s: float = STEP_S,
        call_timeout_s: float = CALL_TIMEOUT_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        adb_timeout_s: float = ADB_SERVER_TIMEOUT_S,
        foreground_wait_s: float = FOREGROUND_WAIT_S,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._adb = adb_client if adb_client is not None else adbutils.AdbClient(
            adb_host, adb_port, socket_timeout=adb_timeout_s)
        self._connect = connect
        self._browser_package = browser_package or None
        self._step_s = step_s
        self._call_timeout_s = call_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._adb_timeout_s = adb_timeout_s
        self._foreground_wait_s = foreground_wait_s
        self._clock = clock
        self._sleep = sleep
        self._phones: dict[str, _Phone] = {}
        self._names: dict[tuple[str, str], str] = {}  # (adb serial, transport id) -> reported serial
        self._adb_lane: lanes.Lane | None = None

    # --- discovery --------------------------------------------------------------------

    async def discover(self) -> list[base.DeviceInfo]:
        if self._adb_lane is None:
            self._adb_lane = lanes.Lane("adb-server")
        try:
            listed = await self._adb_lane.call("list the devices", self._adb.list, True,
                                               timeout_s=self._adb_timeout_s)
        except Exception as exc:
            raise base.DeviceError(f"adb server not reachable: {_describe(exc)}") from exc
        shared = {serial for serial, n in collections.Counter(e.serial for e in listed).items() if n > 1}
        devices = []
        for entry, name in zip(listed, self._name_all(listed)):
            info = _device_info(entry, name)
            if info.health is base.DeviceHealth.ONLINE:
                tid = _transport_id(entry)
                phone = self._keep_phone(name, (entry.serial, tid if entry.serial in shared else None))
                if phone.labels:
                    info = dataclasses.replace(info, labels={**info.labels, **phone.labels})
            devices.append(info)
        online = {d.serial for d in devices if d.health is base.DeviceHealth.ONLINE}
        for name in list(self._phones):
            if name not in online:
                self._drop_phone(name)  # it gets a fresh connect when it returns
        return devices

    def _name_all(self, listed: list[Any]) -> list[str]:
        """Reported serials. A serial adb lists once is itself; when cheap phones share one
        (0123456789ABCDEF), the phone that had it keeps it and each other gets
        `<serial>@<usb port>`, so a running run never changes device."""
        keys = [(e.serial, str(_transport_id(e))) for e in listed]
        self._names = {k: v for k, v in self._names.items() if k in keys}
        taken = set(self._names.values())
        for key, entry in zip(keys, listed):
            if key in self._names:
                continue
            name = entry.serial
            if name in taken:
                name = f"{entry.serial}@{entry.tags.get('usb') or 't' + key[1]}"
                if name in taken:
                    name = f"{entry.serial}@t{key[1]}"
            self._names[key] = name
            taken.add(name)
        return [self._names[key] for key in keys]

    def _keep_phone(self, name: str, address: tuple[str, int | None]) -> _Phone:
        phone = self._phones.get(name)
        if phone is not None and phone.address == address:
            return phone
        if phone is not None:
            self._drop_phone(name)
        serial, transport_id = address
        # A shared serial is addressed by transport id; the unique name keeps uiautomator2's
        # per-serial lock (and logs) apart.
        device = android.PhoneDevice(self._adb, serial=name if transport_id else serial, transport_id=transport_id,
                                     io_timeout_s=self._call_timeout_s)
        phone = self._phones[name] = _Phone(name, address, device, lanes.Lane(f"phone-{name}"))
        return phone

    def _drop_phone(self, name: str) -> None:
        phone = self._phones.pop(name, None)
        if phone is None:
            return
        if phone.handle is not None:
            phone.lane.submit("release the uiautomator2 handle", _release_handle, phone.handle)
            phone.handle = None
        phone.lane.close()  # the thread ends after that; a stuck one is left to itself

    def watch(self, on_change: Callable[[], Awaitable[None]]) -> Awaitable[None] | None:
        return self._watch(on_change)

    async def _watch(self, on_change: Callable[[], Awaitable[None]]) -> None:
        """Call on_change whenever adb reports a change (or loses and regains the server)."""
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        tracker = _DeviceTracker(self._adb, lambda: loop.call_soon_threadsafe(changed.set))
        tracker.start()
        try:
            while True:
                await changed.wait()
                changed.clear()
                await on_change()
        finally:
            tracker.stop()

    # --- probe ------------------------------------------------------------------------

    async def probe(self, serial: str) -> bool:
        """Booted, labels read, connect, check the screen, resolve the browser. True, or
        DeviceError with the reason."""
        phone = self._known(serial)
        async with phone.connect_lock:
            await self._call(phone, "check that the phone has booted", android.check_booted, phone.device)
            if phone.labels is None:  # once per phone: these never change while it is plugged in
                props = await self._call(phone, "read the phone's properties", android.read_props, phone.device)
                phone.labels = android.prop_labels(props)
            if phone.handle is None:
                phone.handle = await self._call(phone, "connect uiautomator2", self._connect_blocking, phone,
                                                timeout_s=self._connect_timeout_s,
                                                prefix="cannot connect uiautomator2")
            try:
                # A round trip to the on-device server; uiautomator2 restarts it if it died.
                await self._call(phone, "reach the uiautomator2 server", _device_info_of, phone.handle,
                                 timeout_s=self._connect_timeout_s)
            except base.DeviceError:
                phone.lane.submit("release the uiautomator2 handle", _release_handle, phone.handle)
                phone.handle = None  # connect from scratch next time
                raise
            await self._call(phone, "check the screen", _check_screen, phone.device)
            phone.browser = await self._call(phone, "resolve the browser", android.resolve_browser, phone.device,
                                             self._browser_package)
        return True

    def _connect_blocking(self, phone: _Phone) -> Any:
        """uiautomator2.connect through our adb server; frees a held UiAutomation service and
        retries once (Appium, weditor or a stale server: uiautomator2 issue #1013)."""
        try:
            handle = self._connect(phone.device)
        except HELD_SERVICE_ERRORS as first:
            log.warning("phone %s: the UiAutomation service is held (%s); stopping the holder and retrying",
                        phone.name, type(first).__name__)
            android.free_uiautomation(phone.device)
            try:
                handle = self._connect(phone.device)
            except HELD_SERVICE_ERRORS as again:
                raise android.PhoneFault(
                    "the UiAutomation service is held by another process (Appium, weditor or a stale "
                    f"uiautomator2 server) and stopping it did not free it: {_describe(again)}") from again
        # uiautomator2 registers an exit hook per handle that takes the phone's lock: with a
        # phone hung inside uiautomator2 it would block the exit. We release handles ourselves.
        stop = getattr(handle, "stop_uiautomator", None)
        if stop is not None:
            atexit.unregister(stop)
        return handle

    # --- vitals and reboot -------------------------------------------------------------

    async def read_vitals(self, serial: str) -> base.Vitals:
        """dumpsys battery and dumpsys power, on the phone's lane (the fleet rate-limits)."""
        phone = self._known(serial)
        return await self._call(phone, "read the battery and screen", android.read_vitals, phone.device)

    async def reboot(self, serial: str) -> None:
        """adb reboot on the phone's lane. The uiautomator2 handle dies with the phone's
        server, so it is dropped: the next probe connects afresh."""
        phone = self._known(serial)
        await self._call(phone, "reboot", android.reboot, phone.device, prefix="reboot failed")
        if phone.handle is not None:
            phone.lane.submit("release the uiautomator2 handle", _release_handle, phone.handle)
            phone.handle = None
        phone.browser = None

    # --- the action -------------------------------------------------------------------

    async def open_url(self, request: base.OpenUrlRequest, should_stop: base.StopCheck) -> base.RunResult:
        phone = self._known(request.serial)
        if phone.handle is None or phone.browser is None:
            await self.probe(request.serial)  # the fleet probes first; this is the fallback
        browser = phone.browser
        assert browser is not None
        reason = should_stop()  # checked before anything changes on the phone
        if reason is not None:
            return _result(0.0, None, None, (), reason)
        was_awake = await self._call(phone, "read the screen state", android.wake, phone.device, retry=True)
        opened = False
        try:
            await self._call(phone, "check the lock screen", android.check_unlocked, phone.device, retry=True)
            opened = True
            await self._call(phone, "start the VIEW intent", android.open_view, phone.device, request.url, browser)
            watch = await self._watch_foreground(phone, browser, request.duration_sec, should_stop)
            if watch.stopped is not None:
                return _result(watch.elapsed_s, browser, None, watch.packages, watch.stopped)
            png = await self._call(phone, "take the screenshot", android.screenshot_png, phone.device)
            request.evidence_dir.mkdir(parents=True, exist_ok=True)
            path = request.evidence_dir / f"{base.safe_file_stem(request.evidence_name)}{SCREENSHOT_SUFFIX}"
            path.write_bytes(png)
            return _result(watch.elapsed_s, browser, str(path), watch.packages, None)
        finally:
            await self._tidy(phone, browser if opened else None, sleep_after=not was_awake)

    async def _watch_foreground(self, phone: _Phone, browser: str, duration_s: float,
                                should_stop: base.StopCheck) -> _Watch:
        """Poll the foreground each step on the clock (a slow poll is not added on top) until
        the page has been in front for duration_s; raise DeviceError for anything else in front."""
        intent_at = self._clock()
        seen: list[str] = []
        in_front_since: float | None = None
        unreadable = 0
        next_poll = intent_at
        while True:
            reason = should_stop()
            if reason is not None:
                return _Watch(self._clock() - intent_at, tuple(seen), reason)
            wait_s = next_poll - self._clock()
            if wait_s > 0:
                await self._sleep(wait_s)
            polled_at = self._clock()
            next_poll = polled_at + self._step_s
            try:
                front = await self._call(phone, "read the foreground app", android.foreground, phone.device)
                if not front.readable:
                    raise base.DeviceError(f"{phone.name}: could not read the foreground app: no focused window")
            except base.DeviceError as exc:
                unreadable += 1
                not_answering = isinstance(exc.__cause__, (TimeoutError, adbutils.AdbTimeout, lanes.LaneHung))
                if unreadable > TRANSIENT_FOREGROUND_ERRORS or not_answering:
                    raise
                log.info("phone %s: foreground unreadable once, polling again (%s)", phone.name, exc)
                continue
            unreadable = 0
            shown = front.package or front.window or "?"
            if shown not in seen:
                seen.append(shown)
            _check_front(phone.name, front, browser)
            if front.package == browser:
                in_front_since = polled_at if in_front_since is None else in_front_since
            elif in_front_since is not None or polled_at - intent_at >= self._foreground_wait_s:
                raise base.DeviceError(f"{phone.name}: {_what_is(shown)} is in front instead of {browser} "
                                       f"(seen: {', '.join(seen)})")
            if in_front_since is not None and self._clock() >= in_front_since + duration_s:
                return _Watch(self._clock() - intent_at, tuple(seen))

    async def _tidy(self, phone: _Phone, browser: str | None, sleep_after: bool) -> None:
        """Home screen, browser stopped, screen as found. Never raises; a hurried shutdown
        (this task cancelled) leaves it to the phone's lane and does not wait."""
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            phone.lane.submit("clean up after the run", android.tidy, phone.device, browser, sleep_after)
            return
        try:
            failed = await self._call(phone, "clean up after the run", android.tidy, phone.device, browser,
                                      sleep_after)
        except base.DeviceError as exc:
            failed = [str(exc)]
        if failed:
            log.warning("phone %s: cleanup incomplete: %s", phone.name, "; ".join(failed))

    async def close(self) -> None:
        """Release every handle on its phone's lane; never waits on a phone."""
        for name in list(self._phones):
            self._drop_phone(name)
        if self._adb_lane is not None:
            self._adb_lane.close()
            self._adb_lane = None

    # --- helpers ----------------------------------------------------------------------

    def _known(self, serial: str) -> _Phone:
        phone = self._phones.get(serial)
        if phone is None:
            raise base.DeviceError(f"{serial}: not connected (adb does not list it as a device)")
        return phone

    async def _call(self, phone: _Phone, what: str, fn: Callable[..., T], *args: Any,
                    timeout_s: float | None = None, prefix: str | None = None, retry: bool = False) -> T:
        """One blocking call on the phone's lane, its failure as a DeviceError for operators.
        retry: an idempotent call is tried once more after a transient adb error (not after
        a timeout: the phone is not answering then)."""
        prefix = prefix or f"could not {what}"
        try:
            try:
                return await phone.lane.call(what, fn, *args, timeout_s=timeout_s or self._call_timeout_s)
            except adbutils.AdbError as exc:
                if not retry or isinstance(exc, adbutils.AdbTimeout):
                    raise
                log.info("phone %s: %s failed once (%s); trying again", phone.name, what, _describe(exc))
                return await phone.lane.call(what, fn, *args, timeout_s=timeout_s or self._call_timeout_s)
        except android.PhoneNotReady as exc:
            raise base.DeviceNotReady(f"{phone.name}: {exc}") from exc
        except android.PhoneFault as exc:
            raise base.DeviceError(f"{phone.name}: {exc}") from exc
        except lanes.LaneHung as exc:
            raise base.DeviceError(f"{phone.name}: not answering: {exc}") from exc
        except Exception as exc:
            raise base.DeviceError(f"{phone.name}: {prefix}: {_describe(exc)}") from exc


def _check_front(name: str, front: android.Foreground, browser: str) -> None:
    """Fail at once for what can never turn into the page: lock screen, chooser, first run."""
    if front.locked:
        raise base.DeviceError(f"{name}: {android.locked_message(front)}")
    if front.package in android.CHOOSER_PACKAGES:
        raise base.DeviceError(f'{name}: the "Open with" chooser ({front.package}) is in front: '
                               f"no browser took the URL")
    if front.package == browser and android.FIRST_RUN_HINT in (front.activity or ""):
        raise base.DeviceError(f"{name}: {browser} shows its first-run screen ({front.activity}), not the page: "
                               f"open {browser} once by hand and finish its welcome screens")


def _what_is(shown: str) -> str:
    return f"the home screen ({shown})" if "launcher" in shown.lower() else shown


def _check_screen(dev: android.PhoneDevice) -> None:
    """Probe: wake the screen, fail if the lock screen shows, put the screen back as it was."""
    was_awake = android.wake(dev)
    try:
        android.check_unlocked(dev)
    finally:
        if not was_awake:
            android.press(dev, "KEYCODE_SLEEP")


def _device_info_of(handle: Any) -> Any:
    return handle.info


def _release_handle(handle: Any) -> None:
    """Close the handle's server stream and its reader thread (runs on the phone's lane)."""
    with contextlib.suppress(Exception):
        atexit.unregister(handle.stop_uiautomator)
        handle.stop_uiautomator(wait=False)


class _DeviceTracker:
    """Reads adb's host:track-devices stream in a thread and reports each change.

    Reads the stream itself rather than through AdbClient.track_devices() so stop() can
    close the socket and end the blocking read at once; the generator hides its socket.
    """

    def __init__(self, adb: Any, notify: Callable[[], object]) -> None:
        self._adb = adb
        self._notify = notify
        self._stopped = threading.Event()
        self._conn: Any = None
        self._thread = threading.Thread(target=self._run, name="adb-track-devices", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.conn.shutdown(socket.SHUT_RDWR)  # wakes the blocked read

    def _run(self) -> None:
        last: str | None = None
        while not self._stopped.is_set():
            try:
                # No socket timeout: the stream is silent until something changes.
                with self._adb.make_connection() as conn:
                    conn.conn.settimeout(None)
                    self._conn = conn
                    if self._stopped.is_set():
                        return
                    conn.send_command("host:track-devices")
                    conn.check_okay()
                    while not self._stopped.is_set():
                        listing = conn.read_string_block()  # blocks until adb reports a change
                        if listing != last:
                            last = listing
                            self._notify()
            except Exception as exc:
                if self._stopped.is_set():
                    return
                log.warning("adb track-devices stopped (%s); retrying in %.0f s", exc, TRACK_RETRY_S)
                last = None
                self._notify()  # the device list is unknown now: let the worker rediscover
            finally:
                self._conn = None
            self._stopped.wait(TRACK_RETRY_S)


def _transport_id(entry: Any) -> int | None:
    value = (getattr(entry, "tags", None) or {}).get("transport_id")
    return int(value) if value and str(value).isdigit() else None


def _device_info(entry: Any, name: str) -> base.DeviceInfo:
    tags = {k: v for k, v in (getattr(entry, "tags", {}) or {}).items() if TAG_KEY.match(k)}
    if entry.state == ADB_ONLINE_STATE:
        health, state = base.DeviceHealth.ONLINE, entry.state
    elif entry.state in ADB_UNAUTHORIZED_STATES:
        health, state = base.DeviceHealth.UNAUTHORIZED, ADB_UNAUTHORIZED_STATES[entry.state]
    else:
        health, state = base.DeviceHealth.OFFLINE, entry.state
    labels = {k: v for k, v in tags.items() if k != "model"}
    if name != entry.serial:
        labels["adb_serial"] = entry.serial
    return base.DeviceInfo(serial=name, health=health, model=tags.get("model", ""), simulated=False, labels=labels,
                           adb_state=state)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, adbutils.AdbTimeout)):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _result(elapsed_s: float, package: str | None, evidence: str | None, packages: tuple[str, ...],
            stopped: base.StopReason | None) -> base.RunResult:
    return base.RunResult(foreground_package=package, elapsed_sec=elapsed_s, evidence_path=evidence,
                          stopped=stopped, simulated=False, packages_seen=packages)
