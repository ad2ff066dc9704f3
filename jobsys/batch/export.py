"""Results as a person reviews them: every item with its input, status and draft output.

Offline outputs keep their provider column ("offline") and their visible label, so an
export never passes placeholders off as model text. CSV cells go through jobsys.csv_safe
(a cell a spreadsheet would run as a formula gets a leading `'`); JSON Lines keeps every
value as stored. Each row carries the item's tokens and its estimated cost (the price table
of jobsys/batch/pricing.py); a batch with a response_schema also gets the parsed object's
top-level fields as columns (output.<field>) in CSV, and the parsed object (output_json) in
JSON Lines.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any

from jobsys import csv_safe
from jobsys.batch import pricing, structured
from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchItem, BatchJob
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


def _item_cost(job: BatchJob | None, item: BatchItem) -> float | None:
    found = pricing.price_for(job.payload.model) if job is not None else None
    if found is None or item.tokens_in is None or item.provider == "offline":
        return None
    return pricing.usd(found[1], item.tokens_in or 0, (item.tokens_out or 0) + (item.tokens_thinking or 0))


def item_row(item: BatchItem, job: BatchJob | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "idx": item.idx, "status": item.status.value, "provider": item.provider or "", "output": item.output or "",
        "error": item.error or "", "attempts": item.attempts, "tokens_in": item.tokens_in,
        "tokens_out": item.tokens_out, "tokens_thinking": item.tokens_thinking, "cost_usd": _item_cost(job, item),
        "latency_ms": item.latency_ms, "input": item.input}
    if job is not None and job.payload.response_schema is not None:
        row["output_json"] = structured.parse_object(item.output) if item.status.value == "completed" else None
    return row


async def export_jsonl(batch: BatchJobs, job_id: JobId) -> str:
    job = await batch.get_job(job_id)
    lines = [json.dumps(item_row(item, job), ensure_ascii=False, default=str)
             async for item in iter_items(batch, job_id)]
    return "\n".join(lines) + ("\n" if lines else "")


async def export_csv(batch: BatchJobs, job_id: JobId) -> str:
    """One row per item; the input's fields become columns (input.<field>), and with a
    response_schema the output object's top-level fields too (output.<field>, nested values
    as JSON text). Cells that start like a formula (=, +, -, @, tab, carriage return) are
    prefixed with `'`."""
    job = await batch.get_job(job_id)
    rows = [item_row(item, job) async for item in iter_items(batch, job_id)]
    input_fields: dict[str, None] = {}
    output_fields: dict[str, None] = {}
    schema = job.payload.response_schema
    if schema is not None:  # the schema's order first, then whatever else answers carried
        output_fields.update(dict.fromkeys((schema.get("properties") or {}).keys()))
    for row in rows:
        for key in row["input"]:
            input_fields.setdefault(key)
        for key in row.get("output_json") or {}:
            output_fields.setdefault(key)
    columns = ["idx", "status", "provider", *[f"input.{k}" for k in input_fields], "output",
               *[f"output.{k}" for k in output_fields], "error", "attempts", "tokens_in", "tokens_out",
               "tokens_thinking", "cost_usd", "latency_ms"]
    buffer = io.StringIO()
    writer = csv_safe.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        parsed = row.get("output_json") or {}
        flat = {**row, **{f"input.{k}": v for k, v in row["input"].items()},
                **{f"output.{k}": _cell(v) for k, v in parsed.items()}}
        writer.writerow(flat)
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value
