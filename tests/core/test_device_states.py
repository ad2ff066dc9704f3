"""Device states (issue 16): workers report what they see (online, offline, error,
unauthorized); disabling is an operator's decision, made and undone only with
set_device_state. Device labels are bounded, in SQL and in the worker's report model."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pydantic
import pytest

from jobsys import InvalidInput, NotFound, rpc
from jobsys.models import DeviceReport, DeviceStatus
from jobsys.system import JobSystem
from tests.support.postgres import Db

WORKER = {"sub": str(uuid.uuid4()), "role": "authenticated", "app_metadata": {"jobsys_role": "worker"}}


def report(serial: str, **fields: Any) -> DeviceReport:
    return DeviceReport(serial=serial, simulated=True, **fields)


async def status_of(jobs: JobSystem, serial: str) -> tuple[str, DeviceStatus]:
    device = next(d for d in (await jobs.list_devices()).devices if d.serial == serial)
    return device.state, device.status


def device_id(db: Db, serial: str) -> uuid.UUID:
    return db.value("select id from jobsys.devices where serial = %s", (serial,))


def sql_register(db: Db, devices: list[dict[str, Any]]) -> None:
    """register_worker called directly, as a worker account, with a raw device list."""
    with psycopg.connect(db.url) as conn:
        conn.execute("set local role authenticated")
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(WORKER),))
        conn.execute("select jobsys.register_worker('pc', 'h', %s::jsonb)", (json.dumps(devices),))


def sql_error(db: Db, devices: list[dict[str, Any]]) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as info:
        sql_register(db, devices)
    return info.value


# Disabled: an operator's decision -------------------------------------------------------------

async def test_a_worker_report_of_disabled_is_refused_whole(jobs: JobSystem, db: Db) -> None:
    session = await jobs.register_worker("pc", [report("d1"), report("d2")], hostname="h")
    before = db.dump()
    error = sql_error(db, [{"serial": "d1"}, {"serial": "d2", "state": "disabled"}])
    assert error.sqlstate == "JS400"
    assert "operator" in error.diag.message_primary and "d2" in error.diag.message_primary
    with pytest.raises(InvalidInput):
        await jobs.transport.call(rpc.HEARTBEAT, {  # past the facade's model, which refuses it first
            "p_worker_id": session.worker_id, "p_devices": [{"serial": "d2", "state": "disabled"}]})
    assert db.dump() == before  # nothing stored, not even the heartbeat
    with pytest.raises(pydantic.ValidationError, match="operator"):
        DeviceReport(serial="d2", state="disabled")  # type: ignore[arg-type]


async def test_operators_disable_and_enable_and_workers_cannot_undo_it(jobs: JobSystem, db: Db) -> None:
    session = await jobs.register_worker("pc", [report("d1"), report("d2")], hostname="h")
    disabled = await jobs.set_device_state(device_id(db, "d1"), "disabled")
    assert (disabled.serial, disabled.state, disabled.status) == ("d1", "disabled", DeviceStatus.DISABLED)

    # The worker keeps reporting it online: it stays disabled and takes no new runs.
    await jobs.heartbeat(session.worker_id, [report("d1"), report("d2", model="changed")])
    await jobs.register_worker("pc", [report("d1"), report("d2")], hostname="h")
    assert await status_of(jobs, "d1") == ("disabled", DeviceStatus.DISABLED)
    created = await jobs.create_job(target_url="https://example.com/a", duration_sec=5)
    assert (created.job.target_count, created.assigned) == (1, 1)
    assert db.value("select count(*) from jobsys.job_assignments a join jobsys.devices d on d.id = a.device_id"
                    " where d.serial = 'd1'") == 0

    enabled = await jobs.set_device_state(device_id(db, "d1"), "enabled")
    assert (enabled.state, enabled.status) == ("online", DeviceStatus.IDLE)
    # Top-up gives the job's next run to the enabled device when the job is short; a new job takes it.
    second = await jobs.create_job(target_url="https://example.com/b", duration_sec=5)
    assert second.assigned == 2


async def test_enabling_returns_the_device_to_what_its_worker_reported(jobs: JobSystem, db: Db) -> None:
    session = await jobs.register_worker("pc", [report("d1", state="error")], hostname="h")
    await jobs.set_device_state(device_id(db, "d1"), "disabled")
    await jobs.heartbeat(session.worker_id, [report("d1", state="unauthorized")])
    enabled = await jobs.set_device_state(device_id(db, "d1"), "enabled")
    assert (enabled.state, enabled.status) == ("unauthorized", DeviceStatus.UNAUTHORIZED)

    await jobs.set_device_state(device_id(db, "d1"), "disabled")
    await jobs.stop_worker(session.worker_id)  # no live session lists it any more
    assert (await jobs.set_device_state(device_id(db, "d1"), "enabled")).status is DeviceStatus.OFFLINE


async def test_disabling_moves_the_devices_queue_elsewhere(jobs: JobSystem, db: Db) -> None:
    session = await jobs.register_worker("pc", [report("d1")], hostname="h")
    created = await jobs.create_job(target_url="https://example.com/a", duration_sec=5)
    await jobs.set_device_state(device_id(db, "d1"), "disabled")
    assert db.value("select count(*) from jobsys.job_assignments where job_id = %s", (created.job.id,)) == 0
    assert await jobs.claim_assignments(session.worker_id) == []
    await jobs.register_worker("pc", [report("d1"), report("d2")], hostname="h")  # a new phone
    assert db.value("select d.serial from jobsys.job_assignments a join jobsys.devices d on d.id = a.device_id"
                    " where a.job_id = %s", (created.job.id,)) == "d2"
    assert db.counters_match() == []


async def test_set_device_state_checks_role_state_and_device(jobs: JobSystem, db: Db) -> None:
    await jobs.register_worker("pc", [report("d1")], hostname="h")
    with pytest.raises(InvalidInput):
        await jobs.set_device_state(device_id(db, "d1"), "offline")
    with pytest.raises(NotFound):
        await jobs.set_device_state(uuid.uuid4(), "disabled")
    with psycopg.connect(db.url) as conn, pytest.raises(psycopg.Error) as info:
        conn.execute("set local role authenticated")
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(WORKER),))
        conn.execute("select jobsys.set_device_state(%s, 'disabled')", (device_id(db, "d1"),))
    assert info.value.sqlstate == "JS403"


# Unauthorized: adb lists the phone but the PC is not allowed to use it -------------------

async def test_unauthorized_is_a_state_a_worker_reports_and_it_is_not_healthy(jobs: JobSystem, db: Db) -> None:
    session = await jobs.register_worker("pc", [report("d1", state="unauthorized"), report("d2")], hostname="h")
    assert await status_of(jobs, "d1") == ("unauthorized", DeviceStatus.UNAUTHORIZED)
    summary = (await jobs.list_devices()).summary
    assert (summary.connected, summary.error, summary.unauthorized) == (1, 0, 1)
    created = await jobs.create_job(target_url="https://example.com/a", duration_sec=5)
    assert created.job.target_count == 1
    assert [run.serial for run in await jobs.claim_assignments(session.worker_id)] == ["d2"]


# Labels: bounded -------------------------------------------------------------------------------

LABEL_CASES: dict[str, tuple[Any, str]] = {
    "too many": ({f"k{i}": "v" for i in range(33)}, "32"),
    "empty key": ({"": "v"}, "key"),
    "long key": ({"k" * 65: "v"}, "key"),
    "odd key": ({"bad key!": "v"}, "key"),
    "long value": ({"k": "v" * 257}, "256"),
    "not a string": ({"k": 5}, "string"),
    "too big": ({f"k{i:02d}" + "x" * 60: "v" * 200 for i in range(20)}, "4096"),
    "not an object": (["k"], "object"),
}


@pytest.mark.parametrize("case", LABEL_CASES)
async def test_labels_are_bounded_in_sql(db: Db, case: str) -> None:
    labels, rule = LABEL_CASES[case]
    before = db.dump()
    error = sql_error(db, [{"serial": "ok"}, {"serial": "phone-7", "labels": labels}])
    assert error.sqlstate == "JS400"
    assert "phone-7" in error.diag.message_primary and rule in error.diag.message_primary
    detail = json.loads(error.diag.message_detail or "{}")
    assert detail["serial"] == "phone-7" and detail["rule"]
    assert db.dump() == before


@pytest.mark.parametrize("case", LABEL_CASES)
def test_labels_are_bounded_in_the_report_model(case: str) -> None:
    labels, rule = LABEL_CASES[case]
    with pytest.raises(pydantic.ValidationError, match=rule):
        DeviceReport(serial="phone-7", labels=labels)


async def test_labels_at_the_bounds_are_stored(jobs: JobSystem, db: Db) -> None:
    labels = {f"k{i:02d}.a:b/c-d_e": "v" * 100 for i in range(32)}
    assert len(json.dumps(labels).encode()) <= 4096
    await jobs.register_worker("pc", [report("d1", labels=labels)], hostname="h")
    assert db.value("select labels from jobsys.devices where serial = 'd1'") == labels


async def test_a_serial_reported_twice_is_refused(db: Db) -> None:
    assert sql_error(db, [{"serial": "d1"}, {"serial": "d1"}]).sqlstate == "JS400"
