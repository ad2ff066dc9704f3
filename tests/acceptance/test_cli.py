"""The real `jobsys` command in a subprocess."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

JOBSYS = [sys.executable, "-m", "jobsys_cli"]


@pytest.mark.parametrize("args", [["--help"], ["up", "--help"], ["migrate", "--help"]])
def test_help_everywhere(args: list[str]) -> None:
    out = subprocess.run(JOBSYS + args, capture_output=True, text=True, check=True).stdout
    assert "usage: jobsys" in out


def test_migrate_then_up_on_the_embedded_default_stops_cleanly(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "JOBSYS_DATA_DIR": str(tmp_path / "data")}
    first = subprocess.run(JOBSYS + ["migrate"], capture_output=True, text=True, env=env, check=True)
    assert "applied " in first.stdout
    again = subprocess.run(JOBSYS + ["migrate"], capture_output=True, text=True, env=env, check=True)
    assert "up to date" in again.stdout

    proc = subprocess.Popen(JOBSYS + ["up", "--sim-devices", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        seen = ""
        assert proc.stdout is not None
        while "jobsys is up" not in seen:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, f"exited early: {seen}"
            seen += line
            assert time.monotonic() < deadline, seen
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_dashboard_alone_runs_upkeep(db_url: str, tmp_path: pathlib.Path) -> None:
    """With no worker connected, `jobsys dashboard` still runs maintenance (lease rescue,
    top-up, trailing progress events): its last run moves forward."""
    import psycopg

    from tests.support.processes import free_port
    from tests.support.waiting import wait_until

    def last_run() -> str:
        with psycopg.connect(db_url, autocommit=True) as conn:
            row = conn.execute("select last_run_at::text from jobsys.maintenance_state").fetchone()
        assert row is not None
        return str(row[0])

    before = last_run()
    port = free_port()
    env = {**os.environ, "JOBSYS_API_TOKEN": "test-token-for-upkeep"}
    proc = subprocess.Popen(JOBSYS + ["dashboard", "--database-url", db_url, "--data-dir", str(tmp_path),
                                      "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        await wait_until(lambda: proc.poll() is not None or last_run() != before, timeout_s=60,
                         what="a maintenance run by the dashboard")
        assert proc.poll() is None, "the dashboard exited"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
