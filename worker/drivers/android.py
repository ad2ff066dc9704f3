"""What the driver asks of one Android phone over adb: blocking calls, each with a timeout.

Everything here runs on the phone's own lane thread (worker/drivers/lanes.py). The
commands are argument lists: adbutils shell-quotes each one, so a URL never reaches the
phone's shell unquoted. What the dumpsys texts look like (and so what is parsed here):

- `dumpsys power`: `mWakefulness=Awake|Asleep|Dozing`;
- `dumpsys window`: `mCurrentFocus=Window{<id> u0 <package>/<activity>}` for an app, or a bare
  window name for system windows: from Android 11 the lock screen is `NotificationShade`
  (before: `StatusBar`), which adbutils' app_current skips, reporting the app *behind* the
  lock screen; the policy section says whether the keyguard shows (`isKeyguardShowing=`,
  `mShowingLockscreen=`, `mDreamingLockscreen=`); `mFocusedApp=` names the app under a popup;
- `cmd package resolve-activity --brief`: the last line is `<package>/<activity>` of the
  default handler; the chooser (`android`, `com.android.intentresolver`) when none is set;
- `dumpsys battery`: `level: 85`, `scale: 100`, `temperature: 291` (tenths of a degree C),
  `status: 2` (2 charging, 5 full), `AC powered: true` / `USB powered:` / `Wireless powered:`;
  builds add lines of their own (Samsung: many) and some leave fields out;
- `getprop` with no argument: one `[name]: [value]` line per property.
"""

from __future__ import annotations

import dataclasses
import io
import re
from typing import Any

import adbutils
from PIL import Image, UnidentifiedImageError

from worker.drivers import base

VIEW_ACTION = "android.intent.action.VIEW"
CHROME_PACKAGE = "com.android.chrome"  # the browser when the phone has no default one
TAB_EXTRA = "com.android.browser.application_id"  # browsers reuse the tab of the same app id
TAB_ID = "jobsys"
PROBE_URL = "http://example.com/"  # only resolved, never opened: which app takes a web link
CHOOSER_PACKAGES = frozenset({"android", "com.android.intentresolver"})  # "Open with" (14: intentresolver)
LOCK_WINDOWS = frozenset({"NotificationShade", "StatusBar", "Keyguard", "KeyguardBouncer"})
KEYGUARD_MARKERS = ("isKeyguardShowing", "mShowingLockscreen", "mDreamingLockscreen")
FIRST_RUN_HINT = "FirstRun"  # Chrome's welcome screen: org.chromium.chrome.browser.firstrun.FirstRunActivity
# Processes that can hold the UiAutomation service (uiautomator2 issue #1013): Appium's server,
# the old uiautomator2 app, and a stale uiautomator2 server (app_process com.wetest.uia2.Main).
UIAUTOMATION_HOLDER_PACKAGES = ("io.appium.uiautomator2.server", "io.appium.uiautomator2.server.test",
                                "com.github.uiautomator")
UIAUTOMATION_HOLDER_PATTERNS = ("uiautomator", "com.wetest.uia2")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BLACK_LUMA_MAX = 4  # a frame whose brightest pixel is at most this is black (screen off, secure window)
BATTERY_STATUS_CHARGING = 2  # BatteryManager.BATTERY_STATUS_CHARGING
POWER_SOURCES = ("AC powered", "USB powered", "Wireless powered", "Dock powered")
# Labels a phone reports, read once with getprop: label -> property.
PROP_LABELS = {"manufacturer": "ro.product.manufacturer", "model": "ro.product.model",
               "android_version": "ro.build.version.release", "sdk": "ro.build.version.sdk",
               "abi": "ro.product.cpu.abi"}
LABEL_VALUE_MAX_CHARS = 256  # the server's bound on a label value
BOOT_COMPLETED_PROP = "sys.boot_completed"  # "1" once Android has finished booting
STAY_AWAKE_HINT = ("keep the phone awake while charging (`adb shell svc power stayon usb`) and set its "
                   "screen lock to None")


class PhoneFault(Exception):
    """The phone answered, but not what a run needs; the message is for operators."""


class PhoneNotReady(PhoneFault):
    """The phone is still booting: it will be fine, just not yet."""


class PhoneDevice(adbutils.AdbDevice):
    """An AdbDevice whose every call is bounded by `io_timeout_s`.

    adbutils opens device sockets with a 600 s timeout, and uiautomator2's HTTP connection
    to its on-device server inherits it (its own `conn.timeout` is set after the socket is
    made, so it never applies). Capping the transport here bounds both. A shell *stream*
    (uiautomator2's server launch, which stays open as long as the server runs) keeps the
    bounded set-up but then reads without a timeout, as uiautomator2 expects.
    """

    def __init__(self, client: adbutils.AdbClient, serial: str | None = None, transport_id: int | None = None,
                 *, io_timeout_s: float) -> None:
        self.io_timeout_s = io_timeout_s
        super().__init__(client, serial=serial, transport_id=transport_id)

    def open_transport(self, command: str | None = None, timeout: float | None = 600.0) -> adbutils.AdbConnection:
        if timeout is not None:  # None: the client's own socket_timeout applies
            timeout = min(timeout, self.io_timeout_s)
        return super().open_transport(command, timeout=timeout)

    def shell(self, cmdargs: Any, stream: bool = False, timeout: float | None = 600.0,  # type: ignore[override]
              encoding: str | None = "utf-8", rstrip: bool = True) -> Any:
        if stream:
            conn = super().shell(cmdargs, stream=True)
            conn.conn.settimeout(None)
            return conn
        timeout = min(timeout or self.io_timeout_s, self.io_timeout_s)
        return super().shell(cmdargs, timeout=timeout, encoding=encoding, rstrip=rstrip)


@dataclasses.dataclass(frozen=True)
class Foreground:
    """What is in front: the app (package/activity) and, for system windows, the window name."""

    package: str | None
    activity: str | None
    window: str | None  # a bare window name (NotificationShade, PopupWindow:...), else None
    locked: bool

    @property
    def readable(self) -> bool:
        return self.package is not None or self.window is not None or self.locked


def run(dev: PhoneDevice, argv: list[str]) -> adbutils.ShellReturn:
    return dev.shell2(argv, timeout=dev.io_timeout_s)


def press(dev: PhoneDevice, key: str) -> None:
    run(dev, ["input", "keyevent", key])


def screen_awake(dev: PhoneDevice) -> bool:
    output = run(dev, ["dumpsys", "power"]).output
    match = re.search(r"mWakefulness=(\w+)", output)
    if match:
        return match.group(1) == "Awake"
    return "mHoldingDisplaySuspendBlocker=true" in output


def parse_battery(text: str) -> base.Vitals:
    """`dumpsys battery` as battery_pct, charging and temperature_c; a field the phone left out
    (or wrote in a form not known here) stays None."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key not in fields:  # the first section is the current state
            fields[key.strip()] = value.strip()
    level, scale = _int(fields.get("level")), _int(fields.get("scale"))
    battery_pct = None
    if level is not None:
        battery_pct = round(level * 100 / scale) if scale and scale > 0 else level
        battery_pct = min(max(battery_pct, 0), 100)
    tenths = _int(fields.get("temperature"))
    powered = [fields[source].lower() == "true" for source in POWER_SOURCES if source in fields]
    status = _int(fields.get("status"))
    charging: bool | None = None
    if powered or status is not None:
        charging = any(powered) or status == BATTERY_STATUS_CHARGING
    return base.Vitals(battery_pct=battery_pct, charging=charging,
                       temperature_c=None if tenths is None else tenths / 10, screen_on=None)


def _int(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def read_vitals(dev: PhoneDevice) -> base.Vitals:
    """Battery (dumpsys battery) and screen (dumpsys power): two short calls."""
    battery = parse_battery(run(dev, ["dumpsys", "battery"]).output)
    return dataclasses.replace(battery, screen_on=screen_awake(dev))


def parse_props(text: str) -> dict[str, str]:
    """`getprop`'s listing as name -> value."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^\[([^\]]+)\]: \[(.*)\]\s*$", text, re.MULTILINE)}


def prop_labels(props: dict[str, str]) -> dict[str, str]:
    """The labels a phone reports about itself, for the properties it has."""
    return {label: props[prop][:LABEL_VALUE_MAX_CHARS] for label, prop in PROP_LABELS.items() if props.get(prop)}


def read_props(dev: PhoneDevice) -> dict[str, str]:
    return parse_props(run(dev, ["getprop"]).output)


def check_booted(dev: PhoneDevice) -> None:
    """adb lists a phone as `device` long before Android has booted; until then apps, the
    package manager and uiautomator2 fail in odd ways."""
    if run(dev, ["getprop", BOOT_COMPLETED_PROP]).output.strip() != "1":
        raise PhoneNotReady("still booting (sys.boot_completed is not 1 yet)")


def reboot(dev: PhoneDevice) -> None:
    """`reboot`, as adbutils' device.reboot() sends it. adb refusing it (offline,
    unauthorized) raises; the phone dropping the stream as it goes down is the reboot
    working, so the read after it never fails it (the worker then waits to see it gone)."""
    conn = dev.open_shell("reboot")
    try:
        conn.conn.settimeout(dev.io_timeout_s)
        conn.read_until_close()
    except (OSError, adbutils.AdbError):
        pass
    finally:
        conn.close()


def parse_foreground(text: str) -> Foreground:
    focus = re.search(r"mCurrentFocus=(?:Window\{\S+ u\d+ (?P<name>[^}]+)\}|null)", text)
    name = focus.group("name").strip() if focus and focus.group("name") else None
    app = re.search(r"mFocusedApp=\S*\{[^}]*?\bu\d+ (?P<package>[^\s/}]+)/(?P<activity>[^\s}]+)", text)
    said_locked = any(re.search(rf"\b{marker}=true", text) for marker in KEYGUARD_MARKERS)
    said_unlocked = any(re.search(rf"\b{marker}=false", text) for marker in KEYGUARD_MARKERS)
    locked = said_locked or (name in LOCK_WINDOWS and not said_unlocked)
    if name is not None and "/" in name and " " not in name:
        package, activity = name.split("/", 1)
        return Foreground(package, activity, None, locked)
    if app is not None:  # a popup or system window over an app: the app is still in front
        return Foreground(app.group("package"), app.group("activity"), name, locked)
    return Foreground(None, None, name, locked)


def foreground(dev: PhoneDevice) -> Foreground:
    """One `dumpsys window`: the focused window and whether the keyguard shows."""
    return parse_foreground(run(dev, ["dumpsys", "window"]).output)


def installed(dev: PhoneDevice, package: str) -> bool:
    return "package:" in run(dev, ["pm", "path", package]).output


def resolve_browser(dev: PhoneDevice, configured: str | None) -> str:
    """The package that opens the URLs: the configured one, else the phone's default browser,
    else Chrome. Raises PhoneFault when there is none."""
    if configured:
        if installed(dev, configured):
            return configured
        raise PhoneFault(f"browser {configured} is not installed")
    output = run(dev, ["cmd", "package", "resolve-activity", "--brief", "-a", VIEW_ACTION,
                       "-c", "android.intent.category.BROWSABLE", "-d", PROBE_URL]).output
    handlers = [line.strip().split("/", 1)[0] for line in output.splitlines() if "/" in line and "=" not in line]
    if handlers and handlers[-1] not in CHOOSER_PACKAGES:
        return handlers[-1]
    if installed(dev, CHROME_PACKAGE):
        return CHROME_PACKAGE
    raise PhoneFault("no browser: no default browser is set and Chrome is not installed")


def view_command(url: str, package: str) -> list[str]:
    """The VIEW intent for one browser, reusing jobsys's tab (no new tab per run)."""
    return ["am", "start", "-a", VIEW_ACTION, "-d", url, "-p", package, "-e", TAB_EXTRA, TAB_ID]


def open_view(dev: PhoneDevice, url: str, package: str) -> None:
    response = run(dev, view_command(url, package))
    output = response.output or ""
    # `am start` often exits 0 on failure and prints "Error: ..." instead.
    if response.returncode not in (0, None) or "Error:" in output:
        detail = output.strip().splitlines()[-1] if output.strip() else f"exit code {response.returncode}"
        raise PhoneFault(f"could not open the URL: {detail}")


def screenshot_png(dev: PhoneDevice) -> bytes:
    """`screencap -p`, checked: adbutils' own screenshot() returns a black image on failure."""
    response = dev.shell2(["screencap", "-p"], timeout=dev.io_timeout_s, encoding=None)
    data = response.output
    if response.returncode != 0 or not data.startswith(PNG_MAGIC):
        raise PhoneFault(f"screenshot failed: screencap answered no PNG (exit code {response.returncode})")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise PhoneFault(f"screenshot failed: not a readable PNG ({exc})") from exc
    if image.convert("L").getextrema()[1] <= BLACK_LUMA_MAX:
        raise PhoneFault("screenshot failed: the frame is all black (screen off, or a secure window)")
    return data


def wake(dev: PhoneDevice) -> bool:
    """Wake the screen if it is off; True if it was on already."""
    was_awake = screen_awake(dev)
    if not was_awake:
        press(dev, "KEYCODE_WAKEUP")
    return was_awake


def check_unlocked(dev: PhoneDevice) -> Foreground:
    front = foreground(dev)
    if front.locked:
        raise PhoneFault(locked_message(front))
    return front


def locked_message(front: Foreground) -> str:
    shown = front.window or front.package or "the keyguard"
    return f"screen locked ({shown} in front): {STAY_AWAKE_HINT}"


def tidy(dev: PhoneDevice, browser: str | None, sleep_after: bool) -> list[str]:
    """After a run: home screen, browser stopped, screen as it was. Every step is tried;
    returns what failed (the run's outcome does not depend on it)."""
    steps: list[tuple[str, list[str]]] = [("home", ["input", "keyevent", "KEYCODE_HOME"])]
    if browser:
        steps.append(("force-stop", ["am", "force-stop", browser]))
    if sleep_after:
        steps.append(("screen off", ["input", "keyevent", "KEYCODE_SLEEP"]))
    failed = []
    for what, argv in steps:
        try:
            run(dev, argv)
        except Exception as exc:  # a phone going away mid-cleanup: the rest is still tried
            failed.append(f"{what}: {type(exc).__name__}: {exc}")
    return failed


def free_uiautomation(dev: PhoneDevice) -> None:
    """Stop whatever holds the UiAutomation service so uiautomator2 can start its server."""
    for package in UIAUTOMATION_HOLDER_PACKAGES:
        run(dev, ["am", "force-stop", package])
    for pattern in UIAUTOMATION_HOLDER_PATTERNS:
        run(dev, ["pkill", "-f", pattern])  # exit 1 when nothing matched: fine
