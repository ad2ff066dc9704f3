"""Child processes for bench/hub.py: the hub on its own, and workers that join it.

    python -m bench.hub_child serve --database-url URL --data-dir DIR
        The hub alone, as `jobsys up` mounts it (jobsys_hub.Hub at /hub, uvicorn with the
        dashboard's WebSocket keep-alive, access log off) on a loopback port of its own.
        Its port is bound with nicegui_app.server.bind_port, as the dashboard's. stdout:
        {"kind": "listening", "port": P} once it serves; EOF on stdin stops it. With --trace
        FILE, each worker call's steps, timed, one JSON line each in FILE. With --profile FILE,
        {"cmd": "profile_on"} / {"cmd": "profile_off"} on stdin run cProfile over the hub's
        thread and write FILE (each answered {"kind": "ok"}).

    python -m bench.hub_child worker --server URL --token T --name NAME --devices N [...]
        bench/worker_child.py's protocol and reports (start / stop / drop / status; "claimed"
        and "paused" lines), its Worker on the hub transport (connect_hub: HTTP calls and one
        WebSocket for push) instead of a database connection.

    python -m bench.hub_child fleet --server URL --accounts FILE --devices N [...]
        Many Workers in one process, each its own PC: its own worker account, token and
        HubTransport (so its own HTTP client and push WebSocket). FILE is a JSON list of
        {"name", "token"}. stdin: {"cmd": "start", "speed": x} -> {"kind": "ready"} once every
        Worker is registered and subscribed; {"cmd": "status"} -> {"kind": "status", "runs": n};
        {"cmd": "stop"} -> {"kind": "stopped"}. EOF ends the process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import pathlib
import sys
import uuid
from typing import Any

from bench.worker_child import ClaimTimingJobSystem, ReportingWorker, say
from jobsys.connect import connect_hub
from jobsys.events import ChannelState
from worker.agent import Worker
from worker.options import WorkerOptions

READY_TIMEOUT_S = 60.0
READY_CHECK_S = 0.01
# As nicegui_app.server serves the dashboard's port, where `jobsys up` mounts the hub.
WS_PING_INTERVAL_S = 10.0
WS_PING_TIMEOUT_S = 10.0


async def _stdin() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


# The hub ------------------------------------------------------------------------------
async def serve(args: argparse.Namespace) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from jobsys import aio, hub_protocol
    from jobsys.transport.postgres import PostgresTransport
    from jobsys_hub.app import Hub
    from nicegui_app.server import bind_port

    reader = await _stdin()
    if args.trace is not None:
        _trace_account_calls(args.trace)
    profiler = None
    if args.profile is not None:  # where the hub's time goes (cProfile of its one thread)
        import cProfile

        profiler = cProfile.Profile()
    transport = await PostgresTransport(args.database_url).open()
    sock = bind_port("127.0.0.1", 0)  # as nicegui_app.server binds the dashboard's port
    try:
        async with Hub(transport, args.data_dir) as hub:
            config = uvicorn.Config(Starlette(routes=[Mount(hub_protocol.MOUNT, hub.app)]), log_level="warning",
                                    access_log=False, lifespan="off", ws_ping_interval=WS_PING_INTERVAL_S,
                                    ws_ping_timeout=WS_PING_TIMEOUT_S)
            server = uvicorn.Server(config)
            task = asyncio.create_task(server.serve(sockets=[sock]), name="hub server")
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("the hub stopped before it listened")
                await asyncio.sleep(READY_CHECK_S)  # start-up only
            say("listening", port=sock.getsockname()[1])
            while line := await reader.readline():
                cmd = json.loads(line)
                if profiler is not None and cmd.get("cmd") == "profile_on":
                    profiler.enable()
                elif profiler is not None and cmd.get("cmd") == "profile_off":
                    profiler.disable()
                    profiler.dump_stats(args.profile)
                say("ok")
            server.should_exit = True
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), 5)
            await aio.cancel_and_wait([task])
    finally:
        sock.close()
        await transport.close()


def _trace_account_calls(path: pathlib.Path) -> None:
    """An experiment: the hub's worker calls (Hub._call) as jobsys makes them (the same
    transaction and statements as PostgresTransport._execute as an account, without its
    retries), with a timestamp at each step, one JSON line per call in `path` (--trace)."""
    import time

    from psycopg.rows import dict_row

    from jobsys.transport import postgres
    from jobsys_hub import app as hub_app

    out = path.open("a", buffering=1, encoding="utf-8")
    current: dict[int, dict[str, Any]] = {}
    original_execute = postgres.PostgresTransport._execute
    original_call = hub_app.Hub._call

    async def execute(self: postgres.PostgresTransport, what: str, statement: Any, params: Any,
                      token_hash: str | None = None) -> list[dict[str, Any]]:
        t = current.get(id(asyncio.current_task()))
        if t is None or token_hash is None:  # not a traced call
            return await original_execute(self, what, statement, params, token_hash)
        t["call"] = time.perf_counter()
        async with self._pool.connection() as conn:
            t["conn"] = time.perf_counter()
            cur = conn.cursor(row_factory=dict_row)
            async with conn.transaction():
                t["begun"] = time.perf_counter()
                await cur.execute(postgres._AS_ACCOUNT, {"token_hash": token_hash})
                t["as_account"] = time.perf_counter()
                await cur.execute(statement, params)
                t["executed"] = time.perf_counter()
                rows = await cur.fetchall()
                t["fetched"] = time.perf_counter()
            t["committed"] = time.perf_counter()
        return rows

    async def traced_call(self: Any, request: Any) -> Any:
        key = id(asyncio.current_task())
        t = current[key] = {"request": time.perf_counter()}
        try:
            return await original_call(self, request)
        finally:
            t["response"] = time.perf_counter()  # built; uvicorn sends it after this returns
            t["function"] = request.path_params.get("function")
            out.write(json.dumps(current.pop(key)) + "\n")

    postgres.PostgresTransport._execute = execute  # type: ignore[method-assign]
    hub_app.Hub._call = traced_call  # type: ignore[method-assign]


# One reporting worker (bench/worker_child.py's protocol) on the hub ---------------------
async def _start_one(jobs: ClaimTimingJobSystem, args: argparse.Namespace,
                     cmd: dict[str, Any]) -> tuple[Worker, asyncio.Task[None]]:
    options = WorkerOptions(
        name=args.name, evidence_dir=args.evidence_dir, driver="sim", sim_devices=args.devices,
        sim_speed=float(cmd.get("speed", 1.0)), push=bool(cmd.get("push", True)),
        poll_interval_s=args.poll_interval, heartbeat_interval_s=args.heartbeat_interval)
    worker = ReportingWorker(jobs, options)
    task = asyncio.create_task(worker.run(), name="worker")
    await _ready([(worker, task)])
    return worker, task


async def _ready(started: list[tuple[Worker, asyncio.Task[None]]]) -> None:
    """Until every Worker is registered and, with push, subscribed."""
    async with asyncio.timeout(READY_TIMEOUT_S):
        while True:
            for worker, task in started:
                if task.done():
                    task.result()  # raises what stopped it
                    raise RuntimeError("worker stopped before it was ready")
            if all(w.registered.is_set() and (not w.options.push or w.push_state is ChannelState.SUBSCRIBED)
                   for w, _ in started):
                return
            await asyncio.sleep(READY_CHECK_S)  # start-up only; nothing is timed here


async def _stop(started: list[tuple[Worker, asyncio.Task[None]]]) -> None:
    for worker, _ in started:
        worker.request_stop()
    await asyncio.gather(*(task for _, task in started))


async def worker(args: argparse.Namespace) -> None:
    # connect_hub, as `jobsys worker --server --token` connects; the JobSystem subclass notes claim calls.
    jobs = ClaimTimingJobSystem((await connect_hub(args.server, args.token, evidence_dir=args.evidence_dir)).transport)
    reader = await _stdin()
    current: list[tuple[Worker, asyncio.Task[None]]] = []
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            try:
                if cmd["cmd"] == "start":
                    await _stop(current)
                    current = [await _start_one(jobs, args, cmd)]
                    say("ready", worker_id=str(current[0][0].worker_id))
                elif cmd["cmd"] == "stop":
                    await _stop(current)
                    current = []
                    say("stopped")
                elif cmd["cmd"] == "drop":
                    for w, _ in current:
                        w._stop_job(uuid.UUID(cmd["job"]))
                    say("dropped")
                elif cmd["cmd"] == "status":
                    w = current[0][0] if current else None
                    say("status", runs=len(w.runs) if w else 0,
                        unreported=len(w.reporter.pending_ids()) if w else 0)
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the benchmark
                say("error", message=repr(exc))
    finally:
        with contextlib.suppress(Exception):
            await _stop(current)
        await jobs.close()


# Many plain Workers in one process, each its own PC -------------------------------------
async def fleet(args: argparse.Namespace) -> None:
    accounts = json.loads(args.accounts.read_text(encoding="utf-8"))
    clients = [await connect_hub(args.server, a["token"], evidence_dir=args.evidence_dir / a["name"])
               for a in accounts]
    reader = await _stdin()
    current: list[tuple[Worker, asyncio.Task[None]]] = []
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            try:
                if cmd["cmd"] == "start":
                    await _stop(current)
                    current = []
                    for account, jobs in zip(accounts, clients, strict=True):
                        options = WorkerOptions(
                            name=account["name"], evidence_dir=args.evidence_dir / account["name"], driver="sim",
                            sim_devices=args.devices, sim_speed=float(cmd.get("speed", 1.0)),
                            heartbeat_interval_s=args.heartbeat_interval)
                        w = Worker(jobs, options)
                        current.append((w, asyncio.create_task(w.run(), name=f"worker {account['name']}")))
                    await _ready(current)
                    say("ready", workers=len(current))
                elif cmd["cmd"] == "stop":
                    await _stop(current)
                    current = []
                    say("stopped")
                elif cmd["cmd"] == "status":
                    say("status", runs=sum(len(w.runs) for w, _ in current))
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the benchmark
                say("error", message=repr(exc))
    finally:
        with contextlib.suppress(Exception):
            await _stop(current)
        for jobs in clients:
            await jobs.close()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.hub_child")
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--database-url", required=True)
    s.add_argument("--data-dir", type=pathlib.Path, required=True)
    s.add_argument("--trace", type=pathlib.Path, help="experiment: each worker call's steps, timed, to FILE")
    s.add_argument("--profile", type=pathlib.Path, help="cProfile between profile_on and profile_off, to FILE")
    w = sub.add_parser("worker")
    w.add_argument("--server", required=True)
    w.add_argument("--token", required=True)
    w.add_argument("--name", required=True)
    w.add_argument("--devices", type=int, required=True)
    w.add_argument("--evidence-dir", type=pathlib.Path, required=True)
    w.add_argument("--poll-interval", type=float, default=3.0)
    w.add_argument("--heartbeat-interval", type=float, default=10.0)
    f = sub.add_parser("fleet")
    f.add_argument("--server", required=True)
    f.add_argument("--accounts", type=pathlib.Path, required=True)
    f.add_argument("--devices", type=int, required=True)
    f.add_argument("--evidence-dir", type=pathlib.Path, required=True)
    f.add_argument("--heartbeat-interval", type=float, default=10.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    # As the CLI logs: INFO on stderr (the parent sends it to a file).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("psycopg.pool").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per call at INFO
    parsed = parse()
    asyncio.run({"serve": serve, "worker": worker, "fleet": fleet}[parsed.mode](parsed))
