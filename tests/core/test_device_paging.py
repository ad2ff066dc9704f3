"""Issue 20, devices at scale, on the real SQL: list_devices_page walks the fleet by serial
with a cursor (every device exactly once, also while devices change under the walk), filters
(state, PC, labels, serial search) agree with the full list, device_groups counts per PC
from one aggregate, and bad input is refused with nothing changed."""

from __future__ import annotations

import pytest

from jobsys import InvalidInput, rpc
from jobsys.models import NO_WORKER, Device, DeviceReport, DeviceStatus
from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.support.postgres import Db


async def walk(jobs: JobSystem, limit: int, **kwargs: object) -> list[Device]:
    """Every page of a filter, following next_cursor to the end."""
    seen: list[Device] = []
    after: str | None = None
    while True:
        page = await jobs.list_devices_page(after=after, limit=limit, **kwargs)  # type: ignore[arg-type]
        assert len(page.devices) <= limit
        seen += page.devices
        if page.next_cursor is None:
            return seen
        assert page.next_cursor == page.devices[-1].serial
        after = page.next_cursor


async def fleet(jobs: JobSystem, db: Db) -> None:
    """Three PCs (one with an error phone), a disabled phone, labels, a phone no worker holds."""
    a = await add_worker(jobs, "rack-a", 7)
    await add_worker(jobs, "rack-b", 5)
    await add_worker(jobs, "rack-c", 2, state="error")
    await jobs.set_device_state(a.devices[0].id, "disabled")
    await jobs.set_device_labels(a.devices[1].id, {"floor": "2"})
    await jobs.set_device_labels(a.devices[2].id, {"floor": "2", "rack": "A"})
    db.run("update jobsys.devices set worker_id = null where serial = 'rack-b-004'")


async def test_cursors_walk_every_device_once_in_serial_order(jobs: JobSystem, db: Db) -> None:
    await fleet(jobs, db)
    everything = sorted(d.serial for d in (await jobs.list_devices()).devices)
    for limit in (1, 3, 14, 1000):
        walked = [d.serial for d in await walk(jobs, limit)]
        assert walked == everything, limit
    first = await jobs.list_devices_page(limit=5)
    assert first.total == 14 and first.summary is not None and first.summary.total == 14
    assert first.summary.disabled == 1 and first.summary.error == 2
    assert (await jobs.list_devices_page(limit=5, with_counts=False)).total is None
    # An entry is the full list's entry for the same device.
    full = {d.serial: d for d in (await jobs.list_devices()).devices}
    assert all(full[d.serial] == d for d in first.devices)


async def test_a_walk_meets_each_device_once_while_devices_come_and_change(jobs: JobSystem, db: Db) -> None:
    await add_worker(jobs, "rack-a", 6)
    page = await jobs.list_devices_page(limit=3)
    # Between pages: a device moves to another PC, another changes state, one is added ahead.
    moved = await jobs.register_worker("rack-z", [DeviceReport(serial="rack-a-004", simulated=True)])
    await jobs.set_device_state(page.devices[0].id, "disabled")
    await add_worker(jobs, "rack-0", 1)  # sorts before the cursor: not met by this walk
    seen = [d.serial for d in page.devices]
    after = page.next_cursor
    while after is not None:
        more = await jobs.list_devices_page(after=after, limit=2)
        seen += [d.serial for d in more.devices]
        after = more.next_cursor
    assert seen == [f"rack-a-{i:03d}" for i in range(6)]
    assert next(d for d in (await jobs.list_devices_page(pc="rack-z")).devices).worker_id == moved.worker_id


async def test_filters_agree_with_the_full_list(jobs: JobSystem, db: Db) -> None:
    await fleet(jobs, db)
    full = (await jobs.list_devices()).devices
    by_worker = {d.worker_name: d.worker_id for d in full if d.worker_id}

    def serials(devices: list[Device]) -> list[str]:
        return sorted(d.serial for d in devices)

    async def check(expected: list[Device], **kwargs: object) -> None:
        walked = await walk(jobs, 2, **kwargs)
        assert [d.serial for d in walked] == serials(expected), kwargs
        page = await jobs.list_devices_page(limit=1, **kwargs)  # type: ignore[arg-type]
        assert page.total == len(expected), kwargs

    await check([d for d in full if d.status is DeviceStatus.ERROR], filter={"state": "error"})
    await check([d for d in full if d.status in (DeviceStatus.IDLE, DeviceStatus.BUSY)],
                filter={"state": "connected"})
    await check([d for d in full if d.worker_name == "rack-a"], worker_id=by_worker["rack-a"])
    await check([d for d in full if d.worker_name == "rack-b"], pc="rack-b")
    await check([d for d in full if d.worker_id is None], worker_id=NO_WORKER)
    await check([d for d in full if d.all_labels.get("floor") == "2"], filter={"labels": {"floor": "2"}})
    await check([d for d in full if d.operator_labels == {"floor": "2", "rack": "A"}],
                filter={"labels": {"floor": "2", "rack": "A"}})  # every pair must match
    await check([d for d in full if "A-00" in d.serial.upper()], filter={"q": "a-00"})  # case-insensitive
    await check([], filter={"q": "%"})  # as typed, not a wildcard
    await check([d for d in full if d.worker_name == "rack-a" and d.status is DeviceStatus.IDLE],
                worker_id=by_worker["rack-a"], filter={"state": "idle"})


async def test_groups_count_per_pc_and_what_matches(jobs: JobSystem, db: Db) -> None:
    await fleet(jobs, db)
    groups = await jobs.device_groups()
    by_name = {g.worker_name: g for g in groups.groups}
    assert list(by_name) == ["rack-a", "rack-b", "rack-c", None]  # by name; no worker last
    assert (by_name["rack-a"].total, by_name["rack-a"].summary.idle, by_name["rack-a"].summary.disabled) == (7, 6, 1)
    assert by_name["rack-b"].summary.connected == 4 and by_name["rack-c"].summary.error == 2
    assert by_name[None].total == 1 and by_name[None].summary.offline == 1
    assert groups.summary == (await jobs.list_devices()).summary
    assert all(g.matching == g.total for g in groups.groups)

    narrowed = {g.worker_name: g.matching for g in (await jobs.device_groups({"state": "idle"})).groups}
    assert narrowed == {"rack-a": 6, "rack-b": 4, "rack-c": 0, None: 0}
    labelled = {g.worker_name: g.matching for g in (await jobs.device_groups({"labels": {"floor": "2"}})).groups}
    assert labelled == {"rack-a": 2, "rack-b": 0, "rack-c": 0, None: 0}
    searched = {g.worker_name: g.matching for g in (await jobs.device_groups({"q": "B-00"})).groups}
    assert searched == {"rack-a": 0, "rack-b": 4, "rack-c": 0, None: 1}


@pytest.mark.parametrize("kwargs, field", [
    ({"limit": 0}, "limit"),
    ({"limit": 1001}, "limit"),
    ({"after": ""}, "cursor"),
    ({"after": "x" * 201}, "cursor"),
])
async def test_bad_bounds_are_refused_by_the_sql(jobs: JobSystem, db: Db, kwargs: dict[str, object],
                                                 field: str) -> None:
    await add_worker(jobs, "rack", 2)
    before = db.dump()
    with pytest.raises(InvalidInput) as refused:
        await jobs.list_devices_page(**kwargs)  # type: ignore[arg-type]
    assert refused.value.details["field"] == field
    assert db.dump() == before


async def test_bad_filters_are_refused_by_library_and_sql(jobs: JobSystem, db: Db) -> None:
    await add_worker(jobs, "rack", 2)
    before = db.dump()
    for bad in ({"state": "sleeping"}, {"labels": {"bad key": "1"}}, {"q": "x" * 201}):
        with pytest.raises(InvalidInput):
            await jobs.list_devices_page(bad)
        with pytest.raises(InvalidInput):
            await jobs.device_groups(bad)
    # The SQL checks the same bounds for callers that skip the library.
    for args in ({"p_status": "sleeping"}, {"p_labels": {"bad key": "1"}}, {"p_q": "x" * 201}):
        with pytest.raises(InvalidInput):
            await jobs.transport.call(
                rpc.LIST_DEVICES_PAGE,
                {"p_status": None, "p_worker_id": None, "p_pc": None, "p_labels": {}, "p_q": None,
                 "p_after": None, "p_limit": 10, "p_with_counts": True, **args})
    assert db.dump() == before


async def test_counts_follow_the_status_rule_of_the_full_list(jobs: JobSystem, db: Db) -> None:
    """device_groups and the state filter read the status from the columns (device_status_of);
    they agree with list_devices (device_status) on busy, stale, low battery and the rest."""
    rack = await jobs.register_worker("rack", [
        DeviceReport(serial=f"rack-{i}", simulated=True) for i in range(4)
    ] + [DeviceReport(serial="rack-low", simulated=True, vitals={"battery_pct": 5})])  # type: ignore[list-item]
    await jobs.create_job(target_url="https://example.com", duration_sec=60, target_type="device_count",
                          target_value=1)
    [run] = await jobs.claim_assignments(rack.worker_id, limit=1)
    await jobs.start_assignment(run.assignment_id, run.attempt)
    # A device other than the busy one goes stale (a stale busy device shows offline).
    stale = next(f"rack-{i}" for i in range(4) if f"rack-{i}" != run.serial)
    db.run("update jobsys.devices set last_heartbeat_at = now() - interval '1 hour' where serial = %s", (stale,))
    full = await jobs.list_devices()
    assert {d.status for d in full.devices} >= {DeviceStatus.BUSY, DeviceStatus.OFFLINE, DeviceStatus.LOW_BATTERY}
    assert (await jobs.device_groups()).summary == full.summary
    for status in DeviceStatus:
        page = await jobs.list_devices_page({"state": status.value})
        assert sorted(d.serial for d in page.devices) == sorted(d.serial for d in full.devices
                                                               if d.status is status), status
