"""A farm on the hub, every part a real process on loopback: `jobsys up` as the hub and three
`jobsys worker --server` PCs whose environment holds no database setting, ten simulated
phones each. A job on all 30 phones completes; then, one job each, a worker is killed with
SIGKILL, the hub is killed with SIGKILL and restarted, one PC's link is cut (a TCP proxy
of ours), and Postgres restarts: every job still ends completed, nothing is lost and
nothing counted twice, and every run's screenshot is on the hub, served to operators
only. Revoking a PC stops its worker with a one-line error, and a worker
started with a revoked token exits at once with one."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import uuid
from typing import Any, Callable

import httpx
import psycopg

from jobsys import hub_protocol
from jobsys.system import JobSystem
from tests.support.postgres import EXACT_JOBS, Db, pg_start, pg_stop
from tests.support.processes import (
    HUB_OPERATOR_TOKEN as OPERATOR_TOKEN, JOBSYS, free_port, kill_all, spawn_hub, spawn_hub_worker, worker_pc_env,
)
from tests.support.tcp_proxy import tcp_proxy
from tests.support.waiting import wait_until

PCS = 3
PHONES = 10
START_TIMEOUT_S = 60.0


def _safe(db: Db, query: str, params: Any = None) -> Any:
    try:
        return db.value(query, params)
    except psycopg.OperationalError:
        return None


def hub_answers(url: str) -> bool:
    """The hub is up when it refuses a call without a token as it should."""
    try:
        response = httpx.post(url + hub_protocol.RPC_PATH.format(function="maintain"), json={}, timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 401


async def test_a_farm_on_the_hub_survives_its_faults(own_postgres: tuple[Any, str], tmp_path: pathlib.Path) -> None:
    server, db_url = own_postgres
    db = Db(db_url)
    port = free_port()
    hub_url = f"http://127.0.0.1:{port}"
    procs: dict[str, subprocess.Popen[str]] = {"hub": spawn_hub(db_url, tmp_path / "hub", port)}
    try:
        await wait_until(lambda: hub_answers(hub_url), timeout_s=START_TIMEOUT_S, what="the hub")
        async with await JobSystem.connect(db_url) as operator:
            tokens = {f"pc{i}": (await operator.add_worker_account(f"pc{i}")).token for i in range(PCS)}
        async with tcp_proxy(port) as proxy:
            servers = {"pc0": hub_url, "pc1": f"http://127.0.0.1:{proxy.port}", "pc2": hub_url}

            def start(name: str) -> None:
                procs[name] = spawn_hub_worker(servers[name], tokens[name], tmp_path, name, PHONES)

            for name in tokens:
                start(name)
            online = "select count(*) from jobsys.devices where state = 'online'"
            await wait_until(lambda: _safe(db, online) == PCS * PHONES, timeout_s=START_TIMEOUT_S,
                             what="30 phones online through the hub")
            assert db.value("select count(distinct user_id) from jobsys.workers where status = 'online'") == PCS

            async def run_job(url: str, fault: Callable[[], Any] | None = None) -> uuid.UUID:
                async with await JobSystem.connect(db_url) as jobs:
                    job = (await jobs.create_job(target_url=url, duration_sec=30)).job  # 3 s at speed 10
                status = "select status from jobsys.jobs where id = %s"
                if fault is not None:
                    await wait_until(lambda: (_safe(db, f"select running_count from {EXACT_JOBS} j where id = %s",
                                                    (job.id,)) or 0) > 0, timeout_s=30, what="runs under way")
                    await fault()
                await wait_until(lambda: _safe(db, status, (job.id,)) == "completed", timeout_s=120,
                                 what=f"{url} completed")
                return job.id

            first = await run_job("https://example.com/all-30")

            # Every run's screenshot is on the hub, named in the run, and served to operators only.
            async with await JobSystem.connect(db_url) as operator:
                runs = (await operator.get_job(first)).assignments
            urls = [run.screenshot_url for run in runs]
            assert len(urls) == PCS * PHONES and all(urls), urls
            stored = tmp_path / "hub" / "evidence" / "hub"
            await wait_until(lambda: len(list(stored.glob("*.png"))) == PCS * PHONES, timeout_s=30,
                             what="30 screenshots on the hub")
            async with httpx.AsyncClient(base_url=hub_url) as client:
                shown = await client.get(str(urls[0]), headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
                assert (shown.status_code, shown.headers["content-type"]) == (200, "image/png")
                assert shown.content.startswith(b"\x89PNG")
                refused = await client.get(str(urls[0]), headers=hub_protocol.bearer(tokens["pc0"]))
                assert refused.status_code == 401

            async def kill_worker() -> None:
                procs["pc0"].send_signal(signal.SIGKILL)
                procs["pc0"].wait()
                start("pc0")

            async def kill_hub() -> None:
                procs["hub"].send_signal(signal.SIGKILL)
                procs["hub"].wait()
                procs["hub"] = spawn_hub(db_url, tmp_path / "hub", port)
                await wait_until(lambda: hub_answers(hub_url), timeout_s=START_TIMEOUT_S, what="the hub again")

            async def cut_link() -> None:
                assert proxy.cut() >= 1

            async def restart_postgres() -> None:
                pg_stop(server)
                pg_start(server)
                await wait_until(lambda: _safe(db, "select 1") == 1, timeout_s=60, what="postgres back")

            for fault in (kill_worker, kill_hub, cut_link, restart_postgres):
                await run_job(f"https://example.com/{fault.__name__}", fault)

            assert db.counters_match() == []
            assert db.value("select count(*) from jobsys.job_assignments "
                            "where status in ('pending', 'running', 'paused')") == 0
            assert db.value(f"select sum(completed_count) from {EXACT_JOBS} j") == db.value(
                "select count(*) from jobsys.job_assignments where status = 'completed'") == 5 * PCS * PHONES

            # Revoking a PC ends its worker process with one line; its phones go offline.
            async with await JobSystem.connect(db_url) as operator:
                await operator.revoke_worker_account("pc2")
            await wait_until(lambda: procs["pc2"].poll() is not None, timeout_s=30, what="pc2's worker to stop")
            assert procs["pc2"].returncode == 2
            last = (tmp_path / "pc2.log").read_text().strip().splitlines()[-1]
            assert last.startswith("jobsys: the hub refused this PC's worker token"), last
            assert db.value("select count(*) from jobsys.devices where state = 'online'") == (PCS - 1) * PHONES

            # Started again with the revoked token: one line, non-zero, nothing registered.
            sessions = db.value("select count(*) from jobsys.workers")
            again = subprocess.run([*JOBSYS, "worker", "--server", hub_url, "--driver", "sim", "--sim-devices", "1"],
                                   capture_output=True, text=True, timeout=60,
                                   env=worker_pc_env(tmp_path / "pc2-again", tokens["pc2"]))
            assert again.returncode == 2
            assert again.stderr.strip().splitlines()[-1].startswith("jobsys: the hub refused this PC's worker token")
            assert "Traceback" not in again.stderr
            assert db.value("select count(*) from jobsys.workers") == sessions
    finally:
        kill_all(procs.values())
