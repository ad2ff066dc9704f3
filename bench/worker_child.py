"""A worker process for bench/worker_push.py: the real Worker (worker.agent) with simulated
devices, started and stopped on command, reporting the moments the benchmark measures.

    python -m bench.worker_child --database-url URL --name NAME --devices N [...]

stdin, one JSON command a line:
  {"cmd": "start", "push": bool, "speed": x}  -> {"kind": "ready", "worker_id": ...} once
      registered (and, with push, once LISTEN is in place); a running Worker is stopped first
  {"cmd": "stop"}    -> the Worker stops as on SIGTERM, then {"kind": "stopped"}
  {"cmd": "drop", "job": id}  -> the job's runs stop, as on job_cancelled; {"kind": "dropped"}
  {"cmd": "status"}  -> {"kind": "status", "runs": n, "unreported": n}
EOF ends the process. stdout also carries, unasked:
  {"kind": "claimed", "job": id, "t": wall, "call_started": wall}  the first claim of a job's
      runs has returned (t), from the claim_assignments call that began at call_started
  {"kind": "paused", "job": id, "t": wall}   job_paused arrived (Worker.paused_jobs has it)
Wall-clock times (time.time()) so the parent and Postgres's clock_timestamp() compare.

Restarting the Worker in one process (rather than a new process per mode) keeps the
benchmark inside its time budget; each start is a new worker session, as a restart is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import pathlib
import sys
import time
import uuid
from typing import Any

from jobsys.events import ChannelState, Event, EventName
from jobsys.models import ClaimedAssignment
from jobsys.system import JobSystem
from jobsys.transport.postgres import PostgresTransport
from worker.agent import Worker
from worker.options import WorkerOptions

READY_TIMEOUT_S = 30.0
SUBSCRIBED_CHECK_S = 0.005


def say(kind: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"kind": kind, **fields}) + "\n")
    sys.stdout.flush()


class ClaimTimingJobSystem(JobSystem):
    """JobSystem, noting when each claim call began (the worker has one claim loop)."""

    claim_started = 0.0

    async def claim_assignments(self, *args: Any, **kwargs: Any) -> list[ClaimedAssignment]:
        self.claim_started = time.time()
        return await super().claim_assignments(*args, **kwargs)


class ReportingWorker(Worker):
    """The Worker, unchanged, plus one line on stdout at the two moments measured."""

    def __init__(self, jobs: ClaimTimingJobSystem, options: WorkerOptions) -> None:
        super().__init__(jobs, options)
        self._timing = jobs
        self._claimed_jobs: set[uuid.UUID] = set()

    def _launch(self, run: ClaimedAssignment) -> None:
        # _claim_round calls this for each run right after claim_assignments returned:
        # the first call for a job is the moment the worker has that job's assignments.
        if run.job_id not in self._claimed_jobs:
            now = time.time()
            self._claimed_jobs.add(run.job_id)
            say("claimed", job=str(run.job_id), t=now, call_started=self._timing.claim_started)
        super()._launch(run)

    def _on_event(self, event: Event) -> None:
        super()._on_event(event)
        if event.event == EventName.JOB_PAUSED:
            say("paused", job=str(event.payload.get("job_id")), t=time.time())


async def _start(
    jobs: ClaimTimingJobSystem, args: argparse.Namespace, cmd: dict[str, Any]
) -> tuple[Worker, asyncio.Task[None]]:
    options = WorkerOptions(
        name=args.name, evidence_dir=args.evidence_dir, driver="sim", sim_devices=args.devices,
        sim_speed=float(cmd.get("speed", 1.0)), push=bool(cmd.get("push", True)),
        poll_interval_s=args.poll_interval, heartbeat_interval_s=args.heartbeat_interval)
    worker = ReportingWorker(jobs, options)
    task = asyncio.create_task(worker.run(), name="worker")
    async with asyncio.timeout(READY_TIMEOUT_S):
        while not (worker.registered.is_set()
                   and (not options.push or worker.push_state is ChannelState.SUBSCRIBED)):
            if task.done():
                task.result()  # raises what stopped it
                raise RuntimeError("worker stopped before it was ready")
            await asyncio.sleep(SUBSCRIBED_CHECK_S)  # startup only; nothing is timed here
    return worker, task


async def _stop(worker: Worker | None, task: asyncio.Task[None] | None) -> None:
    if worker is not None and task is not None:
        worker.request_stop()
        await task


async def main(args: argparse.Namespace) -> None:
    transport = PostgresTransport(args.database_url, pool_max_size=args.pool_max_size)
    jobs = ClaimTimingJobSystem(await transport.open())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker: Worker | None = None
    task: asyncio.Task[None] | None = None
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            try:
                if cmd["cmd"] == "start":
                    await _stop(worker, task)
                    worker, task = await _start(jobs, args, cmd)
                    say("ready", worker_id=str(worker.worker_id))
                elif cmd["cmd"] == "stop":
                    await _stop(worker, task)
                    worker = task = None
                    say("stopped")
                elif cmd["cmd"] == "drop":
                    # What job_cancelled (or the heartbeat's stop list) does: stop the job's runs.
                    if worker is not None:
                        worker._stop_job(uuid.UUID(cmd["job"]))
                    say("dropped")
                elif cmd["cmd"] == "status":
                    say("status", runs=len(worker.runs) if worker else 0,
                        unreported=len(worker.reporter.pending_ids()) if worker else 0)
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the benchmark
                say("error", message=repr(exc))
    finally:
        with contextlib.suppress(Exception):
            await _stop(worker, task)
        await jobs.close()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_child")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--evidence-dir", type=pathlib.Path, required=True)
    parser.add_argument("--poll-interval", type=float, default=3.0)
    parser.add_argument("--heartbeat-interval", type=float, default=10.0)
    parser.add_argument("--pool-max-size", type=int, default=10)
    return parser.parse_args(argv)


if __name__ == "__main__":
    # As the CLI logs: one INFO line per event, on stderr (the parent sends it to a file).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("psycopg.pool").setLevel(logging.WARNING)
    asyncio.run(main(parse()))
