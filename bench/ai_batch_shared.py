"""ai_batch_shared: two runners at 30 RPM against one provider quota of 30 RPM, with the
rate limit shared through the database (issue 23) and with today's per-runner limiters.

The stand-in provider keeps the quota the way Gemini does: per project, over every caller.
A call past 30 in the last minute gets a 429 naming a retry delay (counted), and does not
run. Each runner holds one job (max_jobs 1) of ITEMS calls at concurrency 10; call latency is
uniform in LATENCY_S model seconds. Time is scaled like bench/ai_batch.py (1 model second =
`scale` real seconds; the database round trips are real time). Reported per contender:
calls started per minute at the provider (the most in any sliding minute), 429s, makespan.

    python -m bench.ai_batch_shared [--scale 0.05] [--items 60]

Not in `python -m bench`'s registry (bench/registry.py belongs to another part of the tree).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import logging
import random
import time

from bench.pg import embedded_postgres
from jobsys.batch.engine import EngineSettings
from jobsys.batch.facade import BatchJobs
from jobsys.batch.limiter import WINDOW_S
from jobsys.batch.models import BatchStatus
from jobsys.batch.providers.base import CallFailure, Completion, FailureKind, Request
from jobsys.batch.providers.offline import OfflineProvider
from jobsys.batch.providers.registry import ProviderSet
from jobsys.batch.retry import RetryPolicy
from jobsys.batch.runner import BatchRunner, RunnerOptions
from jobsys.system import JobSystem

RPM = 30
LATENCY_S = (2.0, 4.0)  # model seconds
RETRY_DELAY_S = 10.0  # model seconds: the retryDelay the quota's 429 names
CONCURRENCY = 10


class Quota:
    """The provider's side: at most RPM calls run per sliding window, over every runner."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.accepted: collections.deque[float] = collections.deque()
        self.started: list[float] = []  # every attempt, accepted or not
        self.rejected = 0

    def admit(self) -> bool:
        now = time.monotonic()
        self.started.append(now)
        while self.accepted and self.accepted[0] <= now - self.window_s:
            self.accepted.popleft()
        if len(self.accepted) >= RPM:
            self.rejected += 1
            return False
        self.accepted.append(now)
        return True


class QuotaProvider(OfflineProvider):
    def __init__(self, quota: Quota, scale: float, seed: int) -> None:
        super().__init__((0.0, 0.0))
        self.quota = quota
        self.scale = scale
        self.rng = random.Random(seed)

    async def generate(self, request: Request) -> Completion:
        if not self.quota.admit():
            raise CallFailure(FailureKind.RATE_LIMITED, "429 RESOURCE_EXHAUSTED (stand-in quota)",
                              retry_after_s=RETRY_DELAY_S * self.scale)
        await asyncio.sleep(self.rng.uniform(*LATENCY_S) * self.scale)  # the model's latency
        return Completion(text="draft", tokens_in=10, tokens_out=10)


@dataclasses.dataclass
class Result:
    contender: str
    most_per_minute: int
    rejected: int
    makespan_model_s: float


def most_in_window(times: list[float], window_s: float) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window_s:
            j += 1
        best = max(best, i - j + 1)
    return best


async def one(url: str, shared: bool, scale: float, items: int) -> Result:
    window_s = WINDOW_S * scale
    quota = Quota(window_s)
    engine = EngineSettings(retry=RetryPolicy(backoff_base_s=scale, backoff_max_s=60 * scale,
                                              cooldown_default_s=5 * scale, cooldown_max_s=300 * scale))
    runners: list[tuple[BatchRunner, asyncio.Task[None], asyncio.Event, JobSystem]] = []
    for n in range(2):
        jobs = await JobSystem.connect(url)
        options = RunnerOptions(name=f"bench-{n}", rpm=RPM, rate_window_s=window_s, max_jobs=1,
                                shared_rate_limit=shared, engine=engine)
        runner = BatchRunner(BatchJobs.of(jobs), options,
                             ProviderSet(offline=QuotaProvider(quota, scale, seed=n)), rng=random.Random(n))
        stop = asyncio.Event()
        runners.append((runner, asyncio.create_task(runner.run(stop)), stop, jobs))
    try:
        async with await JobSystem.connect(url) as client:
            batch = BatchJobs.of(client)
            started = time.monotonic()
            ids = [(await batch.create_job(template="Summarise: {text}", provider="offline", concurrency=CONCURRENCY,
                                           items=[{"text": f"job {j} item {i}"} for i in range(items)])).id
                   for j in range(2)]
            while True:
                finals = [await batch.get_job(i) for i in ids]
                if all(f.status.final for f in finals):
                    break
                await asyncio.sleep(0.2)  # polling the outcome of a benchmark run
            makespan_s = time.monotonic() - started
            assert all(f.status is BatchStatus.COMPLETED for f in finals), [f.error_message for f in finals]
    finally:
        for _, task, stop, jobs in runners:
            stop.set()
            await asyncio.gather(task, return_exceptions=True)
            await jobs.close()
    return Result("shared (database)" if shared else "per runner", most_in_window(quota.started, window_s),
                  quota.rejected, makespan_s / scale)


async def main(scale: float, items: int) -> list[Result]:
    logging.getLogger("jobsys.batch").setLevel(logging.ERROR)
    results = []
    with embedded_postgres() as pg:
        for shared in (True, False):
            with pg.database() as url:
                results.append(await one(url, shared, scale, items))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.05)
    parser.add_argument("--items", type=int, default=60, help="calls per job (two jobs)")
    args = parser.parse_args()
    print(f"two runners at --rpm {RPM}, provider quota {RPM}/min, 2 x {args.items} calls, scale {args.scale}")
    print(f"{'limit':<20}{'calls in any minute':>22}{'429s':>8}{'makespan (model s)':>22}")
    for r in asyncio.run(main(args.scale, args.items)):
        print(f"{r.contender:<20}{r.most_per_minute:>22}{r.rejected:>8}{r.makespan_model_s:>22.1f}")
