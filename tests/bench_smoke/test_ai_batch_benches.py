"""The AI batch benchmarks of issue 23 run end to end at their quick size (a few seconds each).
Timings are never asserted: only that every row is measured, and the shared limit's rows
stand beside the per-runner baseline."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench import ai_batch_api, ai_batch_shared
from bench.pg import BenchPostgres, embedded_postgres
from bench.registry import BENCHMARKS


class _Quiet:
    def tick(self, what: str) -> None:
        pass

    def say(self, what: str) -> None:
        pass


@pytest.fixture(scope="module")
def bench_pg() -> Iterator[BenchPostgres]:
    with embedded_postgres() as pg:
        yield pg


def test_both_are_registered() -> None:
    assert {"ai_batch_shared", "ai_batch_api"} <= set(BENCHMARKS)


async def test_shared_and_per_runner_limits_side_by_side(bench_pg: BenchPostgres) -> None:
    rows = await ai_batch_shared.run(bench_pg, True, _Quiet())
    assert [r.metric.split(" ")[0] for r in rows] == ["most", "429s", "makespan"]
    assert all(r.runs and r.baseline_runs for r in rows)


async def test_batch_api_overhead_inline_and_from_a_file(bench_pg: BenchPostgres) -> None:
    rows = await ai_batch_api.run(bench_pg, True, _Quiet())
    assert len(rows) == 6 and {"inline", "file"} == {r.metric.split(", ")[1].split(":")[0] for r in rows}
    assert all(r.runs for r in rows)
