"""background_job_progress on the dashboard topic: throttled per job, so a big job does not
flood the channel, and the final one always arrives with exact counts."""

from __future__ import annotations

from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchProgress, BatchStatus
from jobsys.events import ChannelState, Event, EventName
from tests.batch.conftest import items
from tests.support.postgres import Db
from tests.support.runners import StartRunner, wait_final
from tests.support.waiting import wait_until


async def test_progress_events_are_throttled_and_the_last_is_final(batch: BatchJobs, db: Db,
                                                                   start_runner: StartRunner) -> None:
    db.setting("progress_event_interval_ms", 3_600_000)  # throttle everything but forced events
    received: list[BatchProgress] = []
    state = {"push": ChannelState.DISCONNECTED}

    def on_event(event: Event) -> None:
        if event.event == EventName.BACKGROUND_JOB_PROGRESS:
            received.append(BatchProgress.model_validate(event.payload))

    subscription = await batch.subscribe_progress(on_event, lambda s: state.update(push=s))
    try:
        await wait_until(lambda: state["push"] is ChannelState.SUBSCRIBED, what="subscribed")
        await start_runner(heartbeat_interval_s=3600.0)  # no trailing events during the run either
        job = await batch.create_job(template="Summarise: {text}", items=items(300), concurrency=16)
        final = await wait_final(batch, job.id)
        await wait_until(lambda: bool(received) and received[-1].status.final, what="the final event")
    finally:
        await subscription.close()
    assert final.status is BatchStatus.COMPLETED
    mine = [p for p in received if p.job_id == job.id]
    assert [p.status for p in mine] == [BatchStatus.PENDING, BatchStatus.RUNNING, BatchStatus.COMPLETED]
    assert (mine[-1].completed_items, mine[-1].progress_percent, mine[-1].offline) == (300, 100, True)


async def test_a_throttled_change_is_sent_by_the_next_heartbeat(batch: BatchJobs, db: Db) -> None:
    db.setting("progress_event_interval_ms", 3_600_000)
    received: list[BatchProgress] = []
    state = {"push": ChannelState.DISCONNECTED}
    subscription = await batch.subscribe_progress(
        lambda e: received.append(BatchProgress.model_validate(e.payload))
        if e.event == EventName.BACKGROUND_JOB_PROGRESS else None, lambda s: state.update(push=s))
    try:
        await wait_until(lambda: state["push"] is ChannelState.SUBSCRIBED, what="subscribed")
        job = await batch.create_job(template="Summarise: {text}", items=items(3))
        claimed = await batch.claim_job("r")
        assert claimed is not None
        await batch.claim_items(job.id, claimed.lease_token, 1)  # throttled: no event
        await wait_until(lambda: len(received) >= 2, what="created + claimed events")
        count = len(received)
        await batch.renew_leases("r", [claimed.lease_token])  # trailing event
        await wait_until(lambda: len(received) == count + 1, what="the trailing event")
        assert received[-1].running_items == 1
        await batch.renew_leases("r", [claimed.lease_token])  # nothing new: no event
        await batch.claim_items(job.id, claimed.lease_token, 1)
        await batch.renew_leases("r", [claimed.lease_token])
        await wait_until(lambda: len(received) >= count + 2, what="the second trailing event")
        assert [p.running_items for p in received[count:]] == [1, 2]  # no event for the idle renewal
    finally:
        await subscription.close()
