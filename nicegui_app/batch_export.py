"""Result downloads of an AI batch, shared by the REST export route and the page's buttons,
so both hand out the same bytes under the same name.

The rows come from jobsys.batch.export (provider column kept: offline placeholders stay
labelled). CSV starts with a UTF-8 byte-order mark: spreadsheet apps otherwise guess a
legacy encoding and garble Korean text; a cell a spreadsheet would run as a formula gets a
leading `'` (jobsys.csv_safe). JSON Lines keeps every value as stored.
"""

from __future__ import annotations

import dataclasses
import enum

from jobsys import csv_safe
from jobsys.batch import export
from jobsys.batch.facade import BatchJobs
from jobsys.system import JobId



class ExportFormat(str, enum.Enum):
    CSV = "csv"
    JSONL = "jsonl"


MEDIA_TYPES = {ExportFormat.CSV: "text/csv; charset=utf-8", ExportFormat.JSONL: "application/x-ndjson"}


@dataclasses.dataclass(frozen=True)
class ExportFile:
    content: bytes
    filename: str
    media_type: str


async def export_file(batch: BatchJobs, job_id: JobId, fmt: ExportFormat) -> ExportFile:
    """Every item of the job with its input, status, provider and draft output.

    Raises NotFound for an unknown job (checked first, so an empty file never stands for one)."""
    job = await batch.get_job(job_id)
    if fmt is ExportFormat.CSV:
        text = csv_safe.UTF8_BOM + await export.export_csv(batch, job.id)
    else:
        text = await export.export_jsonl(batch, job.id)
    return ExportFile(text.encode("utf-8"), f"batch-{job.id}.{fmt.value}", MEDIA_TYPES[fmt])
