"""Runs benchmarks under one progress bar, on one embedded Postgres per run: each benchmark
works in fresh copies of the migrated template database, and starts after a checkpoint."""

from __future__ import annotations

import asyncio
import logging
import pathlib
import time
import warnings
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench import machine, output
from bench.harness import Measurement
from bench.pg import BenchPostgres, embedded_postgres
from bench.registry import BENCHMARKS, Benchmark


class _Bar:
    """The Ticker the benchmarks see, drawn by rich on stderr."""

    def __init__(self, progress: Progress, task: Any) -> None:
        self._progress = progress
        self._task = task

    def tick(self, what: str) -> None:
        self._progress.update(self._task, advance=1, description=what)

    def say(self, what: str) -> None:
        self._progress.update(self._task, description=what)


def command(names: list[str], quick: bool) -> str:
    return " ".join(["python -m bench", *names, *(["--quick"] if quick else [])])


async def _run_one(
    bench: Benchmark, pg: BenchPostgres, quick: bool, bar: _Bar
) -> tuple[list[Measurement], dict[str, Any]]:
    # Start from a clean WAL position, so no benchmark pays for the previous one's checkpoint.
    pg.checkpoint()
    info = machine.describe(pg.version())
    return await bench.run(pg, quick, bar), info


def _write(bench: Benchmark, rows: list[Measurement], info: dict[str, Any], quick: bool) -> pathlib.Path:
    return output.write(bench.name, {
        "benchmark": bench.name,
        "description": bench.description,
        "command": command([bench.name], quick),
        "quick": quick,
        "machine": info,
        "notes": bench.notes,
        "results": [r.to_json() for r in rows],
    }, quick)


def run(names: list[str], quick: bool) -> int:
    selected = [BENCHMARKS[n] for n in names] if names else list(BENCHMARKS.values())
    out = Console()
    err = Console(stderr=True)
    for bench in list(selected):
        reason = bench.unavailable()
        if reason is not None:
            err.print(f"{bench.name}: skipped ({reason})")
            selected.remove(bench)
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="platformdirs")
    total = 1 + sum(b.steps(quick) for b in selected)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=False) as progress:
        bar = _Bar(progress, progress.add_task("benchmarks", total=total))
        bar.say("starting Postgres")
        with embedded_postgres() as pg:
            bar.tick("Postgres ready")
            for bench in selected:
                started = time.monotonic()
                rows, info = asyncio.run(_run_one(bench, pg, quick, bar))
                path = _write(bench, rows, info, quick)
                progress.console.print(f"{bench.name}: wrote {path} ({time.monotonic() - started:.0f} s)")
                output.print_table(f"{bench.name}: {bench.description}", rows, out)
    return 0
