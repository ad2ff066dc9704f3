"""AI batch runners on Supabase get their push (migration 20261207002200): the runner role
joins the private jobsys:runners topic, checked by Realtime Authorization (our Realtime
double runs Realtime's own join query against the migrated database), and receives what
the database sends there; a worker's or an operator's account is refused it."""

from __future__ import annotations

from jobsys.events import RUNNERS_TOPIC, ChannelState, Event
from tests.support.postgres import Db
from tests.support.waiting import wait_until
from tests.transport.conftest import SupabaseDoubles
from tests.transport.tokens import user

RUNNER = user("runner", "runner")


async def test_a_runner_joins_the_runners_topic_and_hears_new_batches(doubles: SupabaseDoubles, db: Db) -> None:
    runner = await doubles.connect(RUNNER)
    events: list[Event] = []
    subscription = await runner.transport.subscribe([RUNNERS_TOPIC], events.append)
    await wait_until(lambda: subscription.state is ChannelState.SUBSCRIBED, what="runner subscribed")
    db.run("select jobsys.emit('jobsys:runners', 'background_job_queued', '{\"job_id\": \"b1\"}'::jsonb)")
    await wait_until(lambda: [e.payload.get("job_id") for e in events] == ["b1"], what="the push")
    assert events[0].event == "background_job_queued"
    await runner.close()


async def test_workers_and_operators_are_refused_the_runners_topic(doubles: SupabaseDoubles) -> None:
    for identity in (user("pc-01", "worker"), user("ops", "operator")):
        system = await doubles.connect(identity)
        await system.transport.subscribe([RUNNERS_TOPIC], lambda event: None)

        def refused(token: str = identity.token) -> bool:
            return any(j.topic == RUNNERS_TOPIC and j.accepted is False and j.access_token == token
                       for j in doubles.realtime.joins)

        await wait_until(refused, what=f"{identity.name} refused")
        await system.close()
    assert doubles.realtime.accepted_joins(RUNNERS_TOPIC) == 0
