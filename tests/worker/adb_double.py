"""A local double of the adb server and of the phones behind it, on the real wire protocol.

The real adbutils client (and the real uiautomator2.connect) talk to it over TCP:

- host services: `host:version`, `host:devices`, `host:devices-l` (with "no permissions"
  lines and duplicate serials), `host:track-devices`, `host:tport:serial:`,
  `host:transport:`, `host:transport-id:` and `host-serial:<serial>:<cmd>`;
- device services: `shell:<cmd>` (what adbutils' shell2 sends: the shell-quoted command with
  `; echo X4EXIT:$?` appended; the double shlex-splits it, so quoting is tested end to end),
  `sync:` (STAT and SEND, enough for uiautomator2 to push u2.jar) and `tcp:9008` (the
  on-device uiautomator2 server's HTTP: /ping and JSON-RPC).

Each `PhoneDouble` plays one phone: screen awake or asleep, keyguard, default browser,
App Links, Chrome's first-run screen, the chooser, a black screen, a process holding the
UiAutomation service, its properties (getprop), its battery (dumpsys battery), a reboot
(`reboot` takes it offline until the test calls `AdbDouble.boot`), and faults: calls that never return (they block on `AdbDouble.release`,
which only the test's teardown sets), transient broken answers and null focus.
Latencies are device seconds added to a `FakeClock` the driver also reads, so tests are
exact and fast. The dumpsys texts are shaped after real phones' (the lines the driver
reads), not copies of any one build.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import io
import json
import shlex
import socket
import socketserver
import stat
import struct
import threading
import time
import urllib.parse
from typing import Callable, Iterable

from PIL import Image

CHROME = "com.android.chrome"
SAMSUNG_BROWSER = "com.sec.android.app.sbrowser"
LAUNCHER = "com.google.android.apps.nexuslauncher"
YOUTUBE = "com.google.android.youtube"
CHOOSER_OLD = "android"  # the "Open with" ResolverActivity up to Android 13
CHOOSER_NEW = "com.android.intentresolver"  # Android 14
APPIUM_SERVER = "io.appium.uiautomator2.server"
U2_MAIN = "com.wetest.uia2.Main"
U2_JAR = "/data/local/tmp/u2.jar"
U2_PORT = 9008
EXIT_MAGIC = "; echo X4EXIT:$?"  # adbutils' shell2 (shell v1) appends this to learn the exit code
NO_PERMISSIONS = ("no permissions (missing udev rules? user is in the plugdev group); "
                  "see [http://developer.android.com/tools/device.html]")
ACTIVITIES = {
    CHROME: "com.google.android.apps.chrome.Main",
    SAMSUNG_BROWSER: "com.sec.android.app.sbrowser.SBrowserMainActivity",
    LAUNCHER: "com.google.android.apps.nexuslauncher.NexusLauncherActivity",
    YOUTUBE: "com.google.android.youtube.UrlActivity",
}
CHROME_FIRST_RUN = "org.chromium.chrome.browser.firstrun.FirstRunActivity"
KEYCODES = {"KEYCODE_HOME": "HOME", "3": "HOME", "KEYCODE_WAKEUP": "WAKEUP", "224": "WAKEUP",
            "KEYCODE_SLEEP": "SLEEP", "223": "SLEEP", "KEYCODE_POWER": "POWER", "26": "POWER"}
SCREEN_PX = (12, 24)  # screencap size: small, the driver only checks it is a real, non-black PNG


class FakeClock:
    """Device time: the double adds latencies to it, the driver reads it and sleeps on it."""

    def __init__(self) -> None:
        self._now = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(max(seconds, 0.0))
        await asyncio.sleep(0)  # still yield, as a real sleep would


def verb(argv: list[str]) -> str:
    """The command word faults and latencies are keyed by: "dumpsys window", "am start",
    "screencap", "md5sum", "app_process" (the uiautomator2 server launch), ..."""
    if not argv:
        return ""
    if any(word == U2_MAIN for word in argv):
        return "app_process"
    if argv[0] == "toybox" and len(argv) > 1:
        return argv[1]
    if argv[0] in ("dumpsys", "am", "pm", "cmd", "input") and len(argv) > 1:
        return f"{argv[0]} {argv[1]}"
    return argv[0]


def png(color: tuple[int, int, int], size: tuple[int, int] = SCREEN_PX) -> bytes:
    image = Image.new("RGB", size, color)
    if color != (0, 0, 0):
        image.putpixel((1, 1), (255, 255, 255))  # a page has some detail
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@dataclasses.dataclass
class PhoneDouble:
    serial: str
    state: str = "device"  # adb's state word(s): device, offline, unauthorized, NO_PERMISSIONS
    model: str = "Pixel_7"
    usb: str = "1-1"
    sdk: int = 34
    manufacturer: str = "Google"
    android_version: str = "14"
    abi: str = "arm64-v8a"
    booted: bool = True  # sys.boot_completed: adb lists a booting phone as `device` before it is 1
    battery: str | None = None  # what `dumpsys battery` answers; None: a Pixel's, from the fields below
    battery_level: int = 85
    battery_tenths_c: int = 291
    usb_powered: bool = True
    awake: bool = True
    locked: bool = False  # keyguard showing
    default_browser: str | None = CHROME  # None: no default chosen, a bare VIEW shows the chooser
    installed: set[str] = dataclasses.field(default_factory=lambda: {CHROME, LAUNCHER})
    app_links: dict[str, str] = dataclasses.field(default_factory=dict)  # host -> app (bare intents only)
    first_run: bool = False  # Chrome shows its first-run screen instead of the page
    black_screen: bool = False  # screencap answers an all-black frame (secure window, panel off)
    broken_screencap: bool = False  # screencap answers no PNG at all
    uia_holder: str | None = None  # a process holding UiAutomation: APPIUM_SERVER or U2_MAIN (stale)
    holder_unkillable: bool = False  # the holder survives force-stop and pkill
    launch_dies: bool = False  # the uiautomator2 server quits at launch
    latency_s: dict[str, float] = dataclasses.field(default_factory=dict)  # verb -> device seconds
    hang: set[str] = dataclasses.field(default_factory=set)  # verbs (or "jsonrpc") that never return
    hang_all: bool = False  # the whole phone stops answering: every shell and server call hangs
    transient: dict[str, int] = dataclasses.field(default_factory=dict)  # verb -> answers to break
    transient_after_intent: dict[str, int] = dataclasses.field(default_factory=dict)  # the same, from the intent on
    focus_gaps: int = 0  # next dumpsys window answers show no focused window (a transition)
    # After each VIEW intent, the windows dumpsys shows first (package, activity), one per call.
    focus_after_intent: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    # what happened
    commands: list[list[str]] = dataclasses.field(default_factory=list)
    foreground: tuple[str, str] = (LAUNCHER, ACTIVITIES[LAUNCHER])
    tabs: int = 0
    tab_ids: set[str] = dataclasses.field(default_factory=set)
    force_stopped: list[str] = dataclasses.field(default_factory=list)
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)
    u2_running: bool = False
    u2_launches: int = 0
    reboots: int = 0
    transport_id: int = 0  # given by AdbDouble.add
    _stream_stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    _shown_next: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    # --- what tests read ----------------------------------------------------------------

    def ran(self, word: str) -> list[list[str]]:
        return [argv for argv in list(self.commands) if verb(argv) == word]

    @property
    def chooser(self) -> str:
        return CHOOSER_NEW if self.sdk >= 34 else CHOOSER_OLD

    # --- shell commands ------------------------------------------------------------------

    def run(self, argv: list[str]) -> tuple[bytes, int]:  # noqa: C901 - one branch per command
        word = verb(argv)
        if word == "getprop":
            props = self.props()
            if len(argv) == 1:  # the whole listing, as `getprop` prints it
                return "".join(f"[{k}]: [{v}]\n" for k, v in props.items()).encode(), 0
            return (props.get(argv[1], "") + "\n").encode(), 0
        if word == "dumpsys battery":
            return (self.battery if self.battery is not None else self._dumpsys_battery()).encode(), 0
        if word == "md5sum":
            data = self.files.get(argv[-1])
            if data is None:
                return f"md5sum: {argv[-1]}: No such file or directory\n".encode(), 1
            return f"{hashlib.md5(data).hexdigest()}  {argv[-1]}\n".encode(), 0
        if word == "dumpsys power":
            wake = "Awake" if self.awake else "Asleep"
            return (f"POWER MANAGER (dumpsys power)\n  mWakefulness={wake}\n"
                    f"  mHoldingDisplaySuspendBlocker={str(self.awake).lower()}\n").encode(), 0
        if word == "dumpsys SurfaceFlinger":
            return b'Display 4619827259835644672 (HWC display 0): port=0 pnpId=GGL displayName="panel"\n', 0
        if word == "dumpsys display":
            return b"  mOverrideDisplayInfo=DisplayInfo{... rotation 0, orientation=0 ...}\n", 0
        if word == "dumpsys window":
            return self._dumpsys_window(full=len(argv) == 2).encode(), 0
        if word == "dumpsys activity":
            package, activity = self.foreground
            if argv[2:3] == ["top"]:
                return f"TASK 12\n  ACTIVITY {package}/{activity} 1f2e3d pid=4321\n".encode(), 0
            return f"  mResumedActivity: ActivityRecord{{7a8b u0 {package}/{activity} t12}}\n".encode(), 0
        if word == "input keyevent":
            return self._key(KEYCODES.get(argv[2], argv[2])), 0
        if word == "am start":
            return self._am_start(argv[2:])
        if word == "am force-stop":
            package = argv[2]
            self.force_stopped.append(package)
            if self.foreground[0] == package:
                self.foreground = (LAUNCHER, ACTIVITIES[LAUNCHER])
            if self.uia_holder == package and not self.holder_unkillable:
                self.uia_holder = None
            return b"", 0
        if word == "pkill":
            pattern = argv[-1]
            killed = False
            if self.uia_holder and pattern in self.uia_holder and not self.holder_unkillable:
                self.uia_holder, killed = None, True
            if self.u2_running and pattern in U2_MAIN:
                self._stream_stop.set()
                killed = True
            return b"", 0 if killed else 1
        if word == "pm path":
            if argv[2] in self.installed:
                return f"package:/data/app/~~x/{argv[2]}-1/base.apk\n".encode(), 0
            return b"", 1
        if word == "cmd package" and argv[2:3] == ["resolve-activity"]:
            target = self.default_browser
            head = "priority=0 preferredOrder=0 match=0x208000 specificIndex=-1 isDefault=true\n"
            if target is None:
                return (head + f"{self.chooser}/com.android.internal.app.ResolverActivity\n").encode(), 0
            return (head + f"{target}/{ACTIVITIES.get(target, '.Main')}\n").encode(), 0
        if word == "screencap":
            if self.broken_screencap:
                return b"", 1
            if not self.awake or self.black_screen:
                return png((0, 0, 0)), 0
            return png((40, 40, 90) if self.locked else (230, 240, 250)), 0
        if word == "wm":
            return f"Physical size: {SCREEN_PX[0]}x{SCREEN_PX[1]}\n".encode(), 0
        return f"/system/bin/sh: {argv[0] if argv else ''}: inaccessible or not found\n".encode(), 127

    def props(self) -> dict[str, str]:
        return {"dalvik.vm.heapsize": "512m", "ro.build.version.release": self.android_version,
                "ro.build.version.sdk": str(self.sdk), "ro.product.cpu.abi": self.abi,
                "ro.product.cpu.abilist": f"{self.abi},armeabi-v7a,armeabi",
                "ro.product.manufacturer": self.manufacturer, "ro.product.model": self.model,
                "ro.serialno": self.serial, "sys.boot_completed": "1" if self.booted else ""}

    def _dumpsys_battery(self) -> str:
        usb = str(self.usb_powered).lower()
        return ("Current Battery Service state:\n  AC powered: false\n"
                f"  USB powered: {usb}\n  Wireless powered: false\n  Dock powered: false\n"
                "  Max charging current: 500000\n  Max charging voltage: 5000000\n  Charge counter: 3719000\n"
                f"  status: {2 if self.usb_powered else 3}\n  health: 2\n  present: true\n"
                f"  level: {self.battery_level}\n  scale: 100\n  voltage: 4187\n"
                f"  temperature: {self.battery_tenths_c}\n  technology: Li-ion\n")

    def _key(self, key: str) -> bytes:
        if key == "WAKEUP":
            self.awake = True
        elif key == "SLEEP":
            self.awake = False
        elif key == "POWER":
            self.awake = not self.awake
        elif key == "HOME" and self.awake and not self.locked:
            self.foreground = (LAUNCHER, ACTIVITIES[LAUNCHER])
        return b""

    def _am_start(self, args: list[str]) -> tuple[bytes, int]:
        action = data = package = None
        extras: dict[str, str] = {}
        rest = list(args)
        while rest:
            flag = rest.pop(0)
            if flag == "-a":
                action = rest.pop(0)
            elif flag == "-d":
                data = rest.pop(0)
            elif flag == "-p":
                package = rest.pop(0)
            elif flag in ("-e", "--es"):
                key = rest.pop(0)
                extras[key] = rest.pop(0)
        described = f"act={action} dat={data}" + (f" pkg={package}" if package else "")
        if package is not None and package not in self.installed:
            return f"Starting: Intent {{ {described} }}\nError: Activity not started, unable to resolve " \
                   f"Intent {{ {described} flg=0x10000000 }}\n".encode(), 0
        host = urllib.parse.urlsplit(data or "").hostname or ""
        self._shown_next = list(self.focus_after_intent)
        for word, n in self.transient_after_intent.items():
            self.transient[word] = self.transient.get(word, 0) + n
        target = package or self.app_links.get(host) or self.default_browser
        if target is None:
            self.foreground = (self.chooser, "com.android.internal.app.ResolverActivity")
        elif target == CHROME and self.first_run:
            self.foreground = (CHROME, CHROME_FIRST_RUN)
        else:
            self.foreground = (target, ACTIVITIES.get(target, f"{target}.Main"))
            app_id = extras.get("com.android.browser.application_id")
            if app_id is None or app_id not in self.tab_ids:
                self.tabs += 1  # a VIEW without an application id opens another tab
            if app_id is not None:
                self.tab_ids.add(app_id)
        return f"Starting: Intent {{ {described} }}\n".encode(), 0

    def _dumpsys_window(self, full: bool) -> str:
        package, activity = self.foreground
        if self.focus_gaps > 0:
            self.focus_gaps -= 1
            focus, focused_app = "null", "null"
        elif self._shown_next:
            shown = self._shown_next.pop(0)
            focus = f"Window{{4f2e1a u0 {shown[0]}/{shown[1]}}}"
            focused_app = f"ActivityRecord{{9c1d2e u0 {shown[0]}/{shown[1]} t12}}"
        else:
            focused_app = f"ActivityRecord{{9c1d2e u0 {package}/{activity} t12}}"
            lock_window = "NotificationShade" if self.sdk >= 30 else "StatusBar"
            shown_name = lock_window if self.locked else f"{package}/{activity}"
            focus = f"Window{{4f2e1a u0 {shown_name}}}"
        lines = ["WINDOW MANAGER WINDOWS (dumpsys window windows)",
                 f"  mCurrentFocus={focus}", f"  mFocusedApp={focused_app}"]
        if full:
            locked = str(self.locked).lower()
            lines += ["WINDOW MANAGER POLICY STATE (dumpsys window policy)"]
            if self.sdk >= 30:
                lines += ["    KeyguardServiceDelegate", f"      showing={locked}", f"    isKeyguardShowing={locked}"]
            else:
                lines += [f"    mShowingLockscreen={locked} mShowingDream=false mDreamingLockscreen={locked}"]
        return "\n".join(lines) + "\n"

    # --- the on-device uiautomator2 server -----------------------------------------------

    def jsonrpc(self, method: str) -> object:
        """The on-device server's answer; KeyError for a method it does not know."""
        if method == "deviceInfo":
            return {"currentPackageName": self.foreground[0], "displayWidth": SCREEN_PX[0],
                    "displayHeight": SCREEN_PX[1], "sdkInt": self.sdk, "screenOn": self.awake,
                    "productName": self.model}
        if method == "takeScreenshot":
            # A JPEG in base64; null when capture fails (uiautomator2 then falls back to
            # adbutils' screencap, whose own fallback is an all-black image).
            if self.broken_screencap:
                return None
            black = not self.awake or self.black_screen
            image = Image.new("RGB", SCREEN_PX, (0, 0, 0) if black else (230, 240, 250))
            out = io.BytesIO()
            image.save(out, format="JPEG")
            return base64.b64encode(out.getvalue()).decode()
        raise KeyError(method)


class AdbDouble:
    """The adb server double. Start it, add phones, point an AdbClient at `port`."""

    VERSION = 41

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock
        self.release = threading.Event()  # hung calls block on it; set only at stop()
        self.requests: list[str] = []
        self.hung_calls = 0
        self.hung_now = 0
        self._phones: list[PhoneDouble] = []
        self._next_transport_id = 1
        self._lock = threading.RLock()
        self._trackers: list[socket.socket] = []
        double = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    double._handle(self.request)
                except (ConnectionError, OSError, EOFError):
                    pass

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True,
                                        name="adb-double")

    def start(self) -> AdbDouble:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        with self._lock:
            phones = list(self._phones)
        for phone in phones:
            phone._stream_stop.set()
        self.drop_trackers()
        self._server.shutdown()
        self._server.server_close()

    # --- the phones ------------------------------------------------------------------------

    def add(self, phone: PhoneDouble) -> PhoneDouble:
        with self._lock:
            phone.transport_id = self._next_transport_id
            self._next_transport_id += 1
            self._phones.append(phone)
        self._push()
        return phone

    def remove(self, phone: PhoneDouble) -> None:
        with self._lock:
            self._phones.remove(phone)
        phone._stream_stop.set()
        self._push()

    def set_state(self, phone: PhoneDouble, state: str) -> None:
        with self._lock:
            phone.state = state
        self._push()

    def boot(self, phone: PhoneDouble, completed: bool = True) -> None:
        """The rebooted phone is back on USB (adb lists it as a device); `completed`: and Android
        has finished booting."""
        with self._lock:
            phone.state = "device"
            phone.booted = completed
        self._push()

    def tracker_count(self) -> int:
        with self._lock:
            return len(self._trackers)

    def drop_trackers(self) -> None:
        """Close every track-devices stream, as a dying adb server would."""
        with self._lock:
            trackers, self._trackers = self._trackers, []
        for conn in trackers:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # --- host protocol ----------------------------------------------------------------------

    def _listing(self, extended: bool) -> str:
        with self._lock:
            phones = list(self._phones)
        lines = []
        for p in phones:
            if not extended:
                lines.append(f"{p.serial}\t{p.state}")
            elif p.state == "device":
                lines.append(f"{p.serial:<22} device usb:{p.usb} product:{p.model.lower()} model:{p.model} "
                             f"device:{p.model.lower()} transport_id:{p.transport_id}")
            else:
                lines.append(f"{p.serial:<22} {p.state} usb:{p.usb} transport_id:{p.transport_id}")
        return "".join(line + "\n" for line in lines)

    def _find(self, serial: str | None = None, transport_id: int | None = None) -> PhoneDouble | str:
        """The phone, or adb's error text."""
        with self._lock:
            if transport_id is not None:
                found = [p for p in self._phones if p.transport_id == transport_id]
            else:
                found = [p for p in self._phones if p.serial == serial]
        if not found:
            return f"device '{serial or transport_id}' not found"
        if len(found) > 1:
            return "more than one device"
        phone = found[0]
        if phone.state == "unauthorized":
            return "device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set"
        if phone.state.startswith("no permissions"):
            return "insufficient permissions for device"
        if phone.state != "device":
            return "device offline"
        return phone

    def _handle(self, conn: socket.socket) -> None:
        request = _read_request(conn)
        self.requests.append(request)
        if request == "host:version":
            conn.sendall(b"OKAY" + _block(f"{self.VERSION:04x}"))
        elif request in ("host:devices", "host:devices-l"):
            conn.sendall(b"OKAY" + _block(self._listing(extended=request.endswith("-l"))))
        elif request == "host:track-devices":
            self._track(conn)
        elif request.startswith(("host:tport:serial:", "host:transport:", "host:transport-id:")):
            kind, _, target = request.partition(":")[2].partition(":")
            if kind == "tport":
                target = target.removeprefix("serial:")
            phone = self._find(transport_id=int(target)) if kind == "transport-id" else self._find(target)
            if isinstance(phone, str):
                conn.sendall(b"FAIL" + _block(phone))
                return
            conn.sendall(b"OKAY" + (struct.pack("<Q", phone.transport_id) if kind == "tport" else b""))
            self._device_service(conn, phone, _read_request(conn))
        elif request.startswith(("host-serial:", "host-transport-id:")):
            kind, rest = request.split(":", 1)
            target, command = rest.rsplit(":", 1)
            phone = self._find(transport_id=int(target)) if kind == "host-transport-id" else self._find(target)
            if isinstance(phone, str):
                conn.sendall(b"FAIL" + _block(phone))
            elif command == "get-state":
                conn.sendall(b"OKAY" + _block("device"))
            elif command == "features":
                conn.sendall(b"OKAY" + _block("shell_v2,cmd,stat_v2"))
            else:
                conn.sendall(b"FAIL" + _block(f"unsupported {command}"))
        else:
            conn.sendall(b"FAIL" + _block(f"unknown host service {request}"))

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            conn.sendall(b"OKAY")
            self._trackers.append(conn)
            conn.sendall(_block(self._listing(extended=False)))
        try:
            while conn.recv(1):  # held open until the client or drop_trackers() closes it
                pass
        finally:
            with self._lock:
                if conn in self._trackers:
                    self._trackers.remove(conn)

    def _push(self) -> None:
        with self._lock:
            listing = _block(self._listing(extended=False))
            for conn in list(self._trackers):
                try:
                    conn.sendall(listing)
                except OSError:
                    pass

    # --- device services ----------------------------------------------------------------------

    def _device_service(self, conn: socket.socket, phone: PhoneDouble, service: str) -> None:
        if service.startswith("shell:"):
            self._shell(conn, phone, service.removeprefix("shell:"))
        elif service == "sync:":
            conn.sendall(b"OKAY")
            self._sync(conn, phone)
        elif service == f"tcp:{U2_PORT}":
            if not phone.u2_running:
                conn.sendall(b"FAIL" + _block("connection refused"))
                return
            conn.sendall(b"OKAY")
            self._http(conn, phone)
        else:
            conn.sendall(b"FAIL" + _block(f"unsupported service {service}"))

    def _fault(self, conn: socket.socket, phone: PhoneDouble, word: str) -> bool:
        """Apply latency, a hang or a transient break to this call; True if it was broken off."""
        if self.clock is not None and word in phone.latency_s:
            self.clock.advance(phone.latency_s[word])
        if word in phone.hang or phone.hang_all:
            with self._lock:
                self.hung_calls += 1
                self.hung_now += 1
            try:
                self.release.wait()  # never set while the test runs: the call never returns
            finally:
                with self._lock:
                    self.hung_now -= 1
            return True
        with self._lock:
            left = phone.transient.get(word, 0)
            if left > 0:
                phone.transient[word] = left - 1
                return True
        return False

    def _shell(self, conn: socket.socket, phone: PhoneDouble, command: str) -> None:
        wants_exit = command.endswith(EXIT_MAGIC)
        try:
            argv = shlex.split(command.removesuffix(EXIT_MAGIC))
        except ValueError:
            argv = ["<unparsable>", command]
        word = verb(argv)
        with self._lock:
            phone.commands.append(argv)
        conn.sendall(b"OKAY")
        if self._fault(conn, phone, word):
            return  # the answer is cut off: no output, no exit code
        if word == "app_process":
            self._launch_u2(conn, phone)
            return
        if word == "reboot":  # the phone goes down: its server dies and adb lists it offline
            with self._lock:
                phone.reboots += 1
                phone.state, phone.booted, phone.awake = "offline", False, False
                phone.foreground = (LAUNCHER, ACTIVITIES[LAUNCHER])
            phone._stream_stop.set()
            self._push()
            return
        with self._lock:
            output, code = phone.run(argv)
        conn.sendall(output + (f"X4EXIT:{code}".encode() if wants_exit else b""))

    def _launch_u2(self, conn: socket.socket, phone: PhoneDouble) -> None:
        """`CLASSPATH=... app_process / com.wetest.uia2.Main`: runs while the stream is open."""
        with self._lock:
            phone.u2_launches += 1
            holder, dies = phone.uia_holder, phone.launch_dies
        if holder is not None:
            conn.sendall(b"[server] INFO: [UiAutomator2Server] Starting Server\njava.lang.IllegalStateException: "
                         b"UiAutomationService android.accessibilityservice.IAccessibilityServiceClient$Stub$Proxy"
                         b"@5deffd5already registered!\n")
            return
        if dies:
            return
        phone._stream_stop.clear()
        with self._lock:
            phone.u2_running = True
        conn.sendall(b"[server] INFO: [UiAutomator2Server] Starting Server\n")
        conn.settimeout(0.05)
        try:
            while not phone._stream_stop.is_set() and not self.release.is_set():
                try:
                    if not conn.recv(1):
                        break  # the client closed the stream: the server dies with it
                except TimeoutError:
                    continue
        finally:
            with self._lock:
                phone.u2_running = False

    def _sync(self, conn: socket.socket, phone: PhoneDouble) -> None:
        while True:
            try:
                header = _recv_exact(conn, 8)
            except ConnectionError:
                return
            command, length = header[:4], struct.unpack("<I", header[4:])[0]
            if command == b"QUIT":
                return
            arg = _recv_exact(conn, length).decode()
            if command == b"STAT":
                data = phone.files.get(arg)
                mode, size, mtime = (stat.S_IFREG | 0o644, len(data), int(time.time())) if data is not None \
                    else (0, 0, 0)
                conn.sendall(b"STAT" + struct.pack("<III", mode, size, mtime))
            elif command == b"SEND":
                path = arg.rsplit(",", 1)[0]
                content = bytearray()
                while True:
                    kind, size = struct.unpack("<4sI", _recv_exact(conn, 8))
                    if kind == b"DONE":
                        break
                    content += _recv_exact(conn, size)
                with self._lock:
                    phone.files[path] = bytes(content)
                conn.sendall(b"OKAY\x00\x00\x00\x00")
            else:
                conn.sendall(b"FAIL" + struct.pack("<I", 7) + b"unknown")
                return

    def _http(self, conn: socket.socket, phone: PhoneDouble) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                return
            head += chunk
        head, _, body = head.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        _, path, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            body += _recv_exact(conn, length - len(body))
        if path == "/ping":
            payload = b"pong"
        else:
            request = json.loads(body)
            if self._fault(conn, phone, "jsonrpc"):
                return
            try:
                with self._lock:
                    answer: dict[str, object] = {"result": phone.jsonrpc(request["method"])}
            except KeyError:
                answer = {"error": {"code": -32601, "message": f"method not found: {request['method']}"}}
            payload = json.dumps({"jsonrpc": "2.0", "id": request.get("id"), **answer}).encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)


def _block(payload: str) -> bytes:
    data = payload.encode()
    return f"{len(data):04x}".encode() + data


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("client closed")
        data += chunk
    return data


def _read_request(conn: socket.socket) -> str:
    length = int(_recv_exact(conn, 4), 16)
    return _recv_exact(conn, length).decode()


def phones_named(double: AdbDouble, serials: Iterable[str], **settings: object) -> list[PhoneDouble]:
    """Add one phone per serial, each with its own USB port."""
    return [double.add(PhoneDouble(serial, usb=f"1-{i + 1}", **settings))  # type: ignore[arg-type]
            for i, serial in enumerate(serials)]


def with_u2_jar(phone: PhoneDouble) -> PhoneDouble:
    """The phone already has the u2.jar this uiautomator2 would push (a phone used before)."""
    import uiautomator2

    path = uiautomator2.__file__.rsplit("/", 1)[0] + "/assets/u2.jar"
    with open(path, "rb") as f:
        phone.files[U2_JAR] = f.read()
    return phone


Clock = Callable[[], float]
