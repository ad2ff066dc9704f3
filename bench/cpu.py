"""CPU time spent per unit of work, by the benchmark's own process (the clients) and by
the Postgres server it started, so a result can say where the time went.

Server CPU is read from /proc (Linux): the postmaster's children, i.e. its backends, WAL
writer and checkpointer. Elsewhere only the client side is measured."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time

_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, utime + stime in seconds) of a process, or None if it is gone."""
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def server_cpu_s(postmaster_pid: int | None) -> float | None:
    """CPU seconds used so far by the postmaster's live children (None if unknown)."""
    if postmaster_pid is None or not pathlib.Path("/proc").is_dir():
        return None
    total = 0.0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[0] == postmaster_pid:
                total += stat[1]
    return total


@dataclasses.dataclass
class CpuSample:
    client_s: float
    server_s: float | None


class CpuMeter:
    """Start before the timed work, `per(n)` after: CPU microseconds per unit of work.

    Backends that exit during the work take their CPU with them, so the work must keep
    its connections open until `per` is read."""

    def __init__(self, postmaster_pid: int | None) -> None:
        self._pid = postmaster_pid
        self._start = CpuSample(time.process_time(), server_cpu_s(postmaster_pid))

    def per(self, units: int) -> tuple[float, float | None]:
        """(client µs, server µs or None) per unit since the meter started."""
        client = (time.process_time() - self._start.client_s) / units * 1e6
        server_now = server_cpu_s(self._pid)
        server = None
        if server_now is not None and self._start.server_s is not None:
            server = (server_now - self._start.server_s) / units * 1e6
        return client, server
