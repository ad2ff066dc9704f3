"""Realtime push against our Phoenix-protocol double: private joins with the user's JWT,
delivery to sync and async handlers, heartbeats, and recovery from every fault the
double can produce (server close, node drain, abrupt drop, join timeout, refused join,
channel close/error, token expiry, zombie sockets, server down for longer than
realtime-py retries), each ending in a fresh SUBSCRIBED so the subscriber resyncs; and a
watchdog that survives its own failures."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, AsyncIterator

import pytest

from jobsys import errors
from jobsys.connect import connect_supabase
from jobsys.events import DASHBOARD_TOPIC, ChannelState, Event, worker_topic
from jobsys.system import JobSystem
from jobsys.transport import realtime_watchdog, supabase
from jobsys.transport.realtime_watchdog import BroadcastSubscription
from tests.support.waiting import wait_until
from tests.transport.conftest import FAST_REALTIME
from tests.transport.realtime_double import RealtimeDouble
from tests.transport.tokens import ANON, forged, make_token, user

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


@pytest.mark.parametrize("fault", ["server_close", "node_drain", "abrupt_drop", "channel_close", "channel_error",
                                   "token_expired"])
async def test_faults_end_in_a_fresh_subscribe(jobs: JobSystem, server: RealtimeDouble, fault: str) -> None:
    recorder = Recorder()
    subscription = await subscribed(jobs, recorder)
    if fault == "server_close":
        await server.close_all(1000)
    elif fault == "node_drain":
        await server.close_all(1001)  # going away: Realtime drains a node on deploys
    elif fault == "token_expired":
        await server.expire_token(DASHBOARD_TOPIC)  # system error, then phx_close
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


def direct_subscription(server: RealtimeDouble, recorder: Recorder, token: Any,
                        settings: realtime_watchdog.RealtimeSettings = FAST_REALTIME,
                        url: str | None = None) -> BroadcastSubscription:
    subscription = BroadcastSubscription(url or f"ws://127.0.0.1:{server.port}/realtime/v1", ANON.token,
                                         [DASHBOARD_TOPIC], recorder.on_event, recorder.on_state,
                                         token=token, settings=settings)
    subscription.start()
    return subscription


def expired_operator_token() -> str:
    return make_token({**OPERATOR.claims, "exp": int(time.time()) - 5})


async def test_an_expired_token_is_refused_at_join_until_a_fresh_one_comes(server: RealtimeDouble) -> None:
    tokens = [expired_operator_token()]

    async def token() -> str:
        return tokens[-1]

    recorder = Recorder()
    subscription = direct_subscription(server, recorder, token)
    await wait_until(lambda: sum(1 for j in server.joins if j.accepted is False) >= 2, what="refused joins")
    assert recorder.states == [D]
    tokens.append(OPERATOR.token)
    await wait_until(lambda: recorder.states[-1:] == [S], what="subscribed with the fresh token")
    await subscription.close()


async def test_a_pushed_token_that_fails_closes_the_channel_and_it_rejoins(server: RealtimeDouble,
                                                                          gate: Gate) -> None:
    tokens = [OPERATOR.token]

    async def token() -> str:
        return tokens[-1]

    recorder = Recorder()
    subscription = direct_subscription(server, recorder, token)
    await wait_until(lambda: recorder.states[-1:] == [S], what="subscribed")
    gate.allow = False  # the policies, checked again for the pushed token, now refuse
    tokens.append(user("operator", "operator").token)
    await wait_until(lambda: recorder.states[-1:] == [D], what="channel closed by the server")
    gate.allow = True
    await wait_until(lambda: recorder.states[-1:] == [S], what="rejoined")
    assert recorder.states == [S, D, S]
    await subscription.close()


async def test_database_unreachable_join_errors_are_retried(jobs: JobSystem, server: RealtimeDouble) -> None:
    server.join_error = "Realtime was unable to connect to the project database"
    recorder = Recorder()
    await jobs.subscribe_dashboard(recorder.on_event, recorder.on_state)
    await wait_until(lambda: sum(1 for j in server.joins if j.accepted is False) >= 2, what="two refusals")
    server.join_error = None
    await wait_until(lambda: recorder.states[-1:] == [S], what="subscribed once the database is back")
    assert recorder.states == [D, S]


async def test_a_zombie_socket_is_replaced_by_the_scheduled_rebuild(server: RealtimeDouble) -> None:
    async def token() -> str:
        return OPERATOR.token

    recorder = Recorder()
    settings = dataclasses.replace(FAST_REALTIME, rebuild_every_s=2.0)  # none before the zombie is made
    subscription = direct_subscription(server, recorder, token, settings)
    await wait_until(lambda: recorder.states[-1:] == [S], what="subscribed")
    connects = subscription.connects
    assert server.make_zombies() == 1
    assert await server.broadcast(DASHBOARD_TOPIC, "lost", {}) == 0  # heartbeats still answered
    await wait_until(lambda: subscription.connects > connects and recorder.states[-1:] == [S]
                     and server.subscribers(DASHBOARD_TOPIC) == 1, what="a new socket")

    async def delivered() -> bool:  # a later scheduled rebuild may be under way: send until one lands
        await server.broadcast(DASHBOARD_TOPIC, "after", {})
        return any(e.event == "after" for e in recorder.events)

    await wait_until(delivered, what="an event on the new socket")
    assert D not in recorder.states  # a scheduled rebuild is a resync (SUBSCRIBED again), not an outage
    assert [e.event for e in recorder.events if e.event == "lost"] == []
    await subscription.close()


class FailingSetAuth(realtime_watchdog.AsyncRealtimeClient):
    fail = False

    async def set_auth(self, token: str | None) -> None:
        if FailingSetAuth.fail:
            raise RuntimeError("set_auth broke")
        await super().set_auth(token)


async def test_the_watchdog_survives_set_auth_failing(server: RealtimeDouble,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realtime_watchdog, "AsyncRealtimeClient", FailingSetAuth)
    monkeypatch.setattr(FailingSetAuth, "fail", False)
    tokens = [OPERATOR.token]

    async def token() -> str:
        return tokens[-1]

    recorder = Recorder()
    subscription = direct_subscription(server, recorder, token)
    await wait_until(lambda: recorder.states[-1:] == [S], what="subscribed")
    FailingSetAuth.fail = True
    tokens.append(user("operator", "operator").token)  # the next check pushes it: set_auth raises
    await wait_until(lambda: recorder.states[-1:] == [D], what="the failure reported")
    FailingSetAuth.fail = False
    await wait_until(lambda: recorder.states[-1:] == [S], what="rebuilt and subscribed")
    assert server.joins[-1].access_token == tokens[-1]
    await subscription.close()


async def test_a_bad_url_is_retried_not_fatal(server: RealtimeDouble) -> None:
    async def token() -> str:
        return OPERATOR.token

    recorder = Recorder()
    subscription = direct_subscription(server, recorder, token, url="not a url")
    await wait_until(lambda: subscription.connects >= 3, what="attempts after the first failure")
    assert recorder.states == [D] and all(not t.done() for t in subscription._tasks)
    await subscription.close()


async def test_a_watchdog_that_ends_anyway_is_restarted(server: RealtimeDouble,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    async def token() -> str:
        return OPERATOR.token

    calls = [0]
    real_watch = BroadcastSubscription._watch

    async def watch_ends_at_first(self: BroadcastSubscription) -> None:
        calls[0] += 1
        if calls[0] > 1:
            await real_watch(self)
        # the first one ends at once, as if something had escaped its guard

    monkeypatch.setattr(BroadcastSubscription, "_watch", watch_ends_at_first)
    recorder = Recorder()
    subscription = direct_subscription(server, recorder, token)
    await wait_until(lambda: recorder.states[-1:] == [S], what="subscribed after the restart")
    assert calls[0] >= 2
    await subscription.close()


@pytest.mark.parametrize("version", ["2.33.0", "2.34.0", "3.0.0", "garbage"])
def test_an_unsupported_realtime_client_is_refused_at_start(version: str) -> None:
    with pytest.raises(errors.JobsysError, match=r"supabase>=2\.34\.1,<3") as info:
        supabase.check_client_version(version)
    assert info.value.details["realtime"] == version


def test_the_installed_realtime_client_is_supported() -> None:
    supabase.check_client_version()  # the pin in pyproject.toml installs one


async def test_connect_checks_the_realtime_client_version(server: RealtimeDouble,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supabase.realtime_py, "__version__", "2.33.0")
    with pytest.raises(errors.JobsysError, match="realtime"):
        await connect_supabase(server.url, ANON.token, access_token=OPERATOR.token)


async def test_a_token_with_a_bad_signature_is_refused_at_join(server: RealtimeDouble) -> None:
    tokens = [forged(user("intruder", None).token, app_metadata={"jobsys_role": "operator"})]

    async def token() -> str:
        return tokens[-1]

    recorder = Recorder()
    subscription = direct_subscription(server, recorder, token)
    await wait_until(lambda: any(j.accepted is False for j in server.joins), what="the forged token refused")
    assert recorder.states == [D]
    tokens.append(OPERATOR.token)
    await wait_until(lambda: recorder.states[-1:] == [S], what="subscribed with a signed token")
    await subscription.close()


async def test_a_socket_closed_for_missing_heartbeats_is_rebuilt(server: RealtimeDouble) -> None:
    async def token() -> str:
        return OPERATOR.token

    server.heartbeat_timeout_s = 1.0  # the client heartbeats every 25 s: every socket times out
    recorder = Recorder()
    subscription = direct_subscription(server, recorder, token)
    await wait_until(lambda: recorder.states[:3] == [S, D, S], what="closed for silence, then rejoined")
    await subscription.close()
