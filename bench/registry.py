"""The benchmarks `python -m bench` knows, by name. A benchmark is a module with NAME,
DESCRIPTION, NOTES (what was measured), LIMITS (why jobsys is behind where it is),
steps(quick) (ticks of the progress bar) and run(pg, quick, ticker); optionally
unavailable() -> a reason it cannot run on this machine (a missing browser), or None."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from types import ModuleType

from bench import (
    ai_batch, ai_batch_api, ai_batch_shared, browser_latency, fanout, hub, lifecycle, procrastinate_peer, scale, worker_crash, worker_memory,
    worker_push,
)
from bench.harness import Measurement, Ticker
from bench.pg import BenchPostgres


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    notes: str
    limits: str
    steps: Callable[[bool], int]
    run: Callable[[BenchPostgres, bool, Ticker], Awaitable[list[Measurement]]]
    unavailable: Callable[[], str | None] = lambda: None


def _from_module(module: ModuleType) -> Benchmark:
    return Benchmark(module.NAME, module.DESCRIPTION, module.NOTES, module.LIMITS, module.steps, module.run,
                     getattr(module, "unavailable", lambda: None))


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in map(_from_module, (
    fanout, lifecycle, ai_batch, ai_batch_shared, ai_batch_api,
    worker_push, worker_memory, worker_crash, browser_latency,
    procrastinate_peer, scale, hub,
))}
