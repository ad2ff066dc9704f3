"""Issue 23, item 2: tokens and cost. Each item keeps its input / output / thinking tokens
(usage_metadata, summed over the attempts of its run); the job sums every attempt, with the
tokens of retries and failed attempts apart; cost comes from the dated price table; the
export carries both. Real google-genai client against the local stand-in."""

from __future__ import annotations

import collections
import csv
import io
from typing import Any

import pytest

from jobsys.batch import export, pricing
from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchCreate, BatchStatus, TokenUsage
from tests.batch import fake_gemini as fg
from tests.batch.conftest import items
from tests.batch.gemini_runner import make_gemini_runner
from tests.support.runners import StartRunner, wait_final

TEMPLATE = "Summarise: {text}"


def body(text: str | None, tokens_in: int, tokens_out: int, thinking: int, finish: str = "STOP") -> dict[str, Any]:
    content: dict[str, Any] = {"role": "model", "parts": [{"text": text}] if text else []}
    return {"candidates": [{"content": content, "finishReason": finish, "index": 0}],
            "usageMetadata": {"promptTokenCount": tokens_in, "candidatesTokenCount": tokens_out,
                              "thoughtsTokenCount": thinking,
                              "totalTokenCount": tokens_in + tokens_out + thinking}}


async def test_tokens_per_item_and_per_job_with_retries_and_failures_apart_and_in_the_export(
        batch: BatchJobs, start_runner: StartRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: collections.Counter[str] = collections.Counter()
    fixed = False  # item 2 is cut at max tokens until the operator's retry

    async def behaviour(call: fg.Call) -> fg.Reply:
        seen[call.prompt] += 1
        if call.prompt.endswith("text 1") and seen[call.prompt] == 1:
            return 200, body(None, 10, 0, 2), {}  # empty answer that still cost tokens: retried
        if call.prompt.endswith("text 2") and not fixed:
            return 200, body(None, 10, 50, 0, finish="MAX_TOKENS"), {}  # fails the item
        return 200, body(f"draft of {call.prompt}", 10, 5, 3), {}

    job = await batch.create_job(template=TEMPLATE, items=items(3), provider="gemini", max_retries=2)
    async with make_gemini_runner("aiohttp", start_runner, monkeypatch)(fg.FakeGemini(behaviour)):
        final = await wait_final(batch, job.id)
        assert (final.completed_items, final.failed_items) == (2, 1)
        assert final.usage == TokenUsage(input=40, output=60, thinking=8, retry_input=20, retry_output=50,
                                         retry_thinking=2)
        page = {i.idx: i for i in (await batch.job_items(job.id)).items}
        assert [(page[i].tokens_in, page[i].tokens_out, page[i].tokens_thinking) for i in range(3)] == [
            (10, 5, 3), (20, 5, 5), (10, 50, 0)]
        # Cost at the table's gemini-2.5-flash prices: thinking is billed as output.
        price = pricing.price_for("gemini-2.5-flash")
        assert price is not None and final.cost.priced_model == "gemini-2.5-flash"
        assert final.cost.usd == pytest.approx((40 * price[1].input_usd + 68 * price[1].output_usd) / 1e6)
        assert final.cost.retry_usd == pytest.approx((20 * price[1].input_usd + 52 * price[1].output_usd) / 1e6)
        assert final.cost.prices_as_of == pricing.PRICES_AS_OF

        fixed = True
        await batch.retry_job(job.id)
        again = await wait_final(batch, job.id)
    assert again.status is BatchStatus.COMPLETED
    # The retry adds its own attempt; the failed run's tokens stay counted as spent in vain.
    assert again.usage == TokenUsage(input=50, output=65, thinking=11, retry_input=20, retry_output=50,
                                     retry_thinking=2)

    rows = list(csv.DictReader(io.StringIO(await export.export_csv(batch, job.id))))
    assert [(r["tokens_in"], r["tokens_out"], r["tokens_thinking"]) for r in rows] == [
        ("10", "5", "3"), ("20", "5", "5"), ("10", "5", "3")]
    assert all(float(r["cost_usd"]) > 0 for r in rows)


def test_the_price_table_matches_the_longest_model_name_and_knows_no_guesses() -> None:
    assert pricing.price_for("gemini-2.5-flash-lite-preview-06-17")[0] == "gemini-2.5-flash-lite"  # type: ignore[index]
    assert pricing.price_for("gemini-2.5-flash")[0] == "gemini-2.5-flash"  # type: ignore[index]
    flash = pricing.price_for("gemini-2.5-flash", pricing.STANDARD)[1]  # type: ignore[index]
    batch_api = pricing.price_for("gemini-2.5-flash", pricing.BATCH_API)[1]  # type: ignore[index]
    assert batch_api.input_usd == flash.input_usd / 2 and batch_api.output_usd == flash.output_usd / 2
    assert pricing.price_for("llama-3.1-8b") is None
    cost = pricing.job_cost("llama-3.1-8b", TokenUsage(input=5))
    assert cost.usd is None and cost.priced_model is None


def test_the_create_estimate_follows_its_documented_heuristic() -> None:
    spec = BatchCreate(template="Summarise: {text}", items=[{"text": "x" * 30}, {"text": "y" * 10}],
                       system_instruction="abcd", max_output_tokens=100)
    got = pricing.estimate(spec)
    chars = len("Summarise: " + "x" * 30) + len("Summarise: " + "y" * 10) + 2 * 4
    assert got.input_tokens == chars // 4 + 2 and got.output_tokens == 200
    price = pricing.price_for("gemini-2.5-flash")[1]  # type: ignore[index]
    assert got.usd == pytest.approx((got.input_tokens * price.input_usd + 200 * price.output_usd) / 1e6)
    assert pricing.estimate(spec.model_copy(update={"max_output_tokens": None})).output_tokens == 2 * 400


def test_a_price_file_replaces_the_table(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"as_of": "2026-12-01", "models": {"llama-3.1": {"standard": [0.01, 0.02]}}}')
    monkeypatch.setenv(pricing.ENV_PRICES, str(path))
    pricing.price_table.cache_clear()
    try:
        cost = pricing.job_cost("llama-3.1-8b", TokenUsage(input=1_000_000, output=1_000_000))
        assert (cost.usd, cost.prices_as_of) == (pytest.approx(0.03), "2026-12-01")
        assert pricing.price_for("gemini-2.5-flash") is None
    finally:
        pricing.price_table.cache_clear()
