"""Issue 23, item 1: runners claim only what they can run. A runner advertises its providers
when it claims; a job no runner up can run stays pending and says why, until a runner that
can run it appears (then it runs as usual)."""

from __future__ import annotations

import pytest

from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchJob, BatchStatus
from tests.batch import fake_gemini as fg
from tests.batch.conftest import items
from tests.batch.gemini_runner import make_gemini_runner
from tests.support.postgres import Db
from tests.support.runners import StartRunner, wait_final
from tests.support.waiting import wait_until

TEMPLATE = "Summarise: {text}"


async def _wait_reason(batch: BatchJobs, job_id: object, code: str) -> BatchJob:
    holder: dict[str, BatchJob] = {}

    async def shows() -> bool:
        holder["job"] = await batch.get_job(job_id)  # type: ignore[arg-type]
        reason = holder["job"].wait_reason
        return reason is not None and reason.code == code

    await wait_until(shows, what=f"the job to wait with reason {code}")
    return holder["job"]


async def test_a_gemini_job_waits_with_its_reason_on_keyless_runners_until_a_runner_with_a_key_runs_it(
        batch: BatchJobs, db: Db, start_runner: StartRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    job = await batch.create_job(template=TEMPLATE, items=items(3), provider="gemini")
    assert (await batch.get_job(job.id)).wait_reason.code == "no_runner"  # type: ignore[union-attr]

    await start_runner()  # offline only: no GEMINI_API_KEY
    waiting = await _wait_reason(batch, job.id, "no_capable_runner")
    assert waiting.wait_reason is not None and waiting.wait_reason.provider == "gemini"
    assert "GEMINI_API_KEY" in waiting.wait_reason.message
    # The keyless runner keeps claiming: a later offline job runs, the gemini job is left alone.
    later = await batch.create_job(template=TEMPLATE, items=items(2), provider="offline")
    assert (await wait_final(batch, later.id)).status is BatchStatus.COMPLETED
    untouched = await batch.get_job(job.id)
    assert untouched.status is BatchStatus.PENDING and untouched.lease_owner is None
    assert untouched.failed_items == 0 and untouched.started_at is None
    listed = {j.id: j for j in (await batch.list_jobs()).jobs}
    assert listed[job.id].wait_reason is not None and listed[job.id].wait_reason.code == "no_capable_runner"
    assert listed[later.id].wait_reason is None

    fake = fg.FakeGemini()
    async with make_gemini_runner("aiohttp", start_runner, monkeypatch)(fake):
        final = await wait_final(batch, job.id)
    assert final.status is BatchStatus.COMPLETED and final.completed_items == 3 and final.wait_reason is None
    assert len(fake.calls) == 3
    assert {i.provider for i in (await batch.job_items(job.id)).items} == {"gemini"}
    advertised = sorted(tuple(p) for (p,) in db.rows("select providers from jobsys.background_runners"))
    assert advertised == [("gemini", "offline"), ("offline",)]


async def test_claims_skip_what_the_runner_cannot_run_and_legacy_claims_take_anything(batch: BatchJobs) -> None:
    gemini_job = await batch.create_job(template=TEMPLATE, items=items(1), provider="gemini")
    openai_job = await batch.create_job(template=TEMPLATE, items=items(1), provider="openai_compatible",
                                        model="llama-3.1-8b")
    auto_job = await batch.create_job(template=TEMPLATE, items=items(1))
    claimed = await batch.claim_job("keyless", ["offline"])
    assert claimed is not None and claimed.id == auto_job.id  # the older two need a key / a server
    assert await batch.claim_job("keyless", ["offline"]) is None
    claimed = await batch.claim_job("local-llm", ["offline", "openai_compatible"])
    assert claimed is not None and claimed.id == openai_job.id
    claimed = await batch.claim_job("old-runner")  # says nothing: any job, as before issue 23
    assert claimed is not None and claimed.id == gemini_job.id
