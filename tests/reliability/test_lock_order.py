"""Transitions take their row locks in one order (docs/state_machine.md, "Lock order"), so
they never deadlock one another. The transport would absorb a deadlock by running the call
again (40P01 is retried inside), which hides it: these tests read the transport's retry
counter (`PostgresTransport.conflicts_retried`) and require it to stay at zero.

cancel_job against heartbeat is the pair issue 16 found. cancel_job took the job, then
each running run and its device in turn (run 1, device 1, run 2, ...), while a heartbeat
took its running runs (lease extension), then its device rows (device report): cancel
holding device 1 and waiting for run 2, the heartbeat holding run 2 and waiting for device
1. delete_job against heartbeat has the same shape once the heartbeat reports its devices
before it touches its runs (the storm with worker restarts found it): the delete's cascade
freed the devices in the order it met them, the heartbeat took them in id order. Each round
here puts a fresh job running on every device and sends the operator's call and two
heartbeats (one with the device report, one without) at once. Before the fixes, a run of
each test counted several retried deadlocks (cancel_job with the old heartbeat every time,
delete_job most times)."""

from __future__ import annotations

import asyncio
import collections

import pytest

from jobsys.models import DeviceReport
from jobsys.system import JobSystem
from jobsys.transport.postgres import PostgresTransport
from tests.support.postgres import COUNTER_MISMATCHES_SQL, Db

DEVICES = 30
ROUNDS = 150


def reports(shift: int) -> list[DeviceReport]:
    # The model changes every round, so each report updates every device row.
    return [DeviceReport(serial=f"lock-{d:02d}", simulated=True, model=f"m{shift}") for d in range(DEVICES)]


async def client(db_url: str) -> JobSystem:
    return JobSystem(await PostgresTransport(db_url, pool_max_size=1, push=False).open())


def retried(*clients: JobSystem) -> collections.Counter[str]:
    total: collections.Counter[str] = collections.Counter()
    for js in clients:
        total.update(js.transport.conflicts_retried)  # type: ignore[attr-defined]
    return total


@pytest.mark.parametrize("move", ["cancel_job", "delete_job"])
async def test_operator_moves_and_heartbeats_never_deadlock(db_url: str, db: Db, move: str) -> None:
    operator, worker, upkeep = await client(db_url), await client(db_url), await client(db_url)
    try:
        session = await worker.register_worker("lock-pc", reports(0), hostname="h")
        for n in range(1, ROUNDS + 1):
            created = await operator.create_job(target_url=f"https://example.com/{n}", duration_sec=60)
            claimed = await worker.claim_assignments(session.worker_id, start=True)
            assert len(claimed) == DEVICES
            running = [run.assignment_id for run in claimed]
            await asyncio.gather(
                getattr(operator, move)(created.job.id),
                worker.heartbeat(session.worker_id, reports(n), running),
                upkeep.heartbeat(session.worker_id, None, running))
            assert db.value("select count(*) from jobsys.devices where running_assignment_id is not null") == 0
        assert retried(operator, worker, upkeep) == {}, "a deadlock was retried inside the transport"
        assert db.rows(COUNTER_MISMATCHES_SQL) == []
    finally:
        for js in (operator, worker, upkeep):
            await js.close()
