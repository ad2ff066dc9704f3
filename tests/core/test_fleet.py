"""Issue 19: fleet management on the real SQL. Jobs that target labels (with each target type
and top-up), operator labels, disable / drain / enable, quarantine of flaky devices, vitals
that keep a phone out until it recovers, reboots, and each device's history."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from jobsys import IllegalTransition, InvalidInput, NotFound, rpc
from jobsys.models import AssignmentStatus as A
from jobsys.models import DeviceReport, DeviceStatus, DeviceVitals
from jobsys.system import JobSystem
from tests.support.postgres import Db

URL = "https://example.com/fleet"


def phone(serial: str, **fields: Any) -> DeviceReport:
    return DeviceReport(serial=serial, simulated=True, **fields)


def device_id(db: Db, serial: str) -> uuid.UUID:
    return db.value("select id from jobsys.devices where serial = %s", (serial,))


async def status(jobs: JobSystem, serial: str) -> tuple[DeviceStatus, str | None]:
    device = next(d for d in (await jobs.list_devices()).devices if d.serial == serial)
    return device.status, device.state_reason


def serials_of(db: Db, job_id: uuid.UUID, statuses: tuple[str, ...] = ("pending", "running", "completed")) -> set[str]:
    return {r[0] for r in db.rows("select d.serial from jobsys.job_assignments a join jobsys.devices d"
                                  " on d.id = a.device_id where a.job_id = %s and a.status = any(%s)",
                                  (job_id, list(statuses)))}


async def racks(jobs: JobSystem) -> Any:
    """Six phones: a1-a3 on rack A (worker label), b1-b3 on rack B."""
    return await jobs.register_worker("pc", [phone(f"{r}{i}", labels={"rack": r.upper()})
                                             for r in "ab" for i in (1, 2, 3)], hostname="h")


# Target by label ------------------------------------------------------------------------------

async def test_each_target_type_counts_among_the_matching_devices(jobs: JobSystem, db: Db) -> None:
    await racks(jobs)
    every = (await jobs.create_job(target_url=URL, duration_sec=5, device_labels={"rack": "A"})).job
    assert (every.target_count, every.device_labels) == (3, {"rack": "A"})
    assert serials_of(db, every.id) == {"a1", "a2", "a3"}
    share = (await jobs.create_job(target_url=URL, duration_sec=5, target_type="percentage", target_value=50,
                                   device_labels={"rack": "B"})).job
    assert share.target_count == 2 and serials_of(db, share.id) <= {"b1", "b2", "b3"}
    count = (await jobs.create_job(target_url=URL, duration_sec=5, target_type="device_count", target_value=5,
                                   device_labels={"rack": "B"})).job
    assert (count.target_count, count.assigned_count) == (5, 3)  # short by 2: tops up from rack B only
    assert serials_of(db, count.id) == {"b1", "b2", "b3"}
    with pytest.raises(IllegalTransition, match="labels"):
        await jobs.create_job(target_url=URL, duration_sec=5, device_labels={"rack": "Z"})
    assert db.counters_match() == []


async def test_top_up_follows_the_filter_and_operator_labels_count(jobs: JobSystem, db: Db) -> None:
    session = await racks(jobs)
    job = (await jobs.create_job(target_url=URL, duration_sec=5, target_type="device_count", target_value=4,
                                 device_labels={"rack": "A"})).job
    assert serials_of(db, job.id) == {"a1", "a2", "a3"}
    # A new phone without the label does not get it; one an operator labels rack=A does.
    await jobs.heartbeat(session.worker_id, [phone(f"{r}{i}", labels={"rack": r.upper()})
                                             for r in "ab" for i in (1, 2, 3)] + [phone("c1")])
    await jobs.maintain(force=True)
    assert serials_of(db, job.id) == {"a1", "a2", "a3"}
    labelled = await jobs.set_device_labels(device_id(db, "c1"), {"rack": "A", "group": "qa"})
    assert labelled.operator_labels == {"rack": "A", "group": "qa"} and labelled.labels == {}
    assert serials_of(db, job.id) == {"a1", "a2", "a3", "c1"}
    assert db.counters_match() == []


async def test_bad_labels_and_worker_keys_are_refused_with_nothing_stored(jobs: JobSystem, db: Db) -> None:
    await racks(jobs)
    before = db.dump()
    with pytest.raises(InvalidInput, match="reported by the device's worker"):
        await jobs.set_device_labels(device_id(db, "a1"), {"rack": "B"})
    for bad in ({"bad key": "x"}, {"k": "v" * 257}, {f"k{i}": "v" for i in range(33)}):
        with pytest.raises(InvalidInput):
            await jobs.set_device_labels(device_id(db, "a1"), bad)
        with pytest.raises(InvalidInput):
            await jobs.create_job(target_url=URL, duration_sec=5, device_labels=bad)
    with pytest.raises(NotFound):
        await jobs.set_device_labels(uuid.uuid4(), {"rack": "A"})
    with pytest.raises(InvalidInput):  # past the model: the SQL checks the same bounds
        await jobs.transport.call(rpc.SET_DEVICE_LABELS, {"p_device_id": device_id(db, "a1"),
                                                                 "p_labels": {"bad key": "x"}})
    assert db.dump() == before


async def test_fleet_labels_count_the_choices_among_the_filter(jobs: JobSystem, db: Db) -> None:
    session = await racks(jobs)
    await jobs.set_device_labels(device_id(db, "a1"), {"group": "qa"})
    await jobs.heartbeat(session.worker_id, [phone("a1", labels={"rack": "A"}), phone("a2", labels={"rack": "A"}),
                                             phone("a3", labels={"rack": "A"}, state="offline")]
                         + [phone(f"b{i}", labels={"rack": "B"}) for i in (1, 2, 3)])
    everything = await jobs.fleet_labels()
    assert (everything.healthy, everything.total) == (5, 6)
    pairs = {(p.key, p.value): (p.total, p.healthy) for p in everything.labels}
    assert pairs[("rack", "A")] == (3, 2) and pairs[("rack", "B")] == (3, 3) and pairs[("group", "qa")] == (1, 1)
    narrowed = await jobs.fleet_labels({"rack": "A"})
    assert (narrowed.healthy, narrowed.total) == (2, 3)
    assert {(p.key, p.value) for p in narrowed.labels} == {("rack", "A"), ("group", "qa")}


# Disable, drain, enable --------------------------------------------------------------------

async def test_disable_stops_the_running_run_and_another_device_takes_it(jobs: JobSystem, db: Db) -> None:
    session = await jobs.register_worker("pc", [phone("d1"), phone("d2")], hostname="h")
    job = (await jobs.create_job(target_url=URL, duration_sec=60, target_type="device_count", target_value=1)).job
    [run] = await jobs.claim_assignments(session.worker_id, start=True)
    disabled = await jobs.set_device_state(run.device_id, "disabled")
    assert (disabled.status, disabled.state_reason) == (DeviceStatus.DISABLED, "disabled by an operator")
    assert disabled.current_job_id is None
    other = "d2" if run.serial == "d1" else "d1"
    assert serials_of(db, job.id, ("pending",)) == {other}  # top-up placed it on the other phone
    reply = await jobs.heartbeat(session.worker_id, running=[run.assignment_id])
    assert reply.stop == [run.assignment_id]  # the worker is told to stop it
    late = await jobs.finish_assignments(session.worker_id, [
        {"assignment_id": run.assignment_id, "attempt": run.attempt, "outcome": "completed"}])
    assert late[0].stale  # its late report counts for nothing
    assert db.counters_match() == []
    await jobs.set_device_state(run.device_id, "enabled")
    assert (await status(jobs, run.serial))[0] is DeviceStatus.IDLE


async def test_drain_lets_the_run_finish_then_disables(jobs: JobSystem, db: Db) -> None:
    session = await jobs.register_worker("pc", [phone("d1"), phone("d2")], hostname="h")
    await jobs.create_job(target_url=URL, duration_sec=60, target_type="device_count", target_value=1)
    queued = (await jobs.create_job(target_url=URL + "/2", duration_sec=60)).job
    [first] = await jobs.claim_assignments(session.worker_id, limit=1, start=True)
    draining = await jobs.set_device_state(first.device_id, "draining")
    assert draining.status is DeviceStatus.DRAINING and draining.current_job_id == first.job_id
    # Its queued run of the second job moved on; the running one goes on.
    assert first.serial not in serials_of(db, queued.id, ("pending",))
    await jobs.complete_assignment(first.assignment_id, first.attempt, {})
    await jobs.maintain(force=True)
    assert await status(jobs, first.serial) == (DeviceStatus.DISABLED, "drained: disabled by an operator")
    other = "d2" if first.serial == "d1" else "d1"
    idle = await jobs.set_device_state(device_id(db, other), "draining")  # nothing running: disabled at once
    assert idle.status is DeviceStatus.DISABLED
    assert db.counters_match() == []
    history = [e.state for e in (await jobs.get_device(first.device_id)).events if e.event == "state"]
    assert history[:2] == ["disabled", "draining"]  # newest first


async def test_a_bad_state_is_refused(jobs: JobSystem, db: Db) -> None:
    await jobs.register_worker("pc", [phone("d1")], hostname="h")
    before = db.dump()
    with pytest.raises(InvalidInput):
        await jobs.set_device_state(device_id(db, "d1"), "broken")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        await jobs.transport.call(rpc.SET_DEVICE_STATE, {"p_device_id": device_id(db, "d1"), "p_state": "x"})
    with pytest.raises(NotFound):
        await jobs.set_device_state(uuid.uuid4(), "disabled")
    assert db.dump() == before


# Quarantine ------------------------------------------------------------------------------------

async def _fail_on(jobs: JobSystem, session: Any, serial: str, error: str) -> None:
    runs = [r for r in await jobs.claim_assignments(session.worker_id, start=True) if r.serial == serial]
    for run in runs:
        await jobs.fail_assignment(run.assignment_id, run.attempt, error)


async def test_three_failures_in_a_row_quarantine_a_phone_until_enabled(jobs: JobSystem, db: Db) -> None:
    session = await jobs.register_worker("pc", [phone("flaky"), phone("good")], hostname="h")
    for i in range(4):
        await jobs.create_job(target_url=f"{URL}/{i}", duration_sec=5)
    for i in range(2):
        await _fail_on(jobs, session, "flaky", f"crash {i}")
    assert (await status(jobs, "flaky"))[0] is DeviceStatus.IDLE
    # A success ends the run of failures; three more in a row quarantine it.
    [ok] = [r for r in await jobs.claim_assignments(session.worker_id, start=True) if r.serial == "flaky"]
    await jobs.complete_assignment(ok.assignment_id, ok.attempt, {})
    for i in range(3):
        await jobs.create_job(target_url=f"{URL}/more{i}", duration_sec=5)
    for i in range(3):
        await _fail_on(jobs, session, "flaky", f"browser died {i}")
    state, reason = await status(jobs, "flaky")
    assert state is DeviceStatus.QUARANTINED
    assert reason == "3 runs failed in a row (last: browser died 2)"
    await jobs.maintain(force=True)  # its queue moves on
    assert db.value("select count(*) from jobsys.job_assignments a join jobsys.devices d on d.id = a.device_id"
                    " where d.serial = 'flaky' and a.status = 'pending'") == 0
    await jobs.heartbeat(session.worker_id, [phone("flaky"), phone("good")])  # the worker cannot lift it
    assert (await status(jobs, "flaky"))[0] is DeviceStatus.QUARANTINED
    enabled = await jobs.set_device_state(device_id(db, "flaky"), "enabled")
    assert (enabled.status, enabled.failure_streak, enabled.quarantined_until) == (DeviceStatus.IDLE, 0, None)
    assert db.counters_match() == []


async def test_quarantine_ends_after_its_cool_down_and_the_setting_turns_it_off(jobs: JobSystem, db: Db) -> None:
    db.setting("quarantine_after_failures", 1)
    session = await jobs.register_worker("pc", [phone("flaky")], hostname="h")
    await jobs.create_job(target_url=URL, duration_sec=5)
    await _fail_on(jobs, session, "flaky", "boom")
    device = next(d for d in (await jobs.list_devices()).devices if d.serial == "flaky")
    assert device.status is DeviceStatus.QUARANTINED and device.quarantined_until is not None
    db.run("update jobsys.devices set quarantined_until = now() - interval '1 second' where serial = 'flaky'")
    await jobs.maintain(force=True)
    assert await status(jobs, "flaky") == (DeviceStatus.IDLE, None)
    db.setting("quarantine_after_failures", 0)
    await jobs.create_job(target_url=URL + "/2", duration_sec=5)
    await _fail_on(jobs, session, "flaky", "boom again")
    assert (await status(jobs, "flaky"))[0] is DeviceStatus.IDLE


# Vitals ------------------------------------------------------------------------------------------

async def test_low_battery_and_heat_keep_a_phone_out_until_it_recovers(jobs: JobSystem, db: Db) -> None:
    session = await jobs.register_worker("pc", [phone("p1", vitals=DeviceVitals(battery_pct=12, charging=True)),
                                                phone("p2", vitals=DeviceVitals(battery_pct=80, temperature_c=47.5))],
                                         hostname="h")
    assert await status(jobs, "p1") == (DeviceStatus.LOW_BATTERY, "battery 12 % (below 15 %)")
    assert await status(jobs, "p2") == (DeviceStatus.OVERHEATED, "battery 47.5 °C (above 45 °C)")
    with pytest.raises(IllegalTransition):  # no phone may take a run
        await jobs.create_job(target_url=URL, duration_sec=5)
    # A report without vitals keeps the last reading; a better one lets the phone back.
    await jobs.heartbeat(session.worker_id, [phone("p1"), phone("p2", vitals=DeviceVitals(temperature_c=40.0))])
    assert (await status(jobs, "p1"))[0] is DeviceStatus.LOW_BATTERY
    assert await status(jobs, "p2") == (DeviceStatus.IDLE, None)
    assert (await jobs.create_job(target_url=URL, duration_sec=5)).job.target_count == 1
    detail = await jobs.get_device(device_id(db, "p2"))
    assert detail.vitals is not None and detail.vitals.temperature_c == 40.0
    assert [s.temperature_c for s in detail.vitals_history] == [47.5]  # at most one sample a minute
    assert [(e.state, e.detail) for e in detail.events if e.event == "state"] == [("online", None)]


async def test_bad_vitals_are_refused_whole(jobs: JobSystem, db: Db) -> None:
    session = await jobs.register_worker("pc", [phone("p1")], hostname="h")
    before = db.dump()
    for vitals in ({"battery_pct": 101}, {"battery_pct": 50.5}, {"temperature_c": 400}, {"charging": "yes"},
                   {"smell": "smoke"}, [1]):
        with pytest.raises(InvalidInput, match="p1"):
            await jobs.transport.call(rpc.HEARTBEAT, {
                "p_worker_id": session.worker_id, "p_devices": [{"serial": "p1", "vitals": vitals}]})
    assert db.dump() == before


async def test_unauthorized_says_what_to_do_on_the_phone(jobs: JobSystem) -> None:
    await jobs.register_worker("pc", [phone("u1", state="unauthorized", vitals=DeviceVitals(adb_state="unauthorized")),
                                      phone("u2", state="unauthorized",
                                            vitals=DeviceVitals(adb_state="no permissions"))], hostname="h")
    assert await status(jobs, "u1") == (DeviceStatus.UNAUTHORIZED, "adb: unauthorized: allow USB debugging on the phone")
    state, reason = await status(jobs, "u2")
    assert state is DeviceStatus.UNAUTHORIZED and reason is not None and "no permissions" in reason


# Reboot ------------------------------------------------------------------------------------------

async def test_reboot_is_asked_of_the_worker_and_answered(jobs: JobSystem, db: Db) -> None:
    session = await jobs.register_worker("pc", [phone("r1"), phone("r2")], hostname="h")
    await jobs.create_job(target_url=URL, duration_sec=60, target_type="device_count", target_value=1)
    [busy] = await jobs.claim_assignments(session.worker_id, start=True)
    with pytest.raises(IllegalTransition, match="drain"):
        await jobs.request_device_reboot(busy.device_id)
    idle = device_id(db, "r2" if busy.serial == "r1" else "r1")
    asked = await jobs.request_device_reboot(idle)
    assert asked.reboot_requested_at is not None
    assert (await jobs.heartbeat(session.worker_id)).reboot == [idle]  # the polling path
    other = await jobs.register_worker("other-pc", [], hostname="h2")
    with pytest.raises(NotFound):  # only the session holding the phone answers
        await jobs.device_rebooted(other.worker_id, idle)
    await jobs.device_rebooted(session.worker_id, idle)
    assert (await jobs.heartbeat(session.worker_id)).reboot == []
    detail = await jobs.get_device(idle)
    assert detail.rebooted_at is not None
    assert [e.event for e in detail.events][:2] == ["rebooted", "reboot_requested"]
    await jobs.stop_worker(session.worker_id)
    with pytest.raises(IllegalTransition, match="no worker"):
        await jobs.request_device_reboot(idle)


async def test_device_page_lists_its_runs(jobs: JobSystem, db: Db) -> None:
    session = await jobs.register_worker("pc", [phone("d1")], hostname="h")
    job = (await jobs.create_job(target_url=URL, duration_sec=5, title="first")).job
    [run] = await jobs.claim_assignments(session.worker_id, start=True)
    await jobs.complete_assignment(run.assignment_id, run.attempt, {"evidence_path": "/ev/d1.png"})
    detail = await jobs.get_device(run.device_id)
    assert [(r.job_id, r.job_title, r.status) for r in detail.runs] == [(job.id, "first", A.COMPLETED)]
    with pytest.raises(NotFound):
        await jobs.get_device(uuid.uuid4())


# The REST edge -----------------------------------------------------------------------------------

async def test_rest_patch_reboot_detail_and_label_choices(jobs: JobSystem, db: Db, api: Any) -> None:
    await racks(jobs)
    a1 = device_id(db, "a1")
    labelled = await api.patch(f"/api/devices/{a1}", json={"labels": {"group": "qa"}})
    assert labelled.status_code == 200 and labelled.json()["operator_labels"] == {"group": "qa"}
    drained = await api.patch(f"/api/devices/{a1}", json={"drain": True})
    assert drained.json()["status"] == "disabled"  # it ran nothing: disabled at once
    enabled = await api.patch(f"/api/devices/{a1}", json={"state": "enabled"})
    assert enabled.json()["status"] == "idle"
    rebooting = await api.post(f"/api/devices/{a1}/reboot")
    assert rebooting.status_code == 202 and rebooting.json()["reboot_requested_at"]
    detail = (await api.get(f"/api/devices/{a1}")).json()
    assert [e["event"] for e in detail["events"]][:1] == ["reboot_requested"]
    choices = (await api.get("/api/device-labels", params=[("label", "rack=A")])).json()
    assert choices["healthy"] == 3 and {"key": "group", "value": "qa", "total": 1, "healthy": 1} in choices["labels"]
    created = await api.post("/api/jobs", json={"target_url": URL, "duration_sec": 5,
                                                "device_labels": {"group": "qa"}})
    assert created.status_code == 201 and created.json()["job"]["target_count"] == 1


async def test_rest_refuses_bad_device_bodies_with_nothing_stored(jobs: JobSystem, db: Db, api: Any) -> None:
    await racks(jobs)
    a1 = device_id(db, "a1")
    before = db.dump()
    for body in ({}, {"state": "broken"}, {"drain": False}, {"state": "disabled", "drain": True},
                 {"labels": {"bad key": "x"}}, {"labels": {"rack": "B"}}, {"labels": {"k": 1}}, {"colour": "red"}):
        response = await api.patch(f"/api/devices/{a1}", json=body)
        assert response.status_code == 422 and response.json()["error"]["code"], body
    assert (await api.patch("/api/devices/not-a-uuid", json={"state": "enabled"})).status_code == 400
    assert (await api.patch(f"/api/devices/{uuid.uuid4()}", json={"state": "enabled"})).status_code == 404
    assert (await api.get("/api/device-labels", params=[("label", "no-equals")])).status_code == 422
    bad_job = await api.post("/api/jobs", json={"target_url": URL, "duration_sec": 5, "device_labels": {"a b": "c"}})
    assert bad_job.status_code == 422
    assert db.dump() == before


async def test_a_device_that_loses_a_label_gives_back_the_runs_queued_for_it(jobs: JobSystem, db: Db) -> None:
    session = await jobs.register_worker("pc", [phone("c1"), phone("c2")], hostname="h")
    await jobs.set_device_labels(device_id(db, "c1"), {"rack": "A"})
    job = (await jobs.create_job(target_url=URL, duration_sec=5, device_labels={"rack": "A"})).job
    assert serials_of(db, job.id, ("pending",)) == {"c1"}
    await jobs.set_device_labels(device_id(db, "c1"), {})
    assert serials_of(db, job.id, ("pending",)) == set()
    assert await jobs.claim_assignments(session.worker_id) == []
    await jobs.set_device_labels(device_id(db, "c2"), {"rack": "A"})  # another phone now matches
    assert serials_of(db, job.id, ("pending",)) == {"c2"}
    assert db.counters_match() == []


async def test_a_run_claimed_as_its_device_was_disabled_is_taken_back_by_upkeep(jobs: JobSystem, db: Db) -> None:
    session = await jobs.register_worker("pc", [phone("d1"), phone("d2")], hostname="h")
    job = (await jobs.create_job(target_url=URL, duration_sec=60, target_type="device_count", target_value=1)).job
    [run] = await jobs.claim_assignments(session.worker_id, start=True)
    # The race set_device_state cannot close by itself: the claim committed after its look.
    db.run("update jobsys.devices set state = 'disabled' where id = %s", (run.device_id,))
    await jobs.maintain(force=True)
    await jobs.maintain(force=True)
    other = "d2" if run.serial == "d1" else "d1"
    assert serials_of(db, job.id, ("pending", "running")) == {other}
    assert (await jobs.heartbeat(session.worker_id, running=[run.assignment_id])).stop == [run.assignment_id]
    assert db.counters_match() == []
