"""What every benchmark shares: the result row, medians and ratios, and the run context.

A ratio is always "how many times better jobsys is": baseline / jobsys for times,
jobsys / baseline for rates. Above 1 jobsys is ahead; below 1 it is behind.
"""

from __future__ import annotations

import dataclasses
import enum
import statistics
from typing import Any, Protocol


class Better(str, enum.Enum):
    LOWER = "lower"  # times
    HIGHER = "higher"  # rates


@dataclasses.dataclass(frozen=True)
class Goal:
    """A target from the issue, e.g. `Goal(100, "ms")` with Better.LOWER means ≤ 100 ms."""

    value: float | None  # None: the ratio alone is the goal
    min_ratio: float | None = None  # e.g. 8.0: at least 8x better than the baseline

    def describe(self, unit: str, better: Better) -> str:
        parts = [] if self.value is None else [f"{'≤' if better is Better.LOWER else '≥'} {self.value:,g} {unit}"]
        if self.min_ratio is not None:
            parts.append(f"≥ {self.min_ratio:g}x baseline")
        return ", ".join(parts)


@dataclasses.dataclass
class Measurement:
    """One row of the table and of bench/results/NAME.json."""

    name: str  # the benchmark
    metric: str  # what was measured, in words
    value: float  # jobsys: median of `runs`
    unit: str
    baseline: float | None  # the baseline's median, measured in the same run
    ratio: float | None
    better: Better
    baseline_name: str = ""
    runs: list[float] = dataclasses.field(default_factory=list)
    baseline_runs: list[float] = dataclasses.field(default_factory=list)
    goal: str | None = None
    goal_met: bool | None = None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["better"] = self.better.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Measurement:
        fields = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in fields}
        known["better"] = Better(known["better"])
        return cls(**known)


def ratio(value: float, baseline: float | None, better: Better) -> float | None:
    if baseline is None or value <= 0 or baseline <= 0:
        return None
    return baseline / value if better is Better.LOWER else value / baseline


def measure(
    name: str, metric: str, unit: str, better: Better, runs: list[float],
    baseline_runs: list[float] | None = None, baseline_name: str = "", goal: Goal | None = None,
) -> Measurement:
    """Medians of both sides, their ratio, and whether the goal is met."""
    value = statistics.median(runs)
    baseline = statistics.median(baseline_runs) if baseline_runs else None
    r = ratio(value, baseline, better)
    met: bool | None = None
    if goal is not None:
        met = (goal.value is None or (value <= goal.value if better is Better.LOWER else value >= goal.value))
        if goal.min_ratio is not None:
            met = met and r is not None and r >= goal.min_ratio
    return Measurement(
        name=name, metric=metric, value=value, unit=unit, baseline=baseline, ratio=r, better=better,
        baseline_name=baseline_name, runs=list(runs), baseline_runs=list(baseline_runs or []),
        goal=goal.describe(unit, better) if goal else None, goal_met=met,
    )


class Ticker(Protocol):
    """The progress bar as a benchmark sees it: one tick per unit of planned work."""

    def tick(self, what: str) -> None: ...

    def say(self, what: str) -> None: ...
