"""Who may take a device (issue 16): a serial belongs to the worker account whose live session
lists it. Another account registering or reporting it is refused for that serial only (the
rest of its devices register), the device records the conflict for operators, and it moves
once the holder's session is stale or stops listing it, or an operator releases it. The
same account (a restarted worker) and the service (one account) move devices as before.

Also: a re-registration re-queues a worker's running runs by the attempt rule of lease
expiry, so a run that keeps crashing its worker fails after max_attempts.

Worker accounts act the way PostgREST runs their requests: role authenticated with their
JWT claims (app_metadata.jobsys_role), here as connection options of the Postgres transport."""

from __future__ import annotations

import json
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
from psycopg import conninfo

from jobsys import Forbidden, NotFound
from jobsys.models import AssignmentStatus, DeviceReport, JobStatus
from jobsys.system import JobSystem
from jobsys.transport.postgres import PostgresTransport
from tests.support.postgres import Db

HELD = "JS423"
Connect = Callable[[str], Awaitable[JobSystem]]


def claims(role: str) -> dict[str, Any]:
    return {"sub": str(uuid.uuid4()), "role": "authenticated", "app_metadata": {"jobsys_role": role}}


@pytest.fixture
async def connect(db_url: str) -> AsyncIterator[Connect]:
    """connect(role): a JobSystem acting as a new user with that jobsys role."""
    opened: list[JobSystem] = []

    async def open_as(role: str) -> JobSystem:
        options = f"-c role=authenticated -c request.jwt.claims={json.dumps(claims(role), separators=(',', ':'))}"
        system = JobSystem(await PostgresTransport(conninfo.make_conninfo(db_url, options=options), push=False).open())
        opened.append(system)
        return system

    yield open_as
    for system in opened:
        await system.close()


def phones(*serials: str, state: str = "online") -> list[DeviceReport]:
    return [DeviceReport(serial=s, state=state, simulated=True) for s in serials]  # type: ignore[arg-type]


def device_row(db: Db, serial: str) -> dict[str, Any]:
    return db.rows("select to_jsonb(d) from jobsys.devices d where serial = %s", (serial,))[0][0]


def run_on(db: Db, serial: str) -> tuple[str, int]:
    return db.rows("select a.status, a.attempt from jobsys.job_assignments a join jobsys.devices d"
                   " on d.id = a.device_id where d.serial = %s order by a.id desc limit 1", (serial,))[0]


def make_stale(db: Db, worker_id: uuid.UUID) -> None:
    db.run("update jobsys.workers set last_heartbeat_at = now() - interval '1 hour' where id = %s", (worker_id,))


async def test_another_account_cannot_take_a_device_from_a_live_session(connect: Connect, db: Db) -> None:
    account_a, account_b, operator = await connect("worker"), await connect("worker"), await connect("operator")
    a = await account_a.register_worker("pc-a", phones("shared", "a-only"), hostname="a")
    created = await operator.create_job(target_url="https://example.com/a", duration_sec=60)
    claimed = await account_a.claim_assignments(a.worker_id, start=True)
    assert {run.serial for run in claimed} == {"shared", "a-only"}

    b = await account_b.register_worker("pc-b", phones("shared", "b-only"), hostname="b")

    # Refused for the disputed serial only; the call as a whole succeeds.
    assert [(r.serial, r.code) for r in b.refused] == [("shared", HELD)]
    assert "another worker account" in b.refused[0].reason
    assert [d.serial for d in b.devices] == ["b-only"]
    # The device stays where it was, and so does A's run on it.
    assert device_row(db, "shared")["worker_id"] == str(a.worker_id)
    assert run_on(db, "shared") == ("running", 1)
    assert (await operator.get_job(created.job.id)).running_count == 2
    # B sees none of A's assignments; A's heartbeat does not tell it to stop anything.
    assert await account_b.claim_assignments(b.worker_id) == []
    assert db.value("select count(*) from jobsys.job_assignments a join jobsys.devices d on d.id = a.device_id"
                    " where d.worker_id = %s", (b.worker_id,)) == 0
    assert (await account_a.heartbeat(a.worker_id, running=[r.assignment_id for r in claimed])).stop == []
    # Operators see the conflict.
    listed = {d.serial: d for d in (await operator.list_devices()).devices}
    assert listed["shared"].conflict_worker_id == b.worker_id and listed["shared"].conflict_at is not None
    assert listed["b-only"].conflict_worker_id is None

    # A heartbeat of B with its devices is refused the same way.
    reply = await account_b.heartbeat(b.worker_id, phones("shared", "b-only"))
    assert [(r.serial, r.code) for r in reply.refused] == [("shared", HELD)]
    assert device_row(db, "shared")["worker_id"] == str(a.worker_id)
    assert db.counters_match() == []


async def test_one_disputed_serial_does_not_cost_the_other_nineteen(connect: Connect, db: Db) -> None:
    account_a, account_b = await connect("worker"), await connect("worker")
    await account_a.register_worker("pc-a", phones("p07"), hostname="a")
    b = await account_b.register_worker("pc-b", phones(*(f"p{i:02d}" for i in range(20))), hostname="b")
    assert [r.serial for r in b.refused] == ["p07"]
    assert len(b.devices) == 19 and "p07" not in {d.serial for d in b.devices}


async def test_the_device_moves_once_the_holders_session_is_stale(connect: Connect, db: Db) -> None:
    account_a, account_b, operator = await connect("worker"), await connect("worker"), await connect("operator")
    a = await account_a.register_worker("pc-a", phones("shared"), hostname="a")
    await operator.create_job(target_url="https://example.com/a", duration_sec=60)
    [run] = await account_a.claim_assignments(a.worker_id, start=True)
    b = await account_b.register_worker("pc-b", phones("shared"), hostname="b")
    assert [r.serial for r in b.refused] == ["shared"]

    make_stale(db, a.worker_id)  # A's PC lost power: its session stops heartbeating
    reply = await account_b.heartbeat(b.worker_id, phones("shared"))
    assert reply.refused == []
    row = device_row(db, "shared")
    assert row["worker_id"] == str(b.worker_id)
    assert (row["conflict_worker_id"], row["conflict_at"]) == (None, None)
    assert run_on(db, "shared") == ("pending", 2)  # A's run goes back to the queue, now B's
    [taken] = await account_b.claim_assignments(b.worker_id)
    assert (taken.assignment_id, taken.attempt) == (run.assignment_id, 2)
    assert db.counters_match() == []


async def test_the_device_moves_once_the_holder_stops_listing_it(connect: Connect, db: Db) -> None:
    account_a, account_b = await connect("worker"), await connect("worker")
    a = await account_a.register_worker("pc-a", phones("shared", "a-only"), hostname="a")
    b = await account_b.register_worker("pc-b", phones("shared"), hostname="b")
    assert [r.serial for r in b.refused] == ["shared"]

    await account_a.heartbeat(a.worker_id, phones("a-only"))  # unplugged from A
    assert (await account_b.heartbeat(b.worker_id, phones("shared"))).refused == []
    assert device_row(db, "shared")["worker_id"] == str(b.worker_id)

    # A phone A reports as offline (adb lists it, but it is not connected) is not held either.
    await account_b.heartbeat(b.worker_id, phones("shared", state="offline"))
    assert (await account_a.heartbeat(a.worker_id, phones("a-only", "shared"))).refused == []
    assert device_row(db, "shared")["worker_id"] == str(a.worker_id)


async def test_the_same_account_moves_devices_to_its_new_session(connect: Connect, db: Db) -> None:
    account, operator = await connect("worker"), await connect("operator")
    old = await account.register_worker("pc", phones("d1"), hostname="h")
    await operator.create_job(target_url="https://example.com/a", duration_sec=60)
    await account.claim_assignments(old.worker_id, start=True)
    restarted = await account.register_worker("pc", phones("d1"), hostname="h")  # kill -9, start again
    assert restarted.refused == [] and [d.serial for d in restarted.devices] == ["d1"]
    assert run_on(db, "d1") == ("pending", 2)


async def test_service_sessions_count_as_one_account(jobs: JobSystem, db: Db) -> None:
    first = await jobs.register_worker("pc-1", phones("d1"), hostname="h")
    second = await jobs.register_worker("pc-2", phones("d1"), hostname="h")
    assert second.refused == [] and device_row(db, "d1")["worker_id"] == str(second.worker_id)
    assert first.worker_id != second.worker_id


async def test_an_operator_releases_a_held_device(connect: Connect, db: Db) -> None:
    # Releasing a device is an admin's move (issue 21's roles): an admin is an operator too.
    account_a, account_b, operator = await connect("worker"), await connect("worker"), await connect("admin")
    a = await account_a.register_worker("pc-a", phones("shared"), hostname="a")
    created = await operator.create_job(target_url="https://example.com/a", duration_sec=60)
    [run] = await account_a.claim_assignments(a.worker_id, start=True)
    b = await account_b.register_worker("pc-b", phones("shared"), hostname="b")
    assert [r.serial for r in b.refused] == ["shared"]
    device_id = uuid.UUID(device_row(db, "shared")["id"])

    with pytest.raises(Forbidden):
        await account_b.release_device(device_id)  # a worker may not
    with pytest.raises(NotFound):
        await operator.release_device(uuid.uuid4())

    released = await operator.release_device(device_id)
    assert released.worker_id is None and released.status.value == "offline"
    assert released.conflict_worker_id is None
    # A's run is off the device, by the rules of lease expiry; A is told to stop it.
    row = device_row(db, "shared")
    assert (row["worker_id"], row["running_assignment_id"]) == (None, None)
    assert (await account_a.heartbeat(a.worker_id, running=[run.assignment_id])).stop == [run.assignment_id]
    assert (await operator.get_job(created.job.id)).running_count == 0
    # The next registration takes it: here B's next report.
    assert (await account_b.heartbeat(b.worker_id, phones("shared"))).refused == []
    assert device_row(db, "shared")["worker_id"] == str(b.worker_id)
    assert db.counters_match() == []


async def test_reregistration_fails_a_run_after_max_attempts(jobs: JobSystem, db: Db) -> None:
    """A URL that crashes the worker: each restart re-queues the run, until its attempts run
    out; then it fails and top-up places the job on another device."""
    db.setting("max_attempts", 3)
    devices = phones("crashy", "spare")
    session = await jobs.register_worker("pc", devices[:1], hostname="h")
    created = await jobs.create_job(target_url="https://example.com/crash", duration_sec=60,
                                    target_type="device_count", target_value=1)
    for attempt in (1, 2, 3):
        [run] = await jobs.claim_assignments(session.worker_id, start=True)
        assert run.attempt == attempt
        session = await jobs.register_worker("pc", devices[:1], hostname="h")  # the worker crashed
    assert run_on(db, "crashy") == (AssignmentStatus.FAILED.value, 3)
    detail = await jobs.get_job(created.job.id)
    assert (detail.failed_count, detail.running_count, detail.status) == (1, 0, JobStatus.ACTIVE)
    assert db.counters_match() == []

    session = await jobs.register_worker("pc", devices, hostname="h")  # a healthy phone appears
    assert run_on(db, "spare") == ("pending", 1)  # top-up replaces the failed run
    assert await jobs.claim_assignments(session.worker_id) != []
    assert db.counters_match() == []
