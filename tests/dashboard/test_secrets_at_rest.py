"""Secrets at rest: the data dir keeps only the API token's SHA-256 hash, an old plain token
file is hashed and the same token keeps working, every file the dashboard writes is its
owner's only (0600 files, 0700 directories; NiceGUI's session files included), and the API
docs need the token (or, for /docs in a browser, a dashboard login) unless `--public-docs`.

The dashboard is started the way `jobsys up` and `jobsys dashboard` start it
(jobsys_cli.dashboard.serve_dashboard) on a free port, in this test's event loop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import pathlib
import re
import stat
import subprocess
import threading
from typing import AsyncIterator

import httpx
import pytest

from jobsys.system import JobSystem
from jobsys_cli.dashboard import serve_dashboard
from nicegui_app.auth import (
    ENV_API_TOKEN,
    PLAIN_TOKEN_FILE_NAME,
    TOKEN_FILE_NAME,
    ApiToken,
    TokenFileError,
    load_or_create_session_secret,
    load_or_create_token,
)
from tests.core.helpers import add_worker
from tests.dashboard.test_api import assert_error
from tests.support.browser import absent, chromium
from tests.support.processes import JOBSYS, free_port
from tests.support.waiting import wait_for, wait_until

OLD_TOKEN = "an-old-plain-token-0123456789abcdef"
SHOWN = re.compile(r"API token, shown once: ([\w-]+)")  # token_urlsafe's alphabet


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def loose_entries(root: pathlib.Path) -> list[str]:
    """Everything under `root` (itself included) that others could read: directories not
    0700, files not 0600 (sockets are reached through their directory only)."""
    loose = []
    for path in [root, *root.rglob("*")]:
        kind = path.lstat().st_mode
        wanted = 0o700 if stat.S_ISDIR(kind) else 0o600 if stat.S_ISREG(kind) else None
        if wanted is not None and mode(path) != wanted:
            loose.append(f"{oct(mode(path))} {path.relative_to(root)}")
    return loose


@pytest.fixture(autouse=True)
def no_environment_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_API_TOKEN, raising=False)


# The token file --------------------------------------------------------------------------
def test_a_new_token_is_shown_once_and_kept_only_as_its_hash(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"
    token, shown = load_or_create_token(data)
    assert shown is not None and len(shown) >= 40
    stored = (data / TOKEN_FILE_NAME).read_text()
    assert stored == sha256(shown) + "\n" and shown not in stored
    assert not (data / PLAIN_TOKEN_FILE_NAME).exists()
    assert loose_entries(data) == []  # the data dir 0700, the hash 0600, no temporary file left
    assert sorted(p.name for p in data.iterdir()) == [TOKEN_FILE_NAME]
    assert token.matches(shown) and not token.matches(shown + "x") and not token.matches(None)
    again, shown_again = load_or_create_token(data)
    assert (again, shown_again) == (token, None)  # the same token, not shown again
    assert shown not in repr(again)


def test_processes_starting_at_once_agree_on_one_token(tmp_path: pathlib.Path) -> None:
    results: list[tuple[ApiToken, str | None]] = []
    start = threading.Barrier(8)

    def load() -> None:
        start.wait()
        results.append(load_or_create_token(tmp_path))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    shown = [token for _, token in results if token is not None]
    assert len(shown) == 1 and {api_token for api_token, _ in results} == {ApiToken(sha256(shown[0]))}


def test_the_environment_token_wins_and_nothing_is_written(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_API_TOKEN, "from-the-environment")
    token, shown = load_or_create_token(tmp_path)
    assert shown is None and token.matches("from-the-environment")
    assert list(tmp_path.iterdir()) == []


def test_an_old_plain_token_file_is_hashed_and_the_token_still_works(
        tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    plain = tmp_path / PLAIN_TOKEN_FILE_NAME
    plain.write_text(OLD_TOKEN + "\n")
    os.chmod(plain, 0o644)
    with caplog.at_level(logging.INFO):
        token, shown = load_or_create_token(tmp_path)
    assert shown is None and token.matches(OLD_TOKEN)
    assert not plain.exists()
    hashed = tmp_path / TOKEN_FILE_NAME
    assert hashed.read_text() == sha256(OLD_TOKEN) + "\n" and mode(hashed) == 0o600
    said = caplog.text
    assert "plain text" in said and TOKEN_FILE_NAME in said and "unchanged" in said
    assert OLD_TOKEN not in said
    assert load_or_create_token(tmp_path) == (token, None)  # and at every later start


def test_an_empty_plain_file_is_dropped_for_a_new_token(tmp_path: pathlib.Path) -> None:
    (tmp_path / PLAIN_TOKEN_FILE_NAME).write_text("")
    token, shown = load_or_create_token(tmp_path)
    assert shown is not None and token.matches(shown)
    assert not (tmp_path / PLAIN_TOKEN_FILE_NAME).exists()


@pytest.mark.parametrize("content", ["", "not a digest\n", sha256("x")[:-1], sha256("x").upper()])
def test_a_hash_file_jobsys_did_not_write_is_refused_with_a_clear_error(
        tmp_path: pathlib.Path, content: str) -> None:
    (tmp_path / TOKEN_FILE_NAME).write_text(content)
    with pytest.raises(TokenFileError, match="does not hold an API token's SHA-256 hash; delete it"):
        load_or_create_token(tmp_path)
    assert (tmp_path / TOKEN_FILE_NAME).read_text() == content  # left for the operator to look at


def test_the_command_says_what_is_wrong_with_the_hash_file(db_url: str, tmp_path: pathlib.Path) -> None:
    (tmp_path / TOKEN_FILE_NAME).write_text("garbage\n")
    env = {k: v for k, v in os.environ.items() if k != ENV_API_TOKEN}
    done = subprocess.run([*JOBSYS, "dashboard", "--database-url", db_url, "--data-dir", str(tmp_path),
                           "--port", str(free_port())], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"jobsys: {tmp_path / TOKEN_FILE_NAME} does not hold an API token's SHA-256 hash" in done.stderr
    assert "Traceback" not in done.stderr


# A `jobsys up`-like start -----------------------------------------------------------------
@contextlib.asynccontextmanager
async def dashboard(jobs: JobSystem, data_dir: pathlib.Path, *, public_docs: bool = False
                    ) -> AsyncIterator[httpx.AsyncClient]:
    """serve_dashboard as `jobsys up --data-dir DATA [--public-docs]` runs it, until the block ends."""
    port = free_port()
    args = argparse.Namespace(data_dir=data_dir, host="127.0.0.1", port=port, public_docs=public_docs,
                              metrics_public=False, tls_cert=None, tls_key=None)
    task = asyncio.create_task(serve_dashboard(jobs, args))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:

            async def up() -> bool:
                if task.done():
                    task.result()  # raises what stopped it
                    raise AssertionError("the dashboard stopped")
                try:
                    return (await client.get("/login")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(up, what="the dashboard")
            yield client
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)


async def test_a_started_dashboard_keeps_its_files_private_and_its_docs_behind_the_token(
        clean_nicegui: None, jobs: JobSystem, tmp_path: pathlib.Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from nicegui import app

    await add_worker(jobs, "w1", 2)
    data = tmp_path / "data"
    async with dashboard(jobs, data) as client:
        printed = capsys.readouterr().out
        found = SHOWN.search(printed)
        assert found, printed
        token = found.group(1)
        auth = {"Authorization": f"Bearer {token}"}
        assert (await client.get("/api/devices", headers=auth)).status_code == 200
        assert (await client.get("/api/devices", headers={"Authorization": "Bearer " + sha256(token)})
                ).status_code == 401  # the stored hash is not a token

        refused = await client.get("/openapi.json")
        assert_error(refused, 401, "unauthorized")
        assert refused.headers["www-authenticate"] == "Bearer"
        schema = await client.get("/openapi.json", headers=auth)
        assert schema.status_code == 200 and "/api/jobs" in schema.json()["paths"]
        docs = await client.get("/docs")  # a browser not logged in goes to the login page
        assert docs.status_code == 303 and docs.headers["location"] == "/login?to=%2Fdocs"
        assert_error(await client.get("/docs/openapi.json"), 401, "unauthorized")
        assert (await client.get("/redoc")).status_code == 404

        # NiceGUI writes its storage files from its own tasks; the session files the same way.
        app.storage.general["probe"] = "written"
        general = data / "nicegui" / "storage-general.json"
        await wait_until(lambda: general.exists() and "written" in general.read_text(),
                         what="NiceGUI's storage file")
        assert loose_entries(data) == []
        hashed = (data / TOKEN_FILE_NAME).read_text()
        assert hashed == sha256(token) + "\n"
        for path in data.rglob("*"):
            assert path.is_dir() or token not in path.read_text(errors="replace"), path
    # Started again, the same token works and is not shown: tests/acceptance/test_private_files.py
    # (NiceGUI is one per process).


async def test_an_old_plain_token_keeps_working_after_the_upgrade(
        clean_nicegui: None, jobs: JobSystem, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / PLAIN_TOKEN_FILE_NAME).write_text(OLD_TOKEN + "\n")
    (data / "nicegui").mkdir(mode=0o755)
    old_session = data / "nicegui" / "storage-user-earlier.json"
    old_session.write_text("{}")
    os.chmod(old_session, 0o644)  # what earlier versions left
    with caplog.at_level(logging.INFO):
        async with dashboard(jobs, data) as client:
            response = await client.get("/api/devices", headers={"Authorization": f"Bearer {OLD_TOKEN}"})
            assert response.status_code == 200
    assert not (data / PLAIN_TOKEN_FILE_NAME).exists()
    assert (data / TOKEN_FILE_NAME).read_text() == sha256(OLD_TOKEN) + "\n"
    assert mode(data / "nicegui") == 0o700 and mode(old_session) == 0o600
    assert "plain text" in caplog.text
    assert OLD_TOKEN not in caplog.text + capsys.readouterr().out


async def test_public_docs_need_no_token(
        clean_nicegui: None, jobs: JobSystem, tmp_path: pathlib.Path) -> None:
    async with dashboard(jobs, tmp_path / "data", public_docs=True) as client:
        schema = await client.get("/openapi.json")
        assert schema.status_code == 200 and "/api/jobs" in schema.json()["paths"]
        docs = await client.get("/docs")
        assert docs.status_code == 200 and "swagger-ui" in docs.text and "/openapi.json" in docs.text
        assert_error(await client.get("/api/devices"), 401, "unauthorized")  # the API itself still needs it


@pytest.mark.parametrize("public", [False, True])
async def test_the_api_app_alone_serves_its_docs_with_the_token_or_publicly(public: bool) -> None:
    from nicegui_app.api import create_api_app

    token = "docs-test-token-0123456789"
    app = create_api_app(None, token, public_docs=public)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api.test") as client:
        for path in ("/openapi.json", "/docs"):
            anonymous = await client.get(path)
            if public:
                assert anonymous.status_code == 200, path
            else:
                assert_error(anonymous, 401, "unauthorized")
            assert (await client.get(path, headers={"Authorization": f"Bearer {token}"})).status_code == 200


@pytest.mark.parametrize("command", ["up", "dashboard"])
def test_both_commands_take_public_docs(command: str) -> None:
    from jobsys_cli.main import build_parser

    assert build_parser().parse_args([command, "--public-docs"]).public_docs is True
    assert build_parser().parse_args([command]).public_docs is False


# In a browser -----------------------------------------------------------------------------
@pytest.mark.skipif(bool(absent()), reason=f"{' and '.join(absent())} missing")
async def test_a_logged_in_browser_reads_the_docs_and_its_session_file_is_private(
        clean_nicegui: None, jobs: JobSystem, tmp_path: pathlib.Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from nicegui_app.i18n import Translator
    from tests.support.browser import LANGUAGE

    t = Translator(LANGUAGE)
    data = tmp_path / "data"
    async with dashboard(jobs, data) as client:
        found = SHOWN.search(capsys.readouterr().out)
        assert found
        token = found.group(1)
        base = str(client.base_url).rstrip("/")

        def browse() -> str:
            with chromium("jobsys-docs-test-") as driver:
                driver.get(f"{base}/docs")  # not logged in: the login page, which comes back here
                wait_for(lambda: "/login" in driver.current_url, 30, "the login page")
                field = (By.CSS_SELECTOR, f"input[aria-label='{t('token')}']")
                wait_for(lambda: bool(driver.find_elements(*field)), 30, "the token field")
                driver.find_element(*field).send_keys(token, Keys.ENTER)
                wait_for(lambda: driver.current_url.endswith("/docs"), 30, "/docs after the login")
                page = driver.page_source  # Swagger UI (its scripts come from a CDN: not needed here)
                assert "swagger-ui" in page and "/docs/openapi.json" in page
                driver.get(f"{base}/docs/openapi.json")  # what Swagger UI fetches, with the session
                return str(driver.find_element(By.TAG_NAME, "body").text)

        schema = json.loads(await asyncio.to_thread(browse))
        assert "/api/jobs" in schema["paths"] and "/api/background-jobs" in schema["paths"]
        sessions = list((data / "nicegui").glob("storage-user-*.json"))
        assert sessions and all(token not in path.read_text() for path in sessions)
        assert any(sha256(token) in path.read_text() for path in sessions)  # the login's fingerprint
        assert loose_entries(data) == []


def test_the_session_key_survives_a_restart_and_is_private(tmp_path: pathlib.Path) -> None:
    """A restart keeps browsers logged in: the cookie-signing key is read back, not made anew."""
    first = load_or_create_session_secret(tmp_path)
    again = load_or_create_session_secret(tmp_path)
    assert first == again and len(first) == 64
    assert stat.S_IMODE((tmp_path / "session_secret").stat().st_mode) == 0o600
