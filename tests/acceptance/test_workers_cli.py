"""`jobsys workers add|list|revoke`: the real command in a subprocess against a migrated
database; the token `add` prints joins a real hub (in the test's event loop), as a PC running
the printed command would."""

from __future__ import annotations

import asyncio
import hashlib
import json
import pathlib
import re
import socket
import subprocess

import pytest

from jobsys.connect import connect_hub
from jobsys.models import DeviceReport
from tests.acceptance.test_jobs_cli import jobsys, refused_in_one_line
from tests.dashboard.test_api_worker_accounts import token_stored_nowhere
from tests.support.hub import running_hub
from tests.support.postgres import Db

TOKEN_RE = re.compile(r"jsw_[A-Za-z0-9_-]{40,}")


async def run(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The command in a thread, so the hub in this event loop keeps answering meanwhile."""
    return await asyncio.to_thread(jobsys, db_url, *args)


def names(db: Db) -> list[str]:
    return [name for (name,) in db.rows("select name from jobsys.worker_accounts order by name")]


async def test_add_prints_a_working_token_once_with_the_command_then_list_and_revoke(
        db: Db, db_url: str, tmp_path: pathlib.Path) -> None:
    added = await run(db_url, "workers", "add", "lab-pc", "--server", "http://hub.lan:8080")
    assert added.returncode == 0, added.stderr
    tokens = set(TOKEN_RE.findall(added.stdout))
    assert len(tokens) == 1, added.stdout
    token = tokens.pop()
    assert f"  jobsys worker --server http://hub.lan:8080 --token {token}\n" in added.stdout
    assert "shown this once" in added.stdout and "pip install ." in added.stdout
    assert db.value("select token_hash from jobsys.worker_accounts where name = 'lab-pc'") == \
        hashlib.sha256(token.encode()).hexdigest()
    assert token_stored_nowhere(db, token)

    never = await run(db_url, "workers", "list")
    assert never.returncode == 0, never.stderr
    assert never.stdout.splitlines()[0].split() == ["NAME", "CREATED", "LAST", "SEEN", "SESSIONS", "HOSTS",
                                                    "DEVICES", "PUSH", "VERSION"]
    assert token not in never.stdout

    async with running_hub(db_url, tmp_path) as hub:
        pc = await connect_hub(hub.url, token, push=False)
        try:
            session = await pc.register_worker("lab-pc", [DeviceReport(serial=f"p{i}") for i in range(2)],
                                               hostname="lab-host")
            await pc.heartbeat(session.worker_id, meta={"version": "1.2.3", "push": "connected"})

            listed = await run(db_url, "workers", "list")
            assert listed.returncode == 0, listed.stderr
            [row] = [line for line in listed.stdout.splitlines() if line.startswith("lab-pc ")]
            # SESSIONS HOSTS DEVICES PUSH VERSION
            assert row.split()[-5:] == ["1", "lab-host", "2", "connected", "1.2.3"], row
            document = json.loads((await run(db_url, "workers", "list", "--json")).stdout)
            [account] = document["accounts"]
            assert account["name"] == "lab-pc" and account["device_count"] == 2
            assert account["last_seen_at"] is not None
            assert [(s["hostname"], s["push"], s["version"]) for s in account["sessions"]] == [
                ("lab-host", "connected", "1.2.3")]

            revoked = await run(db_url, "workers", "revoke", "lab-pc")
            assert revoked.returncode == 0, revoked.stderr
            assert revoked.stdout.strip() == ("revoked PC lab-pc: its token is refused from now on; "
                                              "1 session ended, 2 devices offline")
            assert db.value("select count(*) from jobsys.devices where state = 'online'") == 0
        finally:
            await pc.close()

    active = await run(db_url, "workers", "list")
    assert active.stdout.startswith("no PCs yet"), active.stdout
    everything = await run(db_url, "workers", "list", "--all")
    [row] = [line for line in everything.stdout.splitlines() if line.startswith("lab-pc ")]
    assert "revoked 20" in row and everything.stdout.splitlines()[0].endswith("STATE")
    document = json.loads((await run(db_url, "workers", "list", "--all", "--json")).stdout)
    assert [(a["name"], a["revoked_at"] is not None) for a in document["accounts"]] == [("lab-pc", True)]
    assert token_stored_nowhere(db, token)


def test_add_defaults_to_this_hosts_name_and_json_has_the_command(db: Db, db_url: str) -> None:
    added = jobsys(db_url, "workers", "add", " rack 2 ", "--json")
    assert added.returncode == 0, added.stderr
    document = json.loads(added.stdout)
    server = f"http://{socket.gethostname()}:8080"
    assert document["server"] == server and document["account"]["name"] == "rack 2"
    assert document["command"] == f"jobsys worker --server {server} --token {document['token']}"
    assert names(db) == ["rack 2"]


def test_a_taken_name_is_refused_in_one_line_and_the_first_token_stays(db: Db, db_url: str) -> None:
    first = json.loads(jobsys(db_url, "workers", "add", "pc-1", "--json").stdout)["token"]
    line = refused_in_one_line(jobsys(db_url, "workers", "add", "pc-1"), 1)
    assert "a PC named pc-1 already exists" in line
    assert names(db) == ["pc-1"]
    stored = db.value("select token_hash from jobsys.worker_accounts")
    assert stored == hashlib.sha256(first.encode()).hexdigest()


@pytest.mark.parametrize("name", ["", "   ", "a\x01b", "tab\tname", "x" * 65], ids=[
    "empty", "blank", "control", "tab", "too-long"])
def test_a_bad_name_is_refused_in_one_line_and_nothing_is_stored(db: Db, db_url: str, name: str) -> None:
    line = refused_in_one_line(jobsys(db_url, "workers", "add", name), 2)
    assert line == "jobsys: PC name must be 1-64 printable characters (no control characters)"
    assert names(db) == []


def test_a_bad_server_address_is_refused_before_anything_is_stored(db: Db, db_url: str) -> None:
    line = refused_in_one_line(jobsys(db_url, "workers", "add", "pc-1", "--server", "hub.lan:8080"), 2)
    assert "--server must be an http:// or https:// address" in line
    assert names(db) == []


def test_revoking_an_unknown_pc_is_refused_in_one_line(db: Db, db_url: str) -> None:
    line = refused_in_one_line(jobsys(db_url, "workers", "revoke", "nobody"), 1)
    assert line == "jobsys: no active PC by that name"
    jobsys(db_url, "workers", "add", "once")
    assert jobsys(db_url, "workers", "revoke", "once").returncode == 0
    refused_in_one_line(jobsys(db_url, "workers", "revoke", "once"), 1)  # revoked already
    refused_in_one_line(jobsys(db_url, "workers", "revoke", " "), 2)
