"""The real `jobsys up` in a subprocess for the end-to-end test, and why that test cannot
run here. Chromium itself is started by tests/support/browser.py."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess

from tests.support.browser import absent
from tests.support.paths import ROOT
from tests.support.processes import JOBSYS, answers
from tests.support.waiting import wait_for

ARTIFACTS = pathlib.Path(__file__).resolve().parent / "artifacts"


def missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    lacking = absent()
    if lacking:
        return f"{' and '.join(lacking)} missing: install Debian's chromium and chromium-driver (see .ci/run)"
    return None


class JobsysUp:
    """`python -m jobsys_cli up` in a subprocess; its output goes to a log file, so a busy
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
        return "jobsys is up" in self.output() and answers(f"{self.url}/login")

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
