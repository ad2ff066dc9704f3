"""A device job's runs as a file: CSV for spreadsheets, JSON Lines for programs. The REST
export, the dashboard's download and `jobsys jobs export` all write these."""

from __future__ import annotations

import io
import json
from typing import Iterable

from jobsys import csv_safe
from jobsys.models import JobRunRow

# screenshot_url: where an operator fetches a hub worker's screenshot, relative to the
# dashboard's address (GET with the API token); empty for a local path or a Storage object.
JOB_RUN_COLUMNS = ("device_serial", "worker_name", "status", "attempt", "started_at", "finished_at", "error",
                   "evidence", "screenshot_url")


def job_runs_csv(rows: Iterable[JobRunRow], *, bom: bool = True) -> str:
    """A header and one row per run, every cell through jobsys.csv_safe (a cell a spreadsheet
    would run as a formula gets a leading `'`). With `bom`, a UTF-8 byte-order mark first:
    spreadsheets otherwise garble Korean text (a file to open); a shell pipe wants none."""
    out = io.StringIO()
    if bom:
        out.write(csv_safe.UTF8_BOM)
    write = csv_safe.writer(out)
    write.writerow(JOB_RUN_COLUMNS)
    for row in rows:
        data = row.model_dump(mode="json")
        write.writerow(["" if data[c] is None else data[c] for c in JOB_RUN_COLUMNS])
    return out.getvalue()


def job_runs_jsonl(rows: Iterable[JobRunRow]) -> str:
    """The same rows as JSON Lines, values as stored (programs read them)."""
    lines = []
    for row in rows:
        data = row.model_dump(mode="json")
        lines.append(json.dumps({c: data[c] for c in JOB_RUN_COLUMNS}, ensure_ascii=False) + "\n")
    return "".join(lines)
