"""The transport contract: every facade call and its errors, the same assertions against
the Postgres transport and the Supabase transport (through our PostgREST and Realtime
doubles), as the same real users: an operator, two workers, anon, the service role."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from jobsys import Forbidden, IllegalTransition, InvalidInput, JobsysError, NotFound, StaleRun, rpc
from jobsys.events import DASHBOARD_TOPIC, ChannelState, Event, EventName, worker_topic
from jobsys.models import DeviceReport, JobStatus, JobUpdate, RunReport
from jobsys.system import JobSystem
from tests.support.waiting import wait_until
from tests.transport.conftest import Sides
from tests.transport.tokens import ANON, SERVICE, Identity, user

OPERATOR = user("operator", "operator")
WORKER_A = user("worker-a", "worker")
WORKER_B = user("worker-b", "worker")
NO_ROLE = user("nobody", None)


def devices(prefix: str, count: int) -> list[DeviceReport]:
    return [DeviceReport(serial=f"{prefix}-{i}", simulated=True) for i in range(count)]


async def as_(sides: Sides, identity: Identity) -> JobSystem:
    return await sides.as_(identity)


async def test_job_calls_and_their_results(sides: Sides) -> None:
    operator, worker = await as_(sides, OPERATOR), await as_(sides, WORKER_A)
    session = await worker.register_worker("a", devices("a", 3), hostname="pc-a")
    created = await operator.create_job(target_url="https://example.com/page?x=1", duration_sec=5,
                                        target_type="percentage", target_value=50)
    assert (created.assigned, created.job.target_count, created.job.title) == (2, 2, "example.com/page")
    job_id = created.job.id

    listed = await operator.list_jobs(status=JobStatus.ACTIVE, q="example")
    assert [j.id for j in listed.jobs] == [job_id]
    assert (await operator.list_jobs(status="paused")).jobs == []
    detail = await operator.get_job(str(job_id))  # ids as text work too
    assert {a.serial for a in detail.assignments} <= {d.serial for d in session.devices}

    assert (await operator.rename_job(job_id, "renamed")).title == "renamed"
    assert (await operator.pause_job(job_id)).status is JobStatus.PAUSED
    updated = await operator.update_job(job_id, JobUpdate(title="again", status="active"))
    assert (updated.title, updated.status) == ("again", JobStatus.ACTIVE)
    assert (await operator.cancel_job(job_id)).status is JobStatus.CANCELLED

    devices_view = await operator.list_devices()
    assert len(devices_view.devices) == 3
    assert await operator.delete_job(job_id) is None
    with pytest.raises(NotFound):
        await operator.get_job(job_id)


async def test_worker_calls_and_their_results(sides: Sides) -> None:
    operator, worker = await as_(sides, OPERATOR), await as_(sides, WORKER_A)
    session = await worker.register_worker("a", devices("a", 2))
    assert sorted(d.serial for d in await worker.worker_devices(session.worker_id)) == ["a-0", "a-1"]
    job = (await operator.create_job(target_url="https://example.com", duration_sec=5)).job

    claimed = await worker.claim_assignments(session.worker_id, [d.id for d in session.devices], limit=5)
    assert sorted(c.serial for c in claimed) == ["a-0", "a-1"] and all(c.job_id == job.id for c in claimed)
    first, second = claimed
    await worker.start_assignment(first.assignment_id, first.attempt)
    reply = await worker.heartbeat(session.worker_id, devices("a", 2), running=[first.assignment_id, 999_999])
    assert reply.stop == [999_999]
    done = await worker.complete_assignment(first.assignment_id, first.attempt, {"elapsed_sec": 5})
    assert done.status.value == "completed"
    released = await worker.release_assignment(second.assignment_id, second.attempt, "device busy")
    assert released.status.value == "pending"
    [again] = await worker.claim_assignments(session.worker_id)
    assert (again.assignment_id, again.attempt) == (second.assignment_id, second.attempt + 1)
    failed = await worker.fail_assignment(again.assignment_id, again.attempt, "screen off", retry=False,
                                          result={"foreground": None})
    assert failed.status.value == "failed"

    with pytest.raises(StaleRun):
        await worker.complete_assignment(first.assignment_id, first.attempt)
    with pytest.raises(NotFound):
        await worker.start_assignment(123_456_789, 1)
    await worker.stop_worker(session.worker_id)
    detail = await operator.get_job(job.id)
    assert (detail.completed_count, detail.failed_count) == (1, 1)


async def test_batched_worker_calls_and_their_results(sides: Sides) -> None:
    operator, worker = await as_(sides, OPERATOR), await as_(sides, WORKER_A)
    session = await worker.register_worker("a", devices("a", 3))
    job = (await operator.create_job(target_url="https://example.com", duration_sec=5)).job
    runs = await worker.claim_assignments(session.worker_id, start=True)
    assert len(runs) == 3 and all(r.started for r in runs)
    answers = await worker.finish_assignments(session.worker_id, [
        RunReport(assignment_id=runs[0].assignment_id, attempt=1, outcome="completed", result={"elapsed_sec": 5}),
        RunReport(assignment_id=runs[1].assignment_id, attempt=1, outcome="failed", error="screen off"),
        RunReport(assignment_id=runs[2].assignment_id, attempt=9, outcome="completed"),  # not current: stale
    ])
    assert [(a.status.value if a.status else None, a.stale) for a in answers] == [
        ("completed", False), ("failed", False), (None, True)]
    with pytest.raises(InvalidInput):
        await worker.transport.call(rpc.FINISH_ASSIGNMENTS, {"p_worker_id": str(session.worker_id),
                                                             "p_reports": [{"assignment_id": 1}]})
    worker_b = await as_(sides, WORKER_B)
    with pytest.raises(Forbidden):
        await worker_b.finish_assignments(session.worker_id, [
            RunReport(assignment_id=runs[2].assignment_id, attempt=1, outcome="completed")])
    detail = await operator.get_job(job.id)
    assert (detail.completed_count, detail.failed_count, detail.running_count) == (1, 1, 1)


async def test_worker_heartbeat_runs_maintenance(sides: Sides) -> None:
    worker = await as_(sides, WORKER_A)
    session = await worker.register_worker("a", devices("a", 1))
    sides.db.run("update jobsys.maintenance_state set last_run_at = '-infinity'")
    reply = await worker.heartbeat(session.worker_id)
    assert reply.maintenance.get("ran") is True


async def test_upkeep_calls(sides: Sides) -> None:
    operator = await as_(sides, OPERATOR)
    assert await operator.rescue_expired_leases() == 0
    assert await operator.mark_stale() == 0
    assert isinstance(await operator.maintain(force=True), dict)


async def test_conflicts_carry_code_message_and_details(sides: Sides) -> None:
    operator, worker = await as_(sides, OPERATOR), await as_(sides, WORKER_A)
    await worker.register_worker("a", devices("a", 1))
    job = (await operator.create_job(target_url="https://example.com", duration_sec=5)).job
    await operator.cancel_job(job.id)
    with pytest.raises(IllegalTransition) as info:
        await operator.pause_job(job.id)
    body = info.value.as_dict()
    assert (body["code"], body["details"]["status"]) == ("conflict", "cancelled")
    assert "cancelled" in body["message"]
    with pytest.raises(NotFound) as missing:
        await operator.pause_job(uuid.UUID(int=0))
    assert missing.value.code == "not_found" and missing.value.message


async def test_roles_are_enforced_the_same_way(sides: Sides) -> None:
    operator, worker_a, worker_b = (await as_(sides, OPERATOR), await as_(sides, WORKER_A),
                                    await as_(sides, WORKER_B))
    anon, nobody, service = await as_(sides, ANON), await as_(sides, NO_ROLE), await as_(sides, SERVICE)
    session_a = await worker_a.register_worker("a", devices("a", 1))
    job = (await operator.create_job(target_url="https://example.com", duration_sec=5)).job

    forbidden = [
        worker_a.pause_job(job.id),  # a worker is not an operator
        worker_a.create_job(target_url="https://example.com", duration_sec=5),
        worker_b.claim_assignments(session_a.worker_id),  # nor another worker
        worker_b.heartbeat(session_a.worker_id),
        operator.heartbeat(session_a.worker_id),  # an operator cannot act as a worker
        operator.register_worker("op", devices("op", 1)),
        nobody.list_jobs(),  # signed in without a jobsys role
        anon.list_jobs(),  # no execute grant at all
        anon.register_worker("x", devices("x", 1)),
    ]
    for attempt in forbidden:
        with pytest.raises(Forbidden):
            await attempt
    assert len((await service.list_jobs()).jobs) == 1  # the service role does everything
    assert len(await worker_a.claim_assignments(session_a.worker_id)) == 1


BAD_SQL_CALLS: list[tuple[rpc.SqlFunction, dict[str, Any]]] = [
    (rpc.CREATE_JOB, {"p_target_url": "ftp://example.com", "p_duration_sec": 5, "p_target_type": "all_devices"}),
    (rpc.CREATE_JOB, {"p_target_url": "https://example.com", "p_duration_sec": 0, "p_target_type": "all_devices"}),
    (rpc.PAUSE_JOB, {"p_job_id": "not-a-uuid"}),
    (rpc.LIST_JOBS, {"p_status": "running"}),
    (rpc.PAUSE_JOB, {"p_job_id": str(uuid.uuid4()), "p_surprise": 1}),  # unknown argument
]


@pytest.mark.parametrize("function, args", BAD_SQL_CALLS, ids=lambda v: getattr(v, "name", None))
async def test_bad_input_below_the_facade_is_invalid_input(sides: Sides, function: rpc.SqlFunction,
                                                           args: dict[str, Any]) -> None:
    operator = await as_(sides, OPERATOR)
    before = sides.db.dump()
    with pytest.raises(InvalidInput) as info:
        await operator.transport.call(function, args)
    assert info.value.message
    assert sides.db.dump() == before


async def test_bad_input_at_the_facade_stores_nothing(sides: Sides) -> None:
    operator = await as_(sides, OPERATOR)
    before = sides.db.dump()
    with pytest.raises(InvalidInput):
        await operator.create_job(target_url="javascript:alert(1)", duration_sec=5)
    with pytest.raises(InvalidInput):
        await operator.get_job("not-a-uuid")
    assert sides.db.dump() == before


async def test_errors_are_jobsys_errors(sides: Sides) -> None:
    operator = await as_(sides, OPERATOR)
    with pytest.raises(JobsysError) as info:
        await operator.delete_job(uuid.uuid4())
    assert type(info.value) is NotFound


async def test_push_events_and_channel_state(sides: Sides) -> None:
    operator, worker = await as_(sides, OPERATOR), await as_(sides, WORKER_A)
    session = await worker.register_worker("a", devices("a", 1))
    seen: list[Event] = []
    states: dict[str, list[ChannelState]] = {"dashboard": [], "worker": []}

    async def on_event(event: Event) -> None:  # async handlers are awaited on both transports
        seen.append(event)  # (an un-awaited coroutine never runs its body: seen stays empty)

    dashboard = await operator.subscribe_dashboard(on_event, states["dashboard"].append)
    own = await worker.subscribe_worker(session.worker_id, on_event, states["worker"].append)
    await wait_until(lambda: states["dashboard"][-1:] == states["worker"][-1:] == [ChannelState.SUBSCRIBED],
                     what="both subscriptions report SUBSCRIBED")
    assert dashboard.state is own.state is ChannelState.SUBSCRIBED

    job = (await operator.create_job(target_url="https://example.com", duration_sec=5)).job
    await wait_until(lambda: {(e.topic, e.event) for e in seen} >= {
        (DASHBOARD_TOPIC, EventName.JOB_PROGRESS), (worker_topic(session.worker_id), EventName.ASSIGNMENT)},
        what="job_progress and assignment")
    progress = next(e for e in seen if e.event == EventName.JOB_PROGRESS)
    assert progress.payload["job_id"] == str(job.id) and progress.payload["assigned_count"] == 1
    await operator.pause_job(job.id)
    await wait_until(lambda: any(e.event == EventName.JOB_PAUSED for e in seen), what="job_paused")
    await dashboard.close()
    await own.close()
