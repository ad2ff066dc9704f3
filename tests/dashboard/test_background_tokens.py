"""Issue 23 on the dashboard and the REST API: why a pending batch waits (no runner can run
its provider), tokens and estimated cost per batch, the create dialog's estimate and its
response JSON Schema."""

from __future__ import annotations

import json
from typing import Any

import httpx
from nicegui.testing import User

from jobsys.batch import pricing
from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchCreate, ItemResult
from nicegui_app.pages.background_jobs import PATH
from tests.dashboard.pages import login
from tests.dashboard.test_background_api import ROOT, TEMPLATE
from tests.dashboard.test_background_dialog import create_enabled, open_dialog
from tests.support.pages import element, text_of
from tests.support.waiting import wait_until

ITEMS = [{"text": f"note {i}"} for i in range(2)]


async def settle_with_tokens(batch: BatchJobs, job_id: Any) -> None:
    """Act as a runner reporting usage: item 0 took one attempt, item 1 a retry that cost tokens."""
    claimed = await batch.claim_job("test-runner", ["gemini", "offline"])
    assert claimed is not None and claimed.id == job_id
    got = await batch.claim_items(job_id, claimed.lease_token, 10)
    await batch.report(job_id, claimed.lease_token, [
        ItemResult(idx=got[0].idx, status="completed", output="a", provider="gemini", tokens_in=1000,
                   tokens_out=200, tokens_thinking=300, retry_tokens_in=0, retry_tokens_out=0,
                   retry_tokens_thinking=0),
        ItemResult(idx=got[1].idx, status="completed", output="b", provider="gemini", attempts=2, tokens_in=2000,
                   tokens_out=400, tokens_thinking=0, retry_tokens_in=1000, retry_tokens_out=200,
                   retry_tokens_thinking=0)])


async def test_a_pending_gemini_batch_says_why_it_waits_in_the_row_and_the_api(
        user: User, batch: BatchJobs, api: httpx.AsyncClient) -> None:
    job = await batch.create_job(template=TEMPLATE, items=ITEMS, provider="gemini")
    assert await batch.claim_job("keyless-runner", ["offline"]) is None  # registers; cannot run it
    body = (await api.get(f"{ROOT}/{job.id}")).json()
    assert body["status"] == "pending"
    assert body["wait_reason"]["code"] == "no_capable_runner" and body["wait_reason"]["provider"] == "gemini"
    assert "GEMINI_API_KEY" in body["wait_reason"]["message"]

    await login(user, PATH)
    await user.should_see(marker=f"batch-{job.id}", retries=50)
    with user.scope(marker=f"batch-{job.id}"):  # the row names what is missing; its panel says how to set it
        await user.should_see("GEMINI_API_KEY 없음")
        user.find(marker="batch-fix").click()
    await user.should_see(marker="batch-panel-fix-how", retries=50)
    assert "GEMINI_API_KEY=" in text_of(user, "batch-panel-fix-how")


async def test_tokens_and_cost_in_the_row_and_the_api(user: User, batch: BatchJobs, api: httpx.AsyncClient) -> None:
    job = await batch.create_job(template=TEMPLATE, items=ITEMS, provider="gemini")
    await settle_with_tokens(batch, job.id)
    body = (await api.get(f"{ROOT}/{job.id}")).json()
    assert body["usage"] == {"input": 3000, "output": 600, "thinking": 300, "retry_input": 1000,
                             "retry_output": 200, "retry_thinking": 0}
    price = pricing.price_for("gemini-2.5-flash")[1]  # type: ignore[index]
    expected = (3000 * price.input_usd + 900 * price.output_usd) / 1e6
    assert abs(body["cost"]["usd"] - expected) < 1e-12 and body["cost"]["prices_as_of"] == pricing.PRICES_AS_OF
    assert body["wait_reason"] is None
    items = (await api.get(f"{ROOT}/{job.id}/items")).json()["items"]
    assert [i["tokens_thinking"] for i in items] == [300, 0]

    await login(user, PATH, language="en")
    await user.should_see(marker=f"batch-{job.id}", retries=50)
    with user.scope(marker=f"batch-{job.id}"):  # tokens and cost are in the batch's panel
        user.find(marker="open-batch").click()
        await user.should_see("Tokens 3,900 (input 3,000 · output 600 · thinking 300)")
        assert "of which retries and failed attempts 1,200" in text_of(user, "batch-tokens")
        assert text_of(user, "batch-cost").startswith(f"Estimated cost ${expected:,.4f}")
        user.find(marker="batch-panel-results").click()
    await user.should_see(marker="results-table", retries=50)
    table = element(user, "results-table")
    await wait_until(lambda: len(table.rows) == 2, what="result rows")
    assert [r["tokens"] for r in table.rows] == ["1,000 / 200 / 300", "2,000 / 400 / 0"]


async def test_the_dialog_estimates_and_takes_a_response_schema(user: User, batch: BatchJobs) -> None:
    schema = {"type": "object", "properties": {"reply": {"type": "string"}}, "required": ["reply"]}
    await open_dialog(user)
    user.find(marker="batch-template").type("Reply to {text}")
    user.find(marker="batch-items").type("a late delivery\na refund")
    spec = BatchCreate(template="Reply to {text}", items=[{"text": "a late delivery"}, {"text": "a refund"}])
    estimate = pricing.estimate(spec)
    assert text_of(user, "batch-estimate") == (
        f"예상: 입력 약 {estimate.input_tokens:,} 토큰 · 출력 약 {estimate.output_tokens:,} 토큰 · "
        f"약 ${estimate.usd:,.4f}")
    user.find(marker="batch-response-schema").type("{not json")
    assert not create_enabled(user) and text_of(user, "batch-error").startswith("response_schema: JSON이 아닙니다")
    user.find(marker="batch-response-schema").clear().type(json.dumps(schema))
    assert create_enabled(user)
    user.find(marker="batch-create").click()
    await user.should_not_see(marker="batch-template", retries=50)
    [job] = (await batch.list_jobs()).jobs
    assert job.payload.response_schema == schema


async def test_the_dialogs_batch_api_option_asks_gemini_at_half_the_estimate(user: User, batch: BatchJobs) -> None:
    await open_dialog(user)
    user.find(marker="batch-template").type("Reply to {text}")
    user.find(marker="batch-items").type("a late delivery")
    standard = text_of(user, "batch-estimate")
    user.find(marker="batch-mode-batch-api").click()
    spec = BatchCreate(template="Reply to {text}", items=[{"text": "a late delivery"}], provider="gemini",
                       mode="batch_api")
    half = pricing.estimate(spec)  # the batch_api prices: half the standard ones
    assert text_of(user, "batch-estimate") == (
        f"예상: 입력 약 {half.input_tokens:,} 토큰 · 출력 약 {half.output_tokens:,} 토큰 · 약 ${half.usd:,.4f}") != standard
    user.find(marker="batch-create").click()
    await user.should_not_see(marker="batch-template", retries=50)
    [job] = (await batch.list_jobs()).jobs
    assert (job.payload.mode.value, job.payload.provider.value) == ("batch_api", "gemini")


async def test_a_batch_api_row_shows_the_provider_batchs_state(user: User, batch: BatchJobs) -> None:
    job = await batch.create_job(template=TEMPLATE, items=ITEMS, provider="gemini", mode="batch_api")
    plain = await batch.create_job(template=TEMPLATE, items=ITEMS)
    claimed = await batch.claim_job("test-runner", ["gemini", "offline"])
    assert claimed is not None and claimed.id == job.id
    await batch.set_provider_batch(job.id, claimed.lease_token, {"name": "batches/x", "state": "running", "items": [0, 1]})
    await login(user, PATH)
    await user.should_see(marker=f"batch-{job.id}", retries=50)
    with user.scope(marker=f"batch-{job.id}"):
        await user.should_see("일괄 처리: 처리 중")
    with user.scope(marker=f"batch-{plain.id}"):
        await user.should_not_see(marker="batch-provider-batch")
