"""Cancel, retry, job-level failure and hand-back, with the real SDK against a fake Gemini."""

from __future__ import annotations

import pytest

from jobsys import IllegalTransition
from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchStatus
from tests.batch import fake_gemini as fg
from tests.batch.conftest import counters_match, items
from tests.batch.gemini_runner import GeminiRunner, make_gemini_runner
from tests.support.postgres import Db
from tests.support.runners import StartRunner, wait_final
from tests.support.waiting import wait_until

TEMPLATE = "Translate into Korean: {text}"


@pytest.fixture
def gemini_runner(start_runner: StartRunner, monkeypatch: pytest.MonkeyPatch) -> GeminiRunner:
    return make_gemini_runner("aiohttp", start_runner, monkeypatch)


@pytest.mark.parametrize("push", [True, False], ids=["push", "heartbeat-only"])
async def test_cancel_mid_run_stops_new_calls_at_once_and_cancels_in_flight_ones(
        batch: BatchJobs, db: Db, gemini_runner: GeminiRunner, push: bool) -> None:
    fake = fg.FakeGemini()

    async def behaviour(call: fg.Call) -> fg.Reply:
        return fg.ok(call) if call.n < 6 else await fake.hold()

    fake.behaviour = behaviour
    async with gemini_runner(fake, push=push) as runner:
        job = await batch.create_job(template=TEMPLATE, items=items(20), concurrency=4, provider="gemini")
        await wait_until(lambda: len(fake.calls) == 10 and db.value(
            "select completed_items from jobsys.background_jobs where id = %s", (job.id,)) == 6,
            what="6 done and 4 calls in flight")
        cancelled = await batch.cancel_job(job.id)
        assert cancelled.status is BatchStatus.CANCELLED
        assert (cancelled.completed_items, cancelled.cancelled_items, cancelled.running_items) == (6, 14, 0)
        await wait_until(lambda: not runner.runs, what="the runner dropped the job")  # in-flight calls cancelled
        fake.release.set()  # the held requests could answer now; nobody is waiting for them
        assert len(fake.calls) == 10, "a call started after the cancel"
        with pytest.raises(IllegalTransition):
            await batch.cancel_job(job.id)

    final = await batch.get_job(job.id)
    assert (final.status, final.completed_items, final.failed_items, final.cancelled_items) == (
        BatchStatus.CANCELLED, 6, 0, 14)
    assert counters_match(db) == []
    logs = [line.message for line in (await batch.job_logs(job.id)).logs]
    assert "cancelled: 14 unfinished item(s) cancelled (4 in flight)" in logs


async def test_retry_runs_only_the_failed_items(batch: BatchJobs, db: Db, gemini_runner: GeminiRunner) -> None:
    broken = {"on": True}
    fake = fg.FakeGemini()

    async def behaviour(call: fg.Call) -> fg.Reply:
        if broken["on"] and "bad" in call.prompt:
            return 400, {"error": {"code": 400, "message": "Request contains an invalid argument.",
                                   "status": "INVALID_ARGUMENT"}}, {}
        return fg.ok(call)

    fake.behaviour = behaviour
    batch_items = [{"text": f"{'bad' if i in (2, 5, 7) else 'good'} {i}"} for i in range(10)]
    async with gemini_runner(fake):
        job = await batch.create_job(template=TEMPLATE, items=batch_items, concurrency=3, provider="gemini")
        first = await wait_final(batch, job.id)
        assert (first.status, first.completed_items, first.failed_items) == (BatchStatus.COMPLETED, 7, 3)
        assert first.can_retry
        before = {i.idx: i.finished_at for i in (await batch.job_items(job.id, status="completed")).items}
        calls_before = len(fake.calls)

        broken["on"] = False
        retried = await batch.retry_job(job.id)
        assert (retried.status, retried.failed_items, retried.retry_count) == (BatchStatus.PENDING, 0, 1)
        final = await wait_final(batch, job.id)

    assert (final.status, final.completed_items, final.failed_items, final.error_message) == (
        BatchStatus.COMPLETED, 10, 0, None)
    assert sorted(fake.prompts()[calls_before:]) == sorted(TEMPLATE.format(text=f"bad {i}") for i in (2, 5, 7))
    after = {i.idx: i.finished_at for i in (await batch.job_items(job.id, status="completed")).items}
    assert all(after[idx] == finished for idx, finished in before.items())  # completed outputs untouched
    assert counters_match(db) == []
    with pytest.raises(IllegalTransition):
        await batch.retry_job(job.id)  # nothing failed any more


async def test_an_unknown_model_fails_the_job_at_once_and_retry_after_the_fix_completes_it(
        batch: BatchJobs, db: Db, gemini_runner: GeminiRunner) -> None:
    known = {"model": False}
    fake = fg.FakeGemini()

    async def behaviour(call: fg.Call) -> fg.Reply:
        return fg.ok(call) if known["model"] else fg.model_not_found()

    fake.behaviour = behaviour
    async with gemini_runner(fake):
        job = await batch.create_job(template=TEMPLATE, items=items(50), concurrency=4, provider="gemini")
        failed = await wait_final(batch, job.id)
        assert failed.status is BatchStatus.FAILED and "404 NOT_FOUND" in (failed.error_message or "")
        assert (failed.completed_items, failed.failed_items) == (0, 50)
        assert len(fake.calls) <= 4  # the calls already in flight, then nothing more

        known["model"] = True
        await batch.retry_job(job.id)
        final = await wait_final(batch, job.id)
    assert (final.status, final.completed_items, final.failed_items) == (BatchStatus.COMPLETED, 50, 0)
    assert counters_match(db) == []


async def test_a_stopping_runner_hands_the_job_back_and_another_finishes_it(
        batch: BatchJobs, db: Db, start_runner: StartRunner, gemini_runner: GeminiRunner) -> None:
    fake = fg.FakeGemini()

    async def behaviour(call: fg.Call) -> fg.Reply:
        return fg.ok(call) if call.n < 5 else await fake.hold()

    fake.behaviour = behaviour
    async with gemini_runner(fake) as first:
        job = await batch.create_job(template=TEMPLATE, items=items(12), concurrency=3, provider="auto")
        await wait_until(lambda: len(fake.calls) == 8, what="5 done, 3 in flight")
        await start_runner.stop(first)  # grace passes, in-flight calls are cancelled, the job is released
        released = await batch.get_job(job.id)
        assert (released.status, released.completed_items, released.running_items) == (BatchStatus.PENDING, 5, 0)

        fake.behaviour = fake._ok
        await start_runner(gemini=first.providers.gemini)
        final = await wait_final(batch, job.id)
    assert (final.status, final.completed_items) == (BatchStatus.COMPLETED, 12)
    assert sum(1 for c in fake.calls if c.n >= 8) == 7  # exactly the 7 unfinished items, once each
    assert counters_match(db) == []
    assert any(line.message.startswith("released by runner") for line in (await batch.job_logs(job.id)).logs)
