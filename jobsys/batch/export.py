"""Results as a person reviews them: every item with its input, status and draft output.

Offline outputs keep their provider column ("offline") and their visible label, so an
export never passes placeholders off as model text. CSV cells go through jobsys.csv_safe
(a cell a spreadsheet would run as a formula gets a leading `'`); JSON Lines keeps every
value as stored.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any

from jobsys import csv_safe
from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchItem
from jobsys.system import JobId

PAGE_ITEMS = 1000


async def iter_items(batch: BatchJobs, job_id: JobId) -> AsyncIterator[BatchItem]:
    offset = 0
    while True:
        page = await batch.job_items(job_id, limit=PAGE_ITEMS, offset=offset)
        for item in page.items:
            yield item
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return


def item_row(item: BatchItem) -> dict[str, Any]:
    return {"idx": item.idx, "status": item.status.value, "provider": item.provider or "",
            "output": item.output or "", "error": item.error or "", "attempts": item.attempts,
            "tokens_in": item.tokens_in, "tokens_out": item.tokens_out, "latency_ms": item.latency_ms,
            "input": item.input}


async def export_jsonl(batch: BatchJobs, job_id: JobId) -> str:
    lines = [json.dumps(item_row(item), ensure_ascii=False, default=str) async for item in iter_items(batch, job_id)]
    return "\n".join(lines) + ("\n" if lines else "")


async def export_csv(batch: BatchJobs, job_id: JobId) -> str:
    """One row per item; the input's fields become columns (input.<field>). Cells that start
    like a formula (=, +, -, @, tab, carriage return) are prefixed with `'`."""
    rows = [item_row(item) async for item in iter_items(batch, job_id)]
    input_fields: dict[str, None] = {}
    for row in rows:
        for key in row["input"]:
            input_fields.setdefault(key)
    columns = ["idx", "status", "provider", *[f"input.{k}" for k in input_fields], "output", "error", "attempts",
               "tokens_in", "tokens_out", "latency_ms"]
    buffer = io.StringIO()
    writer = csv_safe.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        flat = {**row, **{f"input.{k}": v for k, v in row["input"].items()}}
        writer.writerow(flat)
    return buffer.getvalue()
