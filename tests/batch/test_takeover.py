"""Leases: a runner that loses its job counts nothing more, and a killed runner's job is
finished by another without calling completed items again."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

import pytest

from jobsys import InvalidInput, StaleRun
from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchStatus, ItemResult
from jobsys.batch.providers.base import Completion, Request
from jobsys.batch.providers.offline import OfflineProvider
from tests.batch.conftest import counters_match, items
from tests.support.postgres import Db
from tests.support.runners import StartRunner, wait_final
from tests.support.waiting import wait_until


async def test_a_late_report_after_a_takeover_is_refused_and_never_counted(batch: BatchJobs, db: Db) -> None:
    job = await batch.create_job(template="Summarise: {text}", items=items(6), provider="offline")
    first = await batch.claim_job("runner-a")
    assert first is not None and first.id == job.id
    mine = await batch.claim_items(job.id, first.lease_token, 4)
    assert [i.idx for i in mine] == [0, 1, 2, 3]
    await batch.report(job.id, first.lease_token, [ItemResult(idx=0, status="completed", output="a0")])

    db.run("update jobsys.background_jobs set lease_expires_at = now() - interval '1 second' where id = %s",
           (job.id,))  # runner A stalls past its lease
    second = await batch.claim_job("runner-b")
    assert second is not None and second.id == job.id and second.lease_token != first.lease_token
    assert (second.running_items, second.completed_items) == (0, 1)  # 1-3 back to pending, 0 kept

    with pytest.raises(StaleRun):
        await batch.report(job.id, first.lease_token, [ItemResult(idx=1, status="completed", output="late")])
    with pytest.raises(StaleRun):
        await batch.claim_items(job.id, first.lease_token, 2)
    assert await batch.renew_leases("runner-a", [first.lease_token]) == {first.lease_token}

    theirs = await batch.claim_items(job.id, second.lease_token, 10)
    assert [i.idx for i in theirs] == [1, 2, 3, 4, 5]
    with pytest.raises(InvalidInput):  # one report names an item once
        await batch.report(job.id, second.lease_token, [ItemResult(idx=1, status="completed", output="x")] * 2)
    reply = await batch.report(job.id, second.lease_token,
                               [ItemResult(idx=i.idx, status="completed", output=f"b{i.idx}") for i in theirs[:-1]])
    assert reply.applied == 4 and reply.stale == []
    reply = await batch.report(job.id, second.lease_token, [ItemResult(idx=5, status="completed", output="b5"),
                                                            ItemResult(idx=1, status="completed", output="twice")])
    assert reply.applied == 1 and reply.stale == [1] and reply.job.status is BatchStatus.COMPLETED
    outputs = {i.idx: i.output for i in (await batch.job_items(job.id)).items}
    assert outputs == {0: "a0", 1: "b1", 2: "b2", 3: "b3", 4: "b4", 5: "b5"}
    assert counters_match(db) == []
    messages = [line.message for line in (await batch.job_logs(job.id)).logs]
    assert any(m.startswith("taken over by runner runner-b") and "3 unfinished item(s) re-queued" in m
               for m in messages), messages


class RecordingOffline(OfflineProvider):
    def __init__(self) -> None:
        super().__init__((0.0, 0.01))
        self.prompts: list[str] = []

    async def generate(self, request: Request) -> Completion:
        self.prompts.append(request.prompt)
        return await super().generate(request)


def spawn_runner(db_url: str, log_path: pathlib.Path) -> subprocess.Popen[str]:
    """`batch-runner` in its own process, offline, with 0.2-0.4 s per call."""
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "jobsys_cli", "batch-runner", "--database-url", db_url,
             "--provider", "offline", "--offline-latency", "0.2,0.4", "--heartbeat-interval", "0.2",
             "--poll-interval", "0.2", "--name", "doomed"],
            stdout=log, stderr=subprocess.STDOUT, text=True, env={**os.environ, "GEMINI_API_KEY": ""})


async def test_a_runner_killed_mid_job_is_taken_over_without_redoing_completed_items(
        batch: BatchJobs, db: Db, db_url: str, tmp_path: pathlib.Path, start_runner: StartRunner,
        procs: list[subprocess.Popen[str]]) -> None:
    db.setting("batch_lease_sec", 2)
    job = await batch.create_job(template="Summarise: {text}", items=items(40), concurrency=4, provider="offline")
    procs.append(spawn_runner(db_url, tmp_path / "runner.log"))
    await wait_until(lambda: (db.value("select completed_items from jobsys.background_jobs where id = %s",
                                       (job.id,)) or 0) >= 8, timeout_s=60, what="8 items done by the first runner")
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait()
    done_before = dict(db.rows("select idx, finished_at from jobsys.background_job_items "
                               "where job_id = %s and status = 'completed'", (job.id,)))
    assert db.value("select running_items from jobsys.background_jobs where id = %s", (job.id,)) > 0

    provider = RecordingOffline()
    await start_runner(provider)
    final = await wait_final(batch, job.id, timeout_s=60)

    assert (final.status, final.completed_items, final.failed_items) == (BatchStatus.COMPLETED, 40, 0)
    done_prompts = {f"Summarise: text {idx}" for idx in done_before}
    assert not done_prompts & set(provider.prompts), "a completed item was called again"
    assert len(provider.prompts) == 40 - len(done_before) and len(set(provider.prompts)) == len(provider.prompts)
    after = dict(db.rows("select idx, finished_at from jobsys.background_job_items where job_id = %s", (job.id,)))
    assert all(after[idx] == finished for idx, finished in done_before.items())
    assert counters_match(db) == []
    assert any(line.message.startswith("taken over by runner") for line in (await batch.job_logs(job.id)).logs)
