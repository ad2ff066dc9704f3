"""The table on stdout and the JSON under bench/results/."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.harness import Measurement

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"


def results_path(name: str, quick: bool) -> pathlib.Path:
    """Quick runs go aside, so they never replace the full numbers the docs quote."""
    return (RESULTS_DIR / "quick" if quick else RESULTS_DIR) / f"{name}.json"


def write(name: str, document: dict[str, Any], quick: bool) -> pathlib.Path:
    path = results_path(name, quick)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def load_all(directory: pathlib.Path = RESULTS_DIR) -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(directory.glob("*.json"))]


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    if unit == "ms":
        text = f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    else:
        text = f"{value:,.2f}"
    return f"{text} {unit}".strip()


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:,.2f}x"


def fmt_goal(m: Measurement) -> str:
    if m.goal is None:
        return ""
    return f"{'met' if m.goal_met else 'MISSED'} ({m.goal})"


def print_table(title: str, rows: Iterable[Measurement], console: Console | None = None) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("jobsys", justify="right")
    table.add_column("baseline", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("goal")
    for m in rows:
        table.add_row(m.metric, fmt(m.value, m.unit), fmt(m.baseline, m.unit), fmt_ratio(m.ratio), fmt_goal(m))
    (console or Console()).print(table)
