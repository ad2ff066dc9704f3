"""lifecycle: claim -> start -> complete cycles per second with 8, 16 and 32 clients.

Each client is one worker session with DEVICES_PER_CLIENT simulated devices and its own
JobSystem (Postgres transport): it claims work for all its free devices in one call
(`claim_assignments`), then starts and completes each run, and claims again. The work is
one pre-created set of assignments: jobs created with `create_job(all_devices)`, so every
device has a queue and, like a real fleet, all devices work on the same job at once (its
row was the hot spot until claims and finishes counted into job_run_counts). Baseline: the naive queue of CALIBRATION.md with the same
clients and the same job shape. Both sides alternate; each run is checked afterwards
(every counted cycle completed, counters equal count(*)).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import AsyncIterator

import psycopg
from psycopg.rows import TupleRow

from bench import fleet
from bench.baselines import naive_queue
from bench.cpu import CpuMeter
from bench.harness import Better, Goal, Measurement, Ticker, measure
from bench.pg import BenchPostgres
from bench.sql import query
from jobsys.system import JobSystem

NAME = "lifecycle"
DESCRIPTION = "claim -> start -> complete cycles per second (median of runs)"
DEVICES_PER_CLIENT = 8
TARGET_URL = "https://example.com/device-lab/check"
BASELINE_NAME = "naive SKIP LOCKED claim + complete, one hot counter row per job"
STARTED_BASELINE_NAME = "the same naive queue with a bare start statement between claim and complete"
# Issue 22's floors: the worker path at least 2.5x the naive queue (and the earlier 2,000
# cycles/s), one call per transition at least as fast as it.
GOAL = Goal(2_000.0, min_ratio=2.5)
PER_CALL_GOAL = Goal(None, min_ratio=1.0)
NOTES = (
    "A cycle is one run taken from claimed to completed. The headline row is the worker's path: "
    "claim_assignments(start=True) claims and starts the client's free devices' next runs in one "
    "call, and one finish_assignments call reports the round's outcomes (one transaction, one "
    "counter update per job). The second jobsys row makes one call per transition (claim, then "
    "start and complete each run), as the library's single-run calls do. Every jobsys call does "
    "authorization, the per-device mutex, leases, exact per-job counters and throttled progress "
    "events; the naive baseline claims one row and completes it with one counter bump, nothing "
    "else. All clients run as asyncio tasks in the benchmark's one Python process, each on its own "
    "connection, sharing the machine's two cores with Postgres; jobsys sides and the baseline "
    "alternate in rotating order."
)
LIMITS = (
    "Until migration 20261207003000 every claim and every finish of a job's runs locked that job's "
    "counter row until commit, and in this benchmark all clients work on the same job at once, so "
    "their transactions queued on one row. Since then claims and finishes hold the job row FOR SHARE "
    "and count their runs in job_run_counts (one row per job and worker session; readers add them up, "
    "jobsys.counted), and a claim takes its devices, runs and jobs with SKIP LOCKED: no call here "
    "waits for another (tests/core/test_hot_row.py holds transactions open to show it). What is left "
    "is the cost of each call. A claim, a start and a finish are plpgsql functions of about ten "
    "statements each (authorization, the per-device mutex, leases, counters, throttled events), and "
    "each statement pays executor start-up and shut-down (about 50-100 µs here, measured statement "
    "by statement on 2026-12-07); the naive queue runs one statement per transition. One call per "
    "transition therefore pays three functions and some 25 statements per run, the batched worker "
    "path the same statements once per round for all of a client's runs. Also tried and dropped: "
    "forcing generic plans for the worker's functions (no gain beyond noise here; earlier a generic "
    "plan made while job_assignments was small scanned it whole), and finishing and claiming in one "
    "transaction (finish_and_claim, 2026-11-23: no faster, slower with 32 clients, because it held "
    "two job rows for the whole transaction). Next step, not built: one set-based statement per call "
    "for the single-run path (claim, start and finish each as one INSERT ... ON CONFLICT / UPDATE ... "
    "RETURNING chain), which the batched path shows is where the time goes."
)


def client_counts(quick: bool) -> list[int]:
    return [8] if quick else [8, 16, 32]


def runs(quick: bool) -> int:
    return 3


def cycles_per_run(quick: bool) -> int:
    return 500 if quick else 6_000


@dataclasses.dataclass(frozen=True)
class Run:
    cycles_per_s: float
    client_us: float  # CPU per cycle in the benchmark process (all clients)
    server_us: float | None  # CPU per cycle in Postgres (None where /proc is unavailable)


def steps(quick: bool) -> int:
    return len(client_counts(quick)) * (1 + len(SIDES) * runs(quick))


@contextlib.asynccontextmanager
async def _jobsys_clients(url: str, n: int) -> AsyncIterator[list[JobSystem]]:
    systems = [await JobSystem.connect(url, push=False) for _ in range(n)]
    try:
        yield systems
    finally:
        for js in systems:
            await js.close()


async def _jobsys_client(js: JobSystem, worker: fleet.Worker, rounds: int, batched: bool) -> int:
    """batched: what the worker does (claim and start in one call, one finish call for the
    round's runs); otherwise one call per transition (claim, then start and complete each)."""
    done = 0
    for _ in range(rounds):
        claimed = await js.claim_assignments(worker.id, start=batched)
        if not claimed:
            break
        if batched:
            finished = await js.finish_assignments(worker.id, fleet.completed(claimed))
            done += sum(not f.stale for f in finished)
            continue
        for run in claimed:
            await js.start_assignment(run.assignment_id, run.attempt)
            await js.complete_assignment(run.assignment_id, run.attempt, {"bench": True})
            done += 1
    return done


async def _scalar(conn: psycopg.AsyncConnection[TupleRow], name: str) -> int:
    row = await (await conn.execute(query(name))).fetchone()
    return int(row[0]) if row else 0


async def _completed(url: str) -> tuple[int, int]:
    """(completed runs, jobs whose counters differ from count(*))."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await _scalar(conn, "lifecycle_completed"), await _scalar(conn, "lifecycle_counters_off")


async def _jobsys_run(
    pg: BenchPostgres, url: str, systems: list[JobSystem], workers: list[fleet.Worker], rounds: int,
    batched: bool,
) -> Run:
    before, _ = await _completed(url)
    meter = CpuMeter(pg.postmaster_pid)
    started = time.perf_counter()
    counts = await asyncio.gather(*(_jobsys_client(js, w, rounds, batched) for js, w in zip(systems, workers)))
    elapsed = time.perf_counter() - started
    cycles = sum(counts)
    client_us, server_us = meter.per(max(cycles, 1))
    after, off = await _completed(url)
    expected = rounds * len(workers) * DEVICES_PER_CLIENT
    if cycles != expected or after - before != cycles or off:
        raise AssertionError(f"jobsys run: {cycles} cycles of {expected}, {after - before} completed, "
                             f"{off} jobs with wrong counters")
    return Run(cycles / elapsed, client_us, server_us)


async def _naive_run(pg: BenchPostgres, url: str, clients: int, cycles_each: int, start: bool = False) -> Run:
    before, _ = await naive_queue.completed(url)
    conns = [await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(clients)]
    try:
        meter = CpuMeter(pg.postmaster_pid)
        started = time.perf_counter()
        counts = await asyncio.gather(*(naive_queue.client(c, f"client-{i}", cycles_each, start)
                                        for i, c in enumerate(conns)))
        elapsed = time.perf_counter() - started
        client_us, server_us = meter.per(max(sum(counts), 1))  # before the backends exit
    finally:
        for c in conns:
            await c.close()
    cycles = sum(counts)
    after, counted = await naive_queue.completed(url)
    if cycles != clients * cycles_each or after - before != cycles or counted != after:
        raise AssertionError(f"naive run: {cycles} cycles, {after - before} completed, counters {counted}")
    return Run(cycles / elapsed, client_us, server_us)


SIDES = ("batched", "per-call", "baseline", "baseline+start")
STARTED_LABEL = "naive with a start step"
SIDE_LABELS = {"batched": "worker path: claim+start, one finish per round",
               "per-call": "one call per transition"}


def _rows(clients: int, ours: dict[str, list[Run]], theirs: list[Run], started: list[Run]) -> list[Measurement]:
    rows: list[Measurement] = []
    for side, label in SIDE_LABELS.items():
        runs_ = ours[side]
        goal = GOAL if side == "batched" else PER_CALL_GOAL
        rows += [measure(NAME, f"cycles/s, {clients} clients ({label})", "cycles/s", Better.HIGHER,
                         [r.cycles_per_s for r in runs_], [r.cycles_per_s for r in theirs], BASELINE_NAME, goal),
                 measure(NAME, f"client CPU per cycle, {clients} clients ({label})", "µs", Better.LOWER,
                         [r.client_us for r in runs_], [r.client_us for r in theirs], BASELINE_NAME)]
        if all(r.server_us is not None for r in runs_ + theirs):
            rows.append(measure(NAME, f"Postgres CPU per cycle, {clients} clients ({label})", "µs", Better.LOWER,
                                [r.server_us or 0.0 for r in runs_], [r.server_us or 0.0 for r in theirs],
                                BASELINE_NAME))
    # One call per transition beside the naive queue making as many transactions per cycle
    # (claim, start, complete), each paying its commit.
    per_call = ours["per-call"]
    rows.append(measure(NAME, f"cycles/s, {clients} clients (one call per transition, vs {STARTED_LABEL})",
                        "cycles/s", Better.HIGHER, [r.cycles_per_s for r in per_call],
                        [r.cycles_per_s for r in started], STARTED_BASELINE_NAME))
    if all(r.server_us is not None for r in per_call + started):
        rows.append(measure(NAME, f"Postgres CPU per cycle, {clients} clients (one call per transition, vs "
                            f"{STARTED_LABEL})", "µs", Better.LOWER, [r.server_us or 0.0 for r in per_call],
                            [r.server_us or 0.0 for r in started], STARTED_BASELINE_NAME))
    return rows


async def _clients(pg: BenchPostgres, clients: int, quick: bool, ticker: Ticker) -> list[Measurement]:
    devices = clients * DEVICES_PER_CLIENT
    rounds = math.ceil(cycles_per_run(quick) / devices)  # claim rounds per client per run
    warmup_rounds = max(2, rounds // 5)
    n_runs = runs(quick)
    # Each round takes one job's run on every device; both jobsys sides draw from one pool.
    jobs = 2 * (warmup_rounds + n_runs * rounds)
    with pg.database() as url:
        async with await JobSystem.connect(url, push=False) as admin:
            ticker.say(f"lifecycle {clients} clients: creating {jobs * devices:,} assignments")
            workers = await fleet.register(admin, clients, DEVICES_PER_CLIENT)
            for _ in range(jobs):
                await admin.create_job(target_url=TARGET_URL, duration_sec=30, target_type="all_devices")
        await naive_queue.create(url, jobs, devices)  # for both naive sides
        await fleet.tidy(url)
        ours: dict[str, list[Run]] = {"batched": [], "per-call": []}
        theirs: list[Run] = []
        started: list[Run] = []
        async with _jobsys_clients(url, clients) as systems:
            for batched in (True, False):
                await _jobsys_run(pg, url, systems, workers, warmup_rounds, batched)
            await _naive_run(pg, url, clients, warmup_rounds * DEVICES_PER_CLIENT)
            ticker.tick(f"lifecycle {clients} clients: ready")
            for i in range(n_runs):
                # Rotate the order so no side always runs first (or right after the same one).
                for side in SIDES[i % len(SIDES):] + SIDES[:i % len(SIDES)]:
                    if side == "baseline":
                        theirs.append(await _naive_run(pg, url, clients, rounds * DEVICES_PER_CLIENT))
                    elif side == "baseline+start":
                        started.append(await _naive_run(pg, url, clients, rounds * DEVICES_PER_CLIENT, start=True))
                    else:
                        ours[side].append(await _jobsys_run(pg, url, systems, workers, rounds, side == "batched"))
                    ticker.tick(f"lifecycle {clients} clients: {side} run {i + 1}/{n_runs}")
    return _rows(clients, ours, theirs, started)


async def run(pg: BenchPostgres, quick: bool, ticker: Ticker) -> list[Measurement]:
    rows: list[Measurement] = []
    for n in client_counts(quick):
        rows += await _clients(pg, n, quick, ticker)
    return rows
