"""Worker settings, with units in their names. The CLI fills them from flags."""

from __future__ import annotations

import dataclasses
import pathlib

HEARTBEAT_INTERVAL_S = 10.0  # server marks a device offline after 30 s without one
POLL_INTERVAL_S = 3.0  # while the push channel is down
SAFETY_POLL_S = 30.0  # while push is up: a slow poll in case a notification was missed
SHUTDOWN_GRACE_S = 30.0  # SIGTERM: running work may finish this long, then is released
VITALS_INTERVAL_S = 60.0  # battery, heat and screen are read at most this often per phone
VITALS_REPORT_S = 60.0  # a change of vitals alone is reported at most this often per worker
REBOOT_TIMEOUT_S = 300.0  # a rebooted phone must be back and pass its probe within this
REBOOT_POLL_S = 2.0  # while waiting for a rebooted phone: how often adb's device list is read


@dataclasses.dataclass
class WorkerOptions:
    name: str
    evidence_dir: pathlib.Path
    driver: str = "sim"
    sim_devices: int = 20
    sim_failure_rate: float = 0.0
    sim_speed: float = 1.0  # >1 compresses simulated time (tests, benchmarks)
    adb_host: str = "127.0.0.1"
    adb_port: int = 5037
    browser_package: str | None = None  # None: each phone's default browser, else Chrome
    push: bool = True
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    poll_interval_s: float = POLL_INTERVAL_S
    safety_poll_s: float = SAFETY_POLL_S
    shutdown_grace_s: float = SHUTDOWN_GRACE_S
    vitals_interval_s: float = VITALS_INTERVAL_S
    vitals_report_s: float = VITALS_REPORT_S
    reboot_timeout_s: float = REBOOT_TIMEOUT_S
    reboot_poll_s: float = REBOOT_POLL_S

    def driver_options(self) -> dict[str, object]:
        if self.driver == "sim":
            return {"count": self.sim_devices, "name_seed": self.name,
                    "failure_rate": self.sim_failure_rate, "speed": self.sim_speed}
        return {"adb_host": self.adb_host, "adb_port": self.adb_port, "browser_package": self.browser_package}
