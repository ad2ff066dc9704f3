"""schemathesis against the API's own OpenAPI document: every operation, with the bearer
token, schema-valid and schema-violating data. Checks (schemathesis' defaults plus one of
ours): no 5xx; status codes, content types, headers and bodies as documented; invalid data
refused; valid data accepted (where the schema can say what valid is); requests without the
token refused; 405s list the allowed methods; every refusal in the API's one error shape.

The app runs in-process over ASGI on a real Postgres (a fresh database per operation) with
a worker, device jobs in every state and batch jobs (one finished with a failure) seeded, and
part of the generated ids and bodies steered to those rows, so the paths over real rows are
fuzzed as well as the refusals. A separate test keeps the document saying what the API does
(job ids are UUIDs; an unparsable body is a documented 400).

CI runs a bounded number of examples per operation; JOBSYS_SOAK=1 runs more and writes the
counts to bench/results/reliability/openapi_fuzz.json (docs/reliability.md quotes them)."""

from __future__ import annotations

import collections
import json
import os
import urllib.parse
import uuid
import zlib
from typing import Any, Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi

from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import ItemResult
from jobsys.system import JobSystem
from nicegui_app.api import create_api_app
from tests.core.helpers import add_worker
from tests.support.paths import ROOT
from tests.support.postgres import Db

SOAK = bool(os.environ.get("JOBSYS_SOAK"))
EXAMPLES_PER_OPERATION = 300 if SOAK else 15
TOKEN = "fuzz-token-0123456789"
DEVICES = 4
SEEDED_DEVICE_JOBS = 4
SEEDED_BATCH_JOBS = 3

# What the run did, by operation and status (for the soak figures and the -s output).
_responses: collections.Counter[tuple[str, int]] = collections.Counter()


class ApiUnderTest:
    """The API app behind one ASGI callable that schemathesis knows for the whole module.

    schemathesis runs ASGI apps on one event-loop thread of its own and starts an app's
    lifespan on the first request; the lifespan here connects a JobSystem to the current
    test's database there, so the connection pool lives on the loop that serves the
    requests. Before a database is set (when the schema is loaded at import) it serves the
    OpenAPI document alone, which needs no database."""

    def __init__(self) -> None:
        self.db_url: str | None = None
        self.jobs: JobSystem | None = None
        self.app: Any = create_api_app(None, TOKEN)  # type: ignore[arg-type]
        self.seeded: dict[str, list[str]] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.db_url is not None:
                    await self._start(self.db_url)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.jobs is not None:
                    await self.jobs.close()
                    self.jobs = None
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _start(self, db_url: str) -> None:
        self.jobs = await JobSystem.connect(db_url, push=False)
        self.app = create_api_app(self.jobs, TOKEN)
        await add_worker(self.jobs, "fuzz", DEVICES)
        device_jobs = [
            (await self.jobs.create_job(target_url=f"https://example.com/{i}", duration_sec=5)).job.id
            for i in range(SEEDED_DEVICE_JOBS)]
        await self.jobs.pause_job(device_jobs[1])
        await self.jobs.cancel_job(device_jobs[2])
        batch = BatchJobs.of(self.jobs)
        batch_jobs = [(await batch.create_job(template="Summarise: {text}", items=[{"text": f"item {i}"}]
                                              * (i + 1))).id for i in range(SEEDED_BATCH_JOBS)]
        await batch.cancel_job(batch_jobs[0])
        claimed = await batch.claim_job("fuzz-runner")  # one job run to the end: one output, one failure
        assert claimed is not None
        items = await batch.claim_items(claimed.id, claimed.lease_token, 10)
        await batch.report(claimed.id, claimed.lease_token, [
            ItemResult(idx=item.idx, status="completed" if n == 0 else "failed", output="a draft",
                       error=None if n == 0 else "refused", provider="offline")
            for n, item in enumerate(items)])
        await batch.finish_job(claimed.id, claimed.lease_token)
        self.seeded = {"device": [str(j) for j in device_jobs], "batch": [str(j) for j in batch_jobs]}


API = ApiUnderTest()
CONFIG = SchemathesisConfig.from_dict({
    # The token through the schema's own security scheme, so schemathesis also sends
    # requests without it and checks they are refused (ignored_auth).
    "auth": {"openapi": {"HTTPBearer": {"bearer": TOKEN}}},
    "generation": {
        "mode": "all",  # schema-valid and schema-violating data
        "max-examples": EXAMPLES_PER_OPERATION,
        # CI replays the same examples on every run (a shared CI must not fail at random on a
        # new find); the soak draws new ones.
        "deterministic": not SOAK,
        # Unknown query parameters are ignored, as FastAPI (and most HTTP APIs) do; the
        # schema does not forbid them, so they are not "invalid data" to be refused.
        "allow-extra-parameters": False,
    },
})


def _declared_job_id(operation: dict[str, Any]) -> dict[str, Any] | None:
    for parameter in operation.get("parameters") or []:
        if parameter.get("in") == "path" and parameter.get("name") == "job_id":
            return parameter.setdefault("schema", {})  # type: ignore[no-any-return]
    return None


def _schema_gaps(document: dict[str, Any]) -> dict[str, list[str]]:
    """Where the served OpenAPI would say less than the API does:
    - `job_id` is documented as any string, while a non-UUID is refused with 400;
    - a body that cannot be parsed (malformed JSON, not UTF-8) gets 400, undocumented on
      the operations that take a body and do not list 400."""
    gaps: dict[str, list[str]] = {"job_id_not_uuid": [], "malformed_body_400_undocumented": []}
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            label = f"{method.upper()} {path}"
            job_id = _declared_job_id(operation)
            if job_id is not None and job_id.get("format") != "uuid":
                gaps["job_id_not_uuid"].append(label)
            if "requestBody" in operation and "400" not in operation.get("responses", {}):
                gaps["malformed_body_400_undocumented"].append(label)
    return gaps


SERVED = API.app.openapi()  # what GET /openapi.json returns (with the token); needs no database
schema = schemathesis.openapi.from_dict(SERVED, config=CONFIG)
schema.app = API  # as schemathesis.openapi.from_asgi does: requests go to the app in-process
schema.location = "/openapi.json"


@pytest.fixture
def api_under_test(db_url: str) -> Iterator[ApiUnderTest]:
    """A fresh database per operation: the lifespan restarts on the next request."""
    asgi.shutdown_lifespans()
    API.db_url = db_url
    yield API
    asgi.shutdown_lifespans()  # closes the JobSystem before db_url drops the database
    API.db_url = None


def _share(value: Any, salt: str) -> int:
    """0, 1 or 2, fixed by the generated value (so hypothesis replays and shrinks the case)."""
    return zlib.crc32(f"{salt}:{json.dumps(value, sort_keys=True, default=str)}".encode()) % 3


def _realistic(case: Any, under_test: ApiUnderTest) -> None:
    """Steer part of the generated data to where the rows are. Random strings almost never
    make a UUID of a seeded job, an http(s) URL or a prompt template with a placeholder, so
    without this nearly every request would stop at 400/422 and the paths over real rows
    (create, pause, cancel, delete, retry, export of jobs in every state) would go untried.

    A third of the job ids stay as generated, a third become a well-formed unknown id (404),
    a third a seeded job's id. Two thirds of the schema-valid create bodies get a valid URL, or
    a template naming an item field that every item has and a known model name; two thirds of
    the schema-valid PATCH bodies a printable title, or a status when they name nothing."""
    path = case.operation.path
    params = case.path_parameters or {}
    if "job_id" in params:
        raw = params["job_id"]
        seed = [raw, case.body if isinstance(case.body, (dict, list, str, int, float)) else None, case.query]
        share = _share(seed, "id")
        if share == 1:
            params["job_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(seed, default=str)))
        elif share == 2:
            pool = under_test.seeded["batch" if path.startswith("/api/background-jobs") else "device"]
            params["job_id"] = pool[_share(seed, "pool") % len(pool)]
    positive = case.meta is not None and case.meta.generation.mode == schemathesis.GenerationMode.POSITIVE
    if positive and path == "/api/devices" and case.query:  # an opaque cursor comes from a page before
        case.query.pop("cursor", None)  # alone; a made-up one is refused with 400 invalid_cursor
    body = case.body
    if not positive or not isinstance(body, dict) or _share(body, "body") == 0:
        return
    if case.method.upper() == "PATCH":
        if body.get("title") is not None:
            body["title"] = "renamed " + "".join(ch for ch in str(body["title"]) if ch.isalnum())[:40]
        elif body.get("status") is None:
            body["status"] = "paused"
    elif path == "/api/jobs":
        body["target_url"] = "https://example.com/" + urllib.parse.quote(str(body.get("target_url", ""))[:40])
    elif path == "/api/background-jobs":
        text = str(body.get("template", ""))[:200].replace("{", "(").replace("}", ")")
        body["template"] = f"{text} {{text}}"
        body["model"] = "gemini-2.5-flash"
        for item in body.get("items") or []:
            if isinstance(item, dict):
                item.setdefault("text", "an item")


def _skipped_checks(case: Any) -> list[Any]:
    """positive_data_acceptance (a schema-valid request must not be refused with a 4xx other
    than 404/409) is left out on the operations that take a body: their bodies have rules no
    JSON schema states (a URL must be http/https with a host, a prompt template must name a
    field every item has, a PATCH must change something), refused with a declared 422, and
    status_code_conformance still checks that nothing undeclared comes back. Every other
    check, not_a_server_error first, runs on every operation."""
    return [schemathesis.checks.positive_data_acceptance] if case.operation.body else []


def error_body_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every refusal has the API's one error shape: {"error": {"code", "message", "details"}}."""
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, f"not the error shape: {body!r}"
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, f"not the error shape: {body!r}"
    assert isinstance(error["code"], str) and error["code"], body
    assert isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["details"], dict), body
    return True


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi(case: Any, api_under_test: ApiUnderTest) -> None:
    _realistic(case, api_under_test)
    response = case.call_and_validate(
        excluded_checks=_skipped_checks(case), additional_checks=[error_body_shape])
    declared = case.method.upper() == case.operation.method.upper()
    label = case.operation.label if declared else "undeclared methods (every path)"
    _responses[(label, response.status_code)] += 1


async def test_the_fuzzed_document_is_the_served_one_and_it_needs_the_token() -> None:
    """/openapi.json takes the bearer token like the API (bench and tools send it)."""
    transport = httpx.ASGITransport(create_api_app(None, TOKEN))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as api:
        refused = await api.get("/openapi.json")
        served = await api.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    assert served.status_code == 200 and served.json() == SERVED


def test_openapi_has_no_known_gaps() -> None:
    """Gaps schemathesis found (job ids documented as any string, the 400 for an unparsable
    body undocumented), fixed in nicegui_app/api; kept closed."""
    assert _schema_gaps(SERVED) == {"job_id_not_uuid": [], "malformed_body_400_undocumented": []}


def _operations() -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def test_every_operation_is_fuzzed() -> None:
    """The parametrised test above covers every route of spec §5 (and export), none filtered out."""
    labels = {f"{op.method.upper()} {op.path}" for op in _operations()}
    assert labels >= {
        "POST /api/jobs", "GET /api/jobs", "GET /api/jobs/{job_id}", "PATCH /api/jobs/{job_id}",
        "DELETE /api/jobs/{job_id}", "GET /api/devices", "POST /api/background-jobs",
        "GET /api/background-jobs",
        "GET /api/background-jobs/{job_id}", "GET /api/background-jobs/{job_id}/logs",
        "GET /api/background-jobs/{job_id}/items", "POST /api/background-jobs/{job_id}/cancel",
        "POST /api/background-jobs/{job_id}/retry", "GET /api/background-jobs/{job_id}/export",
    }


@pytest.fixture(scope="module", autouse=True)
def report_responses() -> Iterator[None]:
    """Prints (and under JOBSYS_SOAK=1 writes) how many generated requests each operation got
    and which statuses came back."""
    _responses.clear()
    yield
    if not _responses:
        return
    by_operation: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for (operation, status), count in sorted(_responses.items()):
        by_operation[operation][str(status)] = count
    total = sum(_responses.values())
    print(f"\nschemathesis: {total} generated requests over {len(by_operation)} operations"
          f" ({EXAMPLES_PER_OPERATION} examples max each); 5xx: "
          f"{sum(c for (_, status), c in _responses.items() if status >= 500)}")
    for operation, statuses in by_operation.items():
        print(f"  {operation}: {statuses}")
    if SOAK:
        out = ROOT / "bench" / "results" / "reliability" / "openapi_fuzz.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "schemathesis": schemathesis.__version__,
            "max_examples_per_operation": EXAMPLES_PER_OPERATION, "requests": total,
            "server_errors": sum(c for (_, status), c in _responses.items() if status >= 500),
            "statuses_by_operation": by_operation}, indent=2))


@pytest.mark.parametrize("body", [
    {"template": "Summarise\u0000: {text}", "items": [{"text": "a"}]},
    {"template": "Summarise: {text}", "items": [{"text": "a\u0000b"}]},
], ids=["in the template", "in an item"])
async def test_nul_in_a_batch_job_is_refused_cleanly(db_url: str, db: Db, body: dict[str, Any]) -> None:
    """Found by schemathesis (ST101 on POST /api/background-jobs): Postgres jsonb refuses
    \u0000 (SQLSTATE 22P05), which was answered 500; now a 422 like any bad input."""
    async with await JobSystem.connect(db_url, push=False) as jobs:
        before = db.value("select count(*) from jobsys.background_jobs")
        transport = httpx.ASGITransport(create_api_app(jobs, TOKEN))
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            response = await api.post("/api/background-jobs", content=json.dumps(body),
                                      headers={"Content-Type": "application/json"})
    assert db.value("select count(*) from jobsys.background_jobs") == before
    assert response.status_code == 422, response.text



@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PUT", "/api/jobs", "GET, HEAD, POST"),
    ("OPTIONS", "/api/jobs", "GET, HEAD, POST"),
    ("PUT", "/api/jobs/00000000-0000-0000-0000-000000000000", "DELETE, GET, HEAD, PATCH"),
    ("GET", "/api/background-jobs/00000000-0000-0000-0000-000000000000/cancel", "POST"),
])
async def test_405_lists_the_methods_the_path_allows(method: str, path: str, allow: str) -> None:
    """Found by schemathesis (ST204, ST205); fixed in nicegui_app/api/errors.py. No database:
    the refusal comes before any call. HEAD is allowed wherever GET is (HeadAsGet)."""
    transport = httpx.ASGITransport(create_api_app(None, TOKEN))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        response = await api.request(method, path)
    assert (response.status_code, response.headers.get("allow")) == (405, allow)
    assert response.json()["error"]["code"] == "method_not_allowed"


async def test_a_body_that_is_not_utf8_is_malformed_json() -> None:
    """Found by schemathesis (code `http_error` before); fixed in nicegui_app/api/errors.py."""
    transport = httpx.ASGITransport(create_api_app(None, TOKEN))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        response = await api.post("/api/jobs", content=b"\xff{", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"
