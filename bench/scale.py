"""scale: how jobsys's costs grow, and how fast.

Fan-out: `create_job(all_devices)` to 1,000, 10,000 and 100,000 healthy devices (bench/
fanout.py's jobsys side: 10 worker sessions, checked and deleted after each run, untimed).
Claims: 10 clients × 10 devices work off 1,000 runs spread over 10, 100 or 1,000 active
jobs (each job `device_count` = 1,000 / jobs, so every device has 10 runs queued, from 10
different jobs or from the same ones); claim (with start) then finish_assignments, as a
worker does, the job
counts alternating in order run by run. The slope rows: the growth exponent k of
time ∝ size^k between neighbouring sizes (1 = linear; from each run's pair), and the
marginal fan-out cost per 1,000 devices.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time

from bench import fanout
from bench import fleet as bench_fleet
from bench.harness import Better, Measurement, Ticker, measure
from bench.pg import BenchPostgres
from bench.pushes import PushCounter
from jobsys.events import worker_topic
from jobsys.system import JobSystem

NAME = "scale"
DESCRIPTION = ("how jobsys grows: fan-out at 1k / 10k / 100k devices, claims with 10 / 100 / 1,000 "
               "active jobs (slope = growth exponent)")
TARGET_URL = "https://example.com/device-lab/check"
CLIENTS = 10
DEVICES_PER_CLIENT = 10
RUNS_PER_ROUND = 1_000  # the runs worked off in one timed run, whatever the number of jobs
JOB_COUNTS = [10, 100, 1_000]
NOTES = (
    f"Fan-out: bench/fanout.py's jobsys side ({fanout.WORKERS} worker sessions, one push per worker; every "
    "run checked: counters equal rows, every push received), jobsys only; fanout has the baseline. "
    f"Claims: {CLIENTS} clients in the benchmark process, each its own JobSystem and worker session with "
    f"{DEVICES_PER_CLIENT} devices ({CLIENTS * DEVICES_PER_CLIENT} devices, at most that many runs in "
    f"flight); before each timed run, untimed, J jobs with device_count {RUNS_PER_ROUND:,}/J each "
    f"({RUNS_PER_ROUND:,} runs, {RUNS_PER_ROUND // (CLIENTS * DEVICES_PER_CLIENT)} queued on every device), "
    "then each client claims for its free devices, starts and completes each run, and claims again "
    "until nothing is left. With 10 jobs every job is on every device, so the clients move through "
    "the jobs together; with 1,000 each job has one device and 100 jobs are in progress at once. "
    "`claim call per run` is the time inside claim_assignments divided by the runs it returned. "
    "What grows with the number of jobs: a claim holds the job row of every run it takes FOR SHARE "
    "(SKIP LOCKED, to its commit) and adds to one job_run_counts row per job, so a claim of 10 runs "
    "touches 1–2 jobs with 10 jobs and 10 with 1,000; a finish likewise per job. "
    "Exponent k: time ∝ size^k between the two sizes named (for throughput, jobs/s ∝ jobs^k); per run, "
    "median over runs."
)
LIMITS = ""


def fanout_sizes(quick: bool) -> list[int]:
    return [1_000, 10_000] if quick else [1_000, 10_000, 100_000]


def fanout_runs(size: int, quick: bool) -> int:
    if quick:
        return 1
    return 3 if size >= 100_000 else 5


def claim_runs(quick: bool) -> int:
    return 1 if quick else 3


def job_counts(quick: bool) -> list[int]:
    return JOB_COUNTS[:2] if quick else JOB_COUNTS


def steps(quick: bool) -> int:
    return (sum(1 + fanout_runs(s, quick) for s in fanout_sizes(quick))
            + 1 + claim_runs(quick) * len(job_counts(quick)))


def exponent(small: float, large: float, n_small: int, n_large: int) -> float:
    """k in y ∝ n^k through two points."""
    return math.log(large / small) / math.log(n_large / n_small)


# Fan-out ---------------------------------------------------------------------------------
async def _fanout_size(pg: BenchPostgres, size: int, quick: bool, ticker: Ticker) -> list[float]:
    """ms per run."""
    out: list[float] = []
    with pg.database() as url:
        async with await JobSystem.connect(url) as js:
            ticker.say(f"{NAME}: registering {size:,} devices")
            workers = await bench_fleet.register(js, fanout.WORKERS, size // fanout.WORKERS)
            async with PushCounter(url, [worker_topic(w.id) for w in workers]) as pushes:
                await fanout._reset(js, workers, url)
                await fanout._jobsys_once(js, pushes, url, size)  # warm-up: plans cached, pool connected
                ticker.tick(f"{NAME}: fan-out {size:,}: ready")
                n = fanout_runs(size, quick)
                for i in range(n):
                    await fanout._reset(js, workers, url)
                    out.append(await fanout._jobsys_once(js, pushes, url, size) * 1000)
                    ticker.tick(f"{NAME}: fan-out {size:,}: run {i + 1}/{n} ({out[-1]:,.0f} ms)")
    return out


def _fanout_rows(times: dict[int, list[float]]) -> list[Measurement]:
    sizes = sorted(times)
    rows = [measure(NAME, f"fan-out to {size:,} devices", "ms", Better.LOWER, times[size]) for size in sizes]
    for small, large in zip(sizes, sizes[1:]):
        pairs = list(zip(times[small], times[large]))
        rows.append(measure(NAME, f"fan-out growth exponent, {small:,} → {large:,} devices", "", Better.LOWER,
                            [exponent(a, b, small, large) for a, b in pairs]))
        rows.append(measure(NAME, f"fan-out marginal cost per 1,000 devices, {small:,} → {large:,}", "ms",
                            Better.LOWER, [(b - a) / ((large - small) / 1000) for a, b in pairs]))
    return rows


# Claims with many active jobs -----------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ClaimRun:
    runs_per_s: float
    claim_us_per_run: float


async def _claim_run(url: str, admin: JobSystem, clients: list[JobSystem], workers: list[bench_fleet.Worker],
                     jobs: int) -> ClaimRun:
    per_job = RUNS_PER_ROUND // jobs
    for _ in range(jobs):
        created = await admin.create_job(target_url=TARGET_URL, duration_sec=30,
                                         target_type="device_count", target_value=per_job)
        if created.assigned != per_job:
            raise AssertionError(f"assigned {created.assigned} of {per_job}")
    await bench_fleet.tidy(url)
    pending = await bench_fleet.pending_runs(url)
    started = time.perf_counter()
    results = await asyncio.gather(*(bench_fleet.work_off(c, w, pending.get(w.id, 0))
                                     for c, w in zip(clients, workers, strict=True)))
    elapsed = time.perf_counter() - started
    done = sum(r[0] for r in results)
    if done != RUNS_PER_ROUND:
        raise AssertionError(f"{done} runs done of {RUNS_PER_ROUND}")
    return ClaimRun(done / elapsed, sum(r[1] for r in results) / done * 1e6)


async def _claims(pg: BenchPostgres, quick: bool, ticker: Ticker) -> dict[int, list[ClaimRun]]:
    counts = job_counts(quick)
    out: dict[int, list[ClaimRun]] = {j: [] for j in counts}
    with pg.database() as url:
        async with await JobSystem.connect(url, push=False) as admin:
            workers = await bench_fleet.register(admin, CLIENTS, DEVICES_PER_CLIENT, prefix="scale")
            clients = [await JobSystem.connect(url, push=False) for _ in workers]
            try:
                async with bench_fleet.kept_alive(admin, workers):
                    await _claim_run(url, admin, clients, workers, counts[0])  # warm-up
                    ticker.tick(f"{NAME}: claims: ready")
                    n = claim_runs(quick)
                    for i in range(n):
                        # Alternate the order, so drift (table growth, other load) hits every size alike.
                        for jobs in counts if i % 2 == 0 else counts[::-1]:
                            ticker.say(f"{NAME}: claims with {jobs:,} active jobs, run {i + 1}/{n}")
                            out[jobs].append(await _claim_run(url, admin, clients, workers, jobs))
                            ticker.tick(f"{NAME}: claims with {jobs:,} active jobs, run {i + 1}/{n} "
                                        f"({out[jobs][-1].runs_per_s:,.0f} runs/s)")
            finally:
                for c in clients:
                    await c.close()
    return out


def _claim_rows(runs: dict[int, list[ClaimRun]]) -> list[Measurement]:
    rows: list[Measurement] = []
    counts = sorted(runs)
    for jobs in counts:
        rows.append(measure(NAME, f"runs claimed and finished, {jobs:,} active jobs", "runs/s", Better.HIGHER,
                            [r.runs_per_s for r in runs[jobs]]))
        rows.append(measure(NAME, f"claim call per run claimed, {jobs:,} active jobs", "µs", Better.LOWER,
                            [r.claim_us_per_run for r in runs[jobs]]))
    first, last = counts[0], counts[-1]
    pairs = list(zip(runs[first], runs[last]))
    rows.append(measure(NAME, f"throughput growth exponent, {first:,} → {last:,} active jobs", "",
                        Better.HIGHER,
                        [exponent(a.runs_per_s, b.runs_per_s, first, last) for a, b in pairs]))
    rows.append(measure(NAME, f"claim call growth exponent, {first:,} → {last:,} active jobs", "",
                        Better.LOWER,
                        [exponent(a.claim_us_per_run, b.claim_us_per_run, first, last) for a, b in pairs]))
    return rows


async def run(pg: BenchPostgres, quick: bool, ticker: Ticker) -> list[Measurement]:
    times = {size: await _fanout_size(pg, size, quick, ticker) for size in fanout_sizes(quick)}
    claims = await _claims(pg, quick, ticker)
    return _fanout_rows(times) + _claim_rows(claims)
