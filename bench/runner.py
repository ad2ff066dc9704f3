"""Runs benchmarks, each on its own embedded Postgres, under one progress bar."""

from __future__ import annotations

import asyncio
import logging
import warnings
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench import machine, output
from bench.harness import Measurement
from bench.pg import embedded_postgres
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


async def _run_one(bench: Benchmark, quick: bool, bar: _Bar) -> tuple[list[Measurement], dict[str, Any]]:
    bar.say(f"{bench.name}: starting Postgres")
    with embedded_postgres() as pg:
        info = machine.describe(pg.version())
        bar.tick(f"{bench.name}: Postgres {info['postgres']} ready")
        rows = await bench.run(pg, quick, bar)
    return rows, info


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
    total = sum(1 + b.steps(quick) for b in selected)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=False) as progress:
        bar = _Bar(progress, progress.add_task("benchmarks", total=total))
        for bench in selected:
            rows, info = asyncio.run(_run_one(bench, quick, bar))
            path = output.write(bench.name, {
                "benchmark": bench.name,
                "description": bench.description,
                "command": command([bench.name], quick),
                "quick": quick,
                "machine": info,
                "notes": bench.notes,
                "results": [r.to_json() for r in rows],
            }, quick)
            progress.console.print(f"{bench.name}: wrote {path}")
            output.print_table(f"{bench.name}: {bench.description}", rows, out)
    return 0
