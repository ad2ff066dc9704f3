"""`jobsys jobs ...` and `jobsys devices list`: the real command in a subprocess, against a
migrated database and a simulated worker (also a subprocess) whose runs complete."""

from __future__ import annotations

import csv
import datetime
import io
import json
import pathlib
import signal
import subprocess
import threading

import pytest

from tests.support.postgres import Db
from tests.support.processes import JOBSYS, spawn_worker
from tests.support.waiting import wait_for

RUN_TIMEOUT_S = 90


def jobsys(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*JOBSYS, *args, "--database-url", db_url], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)


def refused_in_one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The command exited with `code`, said why in one line on stderr and nothing on stdout."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jobsys: "), result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr and "pydantic" not in result.stderr.lower()
    return lines[0]


def start_worker(db: Db, db_url: str, tmp_path: pathlib.Path, procs: list[subprocess.Popen[str]],
                 devices: int, speed: float, *extra: str) -> None:
    procs.append(spawn_worker(db_url, tmp_path, "pc1", devices, speed, *extra))
    wait_for(lambda: db.value("select count(*) from jobsys.devices where state = 'online'") == devices,
             timeout_s=60, what="the simulated worker's devices")


def test_create_wait_shows_progress_until_completed_then_list_show_devices(
        db: Db, db_url: str, tmp_path: pathlib.Path, procs: list[subprocess.Popen[str]]) -> None:
    start_worker(db, db_url, tmp_path, procs, devices=4, speed=10.0)

    created = jobsys(db_url, "jobs", "create", "--url", "https://example.com/status", "--duration", "3",
                     "--all", "--title", "status check", "--wait")
    assert created.returncode == 0, created.stderr
    first, *_, last = created.stdout.strip().splitlines()
    assert first.startswith("created job ") and "4 devices assigned" in first
    job_id = first.split()[2].rstrip(":")
    assert last == "completed: 4/4 devices completed, 0 failed, 0 cancelled"
    assert "4/4 devices (100%)" in created.stderr and "[####################]" in created.stderr
    assert db.value("select status from jobsys.jobs where id = %s", (job_id,)) == "completed"

    listed = jobsys(db_url, "jobs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    assert [job["id"] for job in document["jobs"]] == [job_id]
    assert document["summary"]["completed"] == 1

    table = jobsys(db_url, "jobs", "list", "--status", "completed", "--q", "status")
    assert table.returncode == 0, table.stderr
    assert job_id[:8] in table.stdout and "4/4 (100%)" in table.stdout and "status check" in table.stdout

    shown = jobsys(db_url, "jobs", "show", job_id, "--json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["status"] == "completed" and detail["completed_count"] == 4
    assert sorted(run["status"] for run in detail["assignments"]) == ["completed"] * 4

    by_prefix = jobsys(db_url, "jobs", "show", job_id[:8])
    assert by_prefix.returncode == 0, by_prefix.stderr
    assert job_id in by_prefix.stdout and by_prefix.stdout.count(" completed ") >= 4

    csv_text = jobsys(db_url, "jobs", "export", job_id, "--format", "csv")
    assert csv_text.returncode == 0, csv_text.stderr
    rows = list(csv.DictReader(io.StringIO(csv_text.stdout)))
    assert len(rows) == 4 and {row["status"] for row in rows} == {"completed"}
    assert {row["worker_name"] for row in rows} == {"pc1"}
    out_file = tmp_path / "runs.jsonl"
    jsonl = jobsys(db_url, "jobs", "export", job_id[:8], "--format", "jsonl", "-o", str(out_file))
    assert jsonl.returncode == 0 and jsonl.stdout == "", jsonl.stderr
    assert [json.loads(line)["status"] for line in out_file.read_text().splitlines()] == ["completed"] * 4

    clone = jobsys(db_url, "jobs", "clone", job_id, "--json")
    assert clone.returncode == 0, clone.stderr
    cloned = json.loads(clone.stdout)["job"]
    assert cloned["id"] != job_id and cloned["title"] == "status check"

    devices = jobsys(db_url, "devices", "list")
    assert devices.returncode == 0, devices.stderr
    assert "pc1: 4 devices (4 simulated)" in devices.stdout and "4 devices: 4 connected" in devices.stdout
    devices_json = json.loads(jobsys(db_url, "devices", "list", "--json").stdout)
    assert {d["worker_name"] for d in devices_json["devices"]} == {"pc1"}
    assert devices_json["summary"]["connected"] == 4


def test_pause_resume_cancel_delete_change_the_status(db: Db, db_url: str) -> None:
    created = jobsys(db_url, "jobs", "create", "--url", "https://example.com/", "--duration", "5",
                     "--count", "3", "--timeout", "3600", "--json")
    assert created.returncode == 0, created.stderr
    job_id = json.loads(created.stdout)["job"]["id"]
    assert json.loads(created.stdout)["job"]["timeout_sec"] == 3600

    def status() -> str:
        return str(db.value("select status from jobsys.jobs where id = %s", (job_id,)))

    for verb, expected in (("pause", "paused"), ("resume", "active"), ("cancel", "cancelled")):
        result = jobsys(db_url, "jobs", verb, job_id)
        assert result.returncode == 0, result.stderr
        assert status() == expected and expected in result.stdout

    illegal = refused_in_one_line(jobsys(db_url, "jobs", "pause", job_id), 1)
    assert status() == "cancelled", illegal
    refused_in_one_line(jobsys(db_url, "jobs", "retry", job_id), 1)  # nothing failed

    deleted = jobsys(db_url, "jobs", "delete", job_id[:8])
    assert deleted.returncode == 0, deleted.stderr
    assert db.value("select count(*) from jobsys.jobs") == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--url", "https://example.com/", "--duration", "0", "--all"], "jobsys: duration must be 1..86400 seconds"),
    (["--url", "https://example.com/", "--duration", "90000", "--all"], "duration must be 1..86400 seconds"),
    (["--url", "ftp://example.com/", "--duration", "5", "--all"], "--url: the URL must start with http"),
    (["--url", "https://user@example.com/", "--duration", "5", "--all"], "--url: the URL must not contain"),
    (["--url", "https://example.com/", "--duration", "5", "--percent", "101"], "percent must be 1..100"),
    (["--url", "https://example.com/", "--duration", "5", "--count", "0"], "count must be 1..100000"),
    (["--url", "https://example.com/", "--duration", "5", "--count", "2", "--title", " "], None),
])
def test_bad_input_is_one_line_exit_2_and_nothing_stored(
        db: Db, db_url: str, args: list[str], message: str | None) -> None:
    result = jobsys(db_url, "jobs", "create", *args)
    if message is None:  # a blank title falls back to the URL's: accepted
        assert result.returncode == 0, result.stderr
        assert db.value("select title from jobsys.jobs") == "example.com"
        return
    line = refused_in_one_line(result, 2)
    assert message in line
    assert db.value("select count(*) from jobsys.jobs") == 0


def test_unknown_or_malformed_ids_and_bad_filters(db_url: str) -> None:
    for verb in ("show", "pause", "resume", "cancel", "delete"):
        line = refused_in_one_line(jobsys(db_url, "jobs", verb, "00000000-0000-0000-0000-000000000000"), 1)
        assert "not found" in line
    assert "not found" in refused_in_one_line(jobsys(db_url, "jobs", "show", "abcd1234"), 1)
    assert "not a job id" in refused_in_one_line(jobsys(db_url, "jobs", "show", "xyz"), 2)
    assert "status must be one of" in refused_in_one_line(jobsys(db_url, "jobs", "list", "--status", "done"), 2)


def test_ctrl_c_during_wait_leaves_the_job_running_and_says_how_to_cancel(
        db: Db, db_url: str, tmp_path: pathlib.Path, procs: list[subprocess.Popen[str]]) -> None:
    start_worker(db, db_url, tmp_path, procs, devices=2, speed=1.0)
    proc = subprocess.Popen([*JOBSYS, "jobs", "create", "--url", "https://example.com/", "--duration", "600",
                             "--all", "--wait", "--database-url", db_url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(proc)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.startswith("created job "), first
    job_id = first.split()[2].rstrip(":")
    assert proc.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    wait_for(lambda: any("running 2" in line for line in lines), timeout_s=30,
             what="the progress bar showing both runs started")
    proc.send_signal(signal.SIGINT)
    out = proc.stdout.read()
    proc.wait(timeout=30)
    reader.join(timeout=30)
    err = "".join(lines)
    assert proc.returncode == 130, (out, err)
    assert f"jobsys jobs cancel {job_id}" in err and "keeps running" in err
    assert "0/2 devices (0%)  running 2" in err
    assert db.value("select status from jobsys.jobs where id = %s", (job_id,)) == "active"


def test_failing_phones_end_incomplete_then_retry_reopens(
        db: Db, db_url: str, tmp_path: pathlib.Path, procs: list[subprocess.Popen[str]]) -> None:
    start_worker(db, db_url, tmp_path, procs, 2, 10.0, "--sim-failure-rate", "1")
    ended = jobsys(db_url, "jobs", "create", "--url", "https://example.com/", "--duration", "1", "--all",
                   "--topup-grace", "0", "--wait")
    assert ended.returncode == 1, (ended.stdout, ended.stderr)
    job_id = ended.stdout.splitlines()[0].split()[2].rstrip(":")
    assert ended.stdout.splitlines()[-1].startswith("incomplete (")
    assert "0/2 devices (0%)" in ended.stderr and "failed 2" in ended.stderr

    retried = jobsys(db_url, "jobs", "retry", job_id, "--json")
    assert retried.returncode == 0, retried.stderr
    document = json.loads(retried.stdout)
    assert document["retried"] == 2 and document["job"]["status"] in ("active", "incomplete")
    listed = json.loads(jobsys(db_url, "jobs", "list", "--status", "incomplete", "--json").stdout)
    assert listed["summary"]["total"] == 1


def test_start_at_schedules_the_job_and_a_time_without_zone_is_refused(db: Db, db_url: str) -> None:
    later = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)).isoformat()
    created = jobsys(db_url, "jobs", "create", "--url", "https://example.com/later", "--duration", "5",
                     "--count", "2", "--start-at", later, "--json")
    assert created.returncode == 0, created.stderr
    job = json.loads(created.stdout)
    job = job.get("job", job)
    assert job["status"] == "scheduled"
    assert db.value("select count(*) from jobsys.job_assignments") == 0  # no run before its time

    before = db.value("select count(*) from jobsys.jobs")
    refused_in_one_line(jobsys(db_url, "jobs", "create", "--url", "https://example.com/", "--duration", "5",
                               "--count", "1", "--start-at", later[:19]), 2)
    assert db.value("select count(*) from jobsys.jobs") == before


def test_priority_is_stored_and_one_out_of_range_is_refused(db: Db, db_url: str) -> None:
    later = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)).isoformat()
    created = jobsys(db_url, "jobs", "create", "--url", "https://example.com/urgent", "--duration", "5",
                     "--count", "1", "--start-at", later, "--priority", "7", "--json")
    assert created.returncode == 0, created.stderr
    job = json.loads(created.stdout)
    assert job.get("job", job)["priority"] == 7
    before = db.value("select count(*) from jobsys.jobs")
    refused_in_one_line(jobsys(db_url, "jobs", "create", "--url", "https://example.com/", "--duration", "5",
                               "--count", "1", "--start-at", later, "--priority", "11"), 2)
    assert db.value("select count(*) from jobsys.jobs") == before
