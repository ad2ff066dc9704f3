"""`jobsys --log-format json` (issue 21): every line of a worker's log is one JSON object, with
the ids its words name (run, job, device) as fields."""

from __future__ import annotations

import json
import logging
import pathlib
import signal
import subprocess

from jobsys_cli.log_format import JsonFormatter
from tests.support.postgres import Db
from tests.support.processes import JOBSYS
from tests.support.waiting import wait_for


def format_line(message: str, *args: object, exc: bool = False) -> dict[str, object]:
    record = logging.LogRecord("jobsys.worker", logging.INFO, __file__, 1, message, args, None)
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            import sys
            record.exc_info = sys.exc_info()
    return json.loads(JsonFormatter().format(record))


def test_ids_in_the_words_become_fields() -> None:
    entry = format_line("run_started %s url=%s", "run=12 attempt=1 job=5f3c device=sim-1",
                        "https://example.com/?a=b")
    assert entry["event"] == "run_started" and entry["level"] == "info" and entry["logger"] == "jobsys.worker"
    assert (entry["run"], entry["attempt"], entry["job"], entry["device"]) == ("12", "1", "5f3c", "sim-1")
    assert entry["url"] == "https://example.com/?a=b"
    assert str(entry["message"]).startswith("run_started run=12")


def test_plain_messages_and_exceptions_stay_one_line() -> None:
    entry = format_line("worker session unknown to the server; registering again", exc=True)
    assert "event" not in entry and "ValueError: boom" in str(entry["exception"])
    assert "\n" not in JsonFormatter().format(logging.LogRecord("x", logging.ERROR, __file__, 1, "a\nb", None, None))


def test_a_worker_process_logs_json_lines(db: Db, db_url: str, tmp_path: pathlib.Path) -> None:
    proc = subprocess.Popen([*JOBSYS, "--log-format", "json", "worker", "--driver", "sim", "--sim-devices", "1",
                             "--name", "pc-json", "--database-url", db_url, "--evidence-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: db.value("select count(*) from jobsys.workers where name = 'pc-json'") == 1,
                 timeout_s=60, what="the worker registered")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    lines = [line for line in err.splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]
    assert entries and all(e["logger"] and e["level"] for e in entries)
    assert any(e.get("event") == "worker_stopped" for e in entries), err[-2000:]
