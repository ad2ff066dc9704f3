"""Headless Chromium (Debian's chromium + chromium-driver) and the real `jobsys up` in a
subprocess, for the end-to-end test."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Callable, Iterator

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = pathlib.Path("/usr/bin/chromium")
CHROMEDRIVER = pathlib.Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers give /dev/shm 64 MB; Chromium would crash on it
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)
LANGUAGE = "ko"  # the dashboard's first language; fonts-noto-cjk makes the screenshot readable
ARTIFACTS = pathlib.Path(__file__).resolve().parent / "artifacts"
ROOT = pathlib.Path(__file__).resolve().parents[2]
JOBSYS = [sys.executable, "-m", "jobsys.cli"]
POLL_INTERVAL_S = 0.05  # how often the deadline loops below look again


def missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    absent = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if absent:
        return f"{' and '.join(absent)} missing: install Debian's chromium and chromium-driver (see .ci/run)"
    return None


@contextlib.contextmanager
def chromium() -> Iterator[WebDriver]:
    """A headless Chromium with a fresh profile, quit and removed afterwards."""
    profile = tempfile.mkdtemp(prefix="jobsys-e2e-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--lang={LANGUAGE}"):
        options.add_argument(flag)
    # Accept-Language picks the dashboard's language; pin it so the labels are known.
    options.add_experimental_option("prefs", {"intl.accept_languages": LANGUAGE})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def world_traversable_dir(prefix: str) -> pathlib.Path:
    """Not pytest's tmp_path (0700): as root, pgserver runs Postgres as the `pgserver`
    user, which must reach the data directory."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
    directory.chmod(0o755)
    return directory


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `check()` until it is true, with a deadline."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class JobsysUp:
    """`python -m jobsys.cli up` in a subprocess; its output goes to a log file, so a busy
    worker can never block on a full pipe, and the log stays as an artifact."""

    def __init__(self, data_dir: pathlib.Path, port: int, token: str, log_path: pathlib.Path,
                 extra_args: list[str]) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if k not in ("JOBSYS_DATABASE_URL", "JOBSYS_DATA_DIR")}
        env["JOBSYS_API_TOKEN"] = token
        self._log = log_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [*JOBSYS, "up", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port),
             *extra_args],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"jobsys up exited early ({self.proc.returncode}):\n{self.output()}")
        return "jobsys is up" in self.output() and _answers(f"{self.url}/login")

    def wait_ready(self, timeout_s: float) -> None:
        wait_for(self._ready, timeout_s, f"jobsys up to answer on {self.url}")

    def interrupt(self, timeout_s: float) -> int:
        """Ctrl-C, as an operator would stop it; the exit code."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout_s)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
