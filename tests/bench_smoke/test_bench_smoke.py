"""The new benchmark modules run end to end at a tiny size. Timings are never asserted:
only that every row has a positive value, and the peer's rows a baseline to compare with."""

from __future__ import annotations

import pathlib
import tempfile
from collections.abc import Iterator

import pytest

from bench import hub, lifecycle, procrastinate_peer, scale, worker_push
from bench.harness import Measurement
from bench.pg import BenchPostgres, embedded_postgres


class _Quiet:
    """A Ticker that draws nothing."""

    def tick(self, what: str) -> None:
        pass

    def say(self, what: str) -> None:
        pass


@pytest.fixture(scope="module")
def bench_pg() -> Iterator[BenchPostgres]:
    with embedded_postgres() as pg:
        yield pg


@pytest.fixture
def log_dir() -> Iterator[pathlib.Path]:
    with tempfile.TemporaryDirectory(prefix="jobsys-bench-smoke-") as tmp:
        yield pathlib.Path(tmp)


def _all_measured(rows: list[Measurement], with_baseline: bool) -> None:
    assert rows
    for row in rows:
        assert row.runs, row.metric
        if with_baseline:
            assert row.baseline is not None and row.baseline > 0, row.metric
            assert row.ratio is not None, row.metric


async def test_procrastinate_peer_latency_and_throughput(
    bench_pg: BenchPostgres, log_dir: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(procrastinate_peer, "latency_runs", lambda quick: 1)
    monkeypatch.setattr(procrastinate_peer, "latency_samples", lambda quick: 2)
    monkeypatch.setattr(procrastinate_peer, "throughput_runs", lambda quick: 1)
    monkeypatch.setattr(procrastinate_peer, "throughput_jobs", lambda quick: 80)
    rows = await procrastinate_peer._latency(bench_pg, log_dir, True, _Quiet())
    rows += await procrastinate_peer._throughput(bench_pg, True, _Quiet())
    _all_measured(rows, with_baseline=True)
    assert all(r.value > 0 for r in rows)


async def test_procrastinate_stalled_job_retry_recovers_a_killed_worker(
    bench_pg: BenchPostgres, log_dir: pathlib.Path
) -> None:
    async with procrastinate_peer._peer_database(bench_pg) as (url, app, db):
        recovery = await procrastinate_peer._peer_crash(url, app, db, log_dir, 0)
    assert 0 < recovery.requeued_s <= recovery.completed_s


async def test_lifecycle_compares_one_call_per_transition_with_a_naive_queue_of_as_many_transactions(
    bench_pg: BenchPostgres, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lifecycle, "client_counts", lambda quick: [2])
    monkeypatch.setattr(lifecycle, "runs", lambda quick: 1)
    monkeypatch.setattr(lifecycle, "cycles_per_run", lambda quick: 32)
    rows = await lifecycle.run(bench_pg, True, _Quiet())
    _all_measured([r for r in rows if r.unit == "cycles/s"], with_baseline=True)  # CPU ticks are too coarse here
    by_metric = {r.metric: r for r in rows}
    started = by_metric["cycles/s, 2 clients (one call per transition, vs naive with a start step)"]
    assert started.baseline_name == lifecycle.STARTED_BASELINE_NAME
    assert by_metric["cycles/s, 2 clients (one call per transition)"].goal == "≥ 1x baseline"
    assert by_metric["cycles/s, 2 clients (worker path: claim+start, one finish per round)"].goal == (
        "≥ 2,000 cycles/s, ≥ 2.5x baseline")


async def test_scale_runs_small(bench_pg: BenchPostgres, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scale, "fanout_sizes", lambda quick: [100, 200])
    monkeypatch.setattr(scale, "fanout_runs", lambda size, quick: 1)
    monkeypatch.setattr(scale, "claim_runs", lambda quick: 1)
    monkeypatch.setattr(scale, "RUNS_PER_ROUND", 100)
    monkeypatch.setattr(scale, "JOB_COUNTS", [10, 20])
    rows = await scale.run(bench_pg, True, _Quiet())
    _all_measured(rows, with_baseline=False)
    assert any("exponent" in r.metric for r in rows)


async def test_hub_runs_small(bench_pg: BenchPostgres, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both transports side by side, then the hub alone and `jobsys dashboard` with workers joined."""
    monkeypatch.setattr(hub, "WORKERS", 2)
    monkeypatch.setattr(hub, "DEVICES", 3)
    monkeypatch.setattr(worker_push, "DEVICES", 3)  # _latency_run counts the devices with it
    monkeypatch.setattr(hub, "runs", lambda quick: 1)
    monkeypatch.setattr(hub, "jobs_per_run", lambda quick: 1)
    monkeypatch.setattr(hub, "cost_runs", lambda quick: 1)
    monkeypatch.setattr(hub, "COST_WORKERS", 4)
    monkeypatch.setattr(hub, "COST_DEVICES", 2)
    monkeypatch.setattr(hub, "idle_window_s", lambda quick: 0.5)
    monkeypatch.setattr(hub, "job_duration_s", lambda quick: 1)
    rows = await hub.run(bench_pg, True, _Quiet())
    _all_measured([r for r in rows if r.unit == "ms"], with_baseline=True)
    _all_measured([r for r in rows if r.unit != "ms"], with_baseline=False)
    assert all(r.value > 0 for r in rows if r.unit in ("ms", "MB"))


def test_one_run_shares_one_postgres_and_writes_each_result(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m bench A B` starts Postgres once; each benchmark gets fresh databases on it."""
    from bench import output, registry, runner
    from bench.harness import Better, measure

    servers: list[str] = []

    def fake(name: str) -> registry.Benchmark:
        async def run(pg: BenchPostgres, quick: bool, ticker: object) -> list[Measurement]:
            servers.append(pg.admin_url)
            with pg.database() as url:  # a migrated copy: the jobsys schema is there
                import psycopg

                async with await psycopg.AsyncConnection.connect(url) as conn:
                    cur = await conn.execute("select count(*) from jobsys.jobs")
                    row = await cur.fetchone()
            assert row == (0,)
            return [measure(name, "rows", "n", Better.HIGHER, [1.0])]

        return registry.Benchmark(name, name, "", "", lambda quick: 1, run)

    monkeypatch.setattr(registry, "BENCHMARKS", {"a": fake("a"), "b": fake("b")})
    monkeypatch.setattr(runner, "BENCHMARKS", registry.BENCHMARKS)
    monkeypatch.setattr(output, "RESULTS_DIR", tmp_path)
    assert runner.run([], quick=True) == 0
    assert len(servers) == 2 and servers[0] == servers[1]
    assert sorted(p.name for p in (tmp_path / "quick").iterdir()) == ["a.json", "b.json"]
