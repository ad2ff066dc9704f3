"""The uiautomator2 driver against the adb double (tests/worker/adb_double.py).

The real adbutils client and the real uiautomator2.connect talk to a local server that
speaks the adb protocol (host services, `shell:` with adbutils' exit-code suffix, `sync:`
push of u2.jar, the on-device server's HTTP over `tcp:9008`), with phones that can be
asleep, locked, without a default browser, black-screened, held by Appium, hung or flaky.
Device latencies go to a FakeClock the driver reads, so time is exact and no test sleeps.
"""

from __future__ import annotations

import asyncio
import atexit
import pathlib
import threading
from typing import Any, Iterator

import adbutils
import pytest
import uiautomator2
import uiautomator2.exceptions

from tests.support.waiting import wait_until
from tests.worker import adb_double
from tests.worker.adb_double import (APPIUM_SERVER, CHROME, CHROME_FIRST_RUN, LAUNCHER, NO_PERMISSIONS,
                                     SAMSUNG_BROWSER, U2_MAIN, YOUTUBE, AdbDouble, FakeClock, PhoneDouble)
from worker.drivers import base, create_driver
from worker.drivers import uiautomator2_driver as u2d

STEP_S = 1.0  # the driver's real step; time is the fake clock's, so a step costs nothing
CALL_TIMEOUT_S = 1.0  # real seconds: how long a hung call is waited for in these tests
WAIT_TIMEOUT_S = 10.0  # safety deadline only; conditions normally hold at once
SERIAL = "R58M123ABC"
VIEW = "android.intent.action.VIEW"


# --- fixtures and helpers ----------------------------------------------------------------


@pytest.fixture
def adb() -> Iterator[AdbDouble]:
    double = AdbDouble(FakeClock()).start()
    try:
        yield double
    finally:
        double.stop()  # releases every hung call


_drivers: list[u2d.Uiautomator2Driver] = []


@pytest.fixture(autouse=True)
async def _close_drivers() -> Any:
    yield
    while _drivers:
        await _drivers.pop().close()  # ends their phone threads


def make_driver(adb: AdbDouble, **options: Any) -> u2d.Uiautomator2Driver:
    assert adb.clock is not None
    settings: dict[str, Any] = {"adb_host": "127.0.0.1", "adb_port": adb.port, "step_s": STEP_S,
                                "call_timeout_s": CALL_TIMEOUT_S, "connect_timeout_s": 2 * WAIT_TIMEOUT_S,
                                "clock": adb.clock, "sleep": adb.clock.sleep}
    settings.update(options)
    driver = u2d.Uiautomator2Driver(**settings)
    _drivers.append(driver)
    return driver


async def ready(adb: AdbDouble, *phones: PhoneDouble, **options: Any) -> u2d.Uiautomator2Driver:
    """A driver that has discovered and probed these phones, as the fleet does before service."""
    driver = make_driver(adb, **options)
    await driver.discover()
    for phone in phones:
        assert await driver.probe(phone.serial) is True
    return driver


class StopAfter:
    def __init__(self, call: int | None = None, reason: base.StopReason = base.StopReason.CANCELLED) -> None:
        self.calls = 0
        self._call = call
        self._reason = reason

    def __call__(self) -> base.StopReason | None:
        self.calls += 1
        return self._reason if self._call is not None and self.calls >= self._call else None


def request_for(tmp_path: pathlib.Path, serial: str = SERIAL, url: str = "https://example.com/",
                duration_sec: float = 5.0, name: str = "job-1-dev-1-a1") -> base.OpenUrlRequest:
    return base.OpenUrlRequest(serial=serial, url=url, duration_sec=duration_sec,
                               evidence_dir=tmp_path / "evidence" / "job-1", evidence_name=name)


def intents(phone: PhoneDouble) -> list[list[str]]:
    return phone.ran("am start")


def keys(phone: PhoneDouble) -> list[str]:
    return [argv[2] for argv in phone.ran("input keyevent")]


# --- the action ----------------------------------------------------------------------------


async def test_the_view_intent_names_the_browser_and_reuses_one_tab_with_the_url_quoted_end_to_end(
        adb: AdbDouble, tmp_path: pathlib.Path) -> None:
    phone = adb.add(PhoneDouble(SERIAL))
    driver = await ready(adb, phone)
    url = "https://example.com/a?b=1&c=2;echo pwned $(id) 'q' \"d\" `e`"

    for _ in range(2):
        result = await driver.open_url(request_for(tmp_path, url=url), StopAfter())
        assert result.stopped is None and result.foreground_package == CHROME

    # The phone's shell received exactly these arguments: adbutils quoted each one.
    assert intents(phone) == [["am", "start", "-a", VIEW, "-d", url, "-p", CHROME,
                               "-e", "com.android.browser.application_id", "jobsys"]] * 2
    assert phone.tabs == 1  # the second run reused the first run's tab


async def test_a_run_keeps_the_page_in_front_and_saves_a_real_screenshot(
        adb: AdbDouble, tmp_path: pathlib.Path) -> None:
    phone = adb.add(PhoneDouble(SERIAL))
    driver = await ready(adb, phone)
    stop = StopAfter()

    result = await driver.open_url(request_for(tmp_path, duration_sec=5), stop)

    assert result.foreground_package == CHROME and result.packages_seen == (CHROME,)
    assert result.elapsed_sec == pytest.approx(5.0)
    assert len(phone.ran("dumpsys window")) >= 6  # once a second, the last at the deadline
    assert stop.calls >= 6
    path = pathlib.Path(result.evidence_path or "")
    assert path == tmp_path / "evidence" / "job-1" / "job-1-dev-1-a1.png"
    assert path.read_bytes().startswith(b"\x89PNG")
    assert result.as_json()["packages_seen"] == [CHROME]


async def test_the_run_ends_on_a_wall_clock_deadline_and_elapsed_starts_after_the_intent(
        adb: AdbDouble, tmp_path: pathlib.Path) -> None:
    # Realistic latencies: reading the foreground costs a second of dumpsys, the intent two.
    phone = adb.add(PhoneDouble(SERIAL, latency_s={"dumpsys window": 1.0, "am start": 2.0, "screencap": 1.0}))
    driver = await ready(adb, phone)

    result = await driver.open_url(request_for(tmp_path, duration_sec=10), StopAfter())

    # Polls start each step_s on the clock, and the last one ends the run: 10 s of page
    # plus at most one poll, not 10 x (1 s sleep + 1 s dumpsys) = 20 s. The intent's and
    # the screenshot's own time are not part of elapsed_sec.
    assert 10.0 <= result.elapsed_sec <= 11.0
    assert len(phone.ran("dumpsys window")) <= 12


async def test_stop_is_honoured_within_a_step_and_the_phone_is_cleaned_up(
        adb: AdbDouble, tmp_path: pathlib.Path) -> None:
    phone = adb.add(PhoneDouble(SERIAL))
    driver = await ready(adb, phone)
    stop = StopAfter(call=3)

    result = await driver.open_url(request_for(tmp_path, duration_sec=3600), stop)

    assert result.stopped == base.StopReason.CANCELLED and result.evidence_path is None
    assert stop.calls == 3
    assert len(intents(phone)) == 1
    assert keys(phone)[-1] == "KEYCODE_HOME" and phone.force_stopped == [CHROME]
    assert phone.foreground[0] == LAUNCHER


async def test_stop_before_start_never_opens_the_url(adb: AdbDouble, tmp_path: pathlib.Path) -> None:
    phone = adb.add(PhoneDouble(SERIAL))
    driver = await ready(adb, phone)

    result = await driver.open_url(request_for(tmp_path), StopAfter(call=1))

    assert result.stopped == base.StopReason.CANCELLED and result.elapsed_sec == 0
    assert intents(phone) == [] and phone.force_stopped == []


async def test_cleanup_after_success_and_failure_leaves_home_and_the_screen_as_found(
        adb: AdbDouble, tmp_path: pathlib.Path) -> None:
    phone = adb.add(PhoneDouble(SERIAL))
    driver = await ready(adb, phone)
    phone.awake = False  # the phone slept between runs

    await driver.open_url(request_for(tmp_path, duration_sec=2), StopAfter())

    assert keys(phone)[-3:] == ["KEYCODE_WAKEUP", "KEYCODE_HOME", "KEYCODE_SLEEP"]
    assert phone.force_stopped == [CHROME] and phone.awake is False and phone.foreground[0] == LAUNCHER

    phone.awake = True
    phone.black_screen = True  # this run fails at the screenshot
    with pytest.raises(base.DeviceError):
        await driver.open_url(request_for(tmp_path, duration_sec=1), StopAfter())
    assert phone.force_stopped == [CHROME, CHROME] and phone.awake is True and keys(phone)[-1] == "KEYCODE_HOME"


async def test_a_configured_browser_is_opened_and_force_stopped(adb: AdbDouble, tmp_path: pathlib.Path) -> None:
    phone = adb.add(PhoneDouble(SERIAL, installed={CHROME, SAMSUNG_BROWSER, LAUNCHER}))
    driver = await ready(adb, phone, browser_package=SAMSUNG_BROWSER)

    result = await driver.open_url(request_for(tmp_path, duration_sec=1), StopAfter())

    assert result.foreground_package == SAMSUNG_BROWSER
    assert intents(phone)[0][6:8] == ["-p", SAMSUNG_BROWSER] and phone.force_stopped == [SAMSUNG_BROWSER]


# --- no false successes ---------------------------------------------------------------------


@pytest.mark.parametrize("sdk", [29, 34])
async def test_a_locked_phone_fails_the_run_with_the_operator_hint(
        adb: AdbDouble, tmp_path: pathlib.Path, sdk: int) -> None:
    phone = adb.add(PhoneDouble(SERIAL, sdk=sdk))
    driver = await ready(adb, phone)
    phone.locked, phone.awake = True, False  # the screen timed out and the lock screen came up

    with pytest.raises(base.DeviceError, match="screen locked") as caught:
        await driver.open_url(request_for(tmp_path), StopAfter())

    assert "svc power stayon usb" in str(caught.value) and "lock" in str(caught.value)
    assert intents(phone) == []  # nothing opened behind the lock screen
    assert phone.awake is False  # and the screen went back off


async def test_a_lock_screen_that_comes_up_mid_run_fails_it(adb: AdbDouble, tmp_path: pathlib.Path) -> None:
    phone = adb.add(PhoneDouble(SERIAL, sdk=34))
    driver = await ready(adb, phone)

    def lock_at_third_check() -> base.StopReason | None:
        stop.calls += 1
        if stop.calls == 3:
            phone.locked = True  # from Android 11 the keyguard is the NotificationShade window
        return None

    stop = StopAfter()
    with pytest.raises(base.DeviceError, match="screen locked"):
        await driver.open_url(request_for(tmp_path, duration_sec=10), lock_at_third_check)


async def test_the_chooser_fails_the_run_and_names_it(adb: AdbDouble, tmp_path: pathlib.Path) -> None:
    phone = adb.add(PhoneDouble(SERIAL, sdk=34))
    driver = await ready(adb, phone)
    phone.focus_after_intent = [("com.android.intentresolver", ".ChooserActivity")]

    with pytest.raises(base.DeviceError, match="com.android.intentresolver") as caught:
        await driver.open_url(request_for(tmp_path), StopAfter())
    assert "chooser" in str(caught.value)


@pytest.mark.parametrize(("shown", "expected"), [
    ((LAUNCHER, "x.Launcher"), LAUNCHER),  # the browser crashed or never came up
    ((YOUTUBE, "x.UrlActivity"), YOUTUBE),  # an app took the page over
    ((CHROME, CHROME_FIRST_RUN), "first-run"),  # Chrome's welcome screen instead of the page
])
async def test_an_unexpected_foreground_fails_the_run_and_names_it(
        adb: AdbDouble, tmp_path: pathlib.Path, shown: tuple[str, str], expected: str) -> None:
    phone = adb.add(PhoneDouble(SERIAL))
    driver = await ready(adb, phone, foreground_wait_s=3)
    phone.focus_after_intent = [shown] * 10

    with pytest.raises(base.DeviceError, match=expected):
        await driver.open_url(request_for(tmp_path), StopAfter())


async def test_a_slow_browser_start_is_waited_for(adb: AdbDouble, tmp_path: pathlib.Path) -> None:
    phone = adb.add(PhoneDouble(SERIAL))
    driver = await ready(adb, phone, foreground_wait_s=5)
    phone.focus_after_intent = [(LAUNCHER, "x.Launcher")] * 2  # Chrome takes two seconds to show

    result = await driver.open_url(request_for(tmp_path, duration_sec=3), StopAfter())

    assert result.packages_seen == (LAUNCHER, CHROME)
    assert result.foreground_package == CHROME
    assert result.elapsed_sec >= 3 + 2  # the duration counts from when the page was in front


async def test_without_a_default_browser_chrome_is_used_and_the_chooser_never_shows(
        adb: AdbDouble, tmp_path: pathlib.Path) -> None:
    phone = adb.add(PhoneDouble(SERIAL, default_browser=None, app_links={"youtube.com": YOUTUBE}))
    driver = await ready(adb, phone)

    result = await driver.open_url(request_for(tmp_path, url="https://youtube.com/x", duration_sec=1), StopAfter())

    assert result.foreground_package == CHROME  # -p: neither the chooser nor the App Link


async def test_a_phone_without_any_browser_fails_its_probe(adb: AdbDouble) -> None:
    adb.add(PhoneDouble(SERIAL, default_browser=None, installed={LAUNCHER}))
    driver = make_driver(adb)
    await driver.discover()

    with pytest.raises(base.DeviceError, match="no browser"):
        await driver.probe(SERIAL)


@pytest.mark.parametrize("fault", ["black_screen", "broken_screencap"])
async def test_a_black_or_missing_screenshot_fails_the_run(
        adb: AdbDouble, tmp_path: pathlib.Path, fault: str) -> None:
    phone = adb.add(PhoneDouble(SERIAL))
    driver = await ready(adb, phone)
    setattr(phone, fault, True)

    with pytest.raises(base.DeviceError, match="screenshot"):
        await driver.open_url(request_for(tmp_path, duration_sec=1), StopAfter())
    assert not list((tmp_path / "evidence" / "job-1").glob("*.png"))


async def test_am_start_error_output_fails_the_run(adb: AdbDouble, tmp_path: pathlib.Path) -> None:
    phone = adb.add(PhoneDouble(SERIAL, installed={CHROME, LAUNCHER}))
    driver = await ready(adb, phone)
    phone.installed.discard(CHROME)  # uninstalled after the probe

    with pytest.raises(base.DeviceError, match="unable to resolve Intent"):
        await driver.open_url(request_for(tmp_path), StopAfter())


# --- transient errors -------------------------------------------------------------------------


async def test_one_transient_adb_error_is_tolerated(adb: AdbDouble, tmp_path: pathlib.Path) -> None:
    phone = adb.add(PhoneDouble(SERIAL))
    driver = await ready(adb, phone)
    phone.transient["dumpsys power"] = 1  # before the intent: the screen check is asked again
    phone.transient["dumpsys window"] = 1  # and the lock check
    phone.transient_after_intent["dumpsys window"] = 1  # the answer is cut off once (adbutils: AdbError)

    result = await driver.open_url(request_for(tmp_path, duration_sec=3), StopAfter())
    assert result.stopped is None and result.evidence_path

    phone.focus_gaps = 1  # a window transition: no focused window at that instant
    result = await driver.open_url(request_for(tmp_path, duration_sec=3), StopAfter())
    assert result.stopped is None and result.evidence_path


async def test_two_foreground_errors_in_a_row_fail_the_run(adb: AdbDouble, tmp_path: pathlib.Path) -> None:
    phone = adb.add(PhoneDouble(SERIAL))
    driver = await ready(adb, phone)
    phone.transient_after_intent["dumpsys window"] = 2

    with pytest.raises(base.DeviceError, match="could not read the foreground app"):
        await driver.open_url(request_for(tmp_path, duration_sec=3), StopAfter())


# --- isolation -------------------------------------------------------------------------------


def phone_threads(serial: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"phone-{serial}"]


async def test_a_hung_phone_never_starves_a_healthy_one(adb: AdbDouble, tmp_path: pathlib.Path) -> None:
    hung = adb.add(PhoneDouble("HUNG1", usb="1-1"))
    healthy = adb.add(PhoneDouble("GOOD1", usb="1-2"))
    driver = await ready(adb, hung, healthy)
    hung.hang.add("dumpsys window")  # dumpsys never returns on this phone from now on

    # More runs on the hung phone, one after another as the worker gives them, than a
    # shared thread pool has threads (cpu + 4, at most 32).
    outcomes = [await asyncio.gather(driver.open_url(request_for(tmp_path, serial="HUNG1", duration_sec=60),
                                                     StopAfter()), return_exceptions=True)
                for _ in range(12)]
    outcomes = [o for [o] in outcomes]
    assert all(isinstance(o, base.DeviceError) for o in outcomes)
    assert sum("timed out" in str(o) for o in outcomes) == 1  # the others fail fast
    assert all("not answering" in str(o) for o in outcomes if "timed out" not in str(o))
    assert adb.hung_now == 1 and len(phone_threads("HUNG1")) <= 1  # one abandoned thread, no more

    result = await driver.open_url(request_for(tmp_path, serial="GOOD1", duration_sec=3), StopAfter())
    assert result.stopped is None and result.foreground_package == CHROME
    assert adb.hung_now == 1  # the hung call is still blocked: the healthy phone never waited on it


async def test_a_hung_probe_does_not_block_other_phones_probes(adb: AdbDouble) -> None:
    hung = adb.add(PhoneDouble("HUNG2", usb="1-1", hang={"md5sum"}))  # stuck in uiautomator2's connect
    adb.add(PhoneDouble("GOOD2", usb="1-2"))
    driver = make_driver(adb, connect_timeout_s=3600)  # the hung connect is never given up here
    await driver.discover()

    probing = asyncio.ensure_future(driver.probe("HUNG2"))
    await wait_until(lambda: adb.hung_now == 1, what="the hung connect")
    assert await driver.probe("GOOD2") is True
    assert not probing.done()
    probing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probing
    assert hung.u2_launches == 0


async def test_every_blocking_call_runs_on_its_own_phone_thread(adb: AdbDouble, tmp_path: pathlib.Path) -> None:
    phone = adb.add(PhoneDouble(SERIAL))
    driver = await ready(adb, phone)
    before = {t.name for t in threading.enumerate()}

    await driver.open_url(request_for(tmp_path, duration_sec=2), StopAfter())

    assert len(phone_threads(SERIAL)) == 1
    assert not any(name.startswith("asyncio_") for name in {t.name for t in threading.enumerate()} - before)
    assert all(t.daemon for t in phone_threads(SERIAL))  # never joined at exit


async def test_close_never_waits_on_a_hung_phone(adb: AdbDouble, tmp_path: pathlib.Path) -> None:
    phone = adb.add(PhoneDouble(SERIAL))
    driver = await ready(adb, phone, call_timeout_s=3600)
    phone.hang.add("dumpsys window")
    run = asyncio.ensure_future(driver.open_url(request_for(tmp_path, duration_sec=60), StopAfter()))
    await wait_until(lambda: adb.hung_now == 1, what="a hung call")

    await asyncio.wait_for(driver.close(), WAIT_TIMEOUT_S)  # safety deadline; returns at once

    run.cancel()
    await asyncio.gather(run, return_exceptions=True)


# --- connect: adb address, recovery, handles ---------------------------------------------------------


class _GlobalAdbUsed(Exception):
    pass


class _NoGlobalAdb:
    """Stands in for adbutils.adb (127.0.0.1:5037): any use is the bug."""

    def __getattr__(self, name: str) -> Any:
        raise _GlobalAdbUsed(f"adbutils.adb.{name} used instead of --adb-host/--adb-port")


async def test_connect_goes_through_the_configured_adb_server(
        adb: AdbDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adbutils, "adb", _NoGlobalAdb())
    phone = adb.add(PhoneDouble(SERIAL))
    driver = make_driver(adb, connect=uiautomator2.connect)
    await driver.discover()

    assert await driver.probe(SERIAL) is True
    assert phone.u2_running and phone.files  # u2.jar pushed and the server started via the double


async def test_a_phone_used_before_is_not_pushed_again(adb: AdbDouble) -> None:
    phone = adb.add(adb_double.with_u2_jar(PhoneDouble(SERIAL)))
    driver = make_driver(adb)
    await driver.discover()

    assert await driver.probe(SERIAL) is True
    assert not any(r.startswith("sync") for r in adb.requests) and phone.u2_launches == 1


@pytest.mark.parametrize(("holder", "freed_by"), [(APPIUM_SERVER, "am force-stop"), (U2_MAIN, "pkill")])
async def test_a_held_uiautomation_service_is_freed_and_connect_retried_once(
        adb: AdbDouble, holder: str, freed_by: str) -> None:
    phone = adb.add(PhoneDouble(SERIAL, uia_holder=holder))
    driver = make_driver(adb)
    await driver.discover()

    assert await driver.probe(SERIAL) is True
    assert phone.uia_holder is None and phone.ran(freed_by) and phone.u2_launches == 2


async def test_a_holder_that_cannot_be_freed_fails_the_probe_with_the_reason(adb: AdbDouble) -> None:
    phone = adb.add(PhoneDouble(SERIAL, uia_holder=APPIUM_SERVER, holder_unkillable=True))
    driver = make_driver(adb)
    await driver.discover()

    with pytest.raises(base.DeviceError, match="UiAutomation.*(Appium|already registered)"):
        await driver.probe(SERIAL)
    assert phone.u2_launches == 2  # retried once, no more


async def test_a_connect_that_fails_is_a_device_error_and_is_retried_next_time(adb: AdbDouble) -> None:
    calls: list[str] = []

    def connect(device: adbutils.AdbDevice) -> Any:
        calls.append(device.serial or "")
        if len(calls) == 1:
            raise uiautomator2.exceptions.ConnectError("no uiautomator")
        return uiautomator2.connect(device)

    adb.add(PhoneDouble(SERIAL))
    driver = make_driver(adb, connect=connect)
    await driver.discover()

    with pytest.raises(base.DeviceError, match="cannot connect uiautomator2: ConnectError"):
        await driver.probe(SERIAL)
    assert await driver.probe(SERIAL) is True
    assert calls == [SERIAL, SERIAL]


async def test_connects_once_per_phone_even_when_probed_concurrently(adb: AdbDouble, tmp_path: pathlib.Path) -> None:
    phone = adb.add(PhoneDouble(SERIAL))
    driver = make_driver(adb)
    await driver.discover()

    assert await asyncio.gather(*(driver.probe(SERIAL) for _ in range(5))) == [True] * 5
    await driver.open_url(request_for(tmp_path, duration_sec=1), StopAfter())
    assert phone.u2_launches == 1


async def test_the_handle_of_a_phone_that_went_away_is_closed(
        adb: AdbDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    hooks: list[Any] = []  # uiautomator2 registers an exit hook per handle
    register, unregister = atexit.register, atexit.unregister
    monkeypatch.setattr(atexit, "register", lambda fn, *a, **k: (hooks.append(fn), register(fn, *a, **k))[1])
    monkeypatch.setattr(atexit, "unregister", lambda fn: (hooks.remove(fn) if fn in hooks else None, unregister(fn)))
    phone = adb.add(PhoneDouble(SERIAL))
    driver = await ready(adb, phone)
    assert phone.u2_launches == 1 and hooks == []  # no exit hook holds the handle

    adb.set_state(phone, "offline")
    await driver.discover()
    await wait_until(lambda: not phone_threads(SERIAL), what="the phone's thread to end")

    adb.set_state(phone, "device")
    await driver.discover()
    assert await driver.probe(SERIAL) is True  # a fresh connect
    await driver.close()
    await wait_until(lambda: not phone_threads(SERIAL), what="the thread to end at close")


async def test_the_probe_wakes_the_screen_checks_the_lock_and_restores_it(adb: AdbDouble) -> None:
    phone = adb.add(PhoneDouble(SERIAL, awake=False))
    driver = make_driver(adb)
    await driver.discover()

    assert await driver.probe(SERIAL) is True
    assert keys(phone) == ["KEYCODE_WAKEUP", "KEYCODE_SLEEP"] and phone.awake is False

    phone.locked = True
    with pytest.raises(base.DeviceError, match="screen locked"):
        await driver.probe(SERIAL)


# --- discovery ---------------------------------------------------------------------------------


async def test_discover_maps_adb_states(adb: AdbDouble) -> None:
    adb.add(PhoneDouble("R58M1", model="Pixel_7"))
    adb.add(PhoneDouble("R58M2", state="offline", usb="1-2"))
    adb.add(PhoneDouble("R58M3", state="unauthorized", usb="1-3"))
    adb.add(PhoneDouble("R58M4", state=NO_PERMISSIONS, usb="1-4"))

    devices = {d.serial: d for d in await make_driver(adb).discover()}

    assert {s: d.health for s, d in devices.items()} == {
        "R58M1": base.DeviceHealth.ONLINE,
        "R58M2": base.DeviceHealth.OFFLINE,
        "R58M3": base.DeviceHealth.UNAUTHORIZED,
        "R58M4": base.DeviceHealth.UNAUTHORIZED,
    }
    assert devices["R58M1"].model == "Pixel_7" and devices["R58M1"].labels["transport_id"] == "1"
    # adb's word travels as vitals.adb_state (it changes), never as a label (jobs target labels).
    assert {s: d.adb_state for s, d in devices.items()} == {
        "R58M1": "device", "R58M2": "offline", "R58M3": "unauthorized", "R58M4": "no permissions"}
    assert not any("adb_state" in d.labels for d in devices.values())
    assert not any(d.simulated for d in devices.values())


async def test_duplicate_serials_are_told_apart_and_addressed_by_transport_id(
        adb: AdbDouble, tmp_path: pathlib.Path) -> None:
    first = adb.add(PhoneDouble("0123456789ABCDEF", usb="1-1"))
    second = adb.add(PhoneDouble("0123456789ABCDEF", usb="1-2"))
    driver = make_driver(adb)

    devices = await driver.discover()
    names = sorted(d.serial for d in devices)
    assert len(set(names)) == 2 and names[0] == "0123456789ABCDEF"  # the first keeps its serial
    assert all(d.health is base.DeviceHealth.ONLINE for d in devices)
    for name in names:
        assert await driver.probe(name) is True
        await driver.open_url(request_for(tmp_path, serial=name, duration_sec=1, name=f"e-{name}"), StopAfter())
    assert len(intents(first)) == 1 and len(intents(second)) == 1
    assert first.u2_launches == 1 and second.u2_launches == 1
    assert any(r.startswith("host:transport-id:") for r in adb.requests)


async def test_evidence_file_names_never_contain_a_colon(adb: AdbDouble, tmp_path: pathlib.Path) -> None:
    phone = adb.add(PhoneDouble("192.168.1.50:5555"))  # a phone over adb-over-network
    driver = await ready(adb, phone)

    result = await driver.open_url(
        request_for(tmp_path, serial="192.168.1.50:5555", duration_sec=1, name="job-192.168.1.50:5555-7-1"),
        StopAfter())

    assert pathlib.Path(result.evidence_path or "").name == "job-192.168.1.50_5555-7-1.png"


async def test_discover_maps_an_unreachable_adb_server_to_device_error() -> None:
    driver = u2d.Uiautomator2Driver(adb_host="127.0.0.1", adb_port=_closed_port())
    with pytest.raises(base.DeviceError, match="adb server not reachable"):
        await driver.discover()


def _closed_port() -> int:
    from tests.support.processes import free_port

    return free_port()


async def test_track_devices_changes_trigger_on_change(adb: AdbDouble) -> None:
    driver = make_driver(adb)
    first = adb.add(PhoneDouble("R58M1"))
    snapshots: list[dict[str, base.DeviceHealth]] = []

    async def on_change() -> None:
        snapshots.append({d.serial: d.health for d in await driver.discover()})

    watcher = driver.watch(on_change)
    assert watcher is not None
    task = asyncio.ensure_future(watcher)
    try:
        await wait_until(lambda: adb.tracker_count() == 1, what="the track-devices stream")
        await wait_until(lambda: len(snapshots) >= 1, what="the first listing")

        second = adb.add(PhoneDouble("R58M2", state="unauthorized", usb="1-2"))
        await wait_until(lambda: snapshots[-1].get("R58M2") == base.DeviceHealth.UNAUTHORIZED, what="a new phone")
        adb.set_state(second, "device")
        await wait_until(lambda: snapshots[-1].get("R58M2") == base.DeviceHealth.ONLINE, what="authorisation")
        adb.remove(first)
        await wait_until(lambda: "R58M1" not in snapshots[-1], what="an unplugged phone")

        # A broken stream means the device list is unknown: the worker is told to rediscover.
        count = len(snapshots)
        adb.drop_trackers()
        await wait_until(lambda: len(snapshots) > count, what="a rediscovery after adb dropped the stream")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    await wait_until(lambda: not any(t.name == "adb-track-devices" for t in threading.enumerate()),
                     what="the tracking thread to end")
    await wait_until(lambda: adb.tracker_count() == 0, what="the stream to close")


def test_create_driver_builds_the_uiautomator2_driver() -> None:
    driver = create_driver("uiautomator2", adb_port=5037, browser_package=CHROME)
    assert isinstance(driver, u2d.Uiautomator2Driver)
    assert driver.simulated is False and driver.name == "uiautomator2"


async def test_a_server_that_quits_at_launch_is_retried_once_then_reported(adb: AdbDouble) -> None:
    phone = adb.add(PhoneDouble(SERIAL, launch_dies=True))  # uiautomator2: LaunchUiAutomationError
    driver = make_driver(adb)
    await driver.discover()

    with pytest.raises(base.DeviceError, match="LaunchUiAutomationError"):
        await driver.probe(SERIAL)
    assert phone.u2_launches == 2 and phone.ran("pkill")


def test_the_worker_flags_reach_the_driver(tmp_path: pathlib.Path) -> None:
    from jobsys_cli import main, worker_cmd

    args = main.build_parser().parse_args(
        ["worker", "--adb-host", "10.0.0.5", "--adb-port", "5038", "--browser-package", SAMSUNG_BROWSER,
         "--evidence-dir", str(tmp_path)])
    options = worker_cmd.worker_options(args, name="pc1", driver="uiautomator2")

    assert options.driver_options() == {"adb_host": "10.0.0.5", "adb_port": 5038, "browser_package": SAMSUNG_BROWSER}


# --- labels, vitals, reboot ------------------------------------------------------------------


async def test_the_phones_properties_are_read_once_at_probe_and_reported_as_labels(adb: AdbDouble) -> None:
    phone = adb.add(PhoneDouble(SERIAL, model="SM-A536B", manufacturer="samsung", android_version="13", sdk=33))
    driver = make_driver(adb)
    [before] = await driver.discover()
    assert "manufacturer" not in before.labels  # not probed yet: only what adb's list says

    assert await driver.probe(SERIAL) is True
    assert await driver.probe(SERIAL) is True  # a later probe does not read them again
    [after] = await driver.discover()

    assert {k: after.labels[k] for k in ("manufacturer", "model", "android_version", "sdk", "abi")} == {
        "manufacturer": "samsung", "model": "SM-A536B", "android_version": "13", "sdk": "33", "abi": "arm64-v8a"}
    assert after.labels["usb"] == "1-1" and after.labels["transport_id"] == "1"  # adb's tags stay
    assert [argv for argv in phone.ran("getprop") if len(argv) == 1] == [["getprop"]]


async def test_vitals_are_read_on_the_phones_lane_from_dumpsys_battery_and_power(adb: AdbDouble) -> None:
    phone = adb.add(PhoneDouble(SERIAL, battery_level=14, battery_tenths_c=457, usb_powered=False, awake=False))
    driver = await ready(adb, phone)
    keys_before = len(keys(phone))

    vitals = await driver.read_vitals(SERIAL)

    assert vitals == base.Vitals(battery_pct=14, charging=False, temperature_c=45.7, screen_on=False)
    assert phone.awake is False and len(keys(phone)) == keys_before  # reading wakes nothing
    assert phone.ran("dumpsys battery") == [["dumpsys", "battery"]]
    phone.battery_level, phone.usb_powered, phone.awake = 15, True, True
    assert await driver.read_vitals(SERIAL) == base.Vitals(battery_pct=15, charging=True, temperature_c=45.7,
                                                           screen_on=True)


async def test_reboot_takes_the_phone_down_and_it_serves_again_after_a_fresh_connect(adb: AdbDouble) -> None:
    phone = adb.add(PhoneDouble(SERIAL))
    driver = await ready(adb, phone)
    assert phone.u2_launches == 1

    await driver.reboot(SERIAL)

    assert phone.reboots == 1 and phone.ran("reboot") == [["reboot"]]
    [listed] = await driver.discover()
    assert listed.health is base.DeviceHealth.OFFLINE and listed.adb_state == "offline"

    adb.boot(phone, completed=False)  # adb lists it as a device before Android has booted
    [listed] = await driver.discover()
    assert listed.health is base.DeviceHealth.ONLINE
    with pytest.raises(base.DeviceNotReady, match="still booting"):  # not a failure: it will be fine
        await driver.probe(SERIAL)

    phone.booted = True
    assert await driver.probe(SERIAL) is True
    assert phone.u2_launches == 2 and phone.u2_running  # the old server died with the phone


async def test_a_reboot_of_a_phone_adb_does_not_list_is_a_device_error(adb: AdbDouble) -> None:
    phone = adb.add(PhoneDouble(SERIAL))
    driver = await ready(adb, phone)
    adb.set_state(phone, "offline")
    await driver.discover()

    with pytest.raises(base.DeviceError, match="not connected"):
        await driver.reboot(SERIAL)
    assert phone.reboots == 0


# --- the screen is awake only while running ------------------------------------------------------


@pytest.mark.parametrize("outcome", ["success", "failure", "cancel"])
@pytest.mark.parametrize("was_awake", [False, True])
async def test_the_screen_is_awake_while_running_and_as_found_after_any_outcome(
        adb: AdbDouble, tmp_path: pathlib.Path, outcome: str, was_awake: bool) -> None:
    phone = adb.add(PhoneDouble(SERIAL))
    driver = await ready(adb, phone)
    phone.awake = was_awake
    awake_while_running: list[bool] = []

    def check() -> base.StopReason | None:
        if phone.ran("am start"):  # the page is open: the run is on
            awake_while_running.append(phone.awake)
            if outcome == "cancel" and len(awake_while_running) == 2:
                return base.StopReason.CANCELLED
        return None

    phone.black_screen = outcome == "failure"  # this run fails at its screenshot
    if outcome == "failure":
        with pytest.raises(base.DeviceError, match="screenshot"):
            await driver.open_url(request_for(tmp_path, duration_sec=3), check)
    else:
        result = await driver.open_url(request_for(tmp_path, duration_sec=3), check)
        assert (result.stopped is None) == (outcome == "success")

    assert awake_while_running and all(awake_while_running)
    assert phone.awake is was_awake  # put back to sleep only when it was asleep
    assert ("KEYCODE_SLEEP" in keys(phone)) is (not was_awake)
    assert phone.force_stopped == [CHROME] and phone.foreground[0] == LAUNCHER
