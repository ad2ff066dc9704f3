"""Background-job routes refuse bad requests with the one error body, store nothing, and need the
bearer token like every other route."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from jobsys.batch.models import ITEMS_MAX
from tests.dashboard.conftest import TOKEN
from tests.dashboard.test_api import assert_error
from tests.dashboard.test_api_auth import BAD_CREDENTIALS
from tests.dashboard.test_background_api import BATCH, ROOT, dump_background
from tests.support.postgres import Db

JOB = "{job}"  # replaced by the id of a real job
INVALID = (422, "invalid_input")
MALFORMED = (400, "malformed_json")
BAD_ID = (400, "invalid_id")
_DROP = object()

Case = tuple[str, str, dict[str, Any], int, str]


def create(expected: tuple[int, str] = INVALID, **changes: Any) -> Case:
    body = {**BATCH, **changes}
    return ("POST", ROOT, {"json": {k: v for k, v in body.items() if v is not _DROP}}, *expected)


def raw(content: bytes) -> Case:
    return ("POST", ROOT, {"content": content, "headers": {"content-type": "application/json"}}, *MALFORMED)


BAD_REQUESTS: dict[str, Case] = {
    # template
    "template missing": create(template=_DROP),
    "template empty": create(template=""),
    "template blank": create(template="   "),
    "template without placeholder": create(template="Write something nice"),
    "unknown placeholder": create(template="Summarise: {txt}"),
    "positional placeholder": create(template="Summarise: {0}"),
    "attribute access": create(template="Summarise: {text.__class__}"),
    "index access": create(template="Summarise: {text[0]}"),
    "format spec": create(template="Summarise: {text:>10}"),
    "conversion": create(template="Summarise: {text!r}"),
    "unmatched brace": create(template="Summarise: {text"),
    "template too long": create(template="{text}" + "x" * 20_000),
    "template is a list": create(template=["{text}"]),
    # items
    "items missing": create(items=_DROP),
    "no items": create(items=[]),
    "too many items": create(items=[{"text": "x"}] * (ITEMS_MAX + 1)),
    "item is a string": create(items=["just text"]),
    "item is null": create(items=[None]),
    "nested value": create(items=[{"text": {"ko": "안녕"}}]),
    "list value": create(items=[{"text": ["a", "b"]}]),
    "item lacks the field": create(items=[{"text": "a"}, {"body": "b"}]),
    "item too large": create(items=[{"text": "x" * 20_001}]),
    "items is an object": create(items={"text": "a"}),
    # settings
    "bad model name": create(model="gemini 2.5; drop table"),
    "empty model": create(model=""),
    "concurrency 0": create(concurrency=0),
    "concurrency 65": create(concurrency=65),
    "concurrency as string": create(concurrency="5"),
    "concurrency fractional": create(concurrency=2.5),
    "max_retries 11": create(max_retries=11),
    "max_retries negative": create(max_retries=-1),
    "temperature 2.5": create(temperature=2.5),
    "max_output_tokens 0": create(max_output_tokens=0),
    "max_output_tokens too many": create(max_output_tokens=65_537),
    "unknown provider": create(provider="openai"),
    "system instruction too long": create(system_instruction="s" * 20_001),
    "title with control character": create(title="bad\x07title"),
    "title too long": create(title="t" * 201),
    # what only the system sets
    "sets status": create(status="completed"),
    "sets completed_items": create(completed_items=2),
    "sets id": create(id=str(uuid.uuid4())),
    "sets type": create(type="shell"),
    "sets offline": create(offline=False),
    # body shape
    "malformed json": raw(b'{"template": "{text}", '),
    "json with trailing garbage": raw(json.dumps(BATCH).encode() + b"}"),
    "body is a list": ("POST", ROOT, {"json": [BATCH]}, *INVALID),
    "body is null": ("POST", ROOT, {"json": None}, *INVALID),
    "empty body": ("POST", ROOT, {}, *INVALID),
    "form encoded body": ("POST", ROOT, {"data": {"template": "{text}", "items": "a"}}, *INVALID),
    # reads and controls
    "list unknown status": ("GET", ROOT, {"params": {"status": "paused"}}, *INVALID),
    "list limit zero": ("GET", ROOT, {"params": {"limit": 0}}, *INVALID),
    "list limit too large": ("GET", ROOT, {"params": {"limit": 1001}}, *INVALID),
    "list negative offset": ("GET", ROOT, {"params": {"offset": -1}}, *INVALID),
    "logs limit too large": ("GET", f"{ROOT}/{JOB}/logs", {"params": {"limit": 5000}}, *INVALID),
    "logs before_id zero": ("GET", f"{ROOT}/{JOB}/logs", {"params": {"before_id": 0}}, *INVALID),
    "logs before_id beyond bigint": ("GET", f"{ROOT}/{JOB}/logs", {"params": {"before_id": 2**63}}, *INVALID),
    "items unknown status": ("GET", f"{ROOT}/{JOB}/items", {"params": {"status": "done"}}, *INVALID),
    "items limit not a number": ("GET", f"{ROOT}/{JOB}/items", {"params": {"limit": "ten"}}, *INVALID),
    "export unknown format": ("GET", f"{ROOT}/{JOB}/export", {"params": {"format": "xlsx"}}, *INVALID),
    "cancel malformed id": ("POST", f"{ROOT}/not-a-uuid/cancel", {}, *BAD_ID),
    "retry malformed id": ("POST", f"{ROOT}/' or 1=1 --/retry", {}, *BAD_ID),
    "retry unknown id": ("POST", f"{ROOT}/{uuid.uuid4()}/retry", {}, 404, "not_found"),
    "retry a pending job": ("POST", f"{ROOT}/{JOB}/retry", {}, 409, "conflict"),
}


def test_the_table_is_large_enough() -> None:
    assert len(BAD_REQUESTS) >= 30


async def test_every_bad_request_is_refused_and_stores_nothing(api: httpx.AsyncClient, db: Db) -> None:
    created = await api.post(ROOT, json=BATCH)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    before = dump_background(db)
    failures: list[str] = []
    for case, (method, path, kwargs, status, code) in BAD_REQUESTS.items():
        response = await api.request(method, path.replace(JOB, job_id), **kwargs)
        try:
            error = assert_error(response, status, code)
            assert "Traceback" not in str(error)
            assert dump_background(db) == before, "something was stored"
        except AssertionError as exc:
            failures.append(f"{case}: {exc}")
    assert not failures, "\n".join(failures)


async def test_validation_errors_name_the_field(api: httpx.AsyncClient) -> None:
    error = assert_error(await api.post(ROOT, json={**BATCH, "template": "Summarise: {txt}"}), *INVALID)
    assert "item 0 has no field txt" in str(error["message"])
    error = assert_error(await api.post(ROOT, json={**BATCH, "concurrency": 65}), *INVALID)
    assert str(error["message"]).startswith("concurrency:")
    assert error["details"]["errors"][0]["loc"] == ["body", "concurrency"]  # type: ignore[index]


ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", ROOT, {"json": BATCH}),
    ("GET", ROOT, {}),
    ("GET", f"{ROOT}/{JOB}", {}),
    ("GET", f"{ROOT}/{JOB}/logs", {}),
    ("GET", f"{ROOT}/{JOB}/items", {}),
    ("GET", f"{ROOT}/{JOB}/export", {}),
    ("POST", f"{ROOT}/{JOB}/cancel", {}),
    ("POST", f"{ROOT}/{JOB}/retry", {}),
    ("GET", f"{ROOT}/{JOB}/unknown", {}),
]


async def test_every_background_route_needs_the_token(api: httpx.AsyncClient, db: Db) -> None:
    job_id = (await api.post(ROOT, json=BATCH)).json()["id"]
    before = dump_background(db)
    for method, path, kwargs in ROUTES:
        for case, header in BAD_CREDENTIALS.items():
            encoded = header.encode() if isinstance(header, str) else header
            headers = [] if encoded is None else [(b"authorization", encoded)]
            request = httpx.Request(
                method, f"http://api.test{path.replace(JOB, job_id)}", headers=headers, **kwargs
            )
            response = await api.send(request)
            error = assert_error(response, 401, "unauthorized")
            assert TOKEN not in str(error), case
            assert response.headers["www-authenticate"] == "Bearer", (method, path, case)
    assert dump_background(db) == before
    assert (await api.post(f"{ROOT}/{job_id}/cancel")).status_code == 200  # the right token works
