"""Target resolution, distribution and top-up."""

from __future__ import annotations

import pytest

from jobsys import IllegalTransition
from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.support.postgres import Db


async def test_percentage_resolves_against_healthy_devices(jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 20)
    created = await jobs.create_job(target_url="https://example.com/a", duration_sec=5,
                                    target_type="percentage", target_value=75)
    assert created.job.target_count == 15
    assert created.assigned == 15
    assert created.job.assigned_count == 15


async def test_one_percent_of_twenty_is_one_device(jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 20)
    created = await jobs.create_job(target_url="https://example.com", duration_sec=5,
                                    target_type="percentage", target_value=1)
    assert (created.job.target_count, created.assigned) == (1, 1)


async def test_all_devices_takes_every_healthy_device_only(jobs: JobSystem, db: Db) -> None:
    await add_worker(jobs, "ok", 4)
    await add_worker(jobs, "bad", 3, state="error")
    await add_worker(jobs, "stale", 2)
    db.run("update jobsys.devices set last_heartbeat_at = now() - interval '1 hour' where serial like 'stale-%'")
    created = await jobs.create_job(target_url="https://example.com", duration_sec=5)
    assert (created.job.target_count, created.assigned) == (4, 4)
    chosen = {row[0] for row in db.rows(
        "select d.serial from jobsys.job_assignments a join jobsys.devices d on d.id = a.device_id")}
    assert chosen == {f"ok-{i:03d}" for i in range(4)}


async def test_device_count_above_supply_tops_up_when_devices_appear(jobs: JobSystem, db: Db) -> None:
    await add_worker(jobs, "w1", 20)
    created = await jobs.create_job(target_url="https://example.com", duration_sec=5,
                                    target_type="device_count", target_value=25)
    assert (created.job.target_count, created.assigned) == (25, 20)
    await add_worker(jobs, "w2", 8)  # registration runs top-up
    job = await jobs.get_job(created.job.id)
    assert job.assigned_count == 25
    assert len({a.device_id for a in job.assignments}) == 25


async def test_no_healthy_device_is_a_clear_error_and_stores_nothing(jobs: JobSystem, db: Db) -> None:
    with pytest.raises(IllegalTransition, match="no healthy device"):
        await jobs.create_job(target_url="https://example.com", duration_sec=5)
    assert db.value("select count(*) from jobsys.jobs") == 0


async def test_idle_devices_are_preferred_over_loaded_ones(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 10)
    first = await jobs.create_job(target_url="https://example.com/1", duration_sec=5,
                                  target_type="device_count", target_value=5)
    second = await jobs.create_job(target_url="https://example.com/2", duration_sec=5,
                                   target_type="device_count", target_value=5)
    devices_first = {a.device_id for a in (await jobs.get_job(first.job.id)).assignments}
    devices_second = {a.device_id for a in (await jobs.get_job(second.job.id)).assignments}
    assert not devices_first & devices_second  # the unloaded five were chosen
    assert len(session.devices) == 10


async def test_one_run_per_device_per_job(jobs: JobSystem, db: Db) -> None:
    await add_worker(jobs, "w1", 3)
    created = await jobs.create_job(target_url="https://example.com", duration_sec=5,
                                    target_type="device_count", target_value=10)
    await jobs.maintain(force=True)  # top-up finds no untried device
    assert db.value("select count(*) from jobsys.job_assignments where job_id = %s", (created.job.id,)) == 3
    assert db.value("select count(*) from (select device_id from jobsys.job_assignments"
                    " group by job_id, device_id having count(*) > 1) d") == 0


async def test_events_reach_a_listening_worker(jobs: JobSystem) -> None:
    import asyncio

    from jobsys.events import ChannelState, Event

    session = await add_worker(jobs, "w1", 2)
    received: asyncio.Queue[Event] = asyncio.Queue()
    subscribed = asyncio.Event()

    def on_state(state: ChannelState) -> None:
        if state is ChannelState.SUBSCRIBED:
            subscribed.set()

    sub = await jobs.subscribe_worker(session.worker_id, received.put_nowait, on_state)
    try:
        await asyncio.wait_for(subscribed.wait(), 10)
        created = await jobs.create_job(target_url="https://example.com", duration_sec=5)
        event = await asyncio.wait_for(received.get(), 10)
        assert (event.event, event.payload["job_id"], event.payload["count"]) == (
            "assignment", str(created.job.id), 2)
        await jobs.pause_job(created.job.id)
        event = await asyncio.wait_for(received.get(), 10)
        assert (event.event, event.payload["job_id"]) == ("job_paused", str(created.job.id))
    finally:
        await sub.close()
