"""ai_batch_shared: two runners at 30 RPM against one provider quota of 30 RPM, with the
rate limit shared through the database (issue 23) beside today's per-runner limiters.

The stand-in provider keeps the quota the way Gemini does: per project, over every caller.
A call past 30 in the last minute gets a 429 naming a retry delay (counted), and does not
run. Each runner holds one job (max_jobs 1) of `items` calls at concurrency 10; call latency
is uniform in LATENCY_S model seconds. Time is scaled like bench/ai_batch.py (1 model second
= `scale` real seconds; the database round trips are real time). Reported per contender:
calls started at the provider in any sliding minute (the most), 429s, makespan.

    python -m bench ai_batch_shared [--quick]
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import random
import time

from bench.harness import Better, Measurement, Ticker, measure
from bench.pg import BenchPostgres
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

NAME = "ai_batch_shared"
DESCRIPTION = "two runners at 30 RPM against one 30 RPM provider quota: shared limit vs per-runner limiters"

RPM = 30
LATENCY_S = (2.0, 4.0)  # model seconds
RETRY_DELAY_S = 10.0  # model seconds: the retryDelay the quota's 429 names
CONCURRENCY = 10
POLL_S = 0.1  # how often the bench looks for the jobs' end (off the clock: makespan is the database's)
BASELINE = "today's per-runner limiters: each runner counts its own 30 RPM"


@dataclasses.dataclass(frozen=True)
class Plan:
    scale: float
    items: int  # calls per job; two jobs, one per runner
    runs: int  # of each contender, alternating


FULL = Plan(scale=0.05, items=60, runs=3)
QUICK = Plan(scale=0.02, items=20, runs=1)

NOTES = (
    f"Two in-process runners, each with --rpm {RPM} and one job of {FULL.items} calls at concurrency "
    f"{CONCURRENCY}, against a stand-in provider whose quota is {RPM} calls in any sliding minute over both "
    f"runners (as Gemini counts per project): a call past it is answered 429 with a retryDelay of "
    f"{RETRY_DELAY_S:g} s and does not run. Call latency uniform in {LATENCY_S[0]:g}-{LATENCY_S[1]:g} model "
    f"seconds; 1 model second = {FULL.scale * 1000:g} ms for the latencies, the window and the retry delays "
    "alike. 'jobsys' is the limit shared through the database (acquire_batch_rate, one row lock per model); "
    "the baseline is each runner's own limiter, as before issue 23. Calls per minute are counted at the "
    "provider, on its arrival times; makespan from the first job's creation to the last job's completion "
    f"(bench clock), in model seconds. {FULL.runs} runs of each, alternating; medians."
)
LIMITS = (
    "Per runner, the runners send more than the quota and live on 429s; against this stand-in's short retry "
    "delay that can finish sooner than staying under the quota, while the real API's delays grow. Shared, "
    "an odd call can still reach the provider a few ms after the database's window moved (a 429 then holds "
    "both runners through the shared cooldown)."
)


def plan(quick: bool) -> Plan:
    return QUICK if quick else FULL


def steps(quick: bool) -> int:
    return 2 * plan(quick).runs


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


@dataclasses.dataclass(frozen=True)
class Result:
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


async def one(url: str, shared: bool, p: Plan, seed: int) -> Result:
    window_s = WINDOW_S * p.scale
    quota = Quota(window_s)
    engine = EngineSettings(retry=RetryPolicy(backoff_base_s=p.scale, backoff_max_s=60 * p.scale,
                                              cooldown_default_s=5 * p.scale, cooldown_max_s=300 * p.scale))
    runners: list[tuple[asyncio.Task[None], asyncio.Event, JobSystem]] = []
    try:
        for n in range(2):
            jobs = await JobSystem.connect(url)
            options = RunnerOptions(name=f"bench-{n}", rpm=RPM, rate_window_s=window_s, max_jobs=1,
                                    shared_rate_limit=shared, engine=engine)
            runner = BatchRunner(BatchJobs.of(jobs), options,
                                 ProviderSet(offline=QuotaProvider(quota, p.scale, seed=seed * 10 + n)),
                                 rng=random.Random(seed * 10 + n))
            stop = asyncio.Event()
            runners.append((asyncio.create_task(runner.run(stop)), stop, jobs))
        async with await JobSystem.connect(url) as client:
            batch = BatchJobs.of(client)
            started = time.monotonic()
            ids = [(await batch.create_job(template="Summarise: {text}", provider="offline", concurrency=CONCURRENCY,
                                           items=[{"text": f"job {j} item {i}"} for i in range(p.items)])).id
                   for j in range(2)]
            while True:
                finals = [await batch.get_job(i) for i in ids]
                if all(f.status.final for f in finals):
                    break
                await asyncio.sleep(POLL_S)  # polling the outcome of a benchmark run
            makespan_s = time.monotonic() - started
    finally:
        for task, stop, jobs in runners:
            stop.set()
            await asyncio.gather(task, return_exceptions=True)
            await jobs.close()
    if not all(f.status is BatchStatus.COMPLETED and f.failed_items == 0 for f in finals):
        raise AssertionError(f"a job did not complete every item: {[f.error_message for f in finals]}")
    return Result(most_in_window(quota.started, window_s), quota.rejected, makespan_s / p.scale)


async def run(pg: BenchPostgres, quick: bool, ticker: Ticker) -> list[Measurement]:
    p = plan(quick)
    engine_log = logging.getLogger("jobsys.batch")
    level = engine_log.level
    engine_log.setLevel(logging.ERROR)  # the per-runner contender's 429 warnings would break the progress bar
    results: dict[bool, list[Result]] = {True: [], False: []}
    try:
        for n in range(p.runs):
            order = (True, False) if n % 2 == 0 else (False, True)  # alternating: drift hits both alike
            for shared in order:
                what = "shared" if shared else "per runner"
                ticker.say(f"ai_batch_shared run {n + 1}: {what}")
                with pg.database() as url:
                    results[shared].append(await one(url, shared, p, seed=n + 1))
                ticker.tick(f"ai_batch_shared run {n + 1}: {what} done")
    finally:
        engine_log.setLevel(level)

    def runs(shared: bool, field: str) -> list[float]:
        return [float(getattr(r, field)) for r in results[shared]]

    return [
        measure(NAME, f"most calls started at the provider in any minute (quota {RPM})", "calls", Better.LOWER,
                runs(True, "most_per_minute"), runs(False, "most_per_minute"), BASELINE),
        measure(NAME, "429s from the provider's quota", "429s", Better.LOWER,
                runs(True, "rejected"), runs(False, "rejected"), BASELINE),
        measure(NAME, f"makespan of 2 x {p.items} calls", "model s", Better.LOWER,
                runs(True, "makespan_model_s"), runs(False, "makespan_model_s"), BASELINE),
    ]
