"""ai_batch_api: the overhead of Batch API mode, against the local stand-in of the Batch API
endpoints (tests/batch/fake_gemini_batch.py) with the real google-genai client.

The stand-in's batch succeeds `hold_s` after submission. Measured per size and input path
(inline requests, or a JSONL file through the Files API with its result file): state reads
(polls) of the provider batch, the delay from the provider's "succeeded" to the runner's
first read of it (the poll backoff), and from that read to every item stored (the job
completed; for the file path this includes downloading the result file).

    python -m bench ai_batch_api [--quick]
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from bench.harness import Better, Measurement, Ticker, measure
from bench.pg import BenchPostgres
from jobsys.batch.engine import EngineSettings
from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchJob, BatchStatus
from jobsys.batch.providers.gemini import GeminiProvider
from jobsys.batch.providers.offline import OfflineProvider
from jobsys.batch.providers.registry import ProviderSet
from jobsys.batch.runner import BatchRunner, RunnerOptions
from jobsys.system import JobSystem
from tests.batch import fake_gemini_batch as fb

NAME = "ai_batch_api"
DESCRIPTION = "Batch API mode's overhead: polls, provider 'succeeded' to items stored, inline and file input"

DONE = ["BATCH_STATE_PENDING", "BATCH_STATE_RUNNING", "BATCH_STATE_SUCCEEDED"]
POLL_S = 0.02  # how often the bench looks for the submission and the job's end
PATHS = {"inline": None, "file": 1}  # the runner's inline limit: 1 byte sends every batch as a file


@dataclasses.dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    hold_s: float  # until the provider batch succeeds
    engine: EngineSettings  # the poll backoff


FULL = Plan(sizes=(1000, 5000), hold_s=20.0, engine=EngineSettings())  # the default backoff: 2 s x1.5, <= 60 s
QUICK = Plan(sizes=(200,), hold_s=1.0, engine=EngineSettings(batch_api_poll_min_s=0.2, batch_api_poll_max_s=1.0))

NOTES = (
    f"One runner (default settings: the first poll after {FULL.engine.batch_api_poll_min_s:g} s, then x1.5 up "
    f"to {FULL.engine.batch_api_poll_max_s:g} s) and one Batch API job of {', '.join(map(str, FULL.sizes))} "
    "items, against the local stand-in of the Batch API and Files API endpoints with the real google-genai "
    f"client; the stand-in's batch succeeds {FULL.hold_s:g} s after submission. 'inline' sends the requests "
    "in the create call and reads the responses from the batch; 'file' (the runner's inline limit lowered to "
    "1 byte) uploads a JSONL file, creates the batch from it and downloads the result file. Polls count the "
    "state reads after submission; 'succeeded -> seen' is the poll backoff's share, 'seen -> stored' the "
    "runner's (reading the results, storing them 500 items a report, finishing the job). Real time, one run "
    "each."
)
LIMITS = (
    "The wait to notice the end is the poll backoff: on a batch that runs for hours, up to "
    f"{FULL.engine.batch_api_poll_max_s:g} s."
)


def plan(quick: bool) -> Plan:
    return QUICK if quick else FULL


def steps(quick: bool) -> int:
    return len(plan(quick).sizes) * len(PATHS)


class TimedStandIn(fb.FakeGeminiBatch):
    """Records when the batch was allowed to succeed and when a read first said so."""

    def __init__(self) -> None:
        super().__init__(DONE)
        self.gate.clear()
        self.succeeded_at: float | None = None
        self.seen_at: float | None = None

    def succeed(self) -> None:
        self.succeeded_at = time.monotonic()
        self.gate.set()

    def body(self, batch: fb.Batch) -> dict[str, Any]:
        out = super().body(batch)
        if self.seen_at is None and out["metadata"]["state"] in fb.TERMINAL and batch.reads > 1:
            self.seen_at = time.monotonic()
        return out


@dataclasses.dataclass(frozen=True)
class Result:
    polls: int
    notice_s: float
    store_s: float


async def one(url: str, n_items: int, p: Plan, inline_max_bytes: int | None) -> Result:
    stand_in = TimedStandIn()
    engine = p.engine if inline_max_bytes is None else dataclasses.replace(
        p.engine, batch_api_inline_max_bytes=inline_max_bytes)
    async with (fb.serve(stand_in) as base, await JobSystem.connect(url) as runner_jobs,
                await JobSystem.connect(url) as client):
        runner = BatchRunner(BatchJobs.of(runner_jobs), RunnerOptions(name="bench-batch-api", engine=engine),
                             ProviderSet(offline=OfflineProvider(), gemini=GeminiProvider("bench-key", base_url=base)))
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        try:
            batch = BatchJobs.of(client)
            job = await batch.create_job(template="Summarise: {text}", provider="gemini", mode="batch_api",
                                         items=[{"text": f"note {i}"} for i in range(n_items)])
            while not stand_in.batches:
                await asyncio.sleep(POLL_S)  # waiting for the submission
            await asyncio.sleep(p.hold_s)  # the provider takes its time
            stand_in.succeed()
            final = await _wait_final(batch, job)
            stored_at = time.monotonic()
        finally:
            stop.set()
            await task
    if final.status is not BatchStatus.COMPLETED or final.completed_items != n_items:
        raise AssertionError(f"the job ended {final.status.value} with {final.completed_items} completed")
    if (stand_in.batches[0].input_file is not None) != (inline_max_bytes is not None):
        raise AssertionError("the batch did not take the input path asked for")
    assert stand_in.succeeded_at is not None and stand_in.seen_at is not None
    return Result(stand_in.batches[0].reads - 1, stand_in.seen_at - stand_in.succeeded_at,
                  stored_at - stand_in.seen_at)


async def _wait_final(batch: BatchJobs, job: BatchJob) -> BatchJob:
    while True:
        current = await batch.get_job(job.id)
        if current.status.final:
            return current
        await asyncio.sleep(POLL_S)  # polling the outcome of a benchmark run


async def run(pg: BenchPostgres, quick: bool, ticker: Ticker) -> list[Measurement]:
    p = plan(quick)
    engine_log = logging.getLogger("jobsys.batch")
    level = engine_log.level
    engine_log.setLevel(logging.ERROR)
    rows: list[Measurement] = []
    try:
        for n in p.sizes:
            for path, limit in PATHS.items():
                ticker.say(f"ai_batch_api: {n:,} items, {path}")
                with pg.database() as url:
                    r = await one(url, n, p, limit)
                ticker.tick(f"ai_batch_api: {n:,} items, {path} done")
                where = f"{n:,} items, {path}"
                rows += [
                    measure(NAME, f"{where}: state reads of the provider batch", "reads", Better.LOWER,
                            [float(r.polls)]),
                    measure(NAME, f"{where}: provider 'succeeded' -> the runner sees it", "s", Better.LOWER,
                            [r.notice_s]),
                    measure(NAME, f"{where}: seen -> every item stored", "s", Better.LOWER, [r.store_s]),
                ]
    finally:
        engine_log.setLevel(level)
    return rows
