"""Every query the benchmarks send themselves (setup, checks and the baselines) is a named
block in bench/queries.sql; jobsys's own calls go through its library, never through here."""

from __future__ import annotations

import functools
import pathlib
import re

QUERIES_FILE = pathlib.Path(__file__).with_name("queries.sql")
_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@functools.cache
def _load() -> dict[str, str]:
    text = QUERIES_FILE.read_text(encoding="utf-8")
    parts = _HEADER.split(text)[1:]  # [name, body, name, body, ...]
    queries: dict[str, str] = {}
    for name, body in zip(parts[::2], parts[1::2]):
        lines = [line for line in body.strip().splitlines() if not line.startswith("--")]
        queries[name] = "\n".join(lines).strip().rstrip(";")
    return queries


def query(name: str) -> str:
    return _load()[name]
