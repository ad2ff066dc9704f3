"""ai_batch: wall time of 50 LLM calls (8-16 s each) and the engine's own overhead.

One seeded latency draw per seed, the same for every contender: (a) the original plan's
sequential loop and (b) its lock-step batches of 5 with a 1 s sleep
(bench/baselines/lockstep_batches.py), (c) jobsys at concurrency 5, (d) jobsys under a
30 RPM limit at the best of a few concurrencies, and jobsys at concurrency 5 in a 429
storm. Time is scaled (1 model second = `scale` real seconds) for the model latency, the
1 s sleep, the rate-limit window and the retry delays alike. jobsys's database round trips
are real time and are not scaled, so the smaller the scale, the more they weigh; the full
run therefore also repeats (b) and (c) at a 5 times smaller scale to show that effect.

Then the engine alone: the real `batch-runner` CLI in a subprocess, offline provider at
zero latency, one job of 10,000 items: items per second and the runner's RSS.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import heapq
import logging
import os
import pathlib
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bench.baselines import lockstep_batches
from bench.harness import Better, Goal, Measurement, Ticker, measure
from bench.pg import BenchPostgres
from jobsys.batch import template as templates
from jobsys.batch.engine import EngineSettings
from jobsys.batch.facade import BatchJobs
from jobsys.batch.limiter import WINDOW_S
from jobsys.batch.models import DEFAULT_MODEL, BatchJob, BatchStatus
from jobsys.batch.providers.base import CallFailure, Completion, FailureKind, Request
from jobsys.batch.providers.offline import OfflineProvider
from jobsys.batch.providers.registry import ProviderSet
from jobsys.batch.retry import RetryPolicy
from jobsys.batch.runner import BatchRunner, RunnerOptions
from jobsys.events import ChannelState
from jobsys.system import JobSystem

NAME = "ai_batch"
DESCRIPTION = "an AI batch of 50 calls of 8-16 s (model seconds, median of seeds), and the engine's overhead"

ITEMS = 50
LATENCY_S = (8.0, 16.0)  # model seconds, uniform
CONCURRENCY = 5
RPM = 30  # binds: 5 calls of ~12 s already ask for 25 a minute
STORM_SHARE = 0.3  # of all calls, decided per (seed, prompt, attempt): every run sees the same storm
STORM_REJECT_S = 0.5  # model seconds until the 429 comes back
STORM_RETRY_DELAY_S = 5.0  # model seconds: the retryDelay each 429 names
GOAL_VS_LOCKSTEP = 0.85  # (c) <= 0.85 x (b)
GOAL_VS_BOUND = 1.15  # (d) <= 1.15 x the lower bound
POLL_S = 0.1  # how often the bench looks for a job's end; off the clock (the DB timestamps time it)
TEMPLATE = "Summarise this customer note in two sentences for the support team: {text}"
TITLE = "bench ai_batch"
BASELINE_LOCKSTEP = "original plan: lock-step batches of 5 (Promise.all) with a 1 s sleep between batches"
BASELINE_SEQUENTIAL = "original plan, first version: one call after another"


@dataclasses.dataclass(frozen=True)
class Plan:
    scale: float  # real seconds per model second
    seeds: tuple[int, ...]
    rpm_sweep: tuple[int, ...]  # concurrencies tried at RPM; the fastest is (d)
    small_scale: float | None  # (b) and (c) again at this scale: what unscaled round trips cost
    overhead_items: int
    overhead_concurrency: tuple[int, ...]
    overhead_runs: int


SMALL_SCALE = 0.01  # (b) and (c) again at this scale in the full run
# 0.05: a 12 s call sleeps 600 ms, so a 4 ms claim round trip is 0.08 model s, not 0.4.
# 6 = RPM x mean latency / 60 (Little's law), 15 half a window, 30 a full window at once.
FULL = Plan(scale=0.05, seeds=(1, 2, 3, 4, 5), rpm_sweep=(6, 15, 30), small_scale=SMALL_SCALE,
            overhead_items=10_000, overhead_concurrency=(5, 64), overhead_runs=3)
QUICK = Plan(scale=0.01, seeds=(1,), rpm_sweep=(30,), small_scale=None,
             overhead_items=200, overhead_concurrency=(64,), overhead_runs=1)

NOTES = (
    f"{ITEMS} items; each call's latency is drawn uniformly from 8-16 model seconds with a fixed seed, and "
    f"every contender of that seed calls the same provider with the same latency per prompt (the engine's "
    f"offline provider). 1 model second = {FULL.scale * 1000:g} ms, for the latencies, the 1 s sleep, "
    f"the rate-limit window and the retry delays alike; seeds {', '.join(map(str, FULL.seeds))}; medians "
    "over seeds, ratios of the medians. jobsys is timed from the job's created_at to its completed_at in "
    "the database (submit, push, claim, every item claimed and its result stored, finish); its database "
    "round trips (a few ms each) are real time, not scaled, so they weigh "
    f"{1 / FULL.scale:g} times more against the model latency than they would against a real model "
    f"({1 / SMALL_SCALE:g} times in the rows at time scale {SMALL_SCALE:g}). The baselines are "
    "timed around their loop and store nothing; with these draws the lock-step loop starts at most 25 "
    "calls in any 60 s, so a 30 RPM quota would not have slowed it. 'Ideal pool' is a zero-overhead pool "
    "of 5 taking items in submission order: what the scheduling alone gives, so (c) ÷ ideal is the "
    "engine's own cost. "
    f"(d) runs at {RPM} RPM (the limiter's sliding 60 s window, scaled) at concurrency "
    f"{', '.join(map(str, FULL.rpm_sweep))}, and reports the fastest. "
    "The issue's bound max(Σlatency/c + max latency, N/RPM) is not a lower bound: Σ/c + max is Graham's "
    "upper bound for greedy scheduling at concurrency c (the lower bound is max(Σ/c, max)), and N/RPM "
    "assumes evenly spaced calls, while a sliding window lets a whole window of calls start at once. The "
    "exact optimum for a draw at R calls per window W, when c ≥ R and every latency is below W (so "
    "concurrency never binds), is max over j of ⌊j/R⌋·W + l(j) with the latencies sorted longest first; "
    "only a scheduler that knows the latencies in advance reaches it. With the latencies in submission "
    "order, the same formula is the best any scheduler can do in that order. "
    f"Storm: {STORM_SHARE:.0%} of all calls (retries included) answer 429 after {STORM_REJECT_S:g} s with "
    f"a retryDelay of {STORM_RETRY_DELAY_S:g} s; concurrency 5, no RPM limit. The baselines get no storm "
    "run: the plan had no per-item retry, so a 429 would reject its Promise.all batch. "
    f"Overhead: the `batch-runner` CLI in its own process, offline provider at zero latency, one job of "
    f"{FULL.overhead_items:,} items, timed from started_at to completed_at; RSS read from /proc (VmRSS "
    "before the job, VmHWM after it)."
)
LIMITS = (
    "The time-scaled runs charge jobsys its database round trips (claiming each item as a slot frees, "
    "storing results, finishing the job) at full size against model latencies shrunk twenty- or a "
    "hundredfold; the baselines store nothing at all. The 'ideal' rows separate the two: what is left "
    "above 1 is mostly those round trips (each item waits for one claim before its call), not scheduling."
)


def engine_settings(scale: float) -> EngineSettings:
    """Every engine timing in model seconds too, so a retry or a cooldown costs what it would."""
    return EngineSettings(retry=RetryPolicy(
        backoff_base_s=1.0 * scale, backoff_max_s=60.0 * scale,
        cooldown_default_s=5.0 * scale, cooldown_max_s=300.0 * scale))


# The draw --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Draw:
    seed: int
    items: list[dict[str, Any]]
    latency_s: list[float]  # model seconds, in item order

    @classmethod
    def of(cls, seed: int) -> Draw:
        rng = random.Random(seed)
        return cls(seed, [{"text": f"customer note {seed}-{i}"} for i in range(ITEMS)],
                   [rng.uniform(*LATENCY_S) for _ in range(ITEMS)])

    @property
    def requests(self) -> list[Request]:
        return [Request(prompt=templates.render(TEMPLATE, item), model=DEFAULT_MODEL) for item in self.items]


class DrawnProvider(OfflineProvider):
    """The engine's offline provider, each prompt's latency taken from the draw and scaled;
    in a storm, a 429 for a seeded share of calls."""

    def __init__(self, draw: Draw, scale: float, *, storm: bool = False) -> None:
        super().__init__((0.0, 0.0))
        self._latency_s = {r.prompt: lat for r, lat in zip(draw.requests, draw.latency_s, strict=True)}
        self._scale = scale
        self._storm_seed = draw.seed if storm else None
        self._attempts: collections.Counter[str] = collections.Counter()
        self.served: collections.Counter[str] = collections.Counter()
        self.rejected = 0
        self.started_at: list[float] = []

    def latency_for(self, prompt: str) -> float:
        return self._latency_s[prompt] * self._scale

    async def generate(self, request: Request) -> Completion:
        self._attempts[request.prompt] += 1
        self.started_at.append(time.monotonic())
        if self._storm_seed is not None:
            # Seeded by (seed, prompt, attempt): the same storm whatever order the calls come in.
            key = f"{self._storm_seed}:{request.prompt}:{self._attempts[request.prompt]}"
            roll = random.Random(key).random()
            if roll < STORM_SHARE:
                self.calls += 1
                self.rejected += 1
                await asyncio.sleep(STORM_REJECT_S * self._scale)
                raise CallFailure(FailureKind.RATE_LIMITED, "429 RESOURCE_EXHAUSTED (simulated storm)",
                                  retry_after_s=STORM_RETRY_DELAY_S * self._scale)
        completion = await super().generate(request)
        self.served[request.prompt] += 1
        return completion


# Bounds (model seconds) ------------------------------------------------------------------
def issue_bound_s(latency_s: Sequence[float], concurrency: int, rpm: int,
                  window_s: float = WINDOW_S) -> float:
    """The issue's formula, max(Σl/c + max l, N/RPM)."""
    return max(sum(latency_s) / concurrency + max(latency_s), len(latency_s) / rpm * window_s)


def windowed_schedule_s(latency_s: Sequence[float], rpm: int, window_s: float = WINDOW_S) -> float:
    """Makespan when call j starts as early as a sliding window allows (⌊j/R⌋·W), in the order given."""
    return max(j // rpm * window_s + lat for j, lat in enumerate(latency_s))


def optimum_s(latency_s: Sequence[float], concurrency: int, rpm: int, window_s: float = WINDOW_S) -> float:
    """The exact minimum makespan under the sliding window: the longest calls in the earliest
    windows (pairing ascending start offsets with descending latencies minimises the largest
    sum). Exact only where concurrency cannot bind: c ≥ R and every call shorter than W."""
    if concurrency < rpm or max(latency_s) >= window_s:
        raise ValueError("the closed form needs concurrency >= rpm and every latency below the window")
    return windowed_schedule_s(sorted(latency_s, reverse=True), rpm, window_s)


def ideal_pool_s(latency_s: Sequence[float], concurrency: int) -> float:
    """A zero-overhead pool taking items in submission order: each starts when a slot frees."""
    slots = [0.0] * concurrency
    for lat in latency_s:
        heapq.heappush(slots, heapq.heappop(slots) + lat)
    return max(slots)


def ideal_lockstep_s(latency_s: Sequence[float]) -> float:
    """The lock-step loop with zero overhead: each batch as slow as its slowest call, plus the sleeps."""
    size = lockstep_batches.BATCH_SIZE
    batches = [max(latency_s[i:i + size]) for i in range(0, len(latency_s), size)]
    return sum(batches) + lockstep_batches.SLEEP_BETWEEN_BATCHES_S * (len(batches) - 1)


# Contenders ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EngineRun:
    model_s: float
    failed: int
    calls: int
    rejected: int
    cooldowns: int


async def _until(ready: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _wait_final(batch: BatchJobs, job_id: uuid.UUID, timeout_s: float) -> BatchJob:
    deadline = time.monotonic() + timeout_s
    while True:
        job = await batch.get_job(job_id)
        if job.status.final:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {job_id} still {job.status.value} after {timeout_s:g}s")
        await asyncio.sleep(POLL_S)


def _elapsed_s(job: BatchJob, from_start: bool = False) -> float:
    """By the database's clock: created_at (or started_at, the claim) to completed_at."""
    start = job.started_at if from_start else job.created_at
    assert start is not None and job.completed_at is not None
    return (job.completed_at - start).total_seconds()


def _check_window(starts: list[float], rpm: int, window_s: float) -> None:
    """Untimed: no more than rpm calls started in any window. The provider notes a start when
    its call begins, which can be a scheduling delay after the limiter granted it (the limiter
    counts grants), so an earlier start noted late shortens the window seen here: 5 % slack."""
    starts = sorted(starts)
    for first, later in zip(starts, starts[rpm:]):
        if later - first < window_s * 0.95:
            raise AssertionError(f"{rpm + 1} calls started within {later - first:.3f}s < {window_s:.3f}s")


async def jobsys_once(url: str, draw: Draw, scale: float, concurrency: int, rpm: int | None = None,
                      storm: bool = False) -> EngineRun:
    provider = DrawnProvider(draw, scale, storm=storm)
    options = RunnerOptions(name="bench-ai-batch", rpm=rpm, rate_window_s=WINDOW_S * scale,
                            engine=engine_settings(scale), shared_rate_limit=False)  # one runner: its own budget
    async with await JobSystem.connect(url) as runner_jobs, await JobSystem.connect(url) as client:
        runner = BatchRunner(BatchJobs.of(runner_jobs), options, ProviderSet(offline=provider),
                             rng=random.Random(draw.seed))
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        try:
            # Subscribed before the job exists: the push wakes the claim, as in a deployment.
            await _until(lambda: runner.push_state is ChannelState.SUBSCRIBED or task.done(),
                         "runner subscribed")
            batch = BatchJobs.of(client)
            job = await batch.create_job(template=TEMPLATE, items=draw.items, concurrency=concurrency,
                                         provider="offline", title=TITLE)
            final = await _wait_final(batch, job.id, timeout_s=ITEMS * 40 * LATENCY_S[1] * scale + 30)
        finally:
            stop.set()
            await task
    if final.status is not BatchStatus.COMPLETED or final.completed_items + final.failed_items != ITEMS:
        raise AssertionError(f"batch ended {final.status.value}: {final.completed_items} completed, "
                             f"{final.failed_items} failed of {ITEMS}")
    if len(provider.served) != final.completed_items or any(n != 1 for n in provider.served.values()):
        raise AssertionError("an item was answered more than once, or a completed item never was")
    if rpm is not None:
        _check_window(provider.started_at, rpm, WINDOW_S * scale)
    return EngineRun(_elapsed_s(final) / scale, final.failed_items, provider.calls, provider.rejected,
                     len(runner.limiter.cooldowns))


async def baseline_once(draw: Draw, scale: float, lockstep: bool) -> float:
    provider = DrawnProvider(draw, scale)
    requests = draw.requests
    started = time.perf_counter()
    if lockstep:
        results = await lockstep_batches.lockstep(
            provider, requests, sleep_s=lockstep_batches.SLEEP_BETWEEN_BATCHES_S * scale)
    else:
        results = await lockstep_batches.sequential(provider, requests)
    elapsed = time.perf_counter() - started
    if len(results) != ITEMS or provider.calls != ITEMS:
        raise AssertionError(f"baseline returned {len(results)} results from {provider.calls} calls")
    return elapsed / scale


# Engine overhead -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class OverheadRun:
    items_per_s: float
    idle_rss_mib: float
    peak_rss_mib: float


def _proc_status_mib(pid: int, field: str) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise KeyError(field)


async def overhead_once(url: str, n_items: int, concurrency: int) -> OverheadRun:
    """The runner as deployed (the `batch-runner` CLI in its own process), so the RSS is its own."""
    env = {k: v for k, v in os.environ.items() if k != "GEMINI_API_KEY"}
    items = [{"text": f"note {i}"} for i in range(n_items)]
    with tempfile.NamedTemporaryFile(prefix="jobsys-bench-runner-", suffix=".log") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "jobsys_cli", "batch-runner", "--database-url", url,
            "--provider", "offline", "--offline-latency", "0,0", "--name", "bench-overhead",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=log_file, env=env)
        log_path = pathlib.Path(log_file.name)
        try:
            await _until(lambda: "starting" in log_path.read_text() or proc.returncode is not None,
                         "batch-runner started")
            if proc.returncode is not None:
                raise RuntimeError(f"batch-runner exited {proc.returncode}: {log_path.read_text()[-2000:]}")
            await asyncio.sleep(1.0)  # connected and subscribed: what an idle runner holds
            idle_mib = _proc_status_mib(proc.pid, "VmRSS")
            async with await JobSystem.connect(url, push=False) as client:
                batch = BatchJobs.of(client)
                job = await batch.create_job(template=TEMPLATE, items=items, concurrency=concurrency,
                                             provider="offline", title=f"{TITLE} overhead")
                final = await _wait_final(batch, job.id, timeout_s=600)
            peak_mib = _proc_status_mib(proc.pid, "VmHWM")
        finally:
            if proc.returncode is None:
                proc.terminate()  # SIGTERM: the runner's clean stop
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
    if (final.status, final.completed_items) != (BatchStatus.COMPLETED, n_items):
        raise AssertionError(
            f"overhead job ended {final.status.value} with {final.completed_items} completed")
    return OverheadRun(n_items / _elapsed_s(final, from_start=True), idle_mib, peak_mib)


# The benchmark ---------------------------------------------------------------------------
def plan(quick: bool) -> Plan:
    return QUICK if quick else FULL


def steps(quick: bool) -> int:
    p = plan(quick)
    # sequential, lock-step, concurrency 5, storm, the RPM sweep, and (b) + (c) at the small scale
    per_seed = 4 + len(p.rpm_sweep) + (2 if p.small_scale else 0)
    return len(p.seeds) * per_seed + len(p.overhead_concurrency) * p.overhead_runs


@dataclasses.dataclass
class SeedResults:
    draw: Draw
    model_s: dict[str, float] = dataclasses.field(default_factory=dict)  # contender -> model seconds
    engine: dict[str, EngineRun] = dataclasses.field(default_factory=dict)


async def _one_seed(url: str, p: Plan, seed: int, position: int, ticker: Ticker) -> SeedResults:
    out = SeedResults(Draw.of(seed))

    def baseline(key: str, scale: float, lockstep: bool) -> Callable[[], Awaitable[None]]:
        async def go() -> None:
            out.model_s[key] = await baseline_once(out.draw, scale, lockstep)
        return go

    def engine(key: str, scale: float, concurrency: int, **kwargs: Any) -> Callable[[], Awaitable[None]]:
        async def go() -> None:
            out.engine[key] = await jobsys_once(url, out.draw, scale, concurrency, **kwargs)
            out.model_s[key] = out.engine[key].model_s
        return go

    contenders: dict[str, Callable[[], Awaitable[None]]] = {
        "a": baseline("a", p.scale, lockstep=False),
        "b": baseline("b", p.scale, lockstep=True),
        "c": engine("c", p.scale, CONCURRENCY),
        "storm": engine("storm", p.scale, CONCURRENCY, storm=True),
        **{f"rpm c={c}": engine(f"rpm c={c}", p.scale, c, rpm=RPM) for c in p.rpm_sweep},
    }
    if p.small_scale:
        contenders["b small"] = baseline("b small", p.small_scale, lockstep=True)
        contenders["c small"] = engine("c small", p.small_scale, CONCURRENCY)
    order = list(contenders)
    shift = position % len(order)  # a different order per seed: drift on a shared machine hits all alike
    for key in order[shift:] + order[:shift]:
        ticker.say(f"ai_batch seed {seed}: {key}")
        await contenders[key]()
        ticker.tick(f"ai_batch seed {seed}: {key} done")
    return out


def _with_goal(m: Measurement, goal: str, met: bool) -> Measurement:
    return dataclasses.replace(m, goal=goal, goal_met=met)


def _lockstep_goal(m: Measurement) -> Measurement:
    at_least = 1 / GOAL_VS_LOCKSTEP
    return _with_goal(m, f"(c) ≤ {GOAL_VS_LOCKSTEP:g} × (b): ratio ≥ {at_least:.3f}x",
                      m.ratio is not None and m.ratio >= at_least)


def _rows(p: Plan, seeds: list[SeedResults], overhead: dict[int, list[OverheadRun]]) -> list[Measurement]:
    def runs(key: str) -> list[float]:
        return [s.model_s[key] for s in seeds]

    unit = "model s"
    rows = [
        _lockstep_goal(measure(NAME, f"(c) {ITEMS} items, jobsys at concurrency {CONCURRENCY}, vs (b)", unit,
                               Better.LOWER, runs("c"), runs("b"), BASELINE_LOCKSTEP)),
        measure(NAME, f"(c) {ITEMS} items, jobsys at concurrency {CONCURRENCY}, vs (a)", unit, Better.LOWER,
                runs("c"), runs("a"), BASELINE_SEQUENTIAL),
        measure(NAME, "(c) ÷ ideal pool of 5 in submission order (the engine's own cost)", "x", Better.LOWER,
                [s.model_s["c"] / ideal_pool_s(s.draw.latency_s, CONCURRENCY) for s in seeds]),
        measure(NAME, "(b) ÷ ideal lock-step (the baseline's own cost)", "x", Better.LOWER,
                [s.model_s["b"] / ideal_lockstep_s(s.draw.latency_s) for s in seeds]),
    ]
    if p.small_scale:
        rows.append(_lockstep_goal(measure(
            NAME, f"(c) vs (b) at time scale {p.small_scale:g} "
            f"(round trips weigh {p.scale / p.small_scale:g}x more)",
            unit, Better.LOWER, runs("c small"), runs("b small"), BASELINE_LOCKSTEP)))

    by_c = {c: runs(f"rpm c={c}") for c in p.rpm_sweep}
    best = min(by_c, key=lambda c: statistics.median(by_c[c]))
    rows += [measure(NAME, f"jobsys at {RPM} RPM, concurrency {c}", unit, Better.LOWER, by_c[c])
             for c in p.rpm_sweep if c != best]
    d = by_c[best]
    rows.append(measure(NAME, f"(d) jobsys at {RPM} RPM, best concurrency {best}, vs (b)", unit, Better.LOWER,
                        d, runs("b"), BASELINE_LOCKSTEP))
    bound = [issue_bound_s(s.draw.latency_s, best, RPM) for s in seeds]
    optimum = [optimum_s(s.draw.latency_s, best, RPM) for s in seeds]
    in_order = [windowed_schedule_s(s.draw.latency_s, RPM) for s in seeds]
    rows += [
        measure(NAME, "(d) ÷ the issue's bound max(Σl/c + max l, N/RPM), not a true bound", "x",
                Better.LOWER, [x / b for x, b in zip(d, bound, strict=True)], goal=Goal(GOAL_VS_BOUND)),
        measure(NAME, "(d) ÷ the exact optimum for the draw (latencies known in advance)", "x", Better.LOWER,
                [x / b for x, b in zip(d, optimum, strict=True)], goal=Goal(GOAL_VS_BOUND)),
        measure(NAME, "(d) ÷ the best possible in submission order", "x", Better.LOWER,
                [x / b for x, b in zip(d, in_order, strict=True)]),
        measure(NAME, "the issue's bound for (d)'s draws", unit, Better.LOWER, bound),
        measure(NAME, "the exact optimum for (d)'s draws", unit, Better.LOWER, optimum),
    ]

    storms = [s.engine["storm"] for s in seeds]
    failed = [float(r.failed) for r in storms]
    m = measure(NAME, f"failed items in a 429 storm ({STORM_SHARE:.0%} of calls), worst seed", "items",
                Better.LOWER, failed)
    rows.append(_with_goal(dataclasses.replace(m, value=max(failed)), "0 items", max(failed) == 0))
    rejected = statistics.median(r.rejected for r in storms)
    cooldowns = statistics.median(r.cooldowns for r in storms)
    rows.append(measure(NAME, f"(c) in the 429 storm: {rejected:g} 429s, {cooldowns:g} shared cooldowns "
                        "(medians)", unit, Better.LOWER, [r.model_s for r in storms]))

    for c, overhead_runs in overhead.items():
        rows.append(measure(NAME, f"engine overhead: {p.overhead_items:,} items at zero latency, "
                            f"concurrency {c}", "items/s", Better.HIGHER,
                            [r.items_per_s for r in overhead_runs]))
    every = [r for overhead_runs in overhead.values() for r in overhead_runs]
    rows += [
        measure(NAME, "batch-runner RSS, idle (connected, subscribed)", "MiB", Better.LOWER,
                [r.idle_rss_mib for r in every]),
        measure(NAME, f"batch-runner peak RSS (VmHWM) after {p.overhead_items:,} items", "MiB", Better.LOWER,
                [r.peak_rss_mib for r in every]),
    ]
    return rows


async def run(pg: BenchPostgres, quick: bool, ticker: Ticker) -> list[Measurement]:
    p = plan(quick)
    engine_log = logging.getLogger("jobsys.batch")
    level = engine_log.level
    engine_log.setLevel(logging.ERROR)  # the storm's cooldown warnings would break the progress bar
    try:
        with pg.database() as url:
            seeds = [await _one_seed(url, p, seed, i, ticker) for i, seed in enumerate(p.seeds)]
        overhead: dict[int, list[OverheadRun]] = {c: [] for c in p.overhead_concurrency}
        for i in range(p.overhead_runs):
            for c in p.overhead_concurrency:
                with pg.database() as url:  # a fresh database: no earlier job's rows or bloat
                    ticker.say(f"ai_batch overhead: {p.overhead_items:,} items, concurrency {c}")
                    overhead[c].append(await overhead_once(url, p.overhead_items, c))
                    ticker.tick(f"ai_batch overhead: run {i + 1}, concurrency {c} done")
    finally:
        engine_log.setLevel(level)
    return _rows(p, seeds, overhead)
