"""Bad requests: each is answered 4xx with the error body, and nothing is stored."""

from __future__ import annotations

import json
from typing import Any

import httpx

from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.dashboard.test_api import assert_error
from tests.support.postgres import Db

GOOD = {"target_url": "https://example.com/", "duration_sec": 30}
JOB_ID = "{job}"  # replaced by the id of a real job, so bodies are judged against something that exists


_DROP = object()  # a field left out of the body


def create(expected: tuple[int, str], **changes: Any) -> tuple[str, str, dict[str, Any], int, str]:
    body = {**GOOD, **changes}
    return ("POST", "/api/jobs", {"json": {k: v for k, v in body.items() if v is not _DROP}}, *expected)


INVALID = (422, "invalid_input")
MALFORMED = (400, "malformed_json")
BAD_ID = (400, "invalid_id")

BAD_REQUESTS: dict[str, tuple[str, str, dict[str, Any], int, str]] = {
    # create: URLs
    "url ftp scheme": create(INVALID, target_url="ftp://example.com/file"),
    "url javascript scheme": create(INVALID, target_url="javascript:alert(1)"),
    "url without host": create(INVALID, target_url="https://"),
    "url with a space": create(INVALID, target_url="https://example.com/a b"),
    "url with a newline": create(INVALID, target_url="https://example.com/\nSet-Cookie: x"),
    "url too long": create(INVALID, target_url="https://example.com/" + "a" * 2048),
    "url of a megabyte": create(INVALID, target_url="https://example.com/" + "a" * 1_000_000),
    "url is a number": create(INVALID, target_url=12345),
    "url missing": create(INVALID, target_url=_DROP),
    # create: duration
    "duration zero": create(INVALID, duration_sec=0),
    "duration a day and a second": create(INVALID, duration_sec=86_401),
    "duration negative": create(INVALID, duration_sec=-5),
    "duration as a string": create(INVALID, duration_sec="30"),
    "duration fractional": create(INVALID, duration_sec=30.5),
    "duration boolean": create(INVALID, duration_sec=True),
    "duration null": create(INVALID, duration_sec=None),
    "duration beyond int64": create(INVALID, duration_sec=2**70),
    # create: target
    "unknown target type": create(INVALID, target_type="everything"),
    "percentage zero": create(INVALID, target_type="percentage", target_value=0),
    "percentage over 100": create(INVALID, target_type="percentage", target_value=101),
    "percentage without value": create(INVALID, target_type="percentage"),
    "device count negative": create(INVALID, target_type="device_count", target_value=-1),
    "device count too large": create(INVALID, target_type="device_count", target_value=100_001),
    "device count as string": create(INVALID, target_type="device_count", target_value="3"),
    "all devices with a value out of range": create(INVALID, target_type="all_devices", target_value=101),
    "timeout zero": create(INVALID, timeout_sec=0),
    "timeout over a week": create(INVALID, timeout_sec=604_801),
    "priority above 10": create(INVALID, priority=11),
    "priority below -10": create(INVALID, priority=-11),
    "priority as text": create(INVALID, priority="5"),
    "grace over a day": create(INVALID, topup_grace_sec=86_401),
    # create: title and action
    "title too long": create(INVALID, title="t" * 201),
    "title oversize": create(INVALID, title="t" * 200_000),
    "title with control character": create(INVALID, title="bad\x07title"),
    "title is an object": create(INVALID, title={"ko": "제목"}),
    "unsupported action": create(INVALID, action="factory_reset"),
    # create: fields that try to set what only the system sets
    "sets completed_count": create(INVALID, completed_count=999),
    "sets assigned_count": create(INVALID, assigned_count=50),
    "sets target_count": create(INVALID, target_count=1),
    "sets status": create(INVALID, status="completed"),
    "sets id": create(INVALID, id="00000000-0000-0000-0000-000000000001"),
    "sets max_attempts": create(INVALID, max_attempts=100),
    # create: body shape
    "malformed json": (
        "POST",
        "/api/jobs",
        {"content": b'{"target_url": "https://x.com", ', "headers": {"content-type": "application/json"}},
        *MALFORMED,
    ),
    "json with trailing garbage": (
        "POST",
        "/api/jobs",
        {"content": json.dumps(GOOD).encode() + b"}", "headers": {"content-type": "application/json"}},
        *MALFORMED,
    ),
    "body is a list": ("POST", "/api/jobs", {"json": [GOOD]}, *INVALID),
    "body is a string": ("POST", "/api/jobs", {"json": "https://example.com"}, *INVALID),
    "body is null": ("POST", "/api/jobs", {"json": None}, *INVALID),
    "empty body": ("POST", "/api/jobs", {}, *INVALID),
    "form encoded body": (
        "POST",
        "/api/jobs",
        {"data": {"target_url": "https://example.com/", "duration_sec": "30"}},
        *INVALID,
    ),
    # patch
    "patch to completed": ("PATCH", f"/api/jobs/{JOB_ID}", {"json": {"status": "completed"}}, *INVALID),
    "patch to an unknown status": ("PATCH", f"/api/jobs/{JOB_ID}", {"json": {"status": "deleted"}}, *INVALID),
    "patch with nothing": ("PATCH", f"/api/jobs/{JOB_ID}", {"json": {}}, *INVALID),
    "patch sets a counter": ("PATCH", f"/api/jobs/{JOB_ID}", {"json": {"completed_count": 5}}, *INVALID),
    "patch sets target_url": (
        "PATCH",
        f"/api/jobs/{JOB_ID}",
        {"json": {"title": "ok", "target_url": "https://evil.example"}},
        *INVALID,
    ),
    "patch empty title": ("PATCH", f"/api/jobs/{JOB_ID}", {"json": {"title": "   "}}, *INVALID),
    "patch title too long": ("PATCH", f"/api/jobs/{JOB_ID}", {"json": {"title": "t" * 201}}, *INVALID),
    "patch malformed json": (
        "PATCH",
        f"/api/jobs/{JOB_ID}",
        {"content": b"{status: paused}", "headers": {"content-type": "application/json"}},
        *MALFORMED,
    ),
    "patch malformed id": ("PATCH", "/api/jobs/not-a-uuid", {"json": {"status": "paused"}}, *BAD_ID),
    # delete and get by id
    "delete malformed id": ("DELETE", "/api/jobs/12345", {}, *BAD_ID),
    "delete unknown id": ("DELETE", "/api/jobs/7f0c1c52-8f61-4c55-9d5e-2b1f4b0c9a11", {}, 404, "not_found"),
    "get malformed id": ("GET", "/api/jobs/' or 1=1 --", {}, *BAD_ID),
    # list
    "list unknown status": ("GET", "/api/jobs", {"params": {"status": "bogus"}}, *INVALID),
    "list limit zero": ("GET", "/api/jobs", {"params": {"limit": 0}}, *INVALID),
    "list limit too large": ("GET", "/api/jobs", {"params": {"limit": 5000}}, *INVALID),
    "list limit not a number": ("GET", "/api/jobs", {"params": {"limit": "ten"}}, *INVALID),
    "list negative offset": ("GET", "/api/jobs", {"params": {"offset": -1}}, *INVALID),
    "list search with NUL": ("GET", "/api/jobs", {"params": {"q": "a\x00b"}}, *INVALID),
    "list search too long": ("GET", "/api/jobs", {"params": {"q": "q" * 201}}, *INVALID),
}


def test_the_table_is_large_enough() -> None:
    assert len(BAD_REQUESTS) >= 30


async def test_every_bad_request_is_refused_and_stores_nothing(
    api: httpx.AsyncClient, jobs: JobSystem, db: Db
) -> None:
    # One database for the whole table (a fresh one per case costs ~1 s); each case is
    # still checked on its own and every failing case is named.
    await add_worker(jobs, "w1", 3)
    created = await api.post("/api/jobs", json=GOOD)
    assert created.status_code == 201
    job_id = str(created.json()["job"]["id"])
    before = db.dump()
    failures: list[str] = []
    for case, (method, path, kwargs, status, code) in BAD_REQUESTS.items():
        response = await api.request(method, path.replace(JOB_ID, job_id), **kwargs)
        try:
            assert_error(response, status, code)
            assert db.dump() == before, "something was stored"
        except AssertionError as exc:
            failures.append(f"{case}: {exc}")
    assert not failures, "\n".join(failures)
