"""REST API for the hub's PCs (worker accounts): /api/worker-accounts list, add, revoke.

The token `add` returns works (a PC joins the hub with it) and is stored only as its digest;
bad names and taken names store nothing; the routes need the API token, and a worker token is
no API token."""

from __future__ import annotations

import hashlib
import pathlib
import urllib.parse

import httpx
import pytest
from psycopg import sql

from jobsys import errors
from jobsys.connect import connect_hub
from jobsys.models import DeviceReport
from jobsys.system import JobSystem
from tests.dashboard.test_api import assert_error
from tests.support.hub import running_hub
from tests.support.postgres import Db

BASE = "/api/worker-accounts"


def stored_accounts(db: Db) -> list[str]:
    return [name for (name,) in db.rows("select name from jobsys.worker_accounts order by name")]


def token_stored_nowhere(db: Db, token: str) -> bool:
    """No row of any table in the database holds the token's text (its digest is no match)."""
    tables = db.rows("select table_schema, table_name from information_schema.tables "
                     "where table_type = 'BASE TABLE' "
                     "and table_schema not in ('pg_catalog', 'information_schema')")
    assert any(table == "worker_accounts" for _, table in tables)
    for schema, table in tables:
        query = sql.SQL("select count(*) from {}.{} t where strpos(t::text, %s) > 0").format(
            sql.Identifier(schema), sql.Identifier(table))
        if db.value(query, (token,)):
            return False
    return True


def revoke_path(name: str) -> str:
    return f"{BASE}/{urllib.parse.quote(name, safe='')}/revoke"


async def join_as(hub_url: str, token: str, name: str, devices: int) -> JobSystem:
    """A PC joining the hub with its token: register two phones, report version and push state."""
    pc = await connect_hub(hub_url, token, push=False)
    reports = [DeviceReport(serial=f"{name}-{i}", simulated=True) for i in range(devices)]
    session = await pc.register_worker(name, reports, hostname=f"{name}-host")
    await pc.heartbeat(session.worker_id, meta={"version": "9.9.9", "push": "connected"})
    return pc


async def test_add_returns_a_working_token_and_the_command_and_stores_only_its_digest(
        api: httpx.AsyncClient, db: Db, db_url: str, tmp_path: pathlib.Path) -> None:
    name = "연구실 PC/2"  # Korean, a space and a slash: the revoke path takes it encoded
    added = await api.post(BASE, json={"name": f"  {name} "})
    assert added.status_code == 201, added.text
    assert added.headers["cache-control"] == "no-store"
    body = added.json()
    assert set(body) == {"account", "token", "server", "command"}
    token = body["token"]
    assert body["account"]["name"] == name and body["account"]["sessions"] == []
    assert body["server"] == "http://api.test"  # how this request came in
    assert body["command"] == f"jobsys worker --server http://api.test --token {token}"
    assert db.value("select token_hash from jobsys.worker_accounts where name = %s", (name,)) == \
        hashlib.sha256(token.encode()).hexdigest()
    assert token_stored_nowhere(db, token)

    listed = (await api.get(BASE)).json()["accounts"]
    assert [(a["name"], a["last_seen_at"], a["device_count"]) for a in listed] == [(name, None, 0)]
    assert "token" not in str(listed) and "token_hash" not in listed[0]

    async with running_hub(db_url, tmp_path) as hub:
        pc = await join_as(hub.url, token, "pc2", devices=2)
        try:
            [account] = (await api.get(BASE)).json()["accounts"]
            assert account["last_seen_at"] is not None and account["device_count"] == 2
            [session] = account["sessions"]
            assert (session["hostname"], session["version"], session["push"], session["healthy"],
                    session["devices"]) == ("pc2-host", "9.9.9", "connected", True, 2)

            revoked = await api.post(revoke_path(name))
            assert revoked.status_code == 200, revoked.text
            assert revoked.json()["name"] == name and revoked.json()["revoked_at"] is not None
            assert (await api.get(BASE)).json()["accounts"] == []
            [shown] = (await api.get(BASE, params={"include_revoked": "true"})).json()["accounts"]
            assert shown["name"] == name and shown["revoked_at"] is not None and shown["sessions"] == []
            assert db.value("select count(*) from jobsys.devices where state = 'online'") == 0
            with pytest.raises(errors.Unauthorized):  # the hub refuses the revoked token
                await pc.list_devices()
        finally:
            await pc.close()
    assert token_stored_nowhere(db, token)


@pytest.mark.parametrize("body", [
    {"name": ""}, {"name": "   "}, {"name": "a\x01b"}, {"name": "tab\there"}, {"name": "x" * 65},
    {"name": "del\x7f"}, {}, {"name": 7}, {"name": None}, {"name": "ok", "extra": 1}, ["ok"],
], ids=["empty", "blank", "control", "tab", "too-long", "delete-char", "missing", "number", "null",
        "unknown-field", "not-an-object"])
async def test_a_bad_name_is_422_and_nothing_is_stored(api: httpx.AsyncClient, db: Db, body: object) -> None:
    error = assert_error(await api.post(BASE, json=body), 422, "invalid_input")
    assert "Traceback" not in error["message"]
    assert stored_accounts(db) == []


async def test_control_characters_get_a_plain_message(api: httpx.AsyncClient) -> None:
    error = assert_error(await api.post(BASE, json={"name": "a\x01b"}), 422, "invalid_input")
    assert "PC name must be 1-64 printable characters" in str(error["message"])
    assert "pattern" not in str(error["message"]) and "\\x" not in str(error["message"])


async def test_malformed_json_is_400(api: httpx.AsyncClient, db: Db) -> None:
    response = await api.post(BASE, content=b'{"name": ', headers={"content-type": "application/json"})
    assert_error(response, 400, "malformed_json")
    assert stored_accounts(db) == []


async def test_a_taken_name_is_409_and_the_first_token_stays(api: httpx.AsyncClient, db: Db) -> None:
    first = (await api.post(BASE, json={"name": "rack-1"})).json()["token"]
    error = assert_error(await api.post(BASE, json={"name": " rack-1 "}), 409, "conflict")
    assert "rack-1 already exists" in str(error["message"])
    assert stored_accounts(db) == ["rack-1"]
    stored = db.value("select token_hash from jobsys.worker_accounts")
    assert stored == hashlib.sha256(first.encode()).hexdigest()
    # Revoked, the name is free again (a new token for the same PC).
    assert (await api.post(revoke_path("rack-1"))).status_code == 200
    assert (await api.post(BASE, json={"name": "rack-1"})).status_code == 201
    listed = (await api.get(BASE, params={"include_revoked": True})).json()["accounts"]
    assert [(a["name"], a["revoked_at"] is None) for a in listed] == [("rack-1", True), ("rack-1", False)]


async def test_revoking_an_unknown_or_revoked_pc_or_an_impossible_name_is_404(
        api: httpx.AsyncClient, db: Db) -> None:
    assert_error(await api.post(revoke_path("nobody")), 404, "not_found")
    await api.post(BASE, json={"name": "once"})
    assert (await api.post(revoke_path("once"))).status_code == 200
    assert_error(await api.post(revoke_path("once")), 404, "not_found")
    assert_error(await api.post(revoke_path(" ")), 404, "not_found")
    assert_error(await api.post(revoke_path("a\x01b")), 404, "not_found")
    assert db.value("select count(*) from jobsys.worker_accounts where revoked_at is null") == 0


async def test_the_routes_need_the_api_token_and_a_worker_token_is_not_one(
        api: httpx.AsyncClient, db: Db) -> None:
    worker_token = (await api.post(BASE, json={"name": "pc-1"})).json()["token"]
    calls = [("GET", BASE, None), ("POST", BASE, {"name": "pc-2"}), ("POST", revoke_path("pc-1"), None),
             ("GET", "/api/jobs", None), ("GET", "/api/devices", None), ("GET", "/api/background-jobs", None)]
    for credentials in (None, f"Bearer {worker_token}"):
        for method, path, body in calls:
            headers = {"Authorization": credentials} if credentials else {}
            request = api.build_request(method, path, json=body, headers=headers)
            if credentials is None:
                del request.headers["Authorization"]  # the client's default carries the API token
            error = assert_error(await api.send(request), 401, "unauthorized")
            assert worker_token not in str(error), (method, path)
    assert_error(await api.get("/openapi.json", headers={"Authorization": f"Bearer {worker_token}"}),
                 401, "unauthorized")
    assert stored_accounts(db) == ["pc-1"]
    assert db.value("select revoked_at from jobsys.worker_accounts") is None


async def test_openapi_documents_the_routes_with_their_models(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/openapi.json")).json()
    paths = schema["paths"]
    assert set(paths[BASE]) == {"get", "post"}
    assert set(paths[f"{BASE}/{{name}}/revoke"]) == {"post"}

    def model(operation: dict[str, object], status: str) -> str:
        content = operation["responses"][status]["content"]  # type: ignore[index]
        return str(content["application/json"]["schema"]["$ref"])

    assert model(paths[BASE]["get"], "200").endswith("/WorkerAccountList")
    assert model(paths[BASE]["post"], "201").endswith("/EnrolledPc")
    assert model(paths[f"{BASE}/{{name}}/revoke"]["post"], "200").endswith("/WorkerAccount")
    assert {"401", "409", "422"} <= set(paths[BASE]["post"]["responses"])
    assert {"401", "404"} <= set(paths[f"{BASE}/{{name}}/revoke"]["post"]["responses"])
    assert paths[BASE]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/NewWorkerAccount")
    components = schema["components"]["schemas"]
    assert {"token", "command", "server", "account"} <= set(components["EnrolledPc"]["properties"])
    assert "token_hash" not in str(components["WorkerAccount"])
