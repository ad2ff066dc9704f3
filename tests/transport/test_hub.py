"""The hub's edges and faults, with a real hub (uvicorn on loopback) on the test database:
bad tokens and bodies change nothing; revoking a PC ends its session at once; a cut or
half-open push socket is noticed and comes back with a resync; two hubs on one database
both serve workers; a lost database listener closes the sockets so workers resync."""

from __future__ import annotations

import json
import pathlib
import uuid
from typing import AsyncIterator

import httpx
from psycopg import conninfo
import pytest

from jobsys import errors, hub_protocol
from jobsys.connect import connect_hub
from jobsys.events import ChannelState, Event, EventName, worker_topic
from jobsys.models import DeviceReport
from jobsys.system import JobSystem
from jobsys.transport.hub import PushSettings
from jobsys_hub.fanout import APPLICATION_NAME
from tests.support.hub import RunningHub, running_hub
from tests.support.postgres import Db
from tests.support.tcp_proxy import tcp_proxy
from tests.support.waiting import wait_until

FAST_PUSH = PushSettings(ping_interval_s=0.5, ping_timeout_s=0.5, reconnect_min_s=0.05, reconnect_max_s=0.2)


@pytest.fixture
async def hub(db_url: str, tmp_path: pathlib.Path) -> AsyncIterator[RunningHub]:
    async with running_hub(db_url, tmp_path / "hub") as started:
        yield started


def sims(prefix: str, count: int) -> list[DeviceReport]:
    return [DeviceReport(serial=f"{prefix}-{i}", simulated=True) for i in range(count)]


class Watcher:
    """A worker's push subscription, recording what it saw."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.states: list[ChannelState] = []

    def on_event(self, event: Event) -> None:
        self.events.append(event)

    def on_state(self, state: ChannelState) -> None:
        self.states.append(state)

    def subscribed_times(self) -> int:
        return self.states.count(ChannelState.SUBSCRIBED)


async def post(hub: RunningHub, function: str, body: bytes | str, token: str | None) -> httpx.Response:
    headers = {"content-type": "application/json"} | (hub_protocol.bearer(token) if token is not None else {})
    async with httpx.AsyncClient() as client:  # the hub runs in this event loop: never block it
        return await client.post(hub.url + hub_protocol.RPC_PATH.format(function=function), content=body,
                                 headers=headers)


async def test_bad_tokens_and_bodies_get_the_error_shape_and_change_nothing(hub: RunningHub, db: Db) -> None:
    token = await hub.enrol("pc-a")
    revoked = await hub.enrol("pc-gone")
    await hub.admin.revoke_worker_account("pc-gone")
    before = db.dump()
    devices = json.dumps({"p_name": "x", "p_devices": [{"serial": "s-1"}]})
    cases: list[tuple[str, bytes | str, str | None, int, str]] = [
        ("register_worker", devices, None, 401, "unauthorized"),  # no token
        ("register_worker", devices, "jsw_wrong", 401, "unauthorized"),
        ("register_worker", devices, revoked, 401, "unauthorized"),
        ("register_worker", devices, "two words", 401, "unauthorized"),
        ("hub_claims", json.dumps({"p_token_hash": "0" * 64}), token, 404, "not_found"),  # never callable
        ("no_such_function", "{}", token, 404, "not_found"),
        ("register_worker", "{not json", token, 422, "invalid_input"),
        ("register_worker", "[1, 2]", token, 422, "invalid_input"),
        ("register_worker", json.dumps({"p_name": "x", "p_surprise": 1}), token, 422, "invalid_input"),
        ("register_worker", json.dumps({"p_name": "\u0000"}), token, 422, "invalid_input"),
        ("register_worker", json.dumps({"p_name": {"an": "object"}}), token, 422, "invalid_input"),
        ("register_worker", "[" * 200_000, token, 422, "invalid_input"),  # nested too deep to parse
        ("create_job", json.dumps({"p_target_url": "https://example.com", "p_duration_sec": 5,
                                   "p_target_type": "all_devices"}), token, 403, "forbidden"),  # not an operator
        ("register_worker", b"x" * (hub_protocol.MAX_CALL_BYTES + 1), token, 413, "too_large"),
    ]
    for function, body, presented, status, code in cases:
        response = await post(hub, function, body, presented)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), (function, presented)
        assert response.json()["error"]["message"]
    assert db.dump() == before


async def test_an_operator_api_token_is_not_a_worker_token(hub: RunningHub, db: Db) -> None:
    """The dashboard's bearer token (or anything but a worker account's) opens nothing here."""
    response = await post(hub, "register_worker", json.dumps({"p_name": "x"}), "the-dashboard-api-token")
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert db.value("select count(*) from jobsys.workers") == 0


async def test_a_worker_registers_and_is_known_by_its_account(hub: RunningHub, db: Db) -> None:
    jobs = await connect_hub(hub.url, await hub.enrol("pc-a"))
    async with jobs:
        session = await jobs.register_worker("a", sims("a", 2), hostname="pc-a")
        await jobs.heartbeat(session.worker_id, meta={"version": "1.2.3", "push": "polling"})
    [account] = (await hub.admin.list_worker_accounts()).accounts
    assert account.name == "pc-a" and account.last_seen_at is not None
    [live] = account.sessions
    assert (live.worker_id, live.version, live.push, live.devices) == (session.worker_id, "1.2.3", "polling", 2)
    assert db.value("select user_id from jobsys.workers where id = %s", (session.worker_id,)) == account.id


async def test_revoking_a_pc_ends_its_session_at_once(hub: RunningHub, db: Db) -> None:
    jobs = await connect_hub(hub.url, await hub.enrol("pc-a"), push_settings=FAST_PUSH)
    async with jobs:
        session = await jobs.register_worker("a", sims("a", 3))
        watcher = Watcher()
        subscription = await jobs.subscribe_worker(session.worker_id, watcher.on_event, watcher.on_state)
        await wait_until(lambda: watcher.subscribed_times() == 1, what="subscribed")

        revoked = await hub.admin.revoke_worker_account("pc-a")
        assert revoked.revoked_at is not None and revoked.sessions == []

        await wait_until(lambda: subscription.final_error is not None, what="the hub to close the push socket")
        assert isinstance(subscription.final_error, errors.Unauthorized)
        assert subscription.state is ChannelState.DISCONNECTED
        with pytest.raises(errors.Unauthorized):
            await jobs.heartbeat(session.worker_id)
        await subscription.close()
    assert db.value("select status from jobsys.workers where id = %s", (session.worker_id,)) == "stopped"
    assert db.value("select count(*) from jobsys.devices where state = 'offline'") == 3
    assert hub.hub.fanout.peer_count == 0


async def test_a_worker_may_not_subscribe_to_another_workers_topic(hub: RunningHub) -> None:
    async with await connect_hub(hub.url, await hub.enrol("pc-a"), push_settings=FAST_PUSH) as a, \
            await connect_hub(hub.url, await hub.enrol("pc-b"), push_settings=FAST_PUSH) as b:
        session_a = await a.register_worker("a", sims("a", 1))
        watcher = Watcher()
        stolen = await b.transport.subscribe([worker_topic(session_a.worker_id)], watcher.on_event,
                                             watcher.on_state)
        await wait_until(lambda: stolen.final_error is not None, what="the hub to refuse the topic")
        assert isinstance(stolen.final_error, errors.Forbidden)
        assert watcher.subscribed_times() == 0
        await stolen.close()


async def _run_one_job(operator: JobSystem, worker: JobSystem, worker_id: uuid.UUID, watcher: Watcher,
                       url: str) -> None:
    """Create a job on all devices; the worker hears of it by push and finishes its runs."""
    seen = len(watcher.events)
    job = (await operator.create_job(target_url=url, duration_sec=1)).job
    await wait_until(lambda: any(e.event == EventName.ASSIGNMENT for e in watcher.events[seen:]),
                     what="the assignment pushed through the hub")
    claimed = await worker.claim_assignments(worker_id, start=True)
    for run in claimed:
        await worker.complete_assignment(run.assignment_id, run.attempt, {})
    assert (await operator.get_job(job.id)).status.value == "completed"


async def test_a_cut_push_socket_comes_back_and_resyncs(hub: RunningHub, db_url: str) -> None:
    async with tcp_proxy(int(hub.url.rsplit(":", 1)[1])) as proxy:
        jobs = await connect_hub(f"http://127.0.0.1:{proxy.port}", await hub.enrol("pc-a"), push_settings=FAST_PUSH)
        async with jobs, await JobSystem.connect(db_url) as operator:
            session = await jobs.register_worker("a", sims("a", 2))
            watcher = Watcher()
            subscription = await jobs.subscribe_worker(session.worker_id, watcher.on_event, watcher.on_state)
            await wait_until(lambda: watcher.subscribed_times() == 1, what="subscribed")

            assert proxy.cut() >= 1
            await wait_until(lambda: watcher.subscribed_times() == 2, what="resubscribed after the cut")
            assert ChannelState.DISCONNECTED in watcher.states[watcher.states.index(ChannelState.SUBSCRIBED):]
            await _run_one_job(operator, jobs, session.worker_id, watcher, "https://example.com/after-cut")
            await subscription.close()


async def test_a_half_open_push_socket_is_closed_by_the_keepalive(hub: RunningHub, db_url: str) -> None:
    async with tcp_proxy(int(hub.url.rsplit(":", 1)[1])) as proxy:
        jobs = await connect_hub(f"http://127.0.0.1:{proxy.port}", await hub.enrol("pc-a"), push_settings=FAST_PUSH)
        async with jobs, await JobSystem.connect(db_url) as operator:
            session = await jobs.register_worker("a", sims("a", 2))
            watcher = Watcher()
            subscription = await jobs.subscribe_worker(session.worker_id, watcher.on_event, watcher.on_state)
            await wait_until(lambda: watcher.subscribed_times() == 1 and hub.hub.fanout.peer_count == 1,
                             what="subscribed")

            proxy.stall()  # open on both ends, nothing passes: only pings can tell
            await wait_until(lambda: hub.hub.fanout.peer_count == 0 and subscription.state is ChannelState.DISCONNECTED,
                             what="both ends to give up on the silent socket")
            proxy.cut()
            proxy.heal()
            await wait_until(lambda: watcher.subscribed_times() == 2, what="resubscribed")
            await _run_one_job(operator, jobs, session.worker_id, watcher, "https://example.com/after-stall")
            await subscription.close()


async def test_two_hubs_on_one_database_both_serve_workers(hub: RunningHub, db_url: str,
                                                           tmp_path: pathlib.Path) -> None:
    async with running_hub(db_url, tmp_path / "hub2") as second:
        token_a, token_b = await hub.enrol("pc-a"), await hub.enrol("pc-b")
        async with await connect_hub(hub.url, token_a, push_settings=FAST_PUSH) as a, \
                await connect_hub(second.url, token_b, push_settings=FAST_PUSH) as b, \
                await JobSystem.connect(db_url) as operator:
            sessions = [await a.register_worker("a", sims("a", 2)), await b.register_worker("b", sims("b", 2))]
            watchers = [Watcher(), Watcher()]
            subscriptions = [await w.subscribe_worker(s.worker_id, x.on_event, x.on_state)
                             for w, s, x in zip((a, b), sessions, watchers)]
            await wait_until(lambda: all(x.subscribed_times() == 1 for x in watchers), what="both subscribed")
            job = (await operator.create_job(target_url="https://example.com/two-hubs", duration_sec=1)).job
            await wait_until(lambda: all(any(e.event == EventName.ASSIGNMENT for e in x.events) for x in watchers),
                             what="both workers told through their own hub")
            for worker, session in zip((a, b), sessions):
                for run in await worker.claim_assignments(session.worker_id, start=True):
                    await worker.complete_assignment(run.assignment_id, run.attempt, {})
            assert (await operator.get_job(job.id)).completed_count == 4
            for subscription in subscriptions:
                await subscription.close()


async def test_a_lost_database_listener_closes_sockets_so_workers_resync(hub: RunningHub, db: Db,
                                                                         db_url: str) -> None:
    jobs = await connect_hub(hub.url, await hub.enrol("pc-a"), push_settings=FAST_PUSH)
    async with jobs, await JobSystem.connect(db_url) as operator:
        session = await jobs.register_worker("a", sims("a", 1))
        watcher = Watcher()
        subscription = await jobs.subscribe_worker(session.worker_id, watcher.on_event, watcher.on_state)
        await wait_until(lambda: watcher.subscribed_times() == 1, what="subscribed")

        terminated = db.value("select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity "
                              "where application_name = %s) t", (APPLICATION_NAME,))
        assert terminated == 1
        await wait_until(lambda: watcher.subscribed_times() == 2, what="resubscribed once the hub listens again")
        await _run_one_job(operator, jobs, session.worker_id, watcher, "https://example.com/after-listener")
        await subscription.close()



async def test_a_hub_whose_database_user_cannot_act_as_workers_says_so(
        db_url: str, db: Db, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    db.run("do $$ begin create role hub_without_grant login; exception when duplicate_object then null; end $$")
    db.run("grant connect on database " + db.value("select current_database()") + " to hub_without_grant")
    url = conninfo.make_conninfo(db_url, user="hub_without_grant")
    async with running_hub(db_url, tmp_path / "ok"):
        assert "SET ROLE authenticated" not in caplog.text
    async with running_hub(url, tmp_path / "refused"):
        assert "may not SET ROLE authenticated" in caplog.text
