"""The real `jobsys up` on a fresh data dir: everything it creates there (the embedded
Postgres, the API token's hash, NiceGUI's storage, the simulated devices' evidence
screenshots) is its owner's only, the token is printed once and stored only as its hash, and
after a restart the same token works without being printed again."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import stat
import subprocess
import urllib.error
import urllib.request

from tests.support.postgres import world_traversable_dir
from tests.support.processes import JOBSYS, answers, free_port
from tests.support.waiting import wait_for

STARTUP_TIMEOUT_S = 120  # first start: initdb + migrations
SHOWN = re.compile(r"API token, shown once: ([\w-]+)")  # token_urlsafe's alphabet


class Up:
    """`jobsys up` in a subprocess, its output in a file (a full pipe never blocks it)."""

    def __init__(self, data_dir: pathlib.Path, log: pathlib.Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {k: v for k, v in os.environ.items()
               if k not in ("JOBSYS_API_TOKEN", "JOBSYS_DATABASE_URL", "JOBSYS_DATA_DIR", "GEMINI_API_KEY")}
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [*JOBSYS, "up", "--data-dir", str(data_dir), "--port", str(self.port), "--sim-devices", "2",
                 "--sim-speed", "20"], stdout=out, stderr=subprocess.STDOUT, env=env)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, f"jobsys up exited:\n{self.output()}"
            return "dashboard: " in self.output() and answers(f"{self.url}/login")

        wait_for(ready, STARTUP_TIMEOUT_S, "jobsys up")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            assert self.proc.wait(timeout=60) == 0, self.output()


def call(url: str, token: str, body: dict[str, object] | None = None) -> tuple[int, object]:
    """(status, JSON body) of a GET, or of a POST of `body`."""
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def connected(url: str, token: str) -> int:
    status, body = call(f"{url}/api/devices", token)
    assert status == 200 and isinstance(body, dict), body
    return int(body["summary"]["connected"])


def loose_entries(root: pathlib.Path) -> list[str]:
    """Directories not 0700 and files not 0600 under `root` (itself included); sockets are
    reached through their directory only. As root, pgserver runs Postgres as its own user
    `pgserver` and opens every directory above pgdata to others for traversal (g+rx,o+rx),
    the data dir included; everything in it stays private."""
    loose = []
    for path in [*([] if os.geteuid() == 0 else [root]), *root.rglob("*")]:
        kind = path.lstat().st_mode
        wanted = 0o700 if stat.S_ISDIR(kind) else 0o600 if stat.S_ISREG(kind) else None
        if wanted is not None and stat.S_IMODE(kind) != wanted:
            loose.append(f"{oct(stat.S_IMODE(kind))} {path.relative_to(root)}")
    return loose


def test_jobsys_up_keeps_its_data_dir_private_and_the_token_hashed(tmp_path: pathlib.Path) -> None:
    base = world_traversable_dir("jobsys-private-files-")  # not tmp_path: see world_traversable_dir
    try:
        _up_twice(base / "data", tmp_path)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _up_twice(data: pathlib.Path, tmp_path: pathlib.Path) -> None:
    first = Up(data, tmp_path / "first.log")
    try:
        first.wait_ready()
        found = SHOWN.search(first.output())
        assert found, first.output()
        token = found.group(1)
        wait_for(lambda: connected(first.url, token) == 2, 60, "the simulated devices")
        status, _ = call(f"{first.url}/api/jobs", token, {"target_url": "https://example.com/status",
                                                          "duration_sec": 20})
        assert status == 201
        evidence = data / "evidence"
        wait_for(lambda: evidence.is_dir() and len(list(evidence.rglob("*.png"))) == 2, 60,
                 "both simulated devices' screenshots")
        assert call(f"{first.url}/openapi.json", "wrong")[0] == 401
        assert call(f"{first.url}/openapi.json", token)[0] == 200
    finally:
        first.stop()
    assert (data / "api_token.sha256").read_text() == hashlib.sha256(token.encode()).hexdigest() + "\n"
    assert not (data / "api_token").exists()
    assert (data / "pgdata").is_dir() and (data / "nicegui").is_dir()
    assert loose_entries(data) == []
    assert token not in "".join(p.read_text(errors="replace") for p in data.glob("*") if p.is_file())

    second = Up(data, tmp_path / "second.log")
    try:
        second.wait_ready()
        assert token not in second.output() and "keeps only its hash" in second.output()
        assert call(f"{second.url}/api/devices", token)[0] == 200
    finally:
        second.stop()
    assert loose_entries(data) == []
