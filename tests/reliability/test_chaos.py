"""Chaos: a job over 120 simulated devices on 3 worker processes while workers are killed
with SIGKILL, Postgres restarts and the push channel is cut. Afterwards every assignment is
terminal, nothing is lost and nothing is counted twice.

CI runs a short form; JOBSYS_SOAK=1 runs at least ten kills and writes its figures to
bench/results/reliability/chaos.json (docs/reliability.md quotes them)."""

from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import time
from typing import Any

import psycopg

from jobsys.system import JobSystem
from tests.support.paths import ROOT
from tests.support.postgres import EXACT_JOBS, Db, pg_start, pg_stop
from tests.support.processes import kill_all, spawn_worker
from tests.support.waiting import wait_until

SOAK = bool(os.environ.get("JOBSYS_SOAK"))
WORKERS = 3
DEVICES_PER_WORKER = 40
KILLS = 10 if SOAK else 2
ROUNDS = 3 if SOAK else 1  # jobs run one after another, faults injected during each


def _safe_value(db: Db, query: str, params: Any = None) -> Any:
    try:
        return db.value(query, params)
    except psycopg.OperationalError:
        return None


async def test_chaos_loses_nothing_and_counts_nothing_twice(
        own_postgres: tuple[Any, str], tmp_path: pathlib.Path) -> None:
    server, url = own_postgres
    db = Db(url)
    rng = random.Random(1234)
    names = [f"chaos{i}" for i in range(WORKERS)]
    procs = {n: spawn_worker(url, tmp_path, n, DEVICES_PER_WORKER, 10.0) for n in names}
    # Seconds until the killed worker is registered again / Postgres answers again / the cut
    # is made, and from job creation to completion for each round (a fault-free round of
    # 60 device-seconds at speed 10 takes about 6 s).
    figures: dict[str, list[float]] = {"worker_back_after_kill_s": [], "postgres_back_after_restart_s": [],
                                       "push_cut_s": [], "round_to_completion_s": []}
    try:
        await wait_until(lambda: _safe_value(db, "select count(*) from jobsys.devices where state = 'online'")
                         == WORKERS * DEVICES_PER_WORKER, timeout_s=60, what="fleet registered")
        kills_left = KILLS
        for round_no in range(ROUNDS):
            async with await JobSystem.connect(url) as jobs:
                created = await jobs.create_job(target_url=f"https://example.com/{round_no}", duration_sec=60)  # 6 s at speed 10
            job_id = created.job.id
            kills_now = -(-kills_left // (ROUNDS - round_no))  # spread what is left over the rounds left
            faults = ["kill"] * kills_now + ["restart", "cut"]
            round_started = time.monotonic()
            rng.shuffle(faults)
            for fault in faults:
                await wait_until(lambda: (_safe_value(db, f"select running_count from {EXACT_JOBS} j where id = %s",
                                                      (job_id,)) or 0) > 0
                                 or _safe_value(db, "select status from jobsys.jobs where id = %s",
                                                (job_id,)) == "completed", timeout_s=60, what="work running")
                started = time.monotonic()
                if fault == "kill":
                    victim = rng.choice(names)
                    procs[victim].send_signal(signal.SIGKILL)
                    procs[victim].wait()
                    procs[victim] = spawn_worker(url, tmp_path, victim, DEVICES_PER_WORKER, 10.0)
                    kills_left -= 1
                    await wait_until(lambda: _safe_value(
                        db, "select count(*) from jobsys.workers w where w.status = 'online' and w.name = %s"
                            " and w.started_at > now() - interval '1 minute'", (victim,)) or 0, timeout_s=60,
                        what="killed worker back")
                    figures["worker_back_after_kill_s"].append(time.monotonic() - started)
                elif fault == "restart":
                    pg_stop(server)
                    pg_start(server)
                    await wait_until(lambda: _safe_value(db, "select 1") == 1, timeout_s=60, what="postgres back")
                    figures["postgres_back_after_restart_s"].append(time.monotonic() - started)
                else:
                    db.run("select pg_terminate_backend(pid) from pg_stat_activity where query ilike 'listen%%'")
                    figures["push_cut_s"].append(time.monotonic() - started)
            await wait_until(lambda: _safe_value(db, "select status from jobsys.jobs where id = %s", (job_id,))
                             == "completed", timeout_s=180, what=f"round {round_no} completed")
            figures["round_to_completion_s"].append(time.monotonic() - round_started)

        assert db.counters_match() == []
        assert db.value("select count(*) from jobsys.job_assignments where status in ('pending', 'running',"
                        " 'paused')") == 0  # every assignment terminal
        assert db.value(f"select sum(completed_count) from {EXACT_JOBS} j") == db.value(
            "select count(*) from jobsys.job_assignments where status = 'completed'")
        assert db.value(f"select count(*) from {EXACT_JOBS} j where completed_count <> target_count") == 0
        if SOAK:
            out = ROOT / "bench" / "results" / "reliability" / "chaos.json"  # not a benchmark: kept out of the report
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({
                "kills": KILLS, "rounds": ROUNDS, "devices": WORKERS * DEVICES_PER_WORKER,
                "assignments": db.value("select count(*) from jobsys.job_assignments"),
                "lost": 0, "double_counted": 0, "fault_seconds": figures}, indent=2))
    finally:
        kill_all(procs.values())
