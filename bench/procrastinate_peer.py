"""procrastinate: jobsys beside Procrastinate 3.x, the closest Python peer, in one run.

Both on the same embedded Postgres (Procrastinate in a database of its own, its schema
applied by its SchemaManager), both with LISTEN/NOTIFY, the sides alternating run by run
(A B, then B A), each figure the median of the runs:

1. Enqueue → worker start. One worker process each, one job at a time, the worker idle:
   jobsys's Worker (bench/worker_child.py) with one simulated device and push on,
   `create_job` from the benchmark process; Procrastinate's worker
   (bench/procrastinate_child.py, concurrency 1) and `defer_async` of a no-op task. A sample
   is from just before the enqueue call to the moment the worker has the job: jobsys's
   claim_assignments returned it, Procrastinate's task function began. Untimed after each:
   the jobsys run is cancelled and dropped, the Procrastinate job is seen finished.
2. No-op throughput at concurrency 8, in the benchmark process: jobsys 8 clients with one
   device each (claim and start in one call, then finish_assignments, as the worker does; 8
   runs in flight at most); Procrastinate
   `run_worker_async(concurrency=8, wait=False)` burning down jobs deferred beforehand
   (fetch → run → finish). The work is created untimed before each run.
3. Crash recovery: a worker process holding 100 running jobs gets kill -9; the clock runs
   until all 100 are queued again and until all are finished again, each by its documented
   mechanism with timings shortened alike (both listed in NOTES).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import pathlib
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import procrastinate
from psycopg import conninfo

from bench import fleet as bench_fleet
from bench import worker_crash
from bench.cpu import CpuMeter
from bench.harness import Better, Goal, Measurement, Ticker, measure
from bench.pg import BLANK_TEMPLATE, BenchPostgres
from bench.procrastinate_child import make_app
from bench.worker_procs import ROOT, ChildFleet, Db, _env, _log, kill, percentile, stop_process, wait_until
from jobsys.system import JobSystem

NAME = "procrastinate"
PEER_VERSION = importlib.metadata.version("procrastinate")
DESCRIPTION = (f"jobsys beside Procrastinate {PEER_VERSION} on the same Postgres: enqueue → worker start, "
               "no-op throughput, kill -9 recovery")
BASELINE_NAME = f"Procrastinate {PEER_VERSION} (LISTEN/NOTIFY, stock settings unless named)"
TARGET_URL = "https://example.com/device-lab/check"
LATENCY_JOB_SEC = 600  # the jobsys run is cancelled once claimed; it never ends by itself
LATENCY_SPEED = 4.0  # sim pace: a dropped run clears within 0.25 s
LATENCY_TIMEOUT_S = 10.0
CONCURRENCY = 8
CRASH_JOBS = worker_crash.DEVICES  # 100 running jobs held by the victim
CRASH_RERUN_S = worker_crash.JOB_DURATION_SEC / worker_crash.SIM_SPEED  # a re-run lasts 1 s on both sides
PEER_HEARTBEAT_S = worker_crash.HEARTBEAT_S
PEER_STALLED_AFTER_S = worker_crash.FAST.heartbeat_lease_sec
PEER_SWEEP_S = worker_crash.FAST.maintenance_interval_ms / 1000
PEER_RESCUE_POLL_S = worker_crash.HEARTBEAT_S
POLL_S = 0.02
START_TIMEOUT_S = 60.0
RECOVERY_TIMEOUT_S = 120.0

NOTES = (
    f"Procrastinate {PEER_VERSION} from PyPI (the `bench` extra only), in its own database on the same "
    "server; every figure is the median of the runs, the sides alternating. "
    "**Enqueue → worker has the job**: one worker process per side, idle, one job at a time, 50–150 ms "
    "apart. jobsys: the Worker (bench/worker_child.py) with 1 simulated device, push on; the sample "
    "runs from just before `create_job(all_devices)` (which resolves the target, inserts the run and "
    "sends the push) to the moment the worker's claim_assignments call returned the run. "
    "Procrastinate: its worker (`run_worker_async`, concurrency 1, listen_notify on, bench/"
    "procrastinate_child.py); from just before `defer_async()` of a no-op task to the moment the task "
    "function began. Both ends read the same wall clock; p50/p99 are per run. "
    f"**No-op throughput**: concurrency {CONCURRENCY} on both sides, in the benchmark process. jobsys: "
    f"{CONCURRENCY} clients (one JobSystem each), each a worker session with 1 device: claim_assignments "
    f"(start=true), then finish_assignments, as the worker does, one run at a time, so at most "
    f"{CONCURRENCY} in flight; the runs are jobs created with "
    f"all_devices on those {CONCURRENCY} devices. Procrastinate: `run_worker_async(concurrency="
    f"{CONCURRENCY}, wait=False, listen_notify=True)` burning down jobs deferred (batch) just before; "
    "its fetch → run → finish. Client and Postgres CPU are per job. "
    f"**kill -9 recovery**: a worker process holding {CRASH_JOBS} running jobs is killed; a second "
    "worker is up; `re-queued` is when every job is pending again or running elsewhere, `completed` "
    f"when all are finished again (a re-run lasts {CRASH_RERUN_S:g} s on both sides), polled every "
    f"{POLL_S * 1000:g} ms. jobsys: worker_crash's scenario (b): the CLI worker with {CRASH_JOBS} simulated "
    f"devices, lease expiry and stale marking, run by maintain() from the heartbeats; "
    f"{worker_crash.FAST.describe()}, heartbeats every {worker_crash.HEARTBEAT_S:g} s. Procrastinate: "
    "its documented stalled-job retry (howto/production/retry_stalled_jobs): workers heartbeat, and "
    "`job_manager.get_stalled_jobs(seconds_since_heartbeat=…)` then `retry_job` for each, run in the "
    f"second worker's process every {PEER_SWEEP_S:g} s (the docs run it as a periodic task, whose cron "
    f"cannot go below 1 s); heartbeats every {PEER_HEARTBEAT_S:g} s, stalled after "
    f"{PEER_STALLED_AFTER_S:g} s. "
    "A retried job sends no notification, so the second worker finds it by polling; its "
    f"fetch_job_polling_interval is {PEER_RESCUE_POLL_S:g} s here (default 5 s). The victim's first "
    "attempt outlives the kill; a retry sleeps 1 s. Timings are shortened alike on both sides; with "
    "defaults both take over 30 s."
)
LIMITS = (
    "Throughput: a jobsys run is a device assignment taken by two calls, as the worker does (claim "
    "and start in one, then finish_assignments), each a plpgsql function with authorization, the "
    "per-device mutex, a lease, exact per-job counters and events; a Procrastinate job is also two "
    "statements (fetch, finish) but on one table with no counters. Here each client has one device, so "
    "every call carries one run and nothing is batched; with several devices per session one claim and "
    "one finish carry many (see lifecycle). All clients work on the same job; since migration "
    "20261207003000 its row no longer serialises them (claims and finishes hold it FOR SHARE and count "
    "into job_run_counts), so what is left is the cost of each call. With one device per client every "
    "call carries one run, and in one session (no contention) a run costs about 1.3-1.5 ms of Postgres "
    "CPU, measured statement by statement on 2026-12-07: the claim is about eight statements "
    "(authorization, the pick of the device's next run, its job FOR SHARE, the device row with its "
    "reference check, the run returned by the statement that claims it, its count), the finish about "
    "as many (the reports' check, the job FOR SHARE, the run, the device, the count), each 15-200 µs "
    "with executor start-up and shut-down, and a commit each, where Procrastinate's fetch and finish "
    "are one statement each on one table. Migrations 20261207004400 and 20261207004600 cut "
    "statements from both (see lifecycle); the reference check alone took about 6 % off a run here. "
    "Enqueue: create_job "
    "resolves the target against the devices' health and load and distributes, with its counters and "
    "push, in one call; defer is one INSERT whose trigger sends the NOTIFY; the claim that follows is "
    "likewise heavier than Procrastinate's fetch. kill -9: a jobsys run comes back only when its lease "
    "has expired (started + the job's duration + lease grace, or last heartbeat + heartbeat lease) and "
    "its device is stale, so the job's own duration counts; Procrastinate retries as soon as the "
    "worker's heartbeat is old enough. From re-queued to finished both take about the re-run. A worker "
    "restarted under the same name (worker_crash (a)) gets its runs back at once in jobsys; "
    "Procrastinate has no such path, its restarted worker waits for the same heartbeat rule. Where the "
    "Postgres CPU goes (perf, 2026-11-23, this burn with 8 clients): a third was the claim walking "
    "each device's queue index past the dead entries of runs already finished in this burn (no vacuum "
    "runs within seconds, and concurrent updates of the leaf page keep the scan from marking them dead), "
    "twice per claim. Since migration 20261123001000 a claim starts at the device's queue floor, the "
    "run it claimed last, and the worker's calls look rows up by key instead of hashing jobs and devices. "
    "In A/Bs in one process these took this burn from 243 to about 400 jobs/s and Postgres CPU per run "
    "from 6.2 to about 3 ms. What is left is spread out: re-planning of statements whose parameters are "
    "one-element arrays (~15 %), commit with its WAL flush (~13 %), executor start-up and shut-down, and "
    "the CHECK expressions rebuilt for each UPDATE (~10 %). Forcing generic plans removed the re-planning "
    "(+11 % jobs/s here) but was not kept: a generic plan is kept however the tables grow, and one made "
    "while job_assignments was small scanned it whole, so a claim for 100 devices took 42 instead of 14 ms."
)


# Issue 22's floors for the burn: 1.5x Procrastinate's jobs/s, no more Postgres CPU per job.
THROUGHPUT_GOAL = Goal(None, min_ratio=1.5)
SERVER_CPU_GOAL = Goal(None, min_ratio=1.0)


def latency_runs(quick: bool) -> int:
    return 2 if quick else 5


def latency_samples(quick: bool) -> int:
    return 6 if quick else 40


def throughput_runs(quick: bool) -> int:
    return 2 if quick else 3


def throughput_jobs(quick: bool) -> int:
    return 300 if quick else 4_000


def crash_runs(quick: bool) -> int:
    """0 with --quick: the crash comparison spawns two fleets of 100; worker_crash --quick
    still times jobsys's recovery."""
    return 0 if quick else 3


def steps(quick: bool) -> int:
    crash_steps = 1 + 2 * crash_runs(quick) if crash_runs(quick) else 0
    return (1 + 2 * latency_runs(quick)) + (1 + 2 * throughput_runs(quick)) + crash_steps


Result = TypeVar("Result")


async def _alternate(
    n: int, ours: Callable[[int], Awaitable[Result]], peer: Callable[[int], Awaitable[Result]],
    done: Callable[[str, int, Result], str], starting: Callable[[str, int], str] | None = None,
    ticker: Ticker | None = None,
) -> tuple[list[Result], list[Result]]:
    """n runs of each side (jobsys, peer), alternating who goes first so that drift
    (checkpoints, other load) hits both alike; the ticker says `starting` before a run and
    ticks with `done` after it."""
    results: dict[str, list[Result]] = {"jobsys": [], "peer": []}
    for i in range(n):
        for side in ("jobsys", "peer") if i % 2 == 0 else ("peer", "jobsys"):
            if ticker is not None and starting is not None:
                ticker.say(starting(side, i))
            got = await (ours(i) if side == "jobsys" else peer(i))
            results[side].append(got)
            if ticker is not None:
                ticker.tick(done(side, i, got))
    return results["jobsys"], results["peer"]


# Procrastinate worker processes ---------------------------------------------------------
class PeerWorker:
    """One bench/procrastinate_child.py process and the task starts it has reported."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.started: dict[int, float] = {}  # job id -> wall time its task began
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name=f"read-{name}")

    @classmethod
    async def spawn(cls, url: str, name: str, log_dir: pathlib.Path, db: Db, *extra: str) -> PeerWorker:
        """Start it and wait until its worker LISTENs (it registers itself before that)."""
        named = conninfo.make_conninfo(url, application_name=name)  # its sessions carry its name
        with _log(log_dir, name) as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.procrastinate_child", "--database-url", named, "--name", name,
                *extra, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, cwd=ROOT, env=_env())
        worker = cls(proc, name)

        async def listening() -> bool:
            if proc.returncode is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}); see its log")
            return bool(await db.value("peer_listening", name=name))

        await wait_until(listening, f"{name} listening", START_TIMEOUT_S, every_s=0.02)
        return worker

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            msg = json.loads(line)
            if msg["kind"] == "started":
                self.started.setdefault(int(msg["job"]), float(msg["t"]))
                self._changed.set()

    async def wait_started(self, job_id: int, timeout_s: float) -> float:
        async with asyncio.timeout(timeout_s):
            while job_id not in self.started:
                self._changed.clear()
                await self._changed.wait()
        return self.started[job_id]

    def kill(self) -> None:
        kill(self.proc)

    async def stop(self) -> None:
        await stop_process(self.proc)
        self._reader.cancel()


@contextlib.asynccontextmanager
async def _peer_database(pg: BenchPostgres) -> AsyncIterator[tuple[str, procrastinate.App, Db]]:
    """A database with Procrastinate's schema, an open App on it and a connection for reads."""
    with pg.database(BLANK_TEMPLATE) as url:
        app = make_app(url)
        async with app.open_async(), Db.connect(url) as db:
            await app.schema_manager.apply_schema_async()
            yield url, app, db


# 1. Enqueue -> worker has the job ------------------------------------------------------
@dataclasses.dataclass
class LatencyRun:
    has_job: list[float] = dataclasses.field(default_factory=list)  # ms: call -> worker has the job
    call: list[float] = dataclasses.field(default_factory=list)  # ms: the enqueue call itself


async def _pace() -> None:
    await asyncio.sleep(random.uniform(0.05, 0.15))  # pacing between isolated jobs, not synchronisation


async def _jobsys_latency(js: JobSystem, worker: ChildFleet, samples: int) -> LatencyRun:
    out = LatencyRun()
    for _ in range(samples):
        await _pace()
        t_call = time.time()
        created = await js.create_job(target_url=TARGET_URL, duration_sec=LATENCY_JOB_SEC,
                                      target_type="all_devices")
        t_returned = time.time()
        job = str(created.job.id)
        (claimed,) = await worker.wait_reports("claimed", job, LATENCY_TIMEOUT_S)
        out.has_job.append((claimed - t_call) * 1000)
        out.call.append((t_returned - t_call) * 1000)
        # Untimed: clear the device for the next job.
        await js.cancel_job(created.job.id)
        await worker.drop(job)
        await wait_until(worker.idle, "the jobsys worker idle", LATENCY_TIMEOUT_S, every_s=0.02)
    return out


async def _peer_latency(app: procrastinate.App, db: Db, worker: PeerWorker, samples: int) -> LatencyRun:
    noop = app.tasks["noop"]
    out = LatencyRun()
    for _ in range(samples):
        await _pace()
        t_call = time.time()
        job_id = await noop.defer_async()
        t_returned = time.time()
        started = await worker.wait_started(job_id, LATENCY_TIMEOUT_S)
        out.has_job.append((started - t_call) * 1000)
        out.call.append((t_returned - t_call) * 1000)

        async def finished(job_id: int = job_id) -> bool:
            return bool(await db.value("peer_job_status", id=job_id) == "succeeded")

        await wait_until(finished, "the Procrastinate job finished", LATENCY_TIMEOUT_S, every_s=0.01)
    return out


async def _latency(
    pg: BenchPostgres, log_dir: pathlib.Path, quick: bool, ticker: Ticker
) -> list[Measurement]:
    n, samples = latency_runs(quick), latency_samples(quick)
    ticker.say(f"{NAME}: latency: starting a worker on each side")
    with pg.database() as url:
        async with (_peer_database(pg) as (peer_url, app, db), await JobSystem.connect(url, push=False) as js,
                    ChildFleet.spawn(url, 1, 1, log_dir, prefix="latency") as ours_worker):
            await ours_worker.start(push=True, speed=LATENCY_SPEED)
            theirs_worker = await PeerWorker.spawn(peer_url, "peer-latency", log_dir, db,
                                                   "--concurrency", "1")
            try:
                await _jobsys_latency(js, ours_worker, 3)  # warm-up: plans cached, pools connected
                await _peer_latency(app, db, theirs_worker, 3)
                ticker.tick(f"{NAME}: latency: both workers up and warm")
                ours, theirs = await _alternate(
                    n, lambda i: _jobsys_latency(js, ours_worker, samples),
                    lambda i: _peer_latency(app, db, theirs_worker, samples),
                    lambda side, i, got: (f"{NAME}: latency {side} run {i + 1}/{n} "
                                          f"(p50 {percentile(got.has_job, 50):.1f} ms)"),
                    ticker=ticker)
            finally:
                await theirs_worker.stop()

    def row(metric: str, field: str, q: float) -> Measurement:
        return measure(NAME, metric, "ms", Better.LOWER,
                       [percentile(getattr(r, field), q) for r in ours],
                       [percentile(getattr(r, field), q) for r in theirs], BASELINE_NAME)

    return [
        row("enqueue call → idle worker has the job, p50", "has_job", 50),
        row("enqueue call → idle worker has the job, p99", "has_job", 99),
        row("enqueue call alone (create_job / defer_async), p50", "call", 50),
    ]


# 2. No-op throughput at concurrency 8 ----------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Burn:
    jobs_per_s: float
    client_us: float
    server_us: float | None


async def _jobsys_burn(pg: BenchPostgres, url: str, admin: JobSystem, clients: list[JobSystem],
                       workers: list[bench_fleet.Worker], jobs: int) -> Burn:
    for _ in range(jobs // len(workers)):  # untimed: one run per device per job
        created = await admin.create_job(target_url=TARGET_URL, duration_sec=30, target_type="all_devices")
        if created.assigned != len(workers):
            raise AssertionError(f"assigned {created.assigned} of {len(workers)} devices")
    await bench_fleet.tidy(url)
    pending = await bench_fleet.pending_runs(url)
    meter = CpuMeter(pg.postmaster_pid)
    started = time.perf_counter()
    results = await asyncio.gather(*(bench_fleet.work_off(c, w, pending.get(w.id, 0))
                                     for c, w in zip(clients, workers, strict=True)))
    elapsed = time.perf_counter() - started
    done = sum(r[0] for r in results)
    client_us, server_us = meter.per(max(done, 1))
    if done != jobs // len(workers) * len(workers):
        raise AssertionError(f"jobsys burned {done} runs of {jobs}")
    return Burn(done / elapsed, client_us, server_us)


async def _peer_burn(pg: BenchPostgres, url: str, app: procrastinate.App, db: Db, jobs: int) -> Burn:
    before = await db.value("peer_succeeded")
    await app.tasks["noop"].batch_defer_async(*({} for _ in range(jobs)))  # untimed
    await bench_fleet.tidy(url)
    meter = CpuMeter(pg.postmaster_pid)
    started = time.perf_counter()
    await app.run_worker_async(concurrency=CONCURRENCY, wait=False, listen_notify=True,
                               install_signal_handlers=False, delete_jobs="never", name="peer-burn")
    elapsed = time.perf_counter() - started
    client_us, server_us = meter.per(jobs)
    done = await db.value("peer_succeeded") - before
    if done != jobs:
        raise AssertionError(f"Procrastinate finished {done} jobs of {jobs}")
    return Burn(jobs / elapsed, client_us, server_us)


async def _throughput(pg: BenchPostgres, quick: bool, ticker: Ticker) -> list[Measurement]:
    n, jobs = throughput_runs(quick), throughput_jobs(quick)
    ticker.say(f"{NAME}: throughput: setting up")
    with pg.database() as url:
        async with (_peer_database(pg) as (peer_url, app, db),
                    await JobSystem.connect(url, push=False) as admin):
            workers = await bench_fleet.register(admin, CONCURRENCY, 1, prefix="burn")
            clients = [await JobSystem.connect(url, push=False) for _ in workers]
            try:
                async with bench_fleet.kept_alive(admin, workers):
                    await _jobsys_burn(pg, url, admin, clients, workers, jobs // 10)  # warm-up
                    await _peer_burn(pg, peer_url, app, db, jobs // 10)
                    ticker.tick(f"{NAME}: throughput: warm")
                    ours, theirs = await _alternate(
                        n, lambda i: _jobsys_burn(pg, url, admin, clients, workers, jobs),
                        lambda i: _peer_burn(pg, peer_url, app, db, jobs),
                        lambda side, i, got: (f"{NAME}: throughput {side} run {i + 1}/{n} "
                                              f"({got.jobs_per_s:,.0f} jobs/s)"),
                        lambda side, i: f"{NAME}: throughput {side} run {i + 1}/{n}: {jobs:,} no-op jobs",
                        ticker)
            finally:
                for c in clients:
                    await c.close()
    rows = [
        measure(NAME, f"no-op jobs/s, concurrency {CONCURRENCY}", "jobs/s", Better.HIGHER,
                [r.jobs_per_s for r in ours], [r.jobs_per_s for r in theirs], BASELINE_NAME, THROUGHPUT_GOAL),
        measure(NAME, f"client CPU per job, concurrency {CONCURRENCY}", "µs", Better.LOWER,
                [r.client_us for r in ours], [r.client_us for r in theirs], BASELINE_NAME),
    ]
    if all(r.server_us is not None for r in ours + theirs):
        rows.append(measure(NAME, f"Postgres CPU per job, concurrency {CONCURRENCY}", "µs", Better.LOWER,
                            [r.server_us or 0.0 for r in ours], [r.server_us or 0.0 for r in theirs],
                            BASELINE_NAME, SERVER_CPU_GOAL))
    return rows


# 3. kill -9 recovery -------------------------------------------------------------------
async def _peer_crash(url: str, app: procrastinate.App, db: Db, log_dir: pathlib.Path,
                      run: int) -> worker_crash.Recovery:
    """A victim worker takes CRASH_JOBS jobs and is killed; a second worker with the stalled-job
    retry brings them back."""
    victim = await PeerWorker.spawn(url, f"peer-victim-{run}", log_dir, db, "--concurrency", str(CRASH_JOBS),
                                    "--heartbeat-interval", f"{PEER_HEARTBEAT_S:g}")
    rescuer: PeerWorker | None = None
    try:
        ids = await app.tasks["hold"].batch_defer_async(
            *({"seconds": CRASH_RERUN_S} for _ in range(CRASH_JOBS)))

        async def all_doing() -> bool:
            return bool((await db.row("peer_doing", ids=ids))[0] == CRASH_JOBS)

        await wait_until(all_doing, "the victim running every job", START_TIMEOUT_S, every_s=POLL_S)
        _, dead, holders = await db.row("peer_doing", ids=ids)
        if holders != 1:
            raise AssertionError(f"{holders} workers hold the jobs, not the victim alone")
        rescuer = await PeerWorker.spawn(
            url, f"peer-rescuer-{run}", log_dir, db, "--concurrency", str(CRASH_JOBS),
            "--heartbeat-interval", f"{PEER_HEARTBEAT_S:g}", "--poll-interval", f"{PEER_RESCUE_POLL_S:g}",
            "--stalled-after", f"{PEER_STALLED_AFTER_S:g}", "--sweep-interval", f"{PEER_SWEEP_S:g}")
        if not await all_doing():
            raise AssertionError("some jobs left the victim before the kill")
        killed_at = time.time()
        victim.kill()

        async def requeued() -> bool:
            away, _ = await db.row("peer_recovery", ids=ids, dead=dead)
            return bool(away == CRASH_JOBS)

        async def completed() -> bool:
            _, done = await db.row("peer_recovery", ids=ids, dead=dead)
            return bool(done == CRASH_JOBS)

        t_requeued = await wait_until(requeued, "jobs re-queued", RECOVERY_TIMEOUT_S, every_s=POLL_S)
        t_completed = await wait_until(completed, "jobs completed again", RECOVERY_TIMEOUT_S, every_s=POLL_S)
        return worker_crash.Recovery(t_requeued - killed_at, t_completed - killed_at)
    finally:
        await victim.stop()
        if rescuer is not None:
            await rescuer.stop()


async def _crash(pg: BenchPostgres, log_dir: pathlib.Path, quick: bool, ticker: Ticker) -> list[Measurement]:
    n = crash_runs(quick)
    ticker.say(f"{NAME}: kill -9: setting up")
    async with (worker_crash.lease_scenario(pg, log_dir, worker_crash.FAST,
                                            prefix="crash-rescuer") as scenario,
                _peer_database(pg) as (peer_url, app, db)):
        ticker.tick(f"{NAME}: kill -9: ready")
        ours, theirs = await _alternate(
            n, lambda i: scenario.kill_and_recover(f"crash-victim-{i}"),
            lambda i: _peer_crash(peer_url, app, db, log_dir, i),
            lambda side, i, got: (f"{NAME}: kill -9 {side} run {i + 1}/{n}: completed again after "
                                  f"{got.completed_s:.2f} s"),
            lambda side, i: f"{NAME}: kill -9 {side} run {i + 1}/{n}",
            ticker)
    return [
        measure(NAME, f"kill -9 of a worker holding {CRASH_JOBS} jobs → all re-queued", "s", Better.LOWER,
                [r.requeued_s for r in ours], [r.requeued_s for r in theirs], BASELINE_NAME),
        measure(NAME, f"kill -9 of a worker holding {CRASH_JOBS} jobs → all finished again", "s",
                Better.LOWER, [r.completed_s for r in ours], [r.completed_s for r in theirs], BASELINE_NAME),
    ]


async def run(pg: BenchPostgres, quick: bool, ticker: Ticker) -> list[Measurement]:
    with tempfile.TemporaryDirectory(prefix="jobsys-bench-peer-") as tmp:
        log_dir = pathlib.Path(tmp)
        rows = await _latency(pg, log_dir, quick, ticker)
        rows += await _throughput(pg, quick, ticker)
        if crash_runs(quick):
            rows += await _crash(pg, log_dir, quick, ticker)
    return rows
