"""What the uiautomator2 driver reads from a phone's texts: `dumpsys battery` as vitals and
`getprop` as labels. The texts are shaped after real phones' (a Pixel, a Samsung, an old
build, a tablet without a battery), including fields left out. And the reboot command's
stream, which a phone going down may cut."""

from __future__ import annotations

import adbutils
import pytest

from worker.drivers import android
from worker.drivers.base import Vitals

PIXEL_ON_USB = """Current Battery Service state:
  AC powered: false
  USB powered: true
  Wireless powered: false
  Dock powered: false
  Max charging current: 500000
  Max charging voltage: 5000000
  Charge counter: 3719000
  status: 2
  health: 2
  present: true
  level: 85
  scale: 100
  voltage: 4187
  temperature: 291
  technology: Li-ion
  Charging state: 1
  Charging policy: 1
  Capacity level: 3
"""

SAMSUNG_ON_AC_FULL = """Current Battery Service state:
  AC powered: true
  USB powered: false
  Wireless powered: false
  Max charging current: 1500000
  Max charging voltage: 9000000
  Charge counter: 4396000
  status: 5
  health: 2
  present: true
  level: 100
  scale: 100
  voltage: 4362
  temperature: 325
  technology: Li-ion
  mSecPlugTypeSummary: 1
  LED Charging: true
  LED Low Battery: true
  current now: 12
  charge counter: 4396000
  Adaptive Fast Charging Settings: true
  Super Fast Charging Settings: false
  FEATURE_WIRELESS_FAST_CHARGER_CONTROL: true
  mWasUsedWirelessFastChargerPreviously: false
  mWirelessFastChargingSettingsEnable: true
  level: 1
"""

UNPLUGGED_HOT_STOPPED_UPDATES = """Current Battery Service state:
  (UPDATES STOPPED -- use 'reset' to restart)
  AC powered: false
  USB powered: false
  Wireless powered: false
  status: 3
  health: 3
  present: true
  level: 12
  scale: 100
  voltage: 3600
  temperature: 468
  technology: Li-ion
"""

OLD_BUILD_SCALE_50 = """Current Battery Service state:
  AC powered: false
  USB powered: true
  status: 2
  level: 20
  scale: 50
  temperature: -52
"""

TABLET_WITHOUT_FIELDS = """Current Battery Service state:
  present: false
  technology:
"""

GARBAGE = """Current Battery Service state:
  level: unknown
  temperature: n/a
  status: ?
"""


@pytest.mark.parametrize(("text", "expected"), [
    (PIXEL_ON_USB, Vitals(battery_pct=85, charging=True, temperature_c=29.1)),
    # Full on AC: status 5 (not 2), but a charger is plugged in; Samsung's later `level: 1`
    # belongs to another section and is not the battery's.
    (SAMSUNG_ON_AC_FULL, Vitals(battery_pct=100, charging=True, temperature_c=32.5)),
    (UNPLUGGED_HOT_STOPPED_UPDATES, Vitals(battery_pct=12, charging=False, temperature_c=46.8)),
    (OLD_BUILD_SCALE_50, Vitals(battery_pct=40, charging=True, temperature_c=-5.2)),
    (TABLET_WITHOUT_FIELDS, Vitals()),
    (GARBAGE, Vitals()),
    ("", Vitals()),
])
def test_dumpsys_battery_is_read_as_vitals(text: str, expected: Vitals) -> None:
    assert android.parse_battery(text) == expected


def test_status_charging_alone_says_charging_and_no_power_lines_say_nothing() -> None:
    assert android.parse_battery("  status: 2\n  level: 50\n").charging is True
    assert android.parse_battery("  status: 4\n  level: 50\n").charging is False
    assert android.parse_battery("  level: 50\n").charging is None


GETPROP = """[dalvik.vm.heapsize]: [512m]
[ro.build.version.release]: [13]
[ro.build.version.sdk]: [33]
[ro.product.cpu.abi]: [arm64-v8a]
[ro.product.manufacturer]: [samsung]
[ro.product.model]: [SM-A536B]
[ro.boot.hardware.sku]: []
[persist.sys.locale]: [ko-KR]
"""


def test_getprop_gives_the_labels_a_phone_reports() -> None:
    props = android.parse_props(GETPROP)

    assert props["ro.boot.hardware.sku"] == "" and props["persist.sys.locale"] == "ko-KR"
    assert android.prop_labels(props) == {"manufacturer": "samsung", "model": "SM-A536B", "android_version": "13",
                                          "sdk": "33", "abi": "arm64-v8a"}


def test_missing_or_empty_properties_give_no_label_and_long_values_are_cut_to_the_servers_bound() -> None:
    labels = android.prop_labels({"ro.product.model": "x" * 300, "ro.product.manufacturer": ""})

    assert labels == {"model": "x" * 256}


class _Stream:
    def __init__(self, fails: BaseException | None) -> None:
        self.fails = fails
        self.closed = False
        self.timeout_s: float | None = None
        self.conn = self  # adbutils' AdbConnection keeps its socket as .conn

    def settimeout(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s

    def read_until_close(self) -> str:
        if self.fails is not None:
            raise self.fails
        return ""

    def close(self) -> None:
        self.closed = True


class _Phone:
    io_timeout_s = 30.0

    def __init__(self, stream: _Stream | None = None, refused: Exception | None = None) -> None:
        self.stream = stream
        self.refused = refused
        self.commands: list[str] = []

    def open_shell(self, command: str) -> _Stream:
        self.commands.append(command)
        if self.refused is not None:
            raise self.refused
        assert self.stream is not None
        return self.stream


@pytest.mark.parametrize("dropped", [None, ConnectionResetError("reset by peer"), TimeoutError("timed out")])
def test_a_reboot_whose_stream_drops_as_the_phone_goes_down_is_not_a_failure(dropped: BaseException | None) -> None:
    stream = _Stream(dropped)
    phone = _Phone(stream)

    android.reboot(phone)  # type: ignore[arg-type]

    assert phone.commands == ["reboot"] and stream.closed and stream.timeout_s == 30.0


def test_a_reboot_adb_refuses_raises() -> None:
    with pytest.raises(adbutils.AdbError, match="device offline"):
        android.reboot(_Phone(refused=adbutils.AdbError("device offline")))  # type: ignore[arg-type]
