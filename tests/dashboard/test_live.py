"""The event hub and per-page coalescing: bursts cost few re-reads, closed pages stop
listening, and a resubscribed channel resyncs every page."""

from __future__ import annotations

import asyncio

from jobsys.events import DASHBOARD_TOPIC, ChannelState, Event, EventName
from jobsys.system import JobSystem
from nicegui_app.hub import RESYNC, EventHub
from nicegui_app.live import Coalescer
from tests.core.helpers import add_worker
from tests.support.connections import kill_listen_connection
from tests.support.waiting import wait_until


def progress(job: str = "j") -> Event:
    return Event(topic=DASHBOARD_TOPIC, event=EventName.JOB_PROGRESS.value, payload={"job_id": job})


async def test_a_burst_becomes_one_immediate_and_one_trailing_refresh() -> None:
    calls: list[float] = []
    done = asyncio.Event()

    async def refresh() -> None:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) == 2:
            done.set()

    coalescer = Coalescer(refresh, min_interval_s=0.2)
    for _ in range(100):
        coalescer.poke()
    await wait_until(lambda: len(calls) == 1, what="first refresh")
    for _ in range(100):
        coalescer.poke()
    await asyncio.wait_for(done.wait(), timeout=5)
    await wait_until(lambda: coalescer._task is not None and coalescer._task.done(), what="coalescer idle")
    assert len(calls) == 2  # 200 events, two re-reads
    assert calls[1] - calls[0] >= 0.19  # the second waited out the interval


async def test_a_poke_during_a_refresh_is_not_lost() -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    runs = 0

    async def refresh() -> None:
        nonlocal runs
        runs += 1
        entered.set()
        await release.wait()

    coalescer = Coalescer(refresh, min_interval_s=0.0)
    coalescer.poke()
    await asyncio.wait_for(entered.wait(), timeout=5)
    coalescer.poke()  # arrives while the first refresh is still reading
    release.set()
    await wait_until(lambda: runs == 2, what="trailing refresh")


async def test_closed_coalescer_starts_nothing() -> None:
    async def refresh() -> None:
        raise AssertionError("refreshed after close")

    coalescer = Coalescer(refresh)
    coalescer.close()
    coalescer.poke()
    assert coalescer._task is None


def test_hub_fans_out_and_survives_a_failing_listener() -> None:
    hub = EventHub()
    seen: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("page bug")

    hub.add_listener(broken)
    hub.add_listener(lambda e: seen.append(e.event))
    hub.publish(progress())
    assert seen == ["job_progress"]
    hub.remove_listener(broken)
    assert len(hub) == 1


def test_subscribed_state_resyncs_every_listener() -> None:
    hub = EventHub()
    seen: list[str] = []
    hub.add_listener(lambda e: seen.append(e.event))
    hub.set_state(ChannelState.DISCONNECTED)
    assert seen == [] and hub.live is False
    hub.set_state(ChannelState.SUBSCRIBED)
    assert seen == [RESYNC] and hub.live is True


async def test_hub_receives_database_events_and_resyncs_after_reconnect(jobs: JobSystem) -> None:
    hub = EventHub()
    seen: list[Event] = []
    hub.add_listener(seen.append)
    subscription = await jobs.subscribe_dashboard(hub.publish, hub.set_state)
    try:
        await wait_until(lambda: [e.event for e in seen] == [RESYNC], what="first subscribe")
        await add_worker(jobs, "w1", 2)
        await wait_until(
            lambda: any(e.event == EventName.DEVICE_STATUS.value for e in seen), what="device_status"
        )
        created = await jobs.create_job(target_url="https://example.com", duration_sec=5)
        await wait_until(
            lambda: any(
                e.event == EventName.JOB_PROGRESS.value and e.payload["job_id"] == str(created.job.id)
                for e in seen
            ),
            what="job_progress",
        )

        seen.clear()
        await kill_listen_connection(subscription)
        await wait_until(
            lambda: hub.state is ChannelState.SUBSCRIBED and [e.event for e in seen] == [RESYNC],
            what="resync after reconnect",
        )
    finally:
        await subscription.close()


async def test_safety_refresh_resyncs_while_push_is_down() -> None:
    hub = EventHub()
    seen: list[str] = []
    hub.add_listener(lambda e: seen.append(e.event))
    task = asyncio.create_task(hub.run_safety_refresh(up_interval_s=60, down_interval_s=0.01))
    try:
        await wait_until(lambda: seen.count(RESYNC) >= 2, what="fallback resyncs")
    finally:
        task.cancel()
