"""The batch commands in subprocesses, and the progress follower on both of its paths."""

from __future__ import annotations

import io
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from jobsys_cli.batch_follow import follow
from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchStatus
from jobsys.system import JobSystem
from tests.batch.conftest import items
from tests.support.runners import StartRunner

BATCH_CLI = [sys.executable, "-m", "jobsys_cli"]
ENV = {**os.environ, "GEMINI_API_KEY": ""}


@pytest.fixture
def runner_proc(db_url: str, tmp_path: pathlib.Path) -> Iterator[subprocess.Popen[str]]:
    with open(tmp_path / "runner.log", "w") as log:
        proc = subprocess.Popen(BATCH_CLI + ["batch-runner", "--database-url", db_url, "--offline-latency", "0.01,0.05",
                                             "--poll-interval", "0.2"],
                                stdout=log, stderr=subprocess.STDOUT, text=True, env=ENV)
    yield proc
    proc.terminate()
    proc.wait(30)


def test_submit_follows_the_job_to_the_end_and_export_writes_the_drafts(
        db_url: str, tmp_path: pathlib.Path, runner_proc: subprocess.Popen[str]) -> None:
    source = tmp_path / "reviews.jsonl"
    source.write_text("\n".join(json.dumps({"review": f"review {i}", "product": "lamp"}) for i in range(25))
                      + "\n\n", encoding="utf-8")
    done = subprocess.run(
        BATCH_CLI + ["batch", "submit", str(source), "--template",
                     ("Draft a reply to this review of our {product}: {review}"), "--concurrency", "6",
                     "--database-url", db_url],
        check=False, capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "submitted " in done.stdout
    assert "completed: 25 completed, 0 failed, 0 cancelled (offline provider: placeholder drafts)" in done.stdout
    assert "25/25 (100%)" in done.stderr  # the bar's last line
    assert "tokens: " in done.stdout and "estimated cost" not in done.stdout  # offline drafts cost nothing
    job_id = done.stdout.split()[1].rstrip(":")

    exported = subprocess.run(BATCH_CLI + ["batch", "export", job_id, "--format", "csv", "--database-url", db_url],
                              capture_output=True, text=True, env=ENV, timeout=60, check=True).stdout
    lines = exported.strip().splitlines()
    assert lines[0].startswith("idx,status,provider,input.review,input.product,output")
    assert len(lines) == 26 and all(",completed,offline," in line for line in lines[1:])

    runner_proc.terminate()
    assert runner_proc.wait(30) == 0  # SIGTERM: a clean stop


def test_submit_rejects_a_bad_file_before_storing_anything(db_url: str, tmp_path: pathlib.Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text('{"review": "ok"}\n[1, 2]\n', encoding="utf-8")
    done = subprocess.run(BATCH_CLI + ["batch", "submit", str(source), "--template", "{review}",
                                       "--database-url", db_url],
                          check=False, capture_output=True, text=True, env=ENV, timeout=60)
    assert done.returncode == 2 and "bad.jsonl:2" in done.stderr


@pytest.mark.parametrize("push", [True, False], ids=["push", "polling"])
async def test_follow_reaches_the_final_state_with_and_without_push(
        db_url: str, start_runner: StartRunner, push: bool) -> None:
    await start_runner()
    async with await JobSystem.connect(db_url, push=push) as jobs:
        batch = BatchJobs.of(jobs)
        job = await batch.create_job(template="Summarise: {text}", items=items(20), concurrency=5)
        out = io.StringIO()
        final = await follow(batch, job.id, out=out)
    assert final.status is BatchStatus.COMPLETED and final.completed_items == 20
    assert out.getvalue().rstrip().endswith("s") and "20/20 (100%)" in out.getvalue()


def test_submit_refuses_a_response_schema_that_is_not_a_json_schema(db_url: str, tmp_path: pathlib.Path) -> None:
    source = tmp_path / "items.jsonl"
    source.write_text(json.dumps({"text": "a"}) + "\n", encoding="utf-8")
    base = BATCH_CLI + ["batch", "submit", str(source), "--template", "Summarise {text}", "--database-url", db_url,
                        "--no-follow"]
    for schema, says in (("{not json", "not JSON"), ('{"type": "nope"}', "not a valid JSON Schema")):
        done = subprocess.run(base + ["--response-schema", schema], check=False, capture_output=True, text=True,
                              env=ENV, timeout=60)
        assert done.returncode == 2 and says in done.stderr, done.stderr
    (tmp_path / "schema.json").write_text('{"type": "object"}', encoding="utf-8")
    done = subprocess.run(base + ["--response-schema", f"@{tmp_path / 'schema.json'}"], check=False,
                          capture_output=True, text=True, env=ENV, timeout=60)
    assert done.returncode == 0 and "submitted " in done.stdout, done.stderr


def test_up_and_batch_runner_take_rpm_and_tpm_for_the_runner() -> None:
    from jobsys_cli.batch_runner_cmd import _runner_options
    from jobsys_cli.main import build_parser
    from jobsys_cli.up import up_runner_options

    up = build_parser().parse_args(["up", "--rpm", "30", "--tpm", "100000"])
    options = up_runner_options(up)
    assert (options.rpm, options.tpm, options.shared_rate_limit) == (30, 100000, True)
    assert (up_runner_options(build_parser().parse_args(["up"])).rpm, options.max_jobs) == (None, 4)
    runner, _ = _runner_options(build_parser().parse_args(["batch-runner", "--rpm", "60", "--per-runner-limit"]))
    assert (runner.rpm, runner.tpm, runner.shared_rate_limit) == (60, None, False)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["up", "--rpm", "0"])
