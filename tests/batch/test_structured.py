"""Issue 23, item 3: structured output. A batch with a response_schema asks google-genai for
JSON constrained by it; every answer is validated; an invalid one is asked again once with
the validation error (an attempt of its own), then fails the item with the reason; the
export spreads the parsed object's top-level fields over CSV columns."""

from __future__ import annotations

import collections
import csv
import io
import json
from typing import Any

import pydantic
import pytest

from jobsys import errors, rpc
from jobsys.batch import export, structured
from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchCreate, BatchStatus
from tests.batch import fake_gemini as fg
from tests.batch.conftest import items
from tests.batch.gemini_runner import make_gemini_runner
from tests.support.runners import StartRunner, wait_final

TEMPLATE = "Classify this review and draft a reply: {text}"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"sentiment": {"enum": ["positive", "negative"]}, "reply": {"type": "string"}},
    "required": ["sentiment", "reply"],
}
GOOD = {"sentiment": "positive", "reply": "Thank you!"}


async def test_invalid_answers_are_asked_again_once_then_fail_and_the_export_has_the_fields(
        batch: BatchJobs, start_runner: StartRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: collections.Counter[int] = collections.Counter()

    async def behaviour(call: fg.Call) -> fg.Reply:
        item = int(call.prompt.split("text ")[1].split()[0].rstrip("\n"))
        seen[item] += 1
        if item == 1 and seen[item] == 1:
            return 200, fg.ok_body("not json at all"), {}
        if item == 2:
            return 200, fg.ok_body(json.dumps({"sentiment": "meh", "reply": "?"})), {}  # never valid
        return 200, fg.ok_body(json.dumps(GOOD, ensure_ascii=False)), {}

    fake = fg.FakeGemini(behaviour)
    job = await batch.create_job(template=TEMPLATE, items=items(3), provider="gemini", response_schema=SCHEMA)
    assert job.payload.response_schema == SCHEMA
    async with make_gemini_runner("aiohttp", start_runner, monkeypatch)(fake):
        final = await wait_final(batch, job.id)
    assert (final.status, final.completed_items, final.failed_items) == (BatchStatus.COMPLETED, 2, 1)

    config = fake.calls[0].body["generationConfig"]
    assert config["responseMimeType"] == "application/json" and config["responseJsonSchema"] == SCHEMA
    asked_again = [c.prompt for c in fake.calls if c.prompt.startswith(TEMPLATE.format(text="text 1"))]
    assert len(asked_again) == 2 and "not JSON" in asked_again[1]
    assert seen == {0: 1, 1: 2, 2: 2}  # one correction each, never more

    page = {i.idx: i for i in (await batch.job_items(job.id)).items}
    assert page[1].status is BatchStatus.COMPLETED and page[1].attempts == 2
    assert page[2].status is BatchStatus.FAILED and page[2].attempts == 2
    assert "does not match response_schema" in (page[2].error or "") and "'meh'" in (page[2].error or "")
    logs = [line.message for line in (await batch.job_logs(job.id)).logs]
    assert any("item 1 call 1: output does not match response_schema" in m for m in logs)

    rows = list(csv.DictReader(io.StringIO(await export.export_csv(batch, job.id))))
    assert [(r["status"], r["output.sentiment"], r["output.reply"]) for r in rows] == [
        ("completed", "positive", "Thank you!"), ("completed", "positive", "Thank you!"), ("failed", "", "")]
    lines = [json.loads(line) for line in (await export.export_jsonl(batch, job.id)).splitlines()]
    assert [line["output_json"] for line in lines] == [GOOD, GOOD, None]


async def test_a_schema_that_is_not_json_schema_is_refused_before_and_in_sql(batch: BatchJobs) -> None:
    for schema, says in (({"type": "nope"}, "not a valid JSON Schema"), ({"$schema": "draft-99"}, "unknown \\$schema"),
                         ({"properties": {"a": {"$ref": "https://example.com/s.json"}}}, "must point inside")):
        with pytest.raises(pydantic.ValidationError, match=says):
            BatchCreate(template=TEMPLATE, items=items(1), response_schema=schema)
    # A local $ref to nowhere passes the meta-schema; checking an answer then fails that item, not the run.
    assert "cannot be checked" in (structured.OutputChecker({"$ref": "#/nope"}).problem("{}") or "")
    raw = {"template": TEMPLATE, "model": "gemini-2.5-flash", "response_schema": ["not", "an", "object"]}
    with pytest.raises(errors.JobsysError, match="response_schema"):
        await batch.transport.call(rpc.CREATE_BACKGROUND_JOB, {"p_payload": raw, "p_items": items(1)})
