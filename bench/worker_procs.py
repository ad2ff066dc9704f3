"""Worker processes for the worker benchmarks, and what those benchmarks share.

Two kinds of process, both the real Worker class with simulated devices:
- the CLI worker, `python -m jobsys_cli worker ...`, exactly as an operator runs it
  (memory, crash recovery);
- bench/worker_child.py, which reports on stdout when a claim returned and when
  job_paused arrived, and restarts its Worker on command (push latency, pause).
Also: RSS and CPU from /proc, percentiles, waiting for a database condition, and the two
conditions the CLI-worker benchmarks wait for (devices online, every run of a job started).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, BinaryIO

import psycopg
from psycopg.rows import TupleRow

from bench.sql import query
from jobsys.system import JobSystem

ROOT = pathlib.Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 30.0
REPLY_TIMEOUT_S = 60.0
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _env() -> dict[str, str]:
    # Without these the CLI could pick Supabase mode or another database from the environment.
    return {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "JOBSYS_"))}


def _log(log_dir: pathlib.Path, name: str) -> BinaryIO:
    return open(log_dir / f"{name}.log", "ab")  # closed once the child has it


# CLI workers ---------------------------------------------------------------------------
async def spawn_cli_worker(
    url: str, name: str, devices: int, speed: float, log_dir: pathlib.Path, *extra: str
) -> asyncio.subprocess.Process:
    """`jobsys worker --driver sim`, its log in log_dir/NAME.log."""
    with _log(log_dir, name) as log:  # the child keeps its own descriptor
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "jobsys_cli", "worker", "--database-url", url, "--driver", "sim",
            "--name", name, "--sim-devices", str(devices), "--sim-speed", f"{speed:g}",
            "--evidence-dir", str(log_dir / "evidence"), *extra,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=_env())


async def stop_process(proc: asyncio.subprocess.Process, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM (the worker's clean stop), SIGKILL if it does not exit in time."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout_s):
                await proc.wait()
        except TimeoutError:
            kill(proc)
    await proc.wait()


def kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGKILL)


# /proc -------------------------------------------------------------------------------
def _status_kb(pid: int, field: str) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(f"{field} not in /proc/{pid}/status")


def rss_mb(pid: int) -> float:
    """Resident set size in MB (10^6 bytes)."""
    return _status_kb(pid, "VmRSS") * 1024 / 1e6


def peak_rss_mb(pid: int) -> float:
    """The largest RSS the process has had (VmHWM), in MB."""
    return _status_kb(pid, "VmHWM") * 1024 / 1e6


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


# Numbers -----------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the closest ranks."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# Database ----------------------------------------------------------------------------
class Db:
    """One connection for the benchmark's own reads (named queries in bench/queries.sql)."""

    def __init__(self, conn: psycopg.AsyncConnection[TupleRow]) -> None:
        self.conn = conn

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str) -> AsyncIterator[Db]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            yield cls(conn)

    async def row(self, query_name: str, /, **params: Any) -> tuple[Any, ...]:
        cur = await self.conn.execute(query(query_name), params)
        row = await cur.fetchone()
        if row is None:
            raise LookupError(f"{query_name}: no row")
        return tuple(row)

    async def value(self, query_name: str, /, **params: Any) -> Any:
        return (await self.row(query_name, **params))[0]


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 60.0,
                     every_s: float = 0.01) -> float:
    """Poll until check() is true; the wall time it was first seen true."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {what}")
        await asyncio.sleep(every_s)  # polling cadence = the resolution of the figure
    return time.time()


async def devices_online(db: Db, name: str, devices: int, timeout_s: float, every_s: float) -> float:
    """Wait until worker `name` has `devices` devices online; the wall time it was first seen."""
    async def online() -> bool:
        return bool(await db.value("worker_online_devices", name=name) == devices)

    return await wait_until(online, f"{name}: {devices} devices online", timeout_s, every_s=every_s)


async def job_running_everywhere(js: JobSystem, db: Db, devices: int, target_url: str, duration_sec: int,
                                 what: str, timeout_s: float, every_s: float) -> uuid.UUID:
    """Create a job on all devices (there must be `devices` of them); wait until every one of
    its runs has started. The job's id."""
    created = await js.create_job(target_url=target_url, duration_sec=duration_sec, target_type="all_devices")
    if created.assigned != devices:
        raise AssertionError(f"assigned {created.assigned} of {devices}")

    async def started() -> bool:
        return bool(await db.value("worker_runs_started", job_id=created.job.id) == devices)

    await wait_until(started, what, timeout_s, every_s=every_s)
    return created.job.id


# Reporting worker processes (bench/worker_child.py) ----------------------------------
class ChildWorker:
    """One bench/worker_child.py process and what it has reported."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str, changed: asyncio.Event) -> None:
        self.proc = proc
        self.name = name
        self.reports: dict[tuple[str, str], float] = {}  # (kind, job id) -> wall time
        self._replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._changed = changed
        self._reader = asyncio.create_task(self._read(), name=f"read-{name}")

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            msg = json.loads(line)
            if msg["kind"] in ("claimed", "paused"):
                self.reports[(msg["kind"], msg["job"])] = float(msg["t"])
                if "call_started" in msg:  # the claim call that returned it began here
                    self.reports[("claim_call", msg["job"])] = float(msg["call_started"])
                self._changed.set()
            else:
                self._replies.put_nowait(msg)
        self._replies.put_nowait({"kind": "error", "message": f"{self.name} exited ({self.proc.returncode})"})

    async def command(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            reply = await self._replies.get()
        if reply["kind"] == "error":
            raise RuntimeError(f"worker {self.name}: {reply['message']}")
        return reply

    async def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()  # EOF: the child stops its Worker and exits
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await self.proc.wait()
        except TimeoutError:
            kill(self.proc)
            await self.proc.wait()
        self._reader.cancel()


class ChildFleet:
    """N reporting worker processes, each with its own simulated devices."""

    def __init__(self, children: list[ChildWorker], changed: asyncio.Event) -> None:
        self.children = children
        self.active = children
        self._changed = changed

    @classmethod
    @contextlib.asynccontextmanager
    async def spawn(cls, url: str, workers: int, devices: int, log_dir: pathlib.Path,
                    *extra: str, prefix: str = "bench") -> AsyncIterator[ChildFleet]:
        changed = asyncio.Event()
        children: list[ChildWorker] = []
        try:
            for i in range(workers):
                name = f"{prefix}-{i:02d}"
                with _log(log_dir, name) as log:
                    proc = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "bench.worker_child", "--database-url", url, "--name", name,
                        "--devices", str(devices), "--evidence-dir", str(log_dir / "evidence"), *extra,
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=ROOT, env=_env())
                children.append(ChildWorker(proc, name, changed))
            yield cls(children, changed)
        finally:
            await asyncio.gather(*(c.close() for c in children), return_exceptions=True)

    async def start(self, *, push: bool, speed: float, count: int | None = None) -> list[str]:
        """(Re)start the first `count` Workers (default all) in parallel, stop the others;
        the started ones are the fleet until the next start. Their worker session ids."""
        self.active = self.children[:count]
        idle = self.children[len(self.active):]
        await asyncio.gather(*(c.command(cmd="stop") for c in idle))
        replies = await asyncio.gather(*(c.command(cmd="start", push=push, speed=speed) for c in self.active))
        return [r["worker_id"] for r in replies]

    async def stop(self) -> None:
        await asyncio.gather(*(c.command(cmd="stop") for c in self.children))

    async def drop(self, job_id: str) -> None:
        """Stop the job's runs in every worker now, as job_cancelled would (untimed upkeep:
        without push, the worker would learn it only at its next heartbeat)."""
        await asyncio.gather(*(c.command(cmd="drop", job=job_id) for c in self.active))

    async def idle(self) -> bool:
        """True when no worker has a run in progress or an outcome not yet reported."""
        replies = await asyncio.gather(*(c.command(cmd="status") for c in self.active))
        return all(r["runs"] == 0 and r["unreported"] == 0 for r in replies)

    def forget(self, kind: str, job_id: str) -> None:
        for c in self.children:
            c.reports.pop((kind, job_id), None)

    def reports(self, kind: str, job_id: str) -> list[float]:
        return [c.reports[(kind, job_id)] for c in self.active]

    async def wait_reports(self, kind: str, job_id: str, timeout_s: float) -> list[float]:
        """Each active worker's wall time for (kind, job), once every one has reported it."""
        key = (kind, job_id)
        async with asyncio.timeout(timeout_s):
            while True:
                self._changed.clear()
                if all(key in c.reports for c in self.active):
                    return self.reports(kind, job_id)
                await self._changed.wait()
