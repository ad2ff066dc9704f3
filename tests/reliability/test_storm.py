"""Concurrency storm: 50 clients, each its own JobSystem and connection, for a bounded time,
on a fleet of worker sessions with devices:

- operators create jobs (every target type, some for labelled devices only), pause, resume,
  cancel, delete, rename and read, and disable, drain, enable and label phones;
- claimers, five per worker contending for the same devices, claim, start and complete, fail
  (for good or to retry), release, or abandon a run as a crashed worker would;
- keepers, one per worker, heartbeat, take a device offline and back and force maintenance
  (and, in the variant with restarts, register their worker again as a restarted process).

An observer checks the invariants during the storm (each in one statement, so on one
snapshot) and after it: counters equal count(*) per job and status; at most one running
assignment per device, and the device mutex agrees; one assignment per device per job; no
pending run in a paused job and no run of a paused job claimed during the pause; completed
jobs reached their target. Clients may see only the typed errors a racing move deserves
(IllegalTransition, StaleRun, NotFound): a deadlock or serialization failure, or anything
else, fails the test, as does an (assignment, attempt) claimed twice. Conflicts the transport
absorbed by retrying are counted, by SQLSTATE and by function.

CI runs a 6 s storm; JOBSYS_SOAK=1 a 120 s one, and the variant with restarts, and writes
their figures to bench/results/reliability/storm*.json (docs/reliability.md quotes them)."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import random
import time
import uuid
from typing import Any, Awaitable

import psycopg
import pytest

from jobsys import IllegalTransition, NotFound, StaleRun, aio
from jobsys.models import DeviceReport, TargetType
from jobsys.system import JobSystem
from jobsys.transport.postgres import PostgresTransport
from tests.support.paths import ROOT
from tests.support.postgres import COUNTER_MISMATCHES_SQL, EXACT_JOBS, Db
from tests.support.waiting import wait_until

SOAK = bool(os.environ.get("JOBSYS_SOAK"))
STORM_S = 120.0 if SOAK else 6.0
WORKERS = 5
DEVICES_PER_WORKER = 8
CLAIMERS_PER_WORKER = 5
OPERATORS = 20
CLIENTS = OPERATORS + WORKERS * CLAIMERS_PER_WORKER + WORKERS  # 50, each with its own connection
MAX_LIVE_JOBS = 30  # past this, a create deletes the oldest job instead
EXPECTED_ERRORS = (IllegalTransition, StaleRun, NotFound)  # what a racing move deserves

# Invariants, each one statement (one snapshot), each counting violations.
INVARIANTS = {
    "counters differ from count(*)": f"select count(*) from ({COUNTER_MISMATCHES_SQL}) x",
    "device running two runs": """
        select count(*) from (select device_id from jobsys.job_assignments where status = 'running'
                              group by device_id having count(*) > 1) x""",
    "running run without the device mutex": """
        select count(*) from jobsys.job_assignments a
        where a.status = 'running' and not exists (
          select 1 from jobsys.devices d where d.id = a.device_id and d.running_assignment_id = a.id)""",
    "device mutex on a run that is not running": """
        select count(*) from jobsys.devices d
        left join jobsys.job_assignments a on a.id = d.running_assignment_id
        where d.running_assignment_id is not null and a.status is distinct from 'running'""",
    "two assignments of one job on one device": """
        select count(*) from (select job_id, device_id from jobsys.job_assignments
                              group by job_id, device_id having count(*) > 1) x""",
    "pending run in a paused job": """
        select count(*) from jobsys.job_assignments a join jobsys.jobs j on j.id = a.job_id
        where j.status = 'paused' and a.status = 'pending'""",
    "completed job short of its target": """
        select count(*) from """ + EXACT_JOBS + """ j where status = 'completed' and completed_count < target_count""",
}
PAUSED = "paused job claimed a run during the pause"
# Runs of each paused job. A run that is running in one snapshot but not in an earlier one
# where the job was already paused by the same pause (same paused_at) was claimed during the
# pause. Compared across snapshots rather than by timestamp: now() is when a transaction
# began, not where it fell in the lock order.
PAUSED_RUNS_SQL = """
    select j.id, j.paused_at,
           coalesce(array_agg(a.id || ':' || a.attempt) filter (where a.id is not null), '{}')
    from jobsys.jobs j
    left join jobsys.job_assignments a on a.job_id = j.id and a.status = 'running'
    where j.status = 'paused'
    group by j.id, j.paused_at"""


class Tally:
    """Operations and errors by type, across every client."""

    def __init__(self) -> None:
        self.ops: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.done: collections.Counter[str] = collections.Counter()  # calls that succeeded
        self.unexpected: list[str] = []

    async def run(self, op: str, call: Awaitable[Any]) -> Any:
        self.ops[op] += 1
        try:
            result = await call
        except EXPECTED_ERRORS as exc:
            self.errors[f"{op}: {type(exc).__name__}"] += 1
            if op == "register":  # a worker must always be able to (re)register
                self.unexpected.append(f"{op}: {type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - everything else is a finding: deadlocks, transport, bugs
            self.errors[f"{op}: {type(exc).__name__}"] += 1
            self.unexpected.append(f"{op}: {type(exc).__name__}: {exc}")
        else:
            self.done[op] += 1
            return result
        return None


async def client(url: str) -> JobSystem:
    # One connection per client: a client is sequential, so it never needs a second.
    return JobSystem(await PostgresTransport(url, pool_max_size=1, push=False).open())


def reports(worker: int, offline: int | None = None) -> list[DeviceReport]:
    return [DeviceReport(serial=f"storm-{worker}-{d}", simulated=True,
                         state="offline" if d == offline else "online") for d in range(DEVICES_PER_WORKER)]


async def storm(db_url: str, db: Db, caplog: pytest.LogCaptureFixture, *, restarts: bool) -> dict[str, int]:
    """Run the storm and report its figures; return the invariants violated (name -> times
    seen). Fails at once on an error a client should not see or a run claimed twice."""
    # The transport's "retrying" lines name the function that lost a conflict.
    caplog.set_level(logging.INFO, logger="jobsys.transport.postgres")
    # Short leases and few attempts, so lease rescue, exhausted attempts and top-up all happen
    # within the storm.
    db.setting("claim_lease_sec", 1)
    db.setting("lease_grace_sec", 1)
    db.setting("heartbeat_lease_sec", 1)
    db.setting("max_attempts", 3)
    db.setting("maintenance_interval_ms", 200)
    db.setting("quarantine_cooldown_sec", 1)  # flaky phones come back within the storm
    tally = Tally()
    clients = [await client(db_url) for _ in range(CLIENTS)]
    observer = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    sessions: dict[int, uuid.UUID] = {}
    for w in range(WORKERS):
        sessions[w] = (await clients[0].register_worker(f"storm-{w}", reports(w), hostname="storm")).worker_id
    device_ids = [d.id for d in (await clients[0].list_devices()).devices]
    live_jobs: list[uuid.UUID] = []  # created and not yet deleted, oldest first
    claims: collections.Counter[tuple[int, int]] = collections.Counter()
    violations: collections.Counter[str] = collections.Counter()
    paused_before: dict[uuid.UUID, tuple[Any, set[str]]] = {}
    checks = 0
    over = asyncio.Event()  # set when the storm's time is up; pauses below wait on it
    asyncio.get_running_loop().call_later(STORM_S, over.set)

    def forget(job_id: uuid.UUID) -> None:
        if job_id in live_jobs:
            live_jobs.remove(job_id)

    async def operator(js: JobSystem, seed: int) -> None:
        rng = random.Random(seed)
        while not over.is_set():
            move = rng.choices(["create", "pause", "resume", "cancel", "delete", "rename", "read", "device"],
                               weights=[10, 25, 25, 6, 4, 5, 10, 4])[0]
            if move == "device":  # disable, drain or enable a phone; label it (jobs target rack=A)
                device = rng.choice(device_ids)
                if rng.random() < 0.3:
                    await tally.run("label", js.set_device_labels(device, {"rack": rng.choice("AB")}))
                else:
                    await tally.run("device state", js.set_device_state(
                        device, rng.choice(["disabled", "draining", "enabled", "enabled"])))
                continue
            if move == "create" and len(live_jobs) >= MAX_LIVE_JOBS:
                move = "delete"  # churn: the oldest job makes room
                job_id = live_jobs[0]
            elif move == "create" or not live_jobs:
                kind = rng.choice(list(TargetType))
                value = {TargetType.ALL_DEVICES: None, TargetType.PERCENTAGE: rng.randint(1, 100),
                         TargetType.DEVICE_COUNT: rng.randint(1, 12)}[kind]
                created = await tally.run("create", js.create_job(
                    target_url=f"https://example.com/{seed}/{rng.random()}", duration_sec=1,
                    target_type=kind, target_value=value,
                    device_labels={"rack": "A"} if rng.random() < 0.2 else {}))
                if created is not None:
                    live_jobs.append(created.job.id)
                continue
            else:
                job_id = rng.choice(live_jobs)
            if move == "pause":
                await tally.run("pause", js.pause_job(job_id))
            elif move == "resume":
                await tally.run("resume", js.resume_job(job_id))
            elif move == "cancel":
                await tally.run("cancel", js.cancel_job(job_id))
            elif move == "delete":
                forget(job_id)
                await tally.run("delete", js.delete_job(job_id))
            elif move == "rename":
                await tally.run("rename", js.rename_job(job_id, f"renamed {rng.random()}"))
            else:
                await tally.run("read", js.get_job(job_id))

    async def claimer(js: JobSystem, worker: int, seed: int) -> None:
        rng = random.Random(seed)
        while not over.is_set():
            limit = rng.randint(1, 3)
            batch = await tally.run("claim", js.claim_assignments(sessions[worker], limit=limit))
            if not batch:
                await aio.wait_event(over, rng.uniform(0, 0.02))  # a worker's poll interval
                continue
            for run in batch:
                claims[(run.assignment_id, run.attempt)] += 1
                outcome = rng.choices(["complete", "fail", "retry", "release", "abandon"],
                                      weights=[70, 5, 12, 8, 5])[0]
                if outcome == "abandon":  # a crashed worker: the lease expires, rescue requeues it
                    continue
                await tally.run("start", js.start_assignment(run.assignment_id, run.attempt))
                if outcome == "complete":
                    await tally.run("complete", js.complete_assignment(
                        run.assignment_id, run.attempt))
                elif outcome in ("fail", "retry"):
                    await tally.run(outcome, js.fail_assignment(
                        run.assignment_id, run.attempt, "storm", retry=outcome == "retry"))
                else:
                    await tally.run("release", js.release_assignment(run.assignment_id, run.attempt))

    async def keeper(js: JobSystem, worker: int, seed: int) -> None:
        rng = random.Random(seed)
        while not over.is_set():
            move = rng.choices(["heartbeat", "device offline", "maintain", "restart"],
                               weights=[60, 20, 15, 5 if restarts else 0])[0]
            if move == "heartbeat":
                await tally.run("heartbeat", js.heartbeat(sessions[worker]))
            elif move == "device offline":  # one device drops out (its queue moves), the rest report in
                offline = rng.randrange(DEVICES_PER_WORKER) if rng.random() < 0.5 else None
                await tally.run("heartbeat+devices", js.heartbeat(
                    sessions[worker], reports(worker, offline)))
            elif move == "maintain":
                await tally.run("maintain", js.maintain(force=True))
            else:  # the worker process restarts: a new session takes the devices over
                session = await tally.run("register", js.register_worker(
                    f"storm-{worker}", reports(worker), hostname="storm"))
                if session is not None:
                    sessions[worker] = session.worker_id
            await aio.wait_event(over, rng.uniform(0.02, 0.1))  # a heartbeat interval

    async def check() -> None:
        nonlocal checks
        for name, query in INVARIANTS.items():
            violations[name] += (await (await observer.execute(query)).fetchone())[0]  # type: ignore[index]
        now: dict[uuid.UUID, tuple[Any, set[str]]] = {
            job_id: (paused_at, set(runs))
            for job_id, paused_at, runs in await (await observer.execute(PAUSED_RUNS_SQL)).fetchall()}
        for job_id, (paused_at, runs) in now.items():
            before = paused_before.get(job_id)
            if before is not None and before[0] == paused_at:
                violations[PAUSED] += len(runs - before[1])
        paused_before.clear()
        paused_before.update(now)
        checks += 1

    async def observe() -> None:
        while not over.is_set():
            await check()
            await aio.wait_event(over, 0.05)  # sampling interval

    roles: list[Awaitable[None]] = []
    it = iter(clients)
    roles += [operator(next(it), seed) for seed in range(OPERATORS)]
    roles += [claimer(next(it), w, 100 + w * CLAIMERS_PER_WORKER + c)
              for w in range(WORKERS) for c in range(CLAIMERS_PER_WORKER)]
    roles += [keeper(next(it), w, 200 + w) for w in range(WORKERS)]
    assert len(roles) == CLIENTS == 50
    try:
        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*roles, observe()), timeout=STORM_S + 120)
        elapsed = time.monotonic() - started
        await check()  # and once more on the state the storm left
        # A run claimed in the instant its device was disabled is given back by the next upkeep.
        await clients[0].maintain(force=True)
        disabled_running = (await (await observer.execute(
            "select count(*) from jobsys.devices where state = 'disabled' and running_assignment_id is not null"
        )).fetchone())[0]  # type: ignore[index]
        conflicts: collections.Counter[str] = collections.Counter()
        for js in clients:
            conflicts.update(js.transport.conflicts_retried)  # type: ignore[attr-defined]
        conflicts_by_function = collections.Counter(
            f"{record.args[0]}: {record.args[1]}" for record in caplog.records  # type: ignore[index]
            if record.name == "jobsys.transport.postgres" and record.getMessage().endswith("retrying"))
    finally:
        await observer.close()
        for js in clients:
            await js.close()

    figures = {
        "clients": CLIENTS, "seconds": round(elapsed, 1), "workers": WORKERS,
        "devices": WORKERS * DEVICES_PER_WORKER, "worker_restarts": tally.ops["register"],
        "operations": sum(tally.ops.values()),
        "operations_by_type": dict(sorted(tally.ops.items())),
        "errors_by_type": dict(sorted(tally.errors.items())),
        "unexpected_errors": len(tally.unexpected),
        "conflicts_retried_inside_by_sqlstate": dict(conflicts),
        "conflicts_retried_inside_by_function": dict(sorted(conflicts_by_function.items())),
        "invariant_checks": checks, "violations": dict(violations),
        "jobs_left_by_status": dict(db.rows(
            "select status, count(*) from jobsys.jobs group by 1 order by 1")),
        "assignments_left_by_status": dict(db.rows(
            "select status, count(*) from jobsys.job_assignments group by 1 order by 1")),
        "runs_claimed": sum(claims.values()),
    }
    print(f"\nstorm (restarts={restarts}):", json.dumps(figures, indent=2))
    if SOAK:
        out = ROOT / "bench" / "results" / "reliability" / f"storm{'_restarts' if restarts else ''}.json"
        out.parent.mkdir(parents=True, exist_ok=True)  # not a benchmark: kept out of the report
        out.write_text(json.dumps(figures, indent=2))

    assert tally.unexpected == [], tally.unexpected[:20]
    # One lock order for every transition (docs/state_machine.md): no deadlock for the
    # transport to retry.
    assert conflicts["40P01"] == 0, conflicts_by_function
    assert max(claims.values()) == 1  # no (assignment, attempt) claimed twice
    assert disabled_running == 0
    # The storm did what it says: every move succeeded at least once, runs through every outcome.
    moves = ("create", "pause", "resume", "cancel", "delete", "claim", "start", "complete", "retry",
             "release", "maintain", "device state", "label")
    assert {move: tally.done[move] for move in moves if not tally.done[move]} == {}
    return {name: n for name, n in violations.items() if n}


async def test_fifty_clients_storm_keeps_every_invariant(
        db_url: str, db: Db, caplog: pytest.LogCaptureFixture) -> None:
    assert await storm(db_url, db, caplog, restarts=False) == {}


@pytest.mark.skipif(not SOAK, reason="long form only (JOBSYS_SOAK=1); CI runs the deterministic case below")
async def test_storm_with_worker_restarts(db_url: str, db: Db, caplog: pytest.LogCaptureFixture) -> None:
    assert await storm(db_url, db, caplog, restarts=True) == {}


async def test_claim_of_the_old_session_during_reregistration_keeps_its_device(
        jobs: JobSystem, db: Db) -> None:
    """The race the storm with restarts found, made deterministic with a held job lock: a
    claim by the old session while re-registration waits must keep its device's mutex."""
    old = await jobs.register_worker("w", [DeviceReport(serial="d0", simulated=True)], hostname="h")
    first = (await jobs.create_job(target_url="https://example.com/1", duration_sec=1,
                                   target_type=TargetType.DEVICE_COUNT, target_value=1)).job.id
    [running] = await jobs.claim_assignments(old.worker_id)  # first job's run on d0: a run to move
    both = [DeviceReport(serial="d0", simulated=True), DeviceReport(serial="d1", simulated=True)]
    await jobs.heartbeat(old.worker_id, both)  # d1 joins the old session
    second = (await jobs.create_job(target_url="https://example.com/2", duration_sec=1,
                                    target_type=TargetType.DEVICE_COUNT, target_value=1)).job.id
    assert db.value("select d.serial from jobsys.job_assignments a"
                    " join jobsys.devices d on d.id = a.device_id where a.job_id = %s",
                    (second,)) == "d1"  # the idle device

    async with await psycopg.AsyncConnection.connect(db.url) as holder:  # holds the first job's row
        await holder.execute("select 1 from jobsys.jobs where id = %s for no key update", (first,))
        async with await JobSystem.connect(db.url, push=False) as restarted:
            reregister = asyncio.create_task(restarted.register_worker("w", both, hostname="h"))
            await wait_until(lambda: db.value(
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
                " and query ilike '%%register_worker%%'") == 1,
                what="re-registration waiting on the job lock")
            claimed = await jobs.claim_assignments(old.worker_id)  # the old session, still running
            assert [run.job_id for run in claimed] == [second]
            await holder.commit()
            new = await reregister
            # The old session's run on d1 is still running, so d1 must stay busy: the new
            # session gets no second run on it.
            await jobs.create_job(target_url="https://example.com/3", duration_sec=1)
            await jobs.claim_assignments(new.worker_id)
    assert running.job_id == first
    assert db.value(INVARIANTS["running run without the device mutex"]) == 0
    assert db.value(INVARIANTS["device running two runs"]) == 0
