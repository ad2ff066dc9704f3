"""Bad payloads are refused with a clear InvalidInput at the library edge and again in SQL
(when the edge is bypassed, as a PostgREST caller could), and nothing is stored."""

from __future__ import annotations

from typing import Any

import pytest

from jobsys import IllegalTransition, InvalidInput, NotFound, rpc
from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import ITEMS_MAX
from tests.batch.conftest import dump_batch_tables
from tests.support.postgres import Db

GOOD: dict[str, Any] = {"template": "Reply politely to this review: {review}", "items": [{"review": "Great!"}]}

BAD: list[tuple[str, dict[str, Any], str]] = [
    ("no items", {"items": []}, "items"),
    ("too many items", {"items": [{"review": "x"}] * (ITEMS_MAX + 1)}, "items"),
    ("unknown placeholder", {"template": "Reply to {reviw}"}, "reviw"),
    ("positional placeholder", {"template": "Reply to {0}"}, "placeholder"),
    ("attribute access", {"template": "Reply to {review.__class__}"}, "placeholder"),
    ("format spec", {"template": "Reply to {review:>10}"}, "format spec"),
    ("unmatched brace", {"template": "Reply to {review"}, "brace"),
    ("no placeholder", {"template": "Write something"}, "placeholder"),
    ("blank template", {"template": "   "}, "template"),
    ("template too long", {"template": "{review}" + "x" * 20_000}, "template"),
    ("item not an object", {"items": ["Great!"]}, "item 0"),
    ("nested value", {"items": [{"review": {"text": "hi"}}]}, "nested"),
    ("item too large", {"items": [{"review": "x" * 20_001}]}, "item 0"),
    ("second item lacks the field", {"items": [{"review": "a"}, {"text": "b"}]}, "item 1"),
    ("bad model name", {"model": "gemini 2.5; drop"}, "model"),
    ("concurrency 0", {"concurrency": 0}, "concurrency"),
    ("concurrency 65", {"concurrency": 65}, "concurrency"),
    ("max_retries 11", {"max_retries": 11}, "max_retries"),
    ("temperature 3", {"temperature": 3}, "temperature"),
    ("max_output_tokens 0", {"max_output_tokens": 0}, "max_output_tokens"),
    ("unknown provider", {"provider": "openai"}, "provider"),
    ("title with control char", {"title": "bad\x00title"}, "title"),
    ("counter smuggled in", {"completed_items": 5}, "completed_items"),
    ("status smuggled in", {"status": "completed"}, "status"),
]


@pytest.mark.parametrize("case, change, mentions", BAD, ids=[c for c, _, _ in BAD])
async def test_library_rejects_bad_payloads_and_stores_nothing(
        batch: BatchJobs, db: Db, case: str, change: dict[str, Any], mentions: str) -> None:
    before = dump_batch_tables(db)
    with pytest.raises(InvalidInput) as info:
        await batch.create_job(**{**GOOD, **change})
    assert mentions.lower() in info.value.message.lower(), info.value.message
    assert dump_batch_tables(db) == before


SQL_BAD: list[tuple[str, dict[str, Any], list[Any], dict[str, Any]]] = [
    ("items not an array", GOOD | {}, {"review": "x"}, {}),  # type: ignore[list-item]
    ("no items", {"template": "{review}", "model": "m"}, [], {}),
    ("too many items", {"template": "{review}", "model": "m"}, [{"review": "x"}] * (ITEMS_MAX + 1), {}),
    ("unknown placeholder", {"template": "{reviw}", "model": "m"}, [{"review": "x"}], {}),
    ("attribute access", {"template": "{review.__class__}", "model": "m"}, [{"review": "x"}], {}),
    ("lone brace", {"template": "{review} }", "model": "m"}, [{"review": "x"}], {}),
    ("no placeholder", {"template": "hello", "model": "m"}, [{"review": "x"}], {}),
    ("nested value", {"template": "{review}", "model": "m"}, [{"review": [1, 2]}], {}),
    ("item too large", {"template": "{review}", "model": "m"}, [{"review": "x" * 20_001}], {}),
    ("missing field", {"template": "{review}", "model": "m"}, [{"review": "a"}, {"other": "b"}], {}),
    ("unknown payload key", {"template": "{review}", "model": "m", "items": []}, [{"review": "x"}], {}),
    ("model missing", {"template": "{review}"}, [{"review": "x"}], {}),
    ("temperature text", {"template": "{review}", "model": "m", "temperature": "hot"}, [{"review": "x"}], {}),
    ("tokens fractional", {"template": "{review}", "model": "m", "max_output_tokens": 1.5}, [{"review": "x"}], {}),
    ("concurrency 100", {"template": "{review}", "model": "m"}, [{"review": "x"}], {"p_concurrency": 100}),
    ("max_retries -1", {"template": "{review}", "model": "m"}, [{"review": "x"}], {"p_max_retries": -1}),
    ("other type", {"template": "{review}", "model": "m"}, [{"review": "x"}], {"p_type": "shell"}),
]


@pytest.mark.parametrize("case, payload, items, extra", SQL_BAD, ids=[c for c, *_ in SQL_BAD])
async def test_sql_rejects_bad_payloads_when_the_edge_is_bypassed(
        batch: BatchJobs, db: Db, case: str, payload: dict[str, Any], items: Any, extra: dict[str, Any]) -> None:
    before = dump_batch_tables(db)
    with pytest.raises(InvalidInput):
        await batch.transport.call(rpc.CREATE_BACKGROUND_JOB, {"p_payload": payload, "p_items": items, **extra})
    assert dump_batch_tables(db) == before


async def test_moves_on_missing_or_final_jobs_are_refused(batch: BatchJobs) -> None:
    with pytest.raises(NotFound):
        await batch.get_job("00000000-0000-0000-0000-000000000000")
    with pytest.raises(InvalidInput):
        await batch.cancel_job("not-a-uuid")
    job = await batch.create_job(**GOOD)
    with pytest.raises(IllegalTransition):
        await batch.retry_job(job.id)  # pending: nothing failed yet
    await batch.cancel_job(job.id)
    with pytest.raises(IllegalTransition):
        await batch.cancel_job(job.id)
    with pytest.raises(InvalidInput):
        await batch.list_jobs(limit=0)
    with pytest.raises(ValueError):
        await batch.list_jobs(status="paused")
