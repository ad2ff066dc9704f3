"""ai_batch_api: the overhead of Batch API mode, against the local stand-in of the Batch API
endpoints (tests/batch/fake_gemini_batch.py) with the real google-genai client.

The stand-in's batch succeeds HOLD_S after submission. Measured: state reads (polls) of the
provider batch, the delay from the provider's "succeeded" to the runner's first read of it
(the poll backoff: 2 s, x1.5, at most 60 s), and from that read to every item stored (the
job completed). Default EngineSettings, real time.

    python -m bench.ai_batch_api [--items 1000 5000] [--hold 20]

Not in `python -m bench`'s registry (bench/registry.py belongs to another part of the tree).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time

from bench.pg import embedded_postgres
from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchStatus
from jobsys.batch.providers.gemini import GeminiProvider
from jobsys.batch.providers.offline import OfflineProvider
from jobsys.batch.providers.registry import ProviderSet
from jobsys.batch.runner import BatchRunner, RunnerOptions
from jobsys.system import JobSystem
from tests.batch import fake_gemini_batch as fb

DONE = ["BATCH_STATE_PENDING", "BATCH_STATE_RUNNING", "BATCH_STATE_SUCCEEDED"]


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

    def body(self, batch: fb.Batch) -> dict:  # type: ignore[type-arg]
        out = super().body(batch)
        if self.seen_at is None and out["metadata"]["state"] in fb.TERMINAL and batch.reads > 1:
            self.seen_at = time.monotonic()
        return out


async def one(url: str, n_items: int, hold_s: float) -> tuple[int, float, float]:
    stand_in = TimedStandIn()
    async with fb.serve(stand_in) as base:
        os.environ["GOOGLE_GEMINI_BASE_URL"] = base
        async with await JobSystem.connect(url) as runner_jobs, await JobSystem.connect(url) as client:
            runner = BatchRunner(BatchJobs.of(runner_jobs), RunnerOptions(name="bench-batch-api"),
                                 ProviderSet(offline=OfflineProvider(), gemini=GeminiProvider("bench-key")))
            stop = asyncio.Event()
            task = asyncio.create_task(runner.run(stop))
            batch = BatchJobs.of(client)
            job = await batch.create_job(template="Summarise: {text}", provider="gemini", mode="batch_api",
                                         items=[{"text": f"note {i}"} for i in range(n_items)])
            while not stand_in.batches:
                await asyncio.sleep(0.05)  # waiting for the submission
            await asyncio.sleep(hold_s)  # the provider takes its time
            stand_in.succeed()
            while True:
                final = await batch.get_job(job.id)
                if final.status.final:
                    break
                await asyncio.sleep(0.05)  # polling the outcome of a benchmark run
            stored_at = time.monotonic()
            stop.set()
            await task
    assert final.status is BatchStatus.COMPLETED and final.completed_items == n_items
    assert stand_in.succeeded_at is not None and stand_in.seen_at is not None
    return stand_in.batches[0].reads - 1, stand_in.seen_at - stand_in.succeeded_at, stored_at - stand_in.seen_at


async def main(sizes: list[int], hold_s: float) -> None:
    logging.getLogger("jobsys.batch").setLevel(logging.ERROR)
    print(f"{'items':>8}{'polls':>8}{'succeeded -> seen (s)':>24}{'seen -> all stored (s)':>25}")
    with embedded_postgres() as pg:
        for n in sizes:
            with pg.database() as url:
                polls, notice_s, store_s = await one(url, n, hold_s)
            print(f"{n:>8}{polls:>8}{notice_s:>24.2f}{store_s:>25.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--hold", type=float, default=20.0, help="seconds until the provider batch succeeds")
    args = parser.parse_args()
    asyncio.run(main(args.items, args.hold))
