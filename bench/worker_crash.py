"""worker_crash: kill -9 of a worker holding 100 running runs → all of them done again.

The victim is the real CLI worker (`python -m jobsys_cli worker --driver sim`) with 100
simulated devices, each running one run of a job (started: the lease covers the job's
duration plus lease_grace_sec). It gets SIGKILL; the clock starts just before. Two ways back:

(a) restart: the same worker name is started again at once (as a supervisor would), so the
    same serials register under a new session, which releases the dead session's runs at
    once (attempt + 1), and the new process claims and re-runs them. Default settings.
(b) no restart: a second worker is up; the runs come back only when their leases expire.
    The lease rescue re-queues them on their (dead) devices; once those devices are stale
    the stale marking gives their queue up and top-up moves the runs to the live worker's
    devices. This runs from maintain(), which workers call with each heartbeat. Shortened
    jobsys.settings (named in each metric) keep a run to seconds; the time scales with them.

Re-queued: every run is pending, running or completed on a live session's device.
Completed: every run completed (the job is done). Polled every 20 ms.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import tempfile
import time
import uuid
from collections.abc import AsyncIterator

from bench import fleet as bench_fleet
from bench.harness import Better, Measurement, Ticker, measure
from bench.pg import BenchPostgres
from bench.worker_procs import (
    ChildFleet,
    Db,
    devices_online,
    job_running_everywhere,
    kill,
    spawn_cli_worker,
    stop_process,
    wait_until,
)
from jobsys.system import JobSystem

NAME = "worker_crash"
DESCRIPTION = "kill -9 of a worker holding 100 running runs → re-queued → completed again (s)"
DEVICES = 100
SIM_SPEED = 2.0  # a run of the 2 s job takes 1 s: time to kill while all 100 are running
JOB_DURATION_SEC = 2  # what the server's lease counts (real seconds)
HEARTBEAT_S = 0.5  # (b): both workers; maintain() runs from heartbeats
TARGET_URL = "https://example.com/device-lab/check"
POLL_S = 0.02
START_TIMEOUT_S = 60.0
RECOVERY_TIMEOUT_S = 120.0


@dataclasses.dataclass(frozen=True)
class LeaseSettings:
    lease_grace_sec: float
    heartbeat_lease_sec: float
    stale_after_sec: float
    maintenance_interval_ms: float

    def describe(self) -> str:
        return (f"lease grace {self.lease_grace_sec:g} s, heartbeat lease {self.heartbeat_lease_sec:g} s, "
                f"stale after {self.stale_after_sec:g} s, "
                f"maintenance every {self.maintenance_interval_ms:g} ms")

    def items(self) -> list[tuple[str, float]]:
        return list(dataclasses.asdict(self).items())


FAST = LeaseSettings(2, 2, 2, 250)
SLOWER = LeaseSettings(5, 5, 5, 250)
NOTES = (
    f"The victim is `jobsys worker --driver sim --sim-devices {DEVICES} --sim-speed {SIM_SPEED:g}`. The job "
    f"lasts {JOB_DURATION_SEC} s on the server's clock (its lease) and {JOB_DURATION_SEC / SIM_SPEED:g} s "
    "in the simulator, so each `completed` figure includes one re-run of about that long plus the "
    f"{DEVICES} completions. (a): default settings (lease grace 30 s, heartbeat lease 30 s, stale after "
    "30 s, maintenance every 1,000 ms) and CLI defaults; the restart is immediate, so `re-queued` is "
    "the new process's start-up (see worker_memory: mostly imports) and registration, which releases "
    "the runs at once. (b): the settings "
    f"named in each metric, both workers heartbeating every {HEARTBEAT_S:g} s; the second worker is "
    f"bench/worker_child.py (the Worker class, {DEVICES} devices), started after the job so that it takes "
    "none of it. Expect `re-queued` near max(start + duration + lease grace, last heartbeat + heartbeat "
    "lease, last heartbeat + stale after) − kill, plus up to one maintenance interval and one "
    "heartbeat of the live worker; stale after counts too, since the re-queued runs leave the dead "
    "worker's devices only once those are stale. With the default settings that is over 30 s."
)
LIMITS = ""


def runs(quick: bool) -> int:
    return 1 if quick else 3


def settings(quick: bool) -> list[LeaseSettings]:
    return [FAST] if quick else [FAST, SLOWER]


def lease_runs(quick: bool) -> int:
    return 1 if quick else 3


def steps(quick: bool) -> int:
    return 1 + runs(quick) + len(settings(quick)) * (1 + lease_runs(quick))


@dataclasses.dataclass(frozen=True)
class Recovery:
    requeued_s: float
    completed_s: float


async def _running_job(js: JobSystem, db: Db) -> tuple[uuid.UUID, uuid.UUID]:
    """Create a job on the live victim's devices; wait until all its runs have started.
    (job id, the victim's worker session id)."""
    job_id = await job_running_everywhere(js, db, DEVICES, TARGET_URL, JOB_DURATION_SEC, "all runs started",
                                          START_TIMEOUT_S, every_s=POLL_S)
    holder, held = await db.row("worker_run_holder", job_id=job_id)
    if held != DEVICES:
        raise AssertionError(f"the victim holds {held} of {DEVICES} runs")
    return job_id, holder


async def _online(db: Db, name: str) -> None:
    await devices_online(db, name, DEVICES, START_TIMEOUT_S, every_s=0.05)


async def _recover(db: Db, job_id: uuid.UUID, dead: uuid.UUID, killed_at: float) -> Recovery:
    async def requeued() -> bool:
        away, _ = await db.row("worker_recovery", job_id=job_id, dead=dead)
        return bool(away == DEVICES)

    async def completed() -> bool:
        _, done = await db.row("worker_recovery", job_id=job_id, dead=dead)
        return bool(done == DEVICES)

    t_requeued = await wait_until(requeued, "runs re-queued", RECOVERY_TIMEOUT_S, every_s=POLL_S)
    t_completed = await wait_until(completed, "runs completed again", RECOVERY_TIMEOUT_S, every_s=POLL_S)
    return Recovery(t_requeued - killed_at, t_completed - killed_at)


async def _still_running(db: Db, job_id: uuid.UUID) -> None:
    if await db.value("worker_runs_started", job_id=job_id) != DEVICES:
        raise AssertionError("some runs ended before the kill: the job is too short for this machine")


async def _restart_runs(
    pg: BenchPostgres, log_dir: pathlib.Path, quick: bool, ticker: Ticker
) -> list[Recovery]:
    """(a): kill -9, then the same worker name again at once."""
    out: list[Recovery] = []
    name = "crash-a"
    with pg.database() as url:
        async with await JobSystem.connect(url, push=False) as js, Db.connect(url) as db:
            proc = await spawn_cli_worker(url, name, DEVICES, SIM_SPEED, log_dir)
            try:
                await _online(db, name)
                ticker.tick("worker_crash: restart scenario ready")
                for i in range(runs(quick)):
                    job_id, dead = await _running_job(js, db)
                    await _still_running(db, job_id)
                    killed_at = time.time()
                    kill(proc)
                    await proc.wait()
                    proc = await spawn_cli_worker(url, name, DEVICES, SIM_SPEED, log_dir)
                    result = await _recover(db, job_id, dead, killed_at)
                    out.append(result)
                    ticker.tick(f"worker_crash: restart run {i + 1}/{runs(quick)}: "
                                f"re-queued {result.requeued_s:.2f} s, completed {result.completed_s:.2f} s")
            finally:
                await stop_process(proc)
    return out


@dataclasses.dataclass
class LeaseScenario:
    """(b) on one database: lease settings applied, a second worker (the rescuer) waiting."""

    url: str
    js: JobSystem
    db: Db
    rescuer: ChildFleet
    log_dir: pathlib.Path

    async def kill_and_recover(self, name: str) -> Recovery:
        """A victim CLI worker `name` starts, runs all of a new job, gets kill -9; the
        rescuer takes over once the leases expire."""
        victim = await spawn_cli_worker(self.url, name, DEVICES, SIM_SPEED, self.log_dir,
                                        "--heartbeat-interval", f"{HEARTBEAT_S:g}")
        try:
            await _online(self.db, name)
            job_id, dead = await _running_job(self.js, self.db)
            await self.rescuer.start(push=True, speed=SIM_SPEED)  # after the job: it takes none of it
            await _still_running(self.db, job_id)
            killed_at = time.time()
            kill(victim)
            result = await _recover(self.db, job_id, dead, killed_at)
            await self.rescuer.stop()
        finally:
            await stop_process(victim)
        return result


@contextlib.asynccontextmanager
async def lease_scenario(pg: BenchPostgres, log_dir: pathlib.Path, lease: LeaseSettings,
                         prefix: str = "rescuer") -> AsyncIterator[LeaseScenario]:
    with pg.database() as url:
        for key, value in lease.items():
            await bench_fleet.set_setting(url, key, value)
        async with (await JobSystem.connect(url, push=False) as js, Db.connect(url) as db,
                    ChildFleet.spawn(url, 1, DEVICES, log_dir, "--heartbeat-interval", f"{HEARTBEAT_S:g}",
                                     prefix=prefix) as rescuer):
            yield LeaseScenario(url, js, db, rescuer, log_dir)


async def _lease_runs(pg: BenchPostgres, log_dir: pathlib.Path, lease: LeaseSettings, quick: bool,
                      ticker: Ticker) -> list[Recovery]:
    """(b): kill -9, no restart; a second worker takes the runs once their leases expire."""
    out: list[Recovery] = []
    async with lease_scenario(pg, log_dir, lease) as scenario:
        ticker.tick(f"worker_crash: lease scenario ({lease.describe()}) ready")
        for i in range(lease_runs(quick)):
            result = await scenario.kill_and_recover(f"crash-b-{lease.lease_grace_sec:g}-{i}")
            out.append(result)
            ticker.tick(f"worker_crash: lease run {i + 1}/{lease_runs(quick)}: "
                        f"re-queued {result.requeued_s:.2f} s, completed {result.completed_s:.2f} s")
    return out


async def run(pg: BenchPostgres, quick: bool, ticker: Ticker) -> list[Measurement]:
    with tempfile.TemporaryDirectory(prefix="jobsys-bench-crash-") as tmp:
        log_dir = pathlib.Path(tmp)
        ticker.say("worker_crash: restart scenario")
        restart = await _restart_runs(pg, log_dir, quick, ticker)
        rows = [
            measure(NAME, f"(a) restarted at once: kill -9 → all {DEVICES} runs re-queued", "s",
                    Better.LOWER, [r.requeued_s for r in restart]),
            measure(NAME, f"(a) restarted at once: kill -9 → all {DEVICES} completed again", "s",
                    Better.LOWER, [r.completed_s for r in restart]),
        ]
        for lease in settings(quick):
            ticker.say(f"worker_crash: lease expiry, {lease.describe()}")
            expired = await _lease_runs(pg, log_dir, lease, quick, ticker)
            rows += [
                measure(NAME, f"(b) no restart, {lease.describe()}: kill -9 → all {DEVICES} re-queued "
                              "on the other worker", "s", Better.LOWER, [r.requeued_s for r in expired]),
                measure(NAME, f"(b) no restart, {lease.describe()}: kill -9 → all {DEVICES} completed again",
                        "s", Better.LOWER, [r.completed_s for r in expired]),
            ]
    return rows
