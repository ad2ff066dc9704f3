"""Programs the tests run in subprocesses (the CLI worker), ports for servers they start,
and cleaning up whatever is still running when a test ends."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any, Iterable

import httpx

JOBSYS = [sys.executable, "-m", "jobsys_cli"]
ANSWER_TIMEOUT_S = 2.0  # answers(): one request's limit
JSON_ANSWER_TIMEOUT_S = 10.0  # get_json(): one request's limit
HUB_OPERATOR_TOKEN = "hub-test-operator-token"  # the dashboard API token of spawn_hub's server


def free_port() -> int:
    """A local TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    """True when a GET of `url` returns 200 (a server started in a subprocess is up)."""
    try:
        with urllib.request.urlopen(url, timeout=ANSWER_TIMEOUT_S) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def get_json(url: str) -> tuple[int, dict[str, Any]] | None:
    """(status, body) of a GET, or None while nothing answers there yet. The limit covers a
    readiness probe whose own checks take up to 3 s each."""
    try:
        response = httpx.get(url, timeout=JSON_ANSWER_TIMEOUT_S)
    except httpx.HTTPError:
        return None
    return response.status_code, response.json()


def kill_all(procs: Iterable[subprocess.Popen[str]]) -> None:
    """SIGKILL every process still running, and reap it."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def spawn_worker(db_url: str, tmp: pathlib.Path, name: str = "pc1", devices: int = 10,
                 speed: float = 5.0, *extra: str) -> subprocess.Popen[str]:
    """`jobsys worker --driver sim` with fast heartbeats and polls; its log in tmp/NAME.log."""
    log = open(tmp / f"{name}.log", "a")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [*JOBSYS, "worker", "--database-url", db_url, "--driver", "sim",
         "--name", name, "--sim-devices", str(devices), "--sim-speed", str(speed),
         "--heartbeat-interval", "0.5", "--poll-interval", "0.2", "--evidence-dir", str(tmp / "evidence"),
         *extra],
        stdout=log, stderr=subprocess.STDOUT, text=True)


def spawn_hub(db_url: str, data_dir: pathlib.Path, port: int, *extra: str) -> subprocess.Popen[str]:
    """`jobsys up` on this database as the hub other PCs join (no simulated devices of its
    own); its log in data_dir/hub.log."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "hub.log", "a")  # noqa: SIM115 - closed with the process
    env = {**os.environ, "JOBSYS_API_TOKEN": HUB_OPERATOR_TOKEN}
    return subprocess.Popen(
        [*JOBSYS, "up", "--database-url", db_url, "--data-dir", str(data_dir), "--sim-devices", "0",
         "--host", "127.0.0.1", "--port", str(port), *extra],
        stdout=log, stderr=subprocess.STDOUT, text=True, env=env)


def worker_pc_env(data_dir: pathlib.Path, token: str) -> dict[str, str]:
    """A worker PC's environment: its own data dir and its token, and no database or
    Supabase setting at all (whatever the test runner has)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JOBSYS_", "SUPABASE_", "PG", "DATABASE_URL"))}
    return env | {"JOBSYS_DATA_DIR": str(data_dir), "JOBSYS_WORKER_TOKEN": token}


def spawn_hub_worker(server: str, token: str, tmp: pathlib.Path, name: str, devices: int = 10,
                     speed: float = 10.0) -> subprocess.Popen[str]:
    """`jobsys worker --server` with simulated devices, as a PC joining the hub; its output
    in tmp/NAME.log, its data dir tmp/NAME."""
    log = open(tmp / f"{name}.log", "a")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [*JOBSYS, "worker", "--server", server, "--driver", "sim", "--name", name,
         "--sim-devices", str(devices), "--sim-speed", str(speed),
         "--heartbeat-interval", "0.5", "--poll-interval", "0.2"],
        stdout=log, stderr=subprocess.STDOUT, text=True, env=worker_pc_env(tmp / name, token))
