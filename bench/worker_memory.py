"""worker_memory: RSS and CPU of a worker process with 500 simulated devices.

The real CLI worker (`python -m jobsys_cli worker --driver sim --sim-devices 500`), as an
operator starts it, at device pace (--sim-speed 1: each running run wakes once a second).
Idle: registered, its first claim round done, nothing to run. Running: one job on all 500
devices, every run started. RSS is read from /proc/PID/status (VmRSS, sampled every 0.1 s
over the window, the largest kept; VmHWM for the peak); CPU from /proc/PID/stat over the
same window. A worker with no devices, started beside it, shows what the interpreter,
the imports, the connection pool and the LISTEN connection cost alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import tempfile
import time

from bench.harness import Better, Goal, Measurement, Ticker, measure
from bench.pg import BenchPostgres
from bench.worker_procs import (
    Db,
    cpu_s,
    devices_online,
    job_running_everywhere,
    peak_rss_mb,
    rss_mb,
    spawn_cli_worker,
    stop_process,
)
from jobsys.system import JobSystem

NAME = "worker_memory"
DESCRIPTION = "RSS and CPU of a `jobsys worker` process with 500 simulated devices"
DEVICES = 500
SIM_SPEED = 1.0
TARGET_URL = "https://example.com/device-lab/check"
JOB_DURATION_SEC = 120
SETTLE_S = 1.0  # after registration: the first claim round and the pool's first connections
WINDOW_S = 2.0  # each sampling window covers two of a run's once-a-second stop checks
QUICK_WINDOW_S = 1.0
SAMPLE_EVERY_S = 0.1
START_TIMEOUT_S = 60.0
GOAL = Goal(150.0)
NOTES = (
    f"One `jobsys worker --driver sim --sim-devices {DEVICES} --sim-speed 1` process per run (CLI "
    "defaults otherwise: 10 s heartbeat, push on), on its own Postgres with the benchmark process. "
    f"MB = 10^6 bytes. RSS is the largest VmRSS seen over a {WINDOW_S:g} s window "
    f"({QUICK_WINDOW_S:g} s with --quick), sampled every {SAMPLE_EVERY_S:g} s: `idle` starts "
    f"{SETTLE_S:g} s after all {DEVICES} devices are online; `running` starts when all {DEVICES} runs of "
    f"a {JOB_DURATION_SEC} s job have started. The peak is VmHWM read at the end of the running window "
    f"(it covers start-up and the burst of {DEVICES} start calls). CPU is the process's user + system "
    "time over each window, in % of one core. The 0-device worker (same command, --sim-devices 0) "
    "runs beside it: most of a worker's memory is there before it has any device. About a third of "
    "it is google.genai: `jobsys worker` builds the whole CLI parser, and the AI-batch commands' module "
    "imports the Gemini provider at import time. Until 2026-12-07 every passed probe refreshed the "
    f"whole fleet, rebuilding all {DEVICES} devices' reports twice ({DEVICES} probes: about 500,000 "
    f"reports under cProfile), and start-up took 6.7-8.2 s in this benchmark that day (three runs); "
    "now a passed probe re-reads the driver's list and keeps only its own device's entry."
)
LIMITS = ""


def runs(quick: bool) -> int:
    return 1 if quick else 3


def steps(quick: bool) -> int:
    return 2 * runs(quick)


@dataclasses.dataclass(frozen=True)
class Window:
    rss_mb: float  # largest VmRSS seen
    cpu_pct: float  # % of one core


@dataclasses.dataclass(frozen=True)
class Sample:
    idle: Window
    running: Window
    peak_mb: float
    bare_mb: float  # the worker with no devices
    startup_s: float  # spawned → all devices online


async def _window(pid: int, seconds: float) -> Window:
    cpu0, t0 = cpu_s(pid), time.monotonic()
    largest = 0.0
    while time.monotonic() - t0 < seconds:
        largest = max(largest, rss_mb(pid))
        await asyncio.sleep(SAMPLE_EVERY_S)  # sampling cadence
    return Window(largest, (cpu_s(pid) - cpu0) / (time.monotonic() - t0) * 100)


async def _one(url: str, js: JobSystem, db: Db, log_dir: pathlib.Path, i: int, quick: bool,
               ticker: Ticker) -> Sample:
    window_s = QUICK_WINDOW_S if quick else WINDOW_S
    name = f"mem-{i}"
    spawned = time.time()
    proc = await spawn_cli_worker(url, name, DEVICES, SIM_SPEED, log_dir)
    bare = await spawn_cli_worker(url, f"mem-bare-{i}", 0, SIM_SPEED, log_dir)
    try:
        startup_s = await devices_online(db, name, DEVICES, START_TIMEOUT_S, every_s=0.02) - spawned
        await asyncio.sleep(SETTLE_S)  # let start-up finish before calling it idle
        idle = await _window(proc.pid, window_s)
        bare_mb = rss_mb(bare.pid)
        ticker.tick(f"worker_memory: run {i + 1}, idle {idle.rss_mb:.0f} MB")
        job_id = await job_running_everywhere(js, db, DEVICES, TARGET_URL, JOB_DURATION_SEC,
                                              f"{name}: all {DEVICES} runs started", START_TIMEOUT_S,
                                              every_s=0.05)
        running = await _window(proc.pid, window_s)
        peak = peak_rss_mb(proc.pid)
        ticker.tick(f"worker_memory: run {i + 1}, running {running.rss_mb:.0f} MB")
        await js.cancel_job(job_id)
        return Sample(idle, running, peak, bare_mb, startup_s)
    finally:
        await asyncio.gather(stop_process(proc), stop_process(bare))


async def run(pg: BenchPostgres, quick: bool, ticker: Ticker) -> list[Measurement]:
    samples: list[Sample] = []
    with pg.database() as url, tempfile.TemporaryDirectory(prefix="jobsys-bench-mem-") as tmp:
        async with await JobSystem.connect(url, push=False) as js, Db.connect(url) as db:
            for i in range(runs(quick)):
                ticker.say(f"worker_memory: run {i + 1}, starting a worker with {DEVICES} devices")
                samples.append(await _one(url, js, db, pathlib.Path(tmp), i, quick, ticker))
    return [
        measure(NAME, f"RSS, {DEVICES} devices, idle", "MB", Better.LOWER,
                [s.idle.rss_mb for s in samples], goal=GOAL),
        measure(NAME, f"RSS, {DEVICES} devices, running a job on all {DEVICES}", "MB", Better.LOWER,
                [s.running.rss_mb for s in samples], goal=GOAL),
        measure(NAME, f"peak RSS (VmHWM), {DEVICES} devices, start-up to running", "MB", Better.LOWER,
                [s.peak_mb for s in samples]),
        measure(NAME, "RSS, a worker with 0 devices (interpreter, imports, pool, LISTEN)", "MB", Better.LOWER,
                [s.bare_mb for s in samples]),
        measure(NAME, f"start-up: process spawned → {DEVICES} devices registered", "s", Better.LOWER,
                [s.startup_s for s in samples]),
        measure(NAME, f"CPU, {DEVICES} devices, idle", "% of a core", Better.LOWER,
                [s.idle.cpu_pct for s in samples]),
        measure(NAME, f"CPU, {DEVICES} devices, running a job on all {DEVICES}", "% of a core", Better.LOWER,
                [s.running.cpu_pct for s in samples]),
    ]
