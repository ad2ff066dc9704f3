"""Real Android phones over adb, driven with uiautomator2.

adbutils lists the phones and streams plug/unplug events; uiautomator2 opens the
URL, reads the foreground app and takes the screenshot. Both are blocking, and
uiautomator2's first connect installs a server on the phone (tens of seconds), so
each phone is connected once, the handle is cached, and every blocking call runs
in a thread. Any library error becomes a DeviceError with a message for operators.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import threading
import time
from typing import Any, Awaitable, Callable, TypeVar

import adbutils
import uiautomator2

from worker.drivers import base

log = logging.getLogger(__name__)

STEP_S = 1.0  # how often a run checks should_stop and the foreground app
CALL_TIMEOUT_S = 30.0  # one adb / uiautomator2 call; a hung phone must not hang the run
CONNECT_TIMEOUT_S = 120.0  # first connect pushes and starts the on-device server
TRACK_RETRY_S = 3.0  # wait before re-opening track-devices after adb went away
SCREENSHOT_SUFFIX = ".jpg"  # uiautomator2 captures JPEG; keeping it avoids a big PNG re-encode
ADB_ONLINE_STATE = "device"  # every other adb state (offline, unauthorized, ...) is OFFLINE
VIEW_ACTION = "android.intent.action.VIEW"
STEP_TOLERANCE = 1e-9

T = TypeVar("T")


class Uiautomator2Driver:
    name = "uiautomator2"
    simulated = False

    def __init__(
        self,
        adb_client: Any | None = None,
        connect: Callable[[str], Any] = uiautomator2.connect,
        adb_host: str = "127.0.0.1",
        adb_port: int = 5037,
        step_s: float = STEP_S,
        call_timeout_s: float = CALL_TIMEOUT_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self._adb = adb_client if adb_client is not None else adbutils.AdbClient(adb_host, adb_port)
        self._connect = connect
        self._step_s = step_s
        self._call_timeout_s = call_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._handles: dict[str, Any] = {}
        self._connect_locks: dict[str, asyncio.Lock] = {}

    # --- discovery --------------------------------------------------------------------

    async def discover(self) -> list[base.DeviceInfo]:
        try:
            listed = await self._call(self._adb.list, True)  # extended: devices-l
        except Exception as exc:
            raise base.DeviceError(f"adb server not reachable: {exc}") from exc
        devices = [_device_info(entry) for entry in listed]
        # A phone that went away gets a fresh connect when it returns.
        online = {d.serial for d in devices if d.health == base.DeviceHealth.ONLINE}
        for serial in list(self._handles):
            if serial not in online:
                self._handles.pop(serial, None)
        return devices

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

    # --- device work ------------------------------------------------------------------

    async def probe(self, serial: str) -> bool:
        try:
            device = await self._device(serial)
            await self._call(lambda: device.info)  # round trip to the on-device server
            return True
        except Exception as exc:
            log.info("probe of %s failed: %s", serial, exc)
            self._handles.pop(serial, None)  # reconnect from scratch next time
            return False

    async def open_url(
        self, request: base.OpenUrlRequest, should_stop: base.StopCheck
    ) -> base.RunResult:
        started = time.monotonic()
        device = await self._device(request.serial)
        # Checked after the connect (which can take tens of seconds) and before the intent,
        # so a run stopped meanwhile never opens the URL.
        reason = should_stop()
        if reason is not None:
            return _result(started, None, None, reason)

        # A list, not a string: adbutils quotes each argument, so the URL is never parsed
        # by the phone's shell.
        command = ["am", "start", "-a", VIEW_ACTION, "-d", request.url]
        response = await self._device_call(request.serial, "start the VIEW intent", device.shell, command)
        _check_am_start(request.serial, response)

        package: str | None = None
        # A fixed number of steps (not a wall-clock deadline) so slow calls cannot skip polls.
        # The tolerance keeps float noise (0.05 / 0.01 = 5.000000000000001) from adding a step.
        steps = max(0, math.ceil(request.duration_sec / self._step_s - STEP_TOLERANCE))
        remaining_s = request.duration_sec
        for step in range(steps):
            if step > 0:  # the first step was checked just before the intent
                reason = should_stop()
                if reason is not None:
                    return _result(started, package, None, reason)
            step_s = max(0.0, min(self._step_s, remaining_s))
            await asyncio.sleep(step_s)
            remaining_s -= step_s
            current = await self._device_call(request.serial, "read the foreground app", device.app_current)
            package = current.get("package") if isinstance(current, dict) else None

        request.evidence_dir.mkdir(parents=True, exist_ok=True)
        path = request.evidence_dir / f"{request.evidence_name}{SCREENSHOT_SUFFIX}"
        await self._device_call(request.serial, "take the screenshot", device.screenshot, str(path))
        if not path.is_file():
            raise base.DeviceError(f"{request.serial}: screenshot was not saved to {path}")
        return _result(started, package, str(path), None)

    async def close(self) -> None:
        self._handles.clear()  # uiautomator2 handles hold no sockets between calls

    # --- helpers ----------------------------------------------------------------------

    async def _device(self, serial: str) -> Any:
        """The cached uiautomator2 handle; connects once, even under concurrent callers."""
        if serial in self._handles:
            return self._handles[serial]
        lock = self._connect_locks.setdefault(serial, asyncio.Lock())
        async with lock:
            if serial not in self._handles:
                try:
                    self._handles[serial] = await self._call(
                        self._connect, serial, timeout_s=self._connect_timeout_s
                    )
                except Exception as exc:
                    raise base.DeviceError(f"{serial}: cannot connect uiautomator2: {_describe(exc)}") from exc
            return self._handles[serial]

    async def _device_call(self, serial: str, what: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await self._call(fn, *args)
        except Exception as exc:
            raise base.DeviceError(f"{serial}: could not {what}: {_describe(exc)}") from exc

    async def _call(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
        """Run one blocking library call in a thread, bounded by a timeout."""
        return await asyncio.wait_for(
            asyncio.to_thread(fn, *args), timeout=timeout_s or self._call_timeout_s
        )


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
                with self._adb.make_connection() as conn:
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


def _device_info(entry: Any) -> base.DeviceInfo:
    tags: dict[str, str] = dict(getattr(entry, "tags", {}) or {})
    health = base.DeviceHealth.ONLINE if entry.state == ADB_ONLINE_STATE else base.DeviceHealth.OFFLINE
    labels = {"adb_state": entry.state, **{k: v for k, v in tags.items() if k != "model"}}
    return base.DeviceInfo(
        serial=entry.serial,
        health=health,
        model=tags.get("model", ""),
        simulated=False,
        labels=labels,
    )


def _check_am_start(serial: str, response: Any) -> None:
    """`am start` often exits 0 on failure and prints 'Error: ...' instead."""
    output = str(getattr(response, "output", response) or "")
    exit_code = getattr(response, "exit_code", 0)
    if exit_code not in (0, None) or "Error:" in output:
        detail = output.strip().splitlines()[-1] if output.strip() else f"exit code {exit_code}"
        raise base.DeviceError(f"{serial}: could not open the URL: {detail}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _result(
    started: float, package: str | None, evidence: str | None, stopped: base.StopReason | None
) -> base.RunResult:
    return base.RunResult(
        foreground_package=package,
        elapsed_sec=time.monotonic() - started,
        evidence_path=evidence,
        stopped=stopped,
        simulated=False,
    )
