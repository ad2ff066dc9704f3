"""Issue 23: Gemini Batch API mode against a local stand-in of the Batch API endpoints, the
real google-genai client pointed at it: one provider batch per submission, its states logged
and kept on the job, results mapped back by item index, an expired batch's partial results,
cancel, a runner taking over mid-poll without submitting again, retry of the failed items
only, a batch above the inline limit sent as a JSONL file through the Files API (results read
from the result file), and invalid structured outputs asked again once in a follow-up batch
(also across a takeover)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from typing import Any

import pytest

from jobsys.batch import pricing
from jobsys.batch.batch_api import RESULT_READ_TRIES, BatchApiRun
from jobsys.batch.engine import EngineSettings
from jobsys.batch.facade import BatchJobs
from jobsys.batch.limiter import RateLimiter
from jobsys.batch.models import BatchCreate, BatchStatus
from jobsys.batch.providers.gemini import GeminiProvider
from jobsys.batch.providers import gemini_batch
from jobsys.batch.providers.base import Request
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


async def test_a_batch_above_the_inline_limit_goes_through_a_jsonl_file_and_the_result_file(
        batch: BatchJobs, db: Db, start_runner: StartRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    def respond(idx: int, prompt: str) -> dict[str, Any] | None:
        if idx == 1:
            return {"error": {"code": 400, "message": "Request contains an invalid argument."}}
        body = {**fg.ok_body(fg.answer(prompt), tokens_in=50, tokens_out=5), "fieldFromTheFuture": 1}
        return None if idx == 3 else {"response": body}  # a field the SDK does not know yet is ignored

    fake = fb.FakeGeminiBatch(DONE, respond)
    small = dataclasses.replace(FAST_POLLS, batch_api_inline_max_bytes=200)  # 4 items are more than that
    async with fb.serve(fake) as url:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", url)
        await start_runner(gemini=GeminiProvider("test-key"), engine=small)
        job = await create(batch, 4, system_instruction="Be brief.", temperature=0.2)
        final = await wait_final(batch, job.id)
        # the result file goes after its results are stored, so after the job is final
        await wait_until(lambda: len(fake.deleted) == 2, what="both files deleted")
    [submitted] = fake.batches
    assert submitted.input_file is not None and submitted.display_name == f"jobsys-{job.id}-0"
    assert submitted.keys == ["0", "1", "2", "3"]
    assert submitted.prompts == [TEMPLATE.format(text=f"text {i}") for i in range(4)]
    first = submitted.requests[0]["request"]
    assert first["systemInstruction"]["parts"][0]["text"] == "Be brief."
    assert first["generationConfig"] == {"temperature": 0.2}
    assert fake.downloads == [f"files/result-{submitted.name.split('/')[-1]}"]
    # neither the input file nor the result file outlives its batch
    assert fake.deleted == [submitted.input_file, f"files/result-{submitted.name.split('/')[-1]}"]
    assert (final.status, final.completed_items, final.failed_items) == (BatchStatus.COMPLETED, 2, 2)
    page = {i.idx: i for i in (await batch.job_items(job.id)).items}
    assert page[0].output == fg.answer(TEMPLATE.format(text="text 0")) and page[0].tokens_in == 50
    assert "invalid argument" in (page[1].error or "")
    assert "without a result" in (page[3].error or "")
    assert final.result["provider_batch"] == {"name": submitted.name, "state": "succeeded", "items": [0, 1, 2, 3],
                                              "input_file": submitted.input_file}
    assert counters_match(db) == []


SCHEMA = {"type": "object", "properties": {"sentiment": {"enum": ["good", "bad"]}}, "required": ["sentiment"]}


async def test_an_invalid_structured_output_is_asked_again_once_in_a_follow_up_batch_then_fails(
        batch: BatchJobs, db: Db, start_runner: StartRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    def respond(idx: int, prompt: str) -> dict[str, Any] | None:
        asked_again = "did not match the required JSON Schema" in prompt
        valid = idx == 2 or (idx == 0 and asked_again)
        text = json.dumps({"sentiment": "good" if valid else "meh"})
        return {"response": fg.ok_body(text, tokens_in=30 if asked_again else 20, tokens_out=4)}

    fake = fb.FakeGeminiBatch(DONE, respond)
    async with fb.serve(fake) as url:
        await start(start_runner, monkeypatch, url)
        job = await create(batch, 3, response_schema=SCHEMA)
        final = await wait_final(batch, job.id)
    first, again = fake.batches
    assert first.keys == ["0", "1", "2"] and again.keys == ["0", "1"]  # only the invalid ones, once
    assert again.display_name == f"jobsys-{job.id}-0-2"
    assert all(p.startswith(TEMPLATE.format(text=f"text {i}")) and "'meh' is not one of" in p
               for i, p in enumerate(again.prompts))
    assert (final.status, final.completed_items, final.failed_items) == (BatchStatus.COMPLETED, 2, 1)
    page = {i.idx: i for i in (await batch.job_items(job.id)).items}
    assert [page[i].attempts for i in range(3)] == [2, 2, 1]
    assert json.loads(page[0].output or "") == {"sentiment": "good"}
    assert page[1].status is BatchStatus.FAILED
    assert (page[1].error or "").startswith("output does not match response_schema: at sentiment: 'meh'")
    assert [page[i].tokens_in for i in range(3)] == [50, 50, 20]
    # the answers not kept (item 0's first, both of item 1's) count as retry tokens
    assert (final.usage.input, final.usage.retry_input, final.usage.output, final.usage.retry_output) == (
        120, 70, 20, 12)
    assert final.result["provider_batch"] == {"name": again.name, "state": "succeeded", "items": [0, 1],
                                              "round": 2, "spent": {"0": [20, 4, 0], "1": [20, 4, 0]}}
    logs = [line.message for line in (await batch.job_logs(job.id)).logs]
    assert f"2 item(s) with output not matching response_schema asked again in provider batch {again.name}" in logs
    assert counters_match(db) == []


class HoldFollowUp(fb.FakeGeminiBatch):
    """The follow-up batch (the re-asks) stays running until `release` is set."""

    def __init__(self, respond: Any) -> None:
        super().__init__(DONE, respond)
        self.release = asyncio.Event()

    def state_of(self, batch: fb.Batch) -> str:
        if batch is not self.batches[0] and not self.release.is_set() and not batch.cancelled:
            return "BATCH_STATE_RUNNING"
        return super().state_of(batch)


async def test_a_runner_taking_over_during_the_re_ask_polls_the_follow_up_batch_with_the_first_tokens_kept(
        batch: BatchJobs, db: Db, start_runner: StartRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    def respond(idx: int, prompt: str) -> dict[str, Any] | None:
        asked_again = "did not match the required JSON Schema" in prompt
        text = json.dumps({"sentiment": "good" if idx == 1 or asked_again else "meh"})
        return {"response": fg.ok_body(text, tokens_in=30 if asked_again else 20, tokens_out=4)}

    fake = HoldFollowUp(respond)
    async with fb.serve(fake) as url:
        first = await start(start_runner, monkeypatch, url, name="first")
        job = await create(batch, 2, response_schema=SCHEMA)
        await wait_until(lambda: len(fake.batches) == 2 and fake.batches[1].reads >= 3, what="the re-ask polled")
        await start_runner.stop(first)  # hands the job back while the follow-up batch runs
        await start(start_runner, monkeypatch, url, name="second")
        await wait_until(lambda: fake.batches[1].reads >= 5, what="the second runner polling the follow-up")
        fake.release.set()
        final = await wait_final(batch, job.id)
    assert len(fake.batches) == 2 and fake.batches[1].keys == ["0"]  # nothing submitted again
    page = {i.idx: i for i in (await batch.job_items(job.id)).items}
    assert (final.status, final.completed_items, final.failed_items) == (BatchStatus.COMPLETED, 2, 0)
    assert [page[i].attempts for i in range(2)] == [2, 1]
    assert [page[i].tokens_in for i in range(2)] == [50, 20]  # the first answer's tokens survived the takeover
    assert (final.usage.input, final.usage.retry_input) == (70, 20)
    logs = [line.message for line in (await batch.job_logs(job.id)).logs]
    assert any(m.startswith(f"resuming provider batch {fake.batches[1].name}") for m in logs)
    assert counters_match(db) == []


SMALL_INLINE = dataclasses.replace(FAST_POLLS, batch_api_inline_max_bytes=200)  # a few items are more than that


def result_file(submitted: fb.Batch) -> str:
    return f"files/result-{submitted.name.split('/')[-1]}"


async def test_the_re_ask_round_goes_through_the_files_api_too_and_every_file_is_deleted_once_read(
        batch: BatchJobs, db: Db, start_runner: StartRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    def respond(idx: int, prompt: str) -> dict[str, Any] | None:
        asked_again = "did not match the required JSON Schema" in prompt
        text = json.dumps({"sentiment": "good" if idx == 2 or asked_again else "meh"})
        return {"response": fg.ok_body(text, tokens_in=30 if asked_again else 20, tokens_out=4)}

    fake = fb.FakeGeminiBatch(DONE, respond)
    async with fb.serve(fake) as url:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", url)
        await start_runner(gemini=GeminiProvider("test-key"), engine=SMALL_INLINE)
        job = await create(batch, 3, response_schema=SCHEMA)
        final = await wait_final(batch, job.id)
        await wait_until(lambda: len(fake.deleted) == 4, what="all four files deleted")
    first, again = fake.batches
    assert first.input_file is not None and again.input_file is not None  # both rounds from an uploaded file
    assert first.keys == ["0", "1", "2"] and again.keys == ["0", "1"]
    assert all("'meh' is not one of" in p for p in again.prompts)
    assert fake.downloads == [result_file(first), result_file(again)]
    # each input file once its batch has ended, each result file once its results are stored
    assert fake.deleted == [first.input_file, result_file(first), again.input_file, result_file(again)]
    assert (final.status, final.completed_items, final.failed_items) == (BatchStatus.COMPLETED, 3, 0)
    page = {i.idx: i for i in (await batch.job_items(job.id)).items}
    assert [page[i].attempts for i in range(3)] == [2, 2, 1]
    assert [page[i].tokens_in for i in range(3)] == [50, 50, 20]
    assert counters_match(db) == []


async def test_a_runner_crashing_before_the_re_ask_batch_is_recorded_leaves_the_result_file_for_the_takeover(
        batch: BatchJobs, db: Db, start_runner: StartRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    def respond(idx: int, prompt: str) -> dict[str, Any] | None:
        asked_again = "did not match the required JSON Schema" in prompt
        text = json.dumps({"sentiment": "good" if idx == 2 or asked_again else "meh"})
        return {"response": fg.ok_body(text, tokens_in=30 if asked_again else 20, tokens_out=4)}

    fake = fb.FakeGeminiBatch(DONE, respond)
    fake.gate.clear()  # round 1 stays running until the follow-up's upload is held
    async with fb.serve(fake) as url:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", url)
        job = await create(batch, 3, response_schema=SCHEMA)
        claimed = await batch.claim_job("crashing", ["gemini", "offline"])
        assert claimed is not None and claimed.id == job.id
        provider = GeminiProvider("test-key")
        api = GeminiBatchApi(provider, inline_max_bytes=SMALL_INLINE.batch_api_inline_max_bytes)
        crashing = BatchApiRun(batch, claimed, provider, RateLimiter(), SMALL_INLINE).attach(api)
        task = asyncio.create_task(crashing.run())
        await wait_until(lambda: bool(fake.batches) and fake.batches[0].reads >= 3, what="the runner polling")
        fake.upload_gate.clear()  # the follow-up batch's input file never gets uploaded
        fake.gate.set()
        await wait_until(lambda: fake.uploads_held == 1, what="the follow-up batch's upload held")
        # round 1's results are stored; the follow-up batch is not recorded: killed in that window
        assert [i.status for i in (await batch.job_items(job.id)).items] == [
            BatchStatus.RUNNING, BatchStatus.RUNNING, BatchStatus.COMPLETED]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await provider.close()
        fake.upload_gate.set()
        db.run("update jobsys.background_jobs set lease_expires_at = now() - interval '1 second' where id = %s",
               (job.id,))
        await start_runner(gemini=GeminiProvider("test-key"), engine=SMALL_INLINE, name="rescuer")
        final = await wait_final(batch, job.id)
        await wait_until(lambda: not fake.files, what="every file deleted")
    page = {i.idx: i for i in (await batch.job_items(job.id)).items}
    assert not any("could not be read" in (i.error or "") for i in page.values()), [i.error for i in page.values()]
    first, again = fake.batches  # the takeover asked the invalid ones again, once
    assert again.keys == ["0", "1"] and all("'meh' is not one of" in p for p in again.prompts)
    assert fake.downloads == [result_file(first), result_file(first), result_file(again)]  # read again by the rescuer
    assert fake.deleted == [first.input_file, result_file(first), again.input_file, result_file(again)]
    assert (final.status, final.completed_items, final.failed_items) == (BatchStatus.COMPLETED, 3, 0)
    assert [page[i].attempts for i in range(3)] == [2, 2, 1]
    logs = [line.message for line in (await batch.job_logs(job.id)).logs]
    assert any(m.startswith(f"resuming provider batch {first.name}") for m in logs)
    assert counters_match(db) == []


async def test_a_failing_file_delete_is_ignored(
        batch: BatchJobs, db: Db, start_runner: StartRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fb.FakeGeminiBatch(DONE)
    fake.delete_error = 500
    async with fb.serve(fake) as url:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", url)
        await start_runner(gemini=GeminiProvider("test-key"), engine=SMALL_INLINE)
        job = await create(batch, 3)
        final = await wait_final(batch, job.id)
        await wait_until(lambda: len(fake.delete_attempts) == 2, what="both deletes tried")
    [submitted] = fake.batches
    assert fake.delete_attempts == [submitted.input_file, result_file(submitted)] and fake.deleted == []
    assert (final.status, final.completed_items, final.failed_items) == (BatchStatus.COMPLETED, 3, 0)
    assert counters_match(db) == []


@pytest.mark.parametrize(("errors", "downloads", "reason"), [
    ([404], 1, "not found (expired or deleted): 404"),  # e.g. a takeover after the file expired
    ([400], 1, "400"),  # another permanent refusal: not read again
    ([500] * RESULT_READ_TRIES, RESULT_READ_TRIES, f"500 SCRIPTED: scripted 500 for files/result-fake-0 "
                                                   f"({RESULT_READ_TRIES} tries)"),
])
async def test_a_result_file_that_cannot_be_read_fails_its_items_with_the_reason(
        batch: BatchJobs, db: Db, start_runner: StartRunner, monkeypatch: pytest.MonkeyPatch,
        errors: list[int], downloads: int, reason: str) -> None:
    fake = fb.FakeGeminiBatch(DONE)
    fake.download_errors = list(errors)
    async with fb.serve(fake) as url:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", url)
        await start_runner(gemini=GeminiProvider("test-key"), engine=SMALL_INLINE)
        job = await create(batch, 3)
        final = await wait_final(batch, job.id)
    [submitted] = fake.batches
    assert fake.downloads == [result_file(submitted)] * downloads
    assert (final.status, final.completed_items, final.failed_items) == (BatchStatus.FAILED, 0, 3)  # every item
    page = (await batch.job_items(job.id)).items
    assert all((i.error or "").startswith("provider batch succeeded, its result file could not be read: ")
               and reason in (i.error or "") for i in page), [i.error for i in page]
    assert fake.delete_attempts == [submitted.input_file]  # the unread result file is left to expire
    assert counters_match(db) == []


async def test_a_transient_result_download_failure_is_read_again(
        batch: BatchJobs, db: Db, start_runner: StartRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fb.FakeGeminiBatch(DONE)
    fake.download_errors = [503, 500]
    async with fb.serve(fake) as url:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", url)
        await start_runner(gemini=GeminiProvider("test-key"), engine=SMALL_INLINE)
        job = await create(batch, 3)
        final = await wait_final(batch, job.id)
    [submitted] = fake.batches
    assert fake.downloads == [result_file(submitted)] * 3
    assert (final.status, final.completed_items, final.failed_items) == (BatchStatus.COMPLETED, 3, 0)
    assert counters_match(db) == []


async def test_the_files_api_path_writes_and_parses_its_files_off_the_event_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    threads: dict[str, set[int]] = {"jsonl": set(), "parse": set()}

    def recorded(name: str, function: Any) -> Any:
        def wrapper(*args: Any) -> Any:
            threads[name].add(threading.get_ident())
            return function(*args)
        return wrapper

    monkeypatch.setattr(gemini_batch, "_jsonl", recorded("jsonl", gemini_batch._jsonl))
    monkeypatch.setattr(gemini_batch, "_file_result", recorded("parse", gemini_batch._file_result))
    fake = fb.FakeGeminiBatch(["BATCH_STATE_SUCCEEDED"])
    async with fb.serve(fake) as url:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", url)
        provider = GeminiProvider("test-key")
        try:
            api = GeminiBatchApi(provider, inline_max_bytes=0)
            requests = {i: Request(prompt=f"text {i}", model="gemini-2.5-flash") for i in range(3)}
            submitted = await api.submit("gemini-2.5-flash", requests, "off-the-loop")
            ended = await api.get(submitted.name)
        finally:
            await provider.close()
    assert submitted.input_file is not None and sorted(ended.results) == [0, 1, 2]
    loop_thread = threading.get_ident()
    assert threads["jsonl"] and loop_thread not in threads["jsonl"]
    assert threads["parse"] and loop_thread not in threads["parse"]
