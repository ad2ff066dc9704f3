"""Issue 23: Gemini Batch API mode against a local stand-in of the Batch API endpoints, the
real google-genai client pointed at it: one provider batch per submission, its states logged
and kept on the job, results mapped back by item index, an expired batch's partial results,
cancel, a runner taking over mid-poll without submitting again, and retry of the failed items
only."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from jobsys.batch import pricing
from jobsys.batch.batch_api import BatchApiRun
from jobsys.batch.engine import EngineSettings
from jobsys.batch.facade import BatchJobs
from jobsys.batch.limiter import RateLimiter
from jobsys.batch.models import BatchCreate, BatchStatus
from jobsys.batch.providers.gemini import GeminiProvider
from jobsys.batch.providers.gemini_batch import GeminiBatchApi
from tests.batch import fake_gemini as fg
from tests.batch import fake_gemini_batch as fb
from tests.batch.conftest import counters_match, items
from tests.support.postgres import Db
from tests.support.runners import FAST_RETRY, StartRunner, wait_final
from tests.support.waiting import wait_until

TEMPLATE = "Summarise: {text}"
FAST_POLLS = EngineSettings(call_timeout_s=10.0, shutdown_grace_s=0.3, retry=FAST_RETRY,
                            batch_api_poll_min_s=0.05, batch_api_poll_max_s=0.1)
DONE = ["BATCH_STATE_PENDING", "BATCH_STATE_RUNNING", "BATCH_STATE_SUCCEEDED"]


async def start(start_runner: StartRunner, monkeypatch: pytest.MonkeyPatch, url: str, **options: Any) -> Any:
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", url)
    return await start_runner(gemini=GeminiProvider("test-key"), engine=FAST_POLLS, **options)


async def create(batch: BatchJobs, n: int, **fields: Any) -> Any:
    return await batch.create_job(template=TEMPLATE, items=items(n), provider="gemini", mode="batch_api", **fields)


async def test_one_provider_batch_with_states_logged_results_by_index_and_half_price(
        batch: BatchJobs, db: Db, start_runner: StartRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    def respond(idx: int, prompt: str) -> dict[str, Any] | None:
        if idx == 1:
            return {"error": {"code": 400, "message": "Request contains an invalid argument."}}
        return {"response": fg.ok_body(fg.answer(prompt), tokens_in=100, tokens_out=10)}

    fake = fb.FakeGeminiBatch(DONE, respond)
    async with fb.serve(fake) as url:
        await start(start_runner, monkeypatch, url)
        job = await create(batch, 3, system_instruction="Be brief.")
        final = await wait_final(batch, job.id)
    assert (final.status, final.completed_items, final.failed_items) == (BatchStatus.COMPLETED, 2, 1)
    [submitted] = fake.batches
    assert [r["metadata"]["idx"] for r in submitted.requests] == ["0", "1", "2"]
    assert submitted.model == "models/gemini-2.5-flash" and submitted.display_name == f"jobsys-{job.id}-0"
    page = {i.idx: i for i in (await batch.job_items(job.id)).items}
    assert page[0].output == fg.answer(TEMPLATE.format(text="text 0")) and page[0].tokens_in == 100
    assert "invalid argument" in (page[1].error or "")
    assert final.result["provider_batch"] == {"name": submitted.name, "state": "succeeded", "items": [0, 1, 2]}
    logs = [line.message for line in reversed((await batch.job_logs(job.id)).logs)]
    states = [m.split(": ")[1] for m in logs if m.startswith(f"provider batch {submitted.name}")]
    assert states == ["queued", "running", "succeeded"]
    flash = pricing.price_for("gemini-2.5-flash", pricing.BATCH_API)[1]  # type: ignore[index]
    assert final.cost.mode == "batch_api"
    assert final.cost.usd == pytest.approx((200 * flash.input_usd + 20 * flash.output_usd) / 1e6)
    assert counters_match(db) == []


async def test_an_expired_batch_keeps_its_partial_results_and_retry_submits_only_the_failed(
        batch: BatchJobs, start_runner: StartRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    finished = {0, 2}

    def respond(idx: int, prompt: str) -> dict[str, Any] | None:
        return {"response": fg.ok_body(fg.answer(prompt))} if idx in finished else None

    fake = fb.FakeGeminiBatch(["BATCH_STATE_RUNNING", "BATCH_STATE_EXPIRED"], respond)
    async with fb.serve(fake) as url:
        await start(start_runner, monkeypatch, url)
        job = await create(batch, 4)
        final = await wait_final(batch, job.id)
        assert (final.completed_items, final.failed_items) == (2, 2)
        failed = [i for i in (await batch.job_items(job.id)).items if i.status is BatchStatus.FAILED]
        assert [i.idx for i in failed] == [1, 3] and all("expired" in (i.error or "") for i in failed)

        fake.states, finished = DONE, {0, 1, 2, 3}
        await batch.retry_job(job.id)
        again = await wait_final(batch, job.id)
    assert (again.status, again.completed_items, again.failed_items) == (BatchStatus.COMPLETED, 4, 0)
    assert [[r["metadata"]["idx"] for r in b.requests] for b in fake.batches] == [["0", "1", "2", "3"], ["1", "3"]]


async def test_cancel_cancels_the_provider_batch(batch: BatchJobs, start_runner: StartRunner,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fb.FakeGeminiBatch(["BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"])
    async with fb.serve(fake) as url:
        await start(start_runner, monkeypatch, url)
        job = await create(batch, 3)
        await wait_until(lambda: bool(fake.batches) and fake.batches[0].reads >= 3, what="the runner polling")
        await batch.cancel_job(job.id)
        await wait_until(lambda: fake.cancels == [fake.batches[0].name], what="the provider batch cancelled")
    final = await batch.get_job(job.id)
    assert final.status is BatchStatus.CANCELLED and final.cancelled_items == 3


async def test_a_runner_taking_over_mid_poll_polls_the_same_batch_and_never_submits_again(
        batch: BatchJobs, db: Db, start_runner: StartRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fb.FakeGeminiBatch(DONE)
    fake.gate.clear()  # the batch stays running until the gate opens
    async with fb.serve(fake) as url:
        first = await start(start_runner, monkeypatch, url, name="first")
        job = await create(batch, 3)
        await wait_until(lambda: bool(fake.batches) and fake.batches[0].reads >= 3, what="the first runner polling")
        await start_runner.stop(first)  # hands the job back mid-poll (a crash leaves it to the lease: same path)
        await start(start_runner, monkeypatch, url, name="second")
        await wait_until(lambda: fake.batches[0].reads >= 5, what="the second runner polling")
        fake.gate.set()
        final = await wait_final(batch, job.id)
    assert final.status is BatchStatus.COMPLETED and final.completed_items == 3
    assert len(fake.batches) == 1  # one submission, polled by both runners
    assert final.lease_owner is not None and final.lease_owner.startswith("second")
    logs = [line.message for line in (await batch.job_logs(job.id)).logs]
    assert any(m.startswith(f"resuming provider batch {fake.batches[0].name}") for m in logs)
    assert counters_match(db) == []


def test_batch_api_mode_needs_gemini() -> None:
    with pytest.raises(ValueError, match="batch_api needs provider gemini"):
        BatchCreate(template=TEMPLATE, items=items(1), mode="batch_api")
    assert json.dumps(BatchCreate(template=TEMPLATE, items=items(1), provider="gemini",
                                  mode="batch_api").payload()["mode"]) == '"batch_api"'


async def test_a_runner_crashing_mid_poll_is_taken_over_and_its_batch_polled_not_resubmitted(
        batch: BatchJobs, db: Db, start_runner: StartRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fb.FakeGeminiBatch(DONE)
    fake.gate.clear()
    async with fb.serve(fake) as url:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", url)
        job = await create(batch, 3)
        claimed = await batch.claim_job("crashing", ["gemini", "offline"])
        assert claimed is not None and claimed.id == job.id
        provider = GeminiProvider("test-key")
        crashing = BatchApiRun(batch, claimed, provider, RateLimiter(), FAST_POLLS).attach(GeminiBatchApi(provider))
        task = asyncio.create_task(crashing.run())
        await wait_until(lambda: bool(fake.batches) and fake.batches[0].reads >= 3, what="the runner polling")
        task.cancel()  # killed mid-poll: nothing handed back, the lease just runs out
        await asyncio.gather(task, return_exceptions=True)
        await provider.close()
        db.run("update jobsys.background_jobs set lease_expires_at = now() - interval '1 second' where id = %s",
               (job.id,))
        await start(start_runner, monkeypatch, url, name="rescuer")
        await wait_until(lambda: fake.batches[0].reads >= 5, what="the rescuer polling the same batch")
        fake.gate.set()
        final = await wait_final(batch, job.id)
    assert (final.status, final.completed_items, len(fake.batches)) == (BatchStatus.COMPLETED, 3, 1)
    logs = [line.message for line in (await batch.job_logs(job.id)).logs]
    assert any(m.startswith("taken over by runner rescuer") for m in logs)
    assert any(m.startswith(f"resuming provider batch {fake.batches[0].name}") for m in logs)
    assert counters_match(db) == []
