"""`jobsys worker --health-port`: a supervisor sees the worker alive (/healthz) and ready
(/readyz), and not ready, naming the database, while Postgres is down; ready again after."""

from __future__ import annotations

import argparse
import pathlib
import signal
from typing import Any

import pytest

from jobsys_cli.health_port import health_address
from tests.support.postgres import pg_start, pg_stop
from tests.support.processes import free_port, get_json, kill_all, spawn_worker
from tests.support.waiting import wait_until


async def test_readyz_follows_the_database_and_healthz_stays_up(
        own_postgres: tuple[Any, str], tmp_path: pathlib.Path) -> None:
    server, db_url = own_postgres
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker = spawn_worker(db_url, tmp_path, "pc-health", 2, 5.0, "--health-port", str(port))
    try:
        await wait_until(lambda: (get_json(base + "/readyz") or (0, {}))[0] == 200, timeout_s=60, what="ready")
        _, body = get_json(base + "/readyz") or (0, {})
        assert body["checks"] == {"registered": "ok", "database": "ok", "push": "ok", "auth": "ok"}

        pg_stop(server)
        try:
            # push goes first (its connection drops), then the heartbeats go unanswered
            await wait_until(lambda: "database" in (get_json(base + "/readyz") or (0, {"failing": []}))[1]["failing"],
                             timeout_s=30, what="database not ready while Postgres is down")
            status, body = get_json(base + "/readyz") or (0, {})
            assert status == 503 and body["checks"]["database"].startswith("no heartbeat")
            assert get_json(base + "/healthz") == (200, {"status": "ok"})
        finally:
            pg_start(server)
        await wait_until(lambda: (get_json(base + "/readyz") or (0, {}))[0] == 200, timeout_s=60, what="ready again")
        worker.send_signal(signal.SIGINT)
        assert worker.wait(timeout=60) == 0
    finally:
        kill_all([worker])


def test_the_address_is_a_port_or_host_and_port() -> None:
    assert health_address("9102") == ("127.0.0.1", 9102)
    assert health_address("0.0.0.0:9102") == ("0.0.0.0", 9102)
    assert health_address("[::1]:9102") == ("::1", 9102)
    for bad in ("", "x", "0", "70000", "host:"):
        with pytest.raises(argparse.ArgumentTypeError):
            health_address(bad)
