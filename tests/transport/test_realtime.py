"""Realtime push against our Phoenix-protocol double: private joins with the user's JWT,
delivery to sync and async handlers, heartbeats, and recovery from every fault the
double can produce (server close, abrupt drop, join timeout, refused join, channel
close/error, server down for longer than realtime-py retries), each ending in a fresh
SUBSCRIBED so the subscriber resyncs."""

from __future__ import annotations

from typing import Any, AsyncIterator

import pytest

from jobsys.connect import connect_supabase
from jobsys.events import DASHBOARD_TOPIC, ChannelState, Event, worker_topic
from jobsys.system import JobSystem
from jobsys.transport.realtime_watchdog import BroadcastSubscription
from tests.support.waiting import wait_until
from tests.transport.conftest import FAST_REALTIME
from tests.transport.realtime_double import RealtimeDouble
from tests.transport.tokens import ANON, user

OPERATOR = user("operator", "operator")
S, D = ChannelState.SUBSCRIBED, ChannelState.DISCONNECTED


class Gate:
    """The double's authorization decision, switchable by the test."""

    def __init__(self) -> None:
        self.allow = True

    async def __call__(self, topic: str, claims: dict[str, Any]) -> bool:
        return self.allow


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
async def server(gate: Gate) -> AsyncIterator[RealtimeDouble]:
    double = RealtimeDouble(authorize=gate)
    await double.start()
    yield double
    await double.aclose()


@pytest.fixture
async def jobs(server: RealtimeDouble) -> AsyncIterator[JobSystem]:
    system = await connect_supabase(server.url, ANON.token, access_token=OPERATOR.token, realtime=FAST_REALTIME)
    yield system
    await system.close()


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.states: list[ChannelState] = []

    async def on_event(self, event: Event) -> None:  # async: must be awaited, not dropped
        self.events.append(event)  # an un-awaited coroutine never runs this

    def on_state(self, state: ChannelState) -> None:
        self.states.append(state)


async def subscribed(jobs: JobSystem, recorder: Recorder) -> BroadcastSubscription:
    subscription = await jobs.subscribe_dashboard(recorder.on_event, recorder.on_state)
    assert isinstance(subscription, BroadcastSubscription)
    await wait_until(lambda: recorder.states[-1:] == [S], what="subscribed")
    return subscription


async def test_private_join_with_the_users_jwt_then_events_flow(jobs: JobSystem, server: RealtimeDouble) -> None:
    recorder = Recorder()
    subscription = await subscribed(jobs, recorder)
    [join] = server.joins
    assert (join.topic, join.private, join.access_token, join.accepted) == (DASHBOARD_TOPIC, True, OPERATOR.token, True)
    await wait_until(lambda: server.heartbeats >= 1, what="a heartbeat")  # the first one goes out on connect
    assert await server.broadcast(DASHBOARD_TOPIC, "job_progress", {"job_id": "j1", "completed_count": 1}) == 1
    assert await server.broadcast(DASHBOARD_TOPIC, "job_progress", {"job_id": "public"}, private=False) == 0
    await wait_until(lambda: len(recorder.events) == 1, what="the event")
    assert recorder.events == [Event(topic=DASHBOARD_TOPIC, event="job_progress",
                                     payload={"job_id": "j1", "completed_count": 1})]
    await subscription.close()
    await wait_until(lambda: server.subscribers(DASHBOARD_TOPIC) == 0, what="socket closed")


async def test_a_failing_handler_does_not_stop_delivery(jobs: JobSystem, server: RealtimeDouble) -> None:
    delivered: list[str] = []

    def on_event(event: Event) -> None:  # sync handlers work too
        delivered.append(event.event)
        if event.event == "boom":
            raise RuntimeError("handler bug")

    await jobs.subscribe_dashboard(on_event)
    await wait_until(lambda: server.subscribers(DASHBOARD_TOPIC) == 1, what="joined")
    await server.broadcast(DASHBOARD_TOPIC, "boom", {})
    await server.broadcast(DASHBOARD_TOPIC, "after", {})
    await wait_until(lambda: delivered == ["boom", "after"], what="both events")


async def test_one_subscription_joins_every_topic_before_it_reports_subscribed(
        jobs: JobSystem, server: RealtimeDouble) -> None:
    recorder = Recorder()
    topics = [DASHBOARD_TOPIC, worker_topic("00000000-0000-0000-0000-000000000001")]
    await jobs.transport.subscribe(topics, recorder.on_event, recorder.on_state)
    await wait_until(lambda: recorder.states[-1:] == [S], what="subscribed")
    assert {j.topic for j in server.joins if j.accepted} == set(topics)
    await server.broadcast(topics[1], "assignment", {"job_id": "j"})
    await wait_until(lambda: [e.topic for e in recorder.events] == [topics[1]], what="worker-topic event")


@pytest.mark.parametrize("fault", ["server_close", "abrupt_drop", "channel_close", "channel_error"])
async def test_faults_end_in_a_fresh_subscribe(jobs: JobSystem, server: RealtimeDouble, fault: str) -> None:
    recorder = Recorder()
    subscription = await subscribed(jobs, recorder)
    if fault == "server_close":
        await server.close_all(1000)
    elif fault == "abrupt_drop":
        server.drop_all()
    elif fault == "channel_close":
        await server.close_channel(DASHBOARD_TOPIC)
    else:
        await server.error_channel(DASHBOARD_TOPIC)
    await wait_until(lambda: recorder.states == [S, D, S], what="disconnected, then subscribed again")
    assert server.accepted_joins(DASHBOARD_TOPIC) == 2 and subscription.connects == 2
    await server.broadcast(DASHBOARD_TOPIC, "job_deleted", {"job_id": "j"})
    await wait_until(lambda: [e.event for e in recorder.events] == ["job_deleted"], what="event after rejoin")


async def test_join_timeout_is_retried_until_answered(jobs: JobSystem, server: RealtimeDouble) -> None:
    server.answer_joins = False
    recorder = Recorder()
    subscription = await jobs.subscribe_dashboard(recorder.on_event, recorder.on_state)
    await wait_until(lambda: len(server.joins) >= 2, what="a second join after the first timed out")
    assert subscription.state is D and S not in recorder.states
    server.answer_joins = True
    await wait_until(lambda: recorder.states[-1:] == [S], what="subscribed once answered")


async def test_a_refused_join_is_retried_until_allowed(jobs: JobSystem, server: RealtimeDouble, gate: Gate) -> None:
    gate.allow = False
    recorder = Recorder()
    await jobs.subscribe_dashboard(recorder.on_event, recorder.on_state)
    await wait_until(lambda: sum(1 for j in server.joins if j.accepted is False) >= 2, what="two refusals")
    assert recorder.states == [D]
    gate.allow = True
    await wait_until(lambda: recorder.states[-1:] == [S], what="subscribed once allowed")


async def test_the_watchdog_outlasts_realtime_py_retry_limit(jobs: JobSystem, server: RealtimeDouble) -> None:
    recorder = Recorder()
    subscription = await subscribed(jobs, recorder)
    await server.stop()
    # realtime-py alone stops after max_retries (5 by default); keep going well past it.
    await wait_until(lambda: subscription.connects >= 10, what="reconnect attempts past realtime-py's limit")
    assert subscription.state is D
    await server.start()  # same port
    await wait_until(lambda: recorder.states[-1:] == [S] and len(recorder.states) >= 3, what="back")
    assert recorder.states == [S, D, S]


async def test_a_refreshed_token_reaches_the_joined_channel(server: RealtimeDouble) -> None:
    tokens = [OPERATOR.token]

    async def token() -> str:
        return tokens[-1]

    recorder = Recorder()
    subscription = BroadcastSubscription(f"ws://127.0.0.1:{server.port}/realtime/v1", ANON.token,
                                         [DASHBOARD_TOPIC], recorder.on_event, recorder.on_state,
                                         token=token, settings=FAST_REALTIME)
    subscription.start()
    await wait_until(lambda: recorder.states[-1:] == [S], what="subscribed")
    tokens.append(user("operator", "operator").token)
    await wait_until(lambda: server.tokens_pushed[-1:] == [tokens[-1]], what="access_token pushed")
    assert subscription.connects == 1  # no reconnect needed
    await subscription.close()


async def test_without_push_nothing_connects(server: RealtimeDouble) -> None:
    jobs = await connect_supabase(server.url, ANON.token, access_token=OPERATOR.token, push=False)
    subscription = await jobs.subscribe_dashboard(lambda event: None)
    assert subscription.state is D and server.handshakes == 0
    await subscription.close()
    await jobs.close()
