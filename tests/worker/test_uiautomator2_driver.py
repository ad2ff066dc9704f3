"""The uiautomator2 driver against a device double, and its adb side against a fake adb server.

The device double stands in for a uiautomator2.Device. The adb side runs the real
adbutils client against a small loopback server that speaks the adb host protocol
(4-hex-digit length + request; "OKAY" + 4-hex-digit length + payload).
"""

from __future__ import annotations

import asyncio
import pathlib
import socket
import socketserver
import threading
from typing import Any, Iterator

import adbutils
import pytest
import uiautomator2
import uiautomator2.exceptions

from tests.support.waiting import wait_until
from worker.drivers import base, create_driver
from worker.drivers import uiautomator2_driver as u2d

FAST_STEP_S = 0.01  # the driver's step, shrunk so a test run takes milliseconds
WAIT_TIMEOUT_S = 10.0  # safety deadline only; conditions normally hold at once
SERIAL = "R58M123ABC"
JPEG_BYTES = b"\xff\xd8\xff\xe0fake-jpeg\xff\xd9"


# --- a double of uiautomator2.Device ---------------------------------------------------


class FakeDevice:
    def __init__(self, packages: list[str] | None = None, am_output: str = "Starting: Intent { act=VIEW }") -> None:
        self.shell_calls: list[Any] = []
        self.app_current_calls = 0
        self.screenshots: list[str] = []
        self.info_calls = 0
        self._packages = packages or ["com.android.chrome"]
        self._am_output = am_output
        self.fail: dict[str, BaseException] = {}  # method name -> exception to raise

    def _maybe_fail(self, method: str) -> None:
        if method in self.fail:
            raise self.fail[method]

    def shell(self, cmdargs: Any, timeout: float = 60) -> uiautomator2.ShellResponse:
        self._maybe_fail("shell")
        self.shell_calls.append(cmdargs)
        return uiautomator2.ShellResponse(self._am_output, 0)

    def app_current(self) -> dict[str, Any]:
        self._maybe_fail("app_current")
        package = self._packages[min(self.app_current_calls, len(self._packages) - 1)]
        self.app_current_calls += 1
        return {"package": package, "activity": ".Main", "pid": 1234}

    def screenshot(self, filename: str) -> None:
        self._maybe_fail("screenshot")
        pathlib.Path(filename).write_bytes(JPEG_BYTES)
        self.screenshots.append(filename)

    @property
    def info(self) -> dict[str, Any]:
        self._maybe_fail("info")
        self.info_calls += 1
        return {"currentPackageName": self._packages[0]}


class Connector:
    """A connect() double that counts calls per serial."""

    def __init__(self, device: FakeDevice, error: BaseException | None = None) -> None:
        self.device = device
        self.error = error
        self.calls: list[str] = []

    def __call__(self, serial: str) -> FakeDevice:
        self.calls.append(serial)
        if self.error is not None:
            raise self.error
        return self.device


class StopAfter:
    def __init__(self, call: int | None = None, reason: base.StopReason = base.StopReason.CANCELLED) -> None:
        self.calls = 0
        self._call = call
        self._reason = reason

    def __call__(self) -> base.StopReason | None:
        self.calls += 1
        return self._reason if self._call is not None and self.calls >= self._call else None


def make_driver(connector: Connector, **options: Any) -> u2d.Uiautomator2Driver:
    # These tests never list devices; a bare object makes any adb use fail loudly.
    return u2d.Uiautomator2Driver(
        adb_client=object(), connect=connector, step_s=FAST_STEP_S, **options
    )


def request_for(tmp_path: pathlib.Path, url: str = "https://example.com/", duration_sec: float = 0.05) -> base.OpenUrlRequest:
    return base.OpenUrlRequest(
        serial=SERIAL,
        url=url,
        duration_sec=duration_sec,
        evidence_dir=tmp_path / "evidence" / "job-1",
        evidence_name="job-1-dev-1-a1",
    )


# --- open_url ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_open_url_sends_the_view_intent_as_separate_arguments(tmp_path: pathlib.Path) -> None:
    device = FakeDevice()
    url = "https://example.com/a?b=1&c=2;echo pwned $(id) 'q'"

    await make_driver(Connector(device)).open_url(request_for(tmp_path, url=url), StopAfter())

    assert device.shell_calls == [
        ["am", "start", "-a", "android.intent.action.VIEW", "-d", url],
    ]


@pytest.mark.asyncio
async def test_open_url_polls_the_foreground_each_step_and_saves_the_screenshot(tmp_path: pathlib.Path) -> None:
    device = FakeDevice(packages=["com.android.chrome", "com.android.chrome", "com.other.app"])
    stop = StopAfter()

    result = await make_driver(Connector(device)).open_url(request_for(tmp_path, duration_sec=0.05), stop)

    assert stop.calls == 5  # once before each step, the first just before the intent
    assert device.app_current_calls == 5  # 0.05 s in 0.01 s steps
    assert result.foreground_package == "com.other.app"  # the last one seen
    expected = tmp_path / "evidence" / "job-1" / "job-1-dev-1-a1.jpg"
    assert device.screenshots == [str(expected)]
    assert result.evidence_path == str(expected)
    assert expected.read_bytes() == JPEG_BYTES
    assert result.stopped is None and result.simulated is False


@pytest.mark.asyncio
async def test_stop_is_honoured_within_a_step(tmp_path: pathlib.Path) -> None:
    device = FakeDevice()
    stop = StopAfter(call=3)

    result = await make_driver(Connector(device)).open_url(request_for(tmp_path, duration_sec=3600), stop)

    assert result.stopped == base.StopReason.CANCELLED
    assert stop.calls == 3
    assert device.app_current_calls == 2  # two steps ran before the 3rd check
    assert device.screenshots == [] and result.evidence_path is None


@pytest.mark.asyncio
async def test_stop_before_start_never_opens_the_url(tmp_path: pathlib.Path) -> None:
    device = FakeDevice()
    connector = Connector(device)

    result = await make_driver(connector).open_url(request_for(tmp_path), StopAfter(call=1))

    assert result.stopped == base.StopReason.CANCELLED
    assert device.shell_calls == [] and device.app_current_calls == 0


@pytest.mark.parametrize(
    ("method", "error", "message"),
    [
        ("shell", adbutils.AdbError("device offline"), "could not start the VIEW intent: AdbError: device offline"),
        ("app_current", uiautomator2.exceptions.DeviceError("Couldn't get focused app"), "could not read the foreground app"),
        ("screenshot", uiautomator2.exceptions.HTTPError("server gone"), "could not take the screenshot"),
        ("screenshot", OSError("disk full"), "could not take the screenshot: OSError: disk full"),
    ],
)
@pytest.mark.asyncio
async def test_library_errors_become_device_errors(
    tmp_path: pathlib.Path, method: str, error: BaseException, message: str
) -> None:
    device = FakeDevice()
    device.fail[method] = error

    with pytest.raises(base.DeviceError, match=message) as caught:
        await make_driver(Connector(device)).open_url(request_for(tmp_path), StopAfter())

    assert str(caught.value).startswith(SERIAL)
    assert caught.value.__cause__ is error


@pytest.mark.asyncio
async def test_am_start_error_output_is_a_device_error(tmp_path: pathlib.Path) -> None:
    device = FakeDevice(am_output="Starting: Intent { }\nError: Activity not started, unable to resolve Intent")

    with pytest.raises(base.DeviceError, match="unable to resolve Intent"):
        await make_driver(Connector(device)).open_url(request_for(tmp_path), StopAfter())
    assert device.app_current_calls == 0


@pytest.mark.asyncio
async def test_connect_failure_is_a_device_error(tmp_path: pathlib.Path) -> None:
    connector = Connector(FakeDevice(), error=uiautomator2.exceptions.ConnectError("no uiautomator"))

    with pytest.raises(base.DeviceError, match="cannot connect uiautomator2: ConnectError"):
        await make_driver(connector).open_url(request_for(tmp_path), StopAfter())


@pytest.mark.asyncio
async def test_a_hung_call_times_out_as_a_device_error(tmp_path: pathlib.Path) -> None:
    release = threading.Event()

    class HangingDevice(FakeDevice):
        def shell(self, cmdargs: Any, timeout: float = 60) -> uiautomator2.ShellResponse:
            release.wait(WAIT_TIMEOUT_S)
            return super().shell(cmdargs)

    driver = make_driver(Connector(HangingDevice()), call_timeout_s=0.05)
    try:
        with pytest.raises(base.DeviceError, match="could not start the VIEW intent: timed out"):
            await driver.open_url(request_for(tmp_path), StopAfter())
    finally:
        release.set()


# --- connect caching and probe ----------------------------------------------------------


@pytest.mark.asyncio
async def test_connects_once_per_device_even_when_called_concurrently(tmp_path: pathlib.Path) -> None:
    connector = Connector(FakeDevice())
    driver = make_driver(connector)

    assert await asyncio.gather(*(driver.probe(SERIAL) for _ in range(5))) == [True] * 5
    await driver.open_url(request_for(tmp_path), StopAfter())

    assert connector.calls == [SERIAL]


@pytest.mark.asyncio
async def test_probe_fails_on_error_and_reconnects_next_time() -> None:
    device = FakeDevice()
    connector = Connector(device)
    driver = make_driver(connector)
    device.fail["info"] = uiautomator2.exceptions.HTTPError("server down")

    assert await driver.probe(SERIAL) is False

    device.fail.clear()
    assert await driver.probe(SERIAL) is True
    assert connector.calls == [SERIAL, SERIAL]


@pytest.mark.asyncio
async def test_discover_maps_an_unreachable_adb_server_to_device_error() -> None:
    class DeadAdb:
        def list(self, extended: bool = False) -> list[Any]:
            raise adbutils.AdbError("connection refused")

    driver = u2d.Uiautomator2Driver(adb_client=DeadAdb(), connect=Connector(FakeDevice()))
    with pytest.raises(base.DeviceError, match="adb server not reachable"):
        await driver.discover()


# --- a fake adb server speaking the host protocol ---------------------------------------


class FakeAdbServer:
    """Answers host:version, host:devices, host:devices-l and streams host:track-devices."""

    VERSION = 41

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._devices: dict[str, tuple[str, str]] = {}  # serial -> (state, devices-l tags)
        self._trackers: list[socket.socket] = []
        self.requests: list[str] = []
        self.tracker_closed = threading.Event()
        fake = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                fake._handle(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.drop_trackers()
        self._server.shutdown()
        self._server.server_close()

    def set_device(self, serial: str, state: str, tags: str = "") -> None:
        with self._lock:
            self._devices[serial] = (state, tags)
        self._push()

    def unplug(self, serial: str) -> None:
        with self._lock:
            self._devices.pop(serial, None)
        self._push()

    def drop_trackers(self) -> None:
        """Close every track-devices stream, as a dying adb server would."""
        with self._lock:
            trackers, self._trackers = self._trackers, []
        for conn in trackers:
            conn.shutdown(socket.SHUT_RDWR)

    def tracker_count(self) -> int:
        with self._lock:
            return len(self._trackers)

    # protocol ----------------------------------------------------------------------------

    def _listing(self, extended: bool) -> str:
        with self._lock:
            devices = dict(self._devices)
        lines = []
        for serial, (state, tags) in devices.items():
            lines.append(f"{serial}\t{state} {tags}".rstrip() if extended else f"{serial}\t{state}")
        return "".join(line + "\n" for line in lines)

    @staticmethod
    def _block(payload: str) -> bytes:
        data = payload.encode()
        return f"{len(data):04x}".encode() + data

    def _handle(self, conn: socket.socket) -> None:
        length = int(_recv_exact(conn, 4), 16)
        request = _recv_exact(conn, length).decode()
        self.requests.append(request)
        if request == "host:version":
            conn.sendall(b"OKAY" + self._block(f"{self.VERSION:04x}"))
        elif request == "host:devices":
            conn.sendall(b"OKAY" + self._block(self._listing(extended=False)))
        elif request == "host:devices-l":
            conn.sendall(b"OKAY" + self._block(self._listing(extended=True)))
        elif request == "host:track-devices":
            with self._lock:
                conn.sendall(b"OKAY")
                self._trackers.append(conn)
            self._push_to(conn)
            # Hold the stream open until the client or drop_trackers() closes it.
            while conn.recv(1):
                pass
            with self._lock:
                if conn in self._trackers:
                    self._trackers.remove(conn)
            self.tracker_closed.set()
        else:
            conn.sendall(b"FAIL" + self._block(f"unknown host service {request}"))

    def _push(self) -> None:
        with self._lock:
            trackers = list(self._trackers)
        for conn in trackers:
            self._push_to(conn)

    def _push_to(self, conn: socket.socket) -> None:
        with self._lock:  # one whole block at a time per stream
            try:
                conn.sendall(self._block(self._listing_unlocked()))
            except OSError:
                pass

    def _listing_unlocked(self) -> str:
        return "".join(f"{serial}\t{state}\n" for serial, (state, _) in self._devices.items())


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("client closed")
        data += chunk
    return data


@pytest.fixture
def adb_server() -> Iterator[FakeAdbServer]:
    server = FakeAdbServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def adb_driver(server: FakeAdbServer) -> u2d.Uiautomator2Driver:
    client = adbutils.AdbClient("127.0.0.1", server.port)
    return u2d.Uiautomator2Driver(adb_client=client, connect=Connector(FakeDevice()))


def test_fake_server_speaks_the_host_protocol(adb_server: FakeAdbServer) -> None:
    client = adbutils.AdbClient("127.0.0.1", adb_server.port)
    adb_server.set_device("A1", "device")
    adb_server.set_device("B2", "offline")

    assert client.server_version() == FakeAdbServer.VERSION
    assert [d.serial for d in client.device_list()] == ["A1"]  # adbutils keeps only "device"


@pytest.mark.asyncio
async def test_discover_maps_adb_states(adb_server: FakeAdbServer) -> None:
    adb_server.set_device("R58M1", "device", "product:x model:Pixel_7 device:y transport_id:1")
    adb_server.set_device("R58M2", "offline", "transport_id:2")
    adb_server.set_device("R58M3", "unauthorized", "usb:1-1 transport_id:3")

    devices = {d.serial: d for d in await adb_driver(adb_server).discover()}

    assert {s: d.health for s, d in devices.items()} == {
        "R58M1": base.DeviceHealth.ONLINE,
        "R58M2": base.DeviceHealth.OFFLINE,
        "R58M3": base.DeviceHealth.OFFLINE,
    }
    assert devices["R58M1"].model == "Pixel_7"
    assert devices["R58M1"].labels["transport_id"] == "1"
    assert devices["R58M3"].labels["adb_state"] == "unauthorized"
    assert not any(d.simulated for d in devices.values())
    assert "host:devices-l" in adb_server.requests


@pytest.mark.asyncio
async def test_discover_drops_the_handle_of_a_phone_that_went_away(adb_server: FakeAdbServer) -> None:
    connector = Connector(FakeDevice())
    driver = u2d.Uiautomator2Driver(
        adb_client=adbutils.AdbClient("127.0.0.1", adb_server.port), connect=connector
    )
    adb_server.set_device("R58M1", "device")
    assert await driver.probe("R58M1") is True

    adb_server.set_device("R58M1", "offline")
    await driver.discover()
    adb_server.set_device("R58M1", "device")
    assert await driver.probe("R58M1") is True

    assert connector.calls == ["R58M1", "R58M1"]


@pytest.mark.asyncio
async def test_track_devices_changes_trigger_on_change(adb_server: FakeAdbServer) -> None:
    driver = adb_driver(adb_server)
    adb_server.set_device("R58M1", "device")
    snapshots: list[dict[str, base.DeviceHealth]] = []

    async def on_change() -> None:
        snapshots.append({d.serial: d.health for d in await driver.discover()})

    watcher = driver.watch(on_change)
    assert watcher is not None
    task = asyncio.ensure_future(watcher)
    try:
        await wait_until(lambda: adb_server.tracker_count() == 1, what="the track-devices stream")
        await wait_until(lambda: len(snapshots) >= 1, what="the first listing")

        adb_server.set_device("R58M2", "unauthorized")
        await wait_until(lambda: snapshots[-1].get("R58M2") == base.DeviceHealth.OFFLINE, what="a new phone")
        adb_server.set_device("R58M2", "device")
        await wait_until(lambda: snapshots[-1].get("R58M2") == base.DeviceHealth.ONLINE, what="authorisation")
        adb_server.unplug("R58M1")
        await wait_until(lambda: "R58M1" not in snapshots[-1], what="an unplugged phone")

        # A broken stream means the device list is unknown: the worker is told to rediscover.
        count = len(snapshots)
        adb_server.drop_trackers()
        await wait_until(lambda: len(snapshots) > count, what="a rediscovery after adb dropped the stream")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    # Cancelling the watcher ends the tracking thread and closes its adb connection.
    await wait_until(
        lambda: not any(t.name == "adb-track-devices" for t in threading.enumerate()),
        what="the tracking thread to end",
    )
    await wait_until(lambda: adb_server.tracker_count() == 0, what="the stream to close")


def test_create_driver_builds_the_uiautomator2_driver() -> None:
    driver = create_driver("uiautomator2", adb_client=object(), connect=Connector(FakeDevice()))
    assert isinstance(driver, u2d.Uiautomator2Driver)
    assert driver.simulated is False and driver.name == "uiautomator2"
