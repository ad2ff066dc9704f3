"""The machine a result was measured on; numbers mean little without it."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import pathlib
import platform
from typing import Any


def _ram_gib() -> float | None:
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _load_1m() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def describe(postgres_version: str) -> dict[str, Any]:
    """`load_1m` is the load average when the benchmark started: the machine may be shared."""
    return {
        "cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "cpu": _cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "postgres": postgres_version,
        "pgserver": _version("pgserver"),
        "psycopg": _version("psycopg"),
        "load_1m": _load_1m(),
        "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
    }
