"""worker_push: job created → the worker has its assignment, and pause → every worker has it.

10 worker processes, each the real Worker (worker.agent) with 100 simulated devices, on one
Postgres (bench/worker_child.py: the Worker unchanged, plus one stdout line when a claim has
returned a job's runs and when job_paused arrived). The benchmark process creates jobs through
JobSystem (Postgres transport) and compares wall clocks: its own, the workers' and Postgres's
clock_timestamp() read the same machine clock.

Push latency: jobs to all 1,000 devices, one at a time, each created while every device is
idle. A sample is one worker's delay from the job's commit (the job row's updated_at, set with
clock_timestamp() by the last statement of create_job, just before the commit that releases
the NOTIFY) to the moment that worker's claim returned the job's runs. Baseline: the same
workers with push off, polling every 3 s as the original plan's workers did; each of its jobs
is created at a random point of the poll cycle. The sides alternate, one run each in turn.
Once every worker has claimed, the job is cancelled and its runs stopped (untimed), so the
next job again finds every device idle.

Pause: every device busy with a long job and a second job queued behind it on all 1,000
devices; pause that job, wait until all 10 workers have job_paused (Worker.paused_jobs has
it), resume it, repeat. A sample is from just before the pause call to the last receipt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import random
import statistics
import tempfile
import time
import uuid

import psycopg

from bench import fleet as bench_fleet
from bench.harness import Better, Goal, Measurement, Ticker, measure
from bench.pg import BenchPostgres
from bench.sql import query
from bench.worker_procs import ChildFleet, Db, percentile, wait_until
from jobsys.system import JobSystem

NAME = "worker_push"
DESCRIPTION = ("job created → worker has claimed it, and pause → every worker has job_paused: "
               "10 worker processes × 100 simulated devices (ms)")
WORKERS = 10
DEVICES = 100
# 10 workers at the default pool size (10, plus the LISTEN connection) could open 110
# connections, more than stock Postgres allows (100); 5 each leaves room for the benchmark.
POOL_MAX_SIZE = 5
POLL_INTERVAL_S = 3.0
SIM_SPEED = 4.0  # a stop request is seen within 0.25 s, so cancelled runs clear quickly
PAUSE_SPEED = 1.0  # device pace: each running run checks for a stop once a second, as on a phone
TARGET_URL = "https://example.com/device-lab/check"
JOB_DURATION_SEC = 600  # no run finishes while others are still being claimed
CLAIM_TIMEOUT_S = 3 * POLL_INTERVAL_S + 10
IDLE_TIMEOUT_S = 30.0
PAUSE_TIMEOUT_S = 10.0
BASELINE_NAME = "push off: polling every 3 s, as the original plan's workers did"
GOAL_P50 = Goal(10.0)
GOAL_P99 = Goal(50.0)
GOAL_PAUSE_P99 = Goal(50.0)
NOTES = (
    "10 separate worker processes (the real Worker class, 100 simulated devices each, connection "
    f"pool capped at {POOL_MAX_SIZE}), the benchmark process and Postgres share the machine's 2 cores. "
    "Latency is from the job's commit (the job row's updated_at, written with clock_timestamp() by "
    "create_job's last statement) to the moment each worker's claim_assignments call returned the "
    "job's runs (parsed). `claim call begins` stops earlier, when the worker, woken by the push (or "
    "its poll timer), starts that call. `create_job called` adds the create call itself, a fan-out "
    "to 1,000 devices (see fanout). The `1 worker` rows are the same with only one worker running, "
    "so no other claim competes. `server only`: 10 sessions of 100 devices registered through the API, "
    "no worker process running; the benchmark process sends their 10 claims of a new job at one "
    "instant (one JobSystem each) and times each return from that instant. `storage floor`: after "
    "those claims, on jobs of its own (created, measured, cancelled), a job's 1,000 runs set running "
    "and its 1,000 devices pointed at them by two bare UPDATEs in one transaction, rolled back (the "
    "devices' reference check runs, as for a claim). "
    "A run is several jobs, "
    "one at a time, each created 0.1–0.3 s after "
    "the previous one was cleared (push) or at a random point of the 3 s poll cycle (baseline); "
    "p50/p99 are over the workers × jobs of a run, and the table gives the median of the runs. "
    "Polling workers whose runs were just cleared are nearly in phase, so the baseline has about one "
    "independent draw per job rather than per worker. "
    "Pause: pause_job on a job queued behind a running one on all 1,000 devices (the call pauses "
    "1,000 runs), until the last of the 10 workers has job_paused, with 100 runs in progress in "
    "each worker. Between sides the workers restart (new sessions, same processes and devices); "
    "each start waits until LISTEN is in place."
)
LIMITS = (
    "The push is not what takes the time: a worker's claim call begins a few ms after the commit "
    "(`claim call begins`), and one worker alone has its 100 runs soon after (`1 worker`). With 10 "
    "workers they share the two cores, and most of what they share is storage: each claim sets 100 "
    "runs running and points 100 devices at them, every row update with its index entries. The "
    "`storage floor` row does only that, for the job's 1,000 runs and devices, in two bare UPDATEs in "
    "one session (rolled back): about 22 ms of one core, so on two cores the 10 claims cannot all "
    "return in less than about 11 ms even with no pick, lock, count, event or worker process at all, "
    "and a median of 15 ms would leave the claims' other work and the 10 woken processes almost "
    "nothing. In one session a jobsys claim of 100 runs costs about twice that floor per run (about "
    "4 ms in Postgres where the floor is about 2.2 ms per 100 runs and devices, 2026-12-07); the "
    "`server only` rows show 10 of them at once from one process, with no worker process running and "
    "each answer parsed there. Since migration "
    "20261207003000 the 10 claims of one new job no longer queue on its row (each holds it FOR SHARE "
    "and counts into its own job_run_counts row; before, each locked the row to update its counters "
    "until its commit, so they ran one after another), and since 20261207004400 and 20261207004600 a "
    "claim runs fewer statements (its runs returned by the statement that claims them, the devices' "
    "reference check in one statement instead of three). Sharing the cores adds the rest: 10 "
    "processes wake at once, and each served worker immediately sends its starts and heartbeats "
    "while the others are still claiming. Pause: most of the time is pause_job itself, which moves "
    "the job's 1,000 queued runs to paused before the commit that sends job_paused; the workers have "
    "it within a few ms of that commit."
)


def runs(quick: bool) -> int:
    return 1 if quick else 3


def jobs_per_run(quick: bool, push: bool) -> int:
    if push:
        return 2 if quick else 10
    return 1 if quick else 6


def pauses_per_run(quick: bool) -> int:
    return 4 if quick else 30


def steps(quick: bool) -> int:
    return 2 + 3 * runs(quick) + 1 + runs(quick) + runs(quick)


@dataclasses.dataclass
class LatencyRun:
    """One run's samples, one per worker and job, in ms."""

    claimed: list[float] = dataclasses.field(default_factory=list)  # committed → claim returned
    woken: list[float] = dataclasses.field(default_factory=list)  # committed → claim call began
    called: list[float] = dataclasses.field(default_factory=list)  # create_job called → claim returned


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)  # pacing between timed events, not synchronisation


async def _job(js: JobSystem, fleet: ChildFleet, devices: int, out: LatencyRun) -> None:
    """One job to every device of the running workers, created while all are idle."""
    t_call = time.time()
    created = await js.create_job(target_url=TARGET_URL, duration_sec=JOB_DURATION_SEC,
                                  target_type="all_devices")
    committed = created.job.updated_at.timestamp()
    job = str(created.job.id)
    claimed = await fleet.wait_reports("claimed", job, CLAIM_TIMEOUT_S)
    began = fleet.reports("claim_call", job)
    if created.assigned != devices:
        raise AssertionError(f"assigned {created.assigned} of {devices} devices")
    out.claimed += [(t - committed) * 1000 for t in claimed]
    out.woken += [(t - committed) * 1000 for t in began]
    out.called += [(t - t_call) * 1000 for t in claimed]
    # Untimed: clear the devices for the next job.
    await js.cancel_job(created.job.id)
    await fleet.drop(job)
    await wait_until(fleet.idle, "workers idle after the cancel", IDLE_TIMEOUT_S, every_s=0.05)


async def _latency_run(
    js: JobSystem, fleet: ChildFleet, push: bool, jobs: int, workers: int = WORKERS
) -> LatencyRun:
    await fleet.start(push=push, speed=SIM_SPEED, count=workers)
    out = LatencyRun()
    for _ in range(jobs):
        # Push: any time will do. Poll: a random point of the cycle, so the baseline is not
        # always caught just before (or just after) a poll.
        await _sleep(random.uniform(0.1, 0.3) if push else random.uniform(0.0, POLL_INTERVAL_S))
        await _job(js, fleet, workers * DEVICES, out)
    return out


@dataclasses.dataclass
class PauseRun:
    """One run's pauses, in ms."""

    all_workers: list[float] = dataclasses.field(default_factory=list)  # call → the last worker has it
    call: list[float] = dataclasses.field(default_factory=list)  # pause_job call → it returned


async def _pause_runs(
    js: JobSystem, db: Db, fleet: ChildFleet, quick: bool, ticker: Ticker
) -> list[PauseRun]:
    await fleet.start(push=True, speed=PAUSE_SPEED)
    blocker = await js.create_job(target_url=TARGET_URL, duration_sec=JOB_DURATION_SEC,
                                  target_type="all_devices", title="bench pause: keeps devices busy")

    async def all_started() -> bool:
        return bool(await db.value("worker_runs_started", job_id=blocker.job.id) == WORKERS * DEVICES)

    await wait_until(all_started, "the blocking job running on every device", IDLE_TIMEOUT_S, every_s=0.05)
    queued = await js.create_job(target_url=TARGET_URL, duration_sec=1, target_type="all_devices",
                                 title="bench pause: queued behind it")
    job = str(queued.job.id)
    await _sleep(0.5)  # the workers have handled its assignment push (nothing to claim: all busy)
    ticker.tick("worker_push: pause scenario ready")
    out: list[PauseRun] = []
    try:
        for r in range(runs(quick)):
            samples = PauseRun()
            for _ in range(pauses_per_run(quick)):
                await _sleep(random.uniform(0.05, 0.15))
                fleet.forget("paused", job)
                t_call = time.time()
                await js.pause_job(queued.job.id)
                t_returned = time.time()
                got = await fleet.wait_reports("paused", job, PAUSE_TIMEOUT_S)
                samples.all_workers.append((max(got) - t_call) * 1000)  # the last worker to know
                samples.call.append((t_returned - t_call) * 1000)
                await js.resume_job(queued.job.id)
            out.append(samples)
            ticker.tick(f"worker_push: pause run {r + 1}/{runs(quick)} "
                        f"(p99 {percentile(samples.all_workers, 99):.1f} ms)")
    finally:
        await js.cancel_job(queued.job.id)
        await js.cancel_job(blocker.job.id)
    return out


async def _timed_claim(client: JobSystem, worker: bench_fleet.Worker, started: float) -> float:
    got = await client.claim_assignments(worker.id, worker.device_ids)
    if len(got) != DEVICES:
        raise AssertionError(f"claimed {len(got)} of {DEVICES}")
    return (time.perf_counter() - started) * 1000


async def _storage_floor(url: str, job_id: uuid.UUID) -> float:
    """What storing one job's claims costs at least: its 1,000 runs set running and their
    devices pointed at them by two bare UPDATEs in one transaction (rolled back), with no pick,
    lock, count or event; in ms."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        started = time.perf_counter()
        await conn.execute(query("floor_claim_runs"), {"job_id": job_id})
        await conn.execute(query("floor_claim_devices"), {"job_id": job_id})
        elapsed = time.perf_counter() - started
        await conn.rollback()
    return elapsed * 1000


async def _claims_alone(
    js: JobSystem, url: str, quick: bool, ticker: Ticker,
) -> tuple[list[list[float]], list[list[float]]]:
    """The server alone: 10 sessions claim their 100 runs of one new job at the same moment,
    from one process, with no worker processes running. Per run, each claim's time from the
    simultaneous start to its return, and the storage floor of each job's claims, in ms."""
    workers = await bench_fleet.register(js, WORKERS, DEVICES, prefix="bench-server")
    clients = [await JobSystem.connect(url, push=False) for _ in workers]
    out: list[list[float]] = []
    floors: list[list[float]] = []
    try:
        for client, worker in zip(clients, workers, strict=True):
            await client.claim_assignments(worker.id, worker.device_ids)  # connect, cache plans
        for r in range(runs(quick)):
            samples: list[float] = []
            for _ in range(jobs_per_run(quick, True)):
                created = await js.create_job(target_url=TARGET_URL, duration_sec=JOB_DURATION_SEC,
                                              target_type="all_devices")
                started = time.perf_counter()
                samples += await asyncio.gather(
                    *(_timed_claim(c, w, started) for c, w in zip(clients, workers, strict=True)))
                await js.cancel_job(created.job.id)
            out.append(samples)
            # Then the floor, on jobs of its own: its rolled-back row versions stay off the claims' rows.
            floor: list[float] = []
            for _ in range(jobs_per_run(quick, True)):
                created = await js.create_job(target_url=TARGET_URL, duration_sec=JOB_DURATION_SEC,
                                              target_type="all_devices")
                floor.append(await _storage_floor(url, created.job.id))
                await js.cancel_job(created.job.id)
            floors.append(floor)
            ticker.tick(f"worker_push: server-only claims run {r + 1}/{runs(quick)}")
    finally:
        for client in clients:
            await client.close()
    return out, floors


def _pct(side: list[LatencyRun], field: str, q: float) -> list[float]:
    return [percentile(getattr(r, field), q) for r in side]


def _rows(ours: list[LatencyRun], theirs: list[LatencyRun], alone: list[LatencyRun],
          server: list[list[float]], floors: list[list[float]], pauses: list[PauseRun]) -> list[Measurement]:
    def row(metric: str, side: list[LatencyRun], field: str, q: float, base: list[LatencyRun] | None = None,
            goal: Goal | None = None) -> Measurement:
        return measure(NAME, metric, "ms", Better.LOWER, _pct(side, field, q),
                       _pct(base, field, q) if base else None, BASELINE_NAME if base else "", goal)

    return [
        row("job committed → worker has claimed it, p50", ours, "claimed", 50, theirs, GOAL_P50),
        row("job committed → worker has claimed it, p99", ours, "claimed", 99, theirs, GOAL_P99),
        row("job committed → claim call begins (push + wake-up), p50", ours, "woken", 50, theirs),
        row("job committed → claim call begins (push + wake-up), p99", ours, "woken", 99, theirs),
        row("create_job called → worker has claimed it, p50", ours, "called", 50, theirs),
        row("1 worker × 100 devices: job committed → claimed, p50", alone, "claimed", 50),
        row("1 worker × 100 devices: job committed → claimed, p99", alone, "claimed", 99),
        measure(NAME, "server only, 10 claims of one job at once: call → returned, p50", "ms", Better.LOWER,
                [percentile(s, 50) for s in server]),
        measure(NAME, "server only, 10 claims of one job at once: call → returned, p99", "ms", Better.LOWER,
                [percentile(s, 99) for s in server]),
        measure(NAME, "server only, storage floor of one job's 10 claims: its 1,000 runs and devices in two bare "
                "UPDATEs, one session, p50", "ms", Better.LOWER, [percentile(f, 50) for f in floors]),
        measure(NAME, "pause call → all 10 workers have job_paused, p50", "ms", Better.LOWER,
                [percentile(p.all_workers, 50) for p in pauses]),
        measure(NAME, "pause call → all 10 workers have job_paused, p99", "ms", Better.LOWER,
                [percentile(p.all_workers, 99) for p in pauses], goal=GOAL_PAUSE_P99),
        measure(NAME, "pause_job call alone (pauses 1,000 queued runs), p50", "ms", Better.LOWER,
                [percentile(p.call, 50) for p in pauses]),
        measure(NAME, "pause_job call alone (pauses 1,000 queued runs), p99", "ms", Better.LOWER,
                [percentile(p.call, 99) for p in pauses]),
    ]


async def run(pg: BenchPostgres, quick: bool, ticker: Ticker) -> list[Measurement]:
    n = runs(quick)
    with pg.database() as url, tempfile.TemporaryDirectory(prefix="jobsys-bench-push-") as tmp:
        ticker.say(f"worker_push: starting {WORKERS} worker processes")
        async with (await JobSystem.connect(url, push=False) as js, Db.connect(url) as db,
                    ChildFleet.spawn(url, WORKERS, DEVICES, pathlib.Path(tmp),
                                     "--poll-interval", f"{POLL_INTERVAL_S:g}",
                                     "--pool-max-size", str(POOL_MAX_SIZE)) as fleet):
            await fleet.start(push=True, speed=SIM_SPEED)
            ticker.tick(f"worker_push: {WORKERS} workers × {DEVICES} devices up")
            await _latency_run(js, fleet, True, 1)  # warm-up: plans cached, pools connected
            ticker.tick("worker_push: warmed up")
            ours: list[LatencyRun] = []
            theirs: list[LatencyRun] = []
            alone: list[LatencyRun] = []
            for i in range(n):
                # Alternate who goes first, so drift hits both alike.
                for push in (True, False) if i % 2 == 0 else (False, True):
                    side = "push" if push else "polling"
                    ticker.say(f"worker_push: {side} run {i + 1}/{n}")
                    result = await _latency_run(js, fleet, push, jobs_per_run(quick, push))
                    (ours if push else theirs).append(result)
                    ticker.tick(f"worker_push: {side} run {i + 1}/{n} "
                                f"(p50 {statistics.median(result.claimed):.1f} ms)")
                ticker.say(f"worker_push: 1 worker run {i + 1}/{n}")
                alone.append(await _latency_run(js, fleet, True, jobs_per_run(quick, True), workers=1))
                ticker.tick(f"worker_push: 1 worker run {i + 1}/{n}")
            ticker.say("worker_push: pause scenario")
            pauses = await _pause_runs(js, db, fleet, quick, ticker)
            await fleet.stop()  # their devices go offline: the next jobs reach only the server-only sessions
            ticker.say("worker_push: server-only claims")
            server, floors = await _claims_alone(js, url, quick, ticker)
    return _rows(ours, theirs, alone, server, floors, pauses)
