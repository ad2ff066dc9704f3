"""The engine with the real google-genai client against a fake Gemini: retries, the shared
cooldown, exhausted retries, and exact counting (no item lost or counted twice)."""

from __future__ import annotations

import asyncio
import collections
import time

import pytest

from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchStatus
from tests.batch import fake_gemini as fg
from tests.batch.conftest import counters_match, items
from tests.batch.gemini_runner import GeminiRunner, make_gemini_runner
from tests.support.postgres import Db
from tests.support.runners import StartRunner, wait_final
from tests.support.waiting import wait_until

TEMPLATE = "Draft a summary of: {text}"


def prompt(i: int) -> str:
    return TEMPLATE.format(text=f"text {i}")


@pytest.fixture(params=["aiohttp", "httpx"])
def gemini_runner(request: pytest.FixtureRequest, start_runner: StartRunner,
                  monkeypatch: pytest.MonkeyPatch) -> GeminiRunner:
    return make_gemini_runner(request.param, start_runner, monkeypatch)


@pytest.fixture
def aiohttp_runner(start_runner: StartRunner, monkeypatch: pytest.MonkeyPatch) -> GeminiRunner:
    return make_gemini_runner("aiohttp", start_runner, monkeypatch)


async def test_transient_failures_retry_and_exhausted_retries_fail_the_item_with_its_reason(
        batch: BatchJobs, db: Db, gemini_runner: GeminiRunner) -> None:
    seen: collections.Counter[str] = collections.Counter()
    served_ok: collections.Counter[str] = collections.Counter()
    fake = fg.FakeGemini()
    first_time = {prompt(1): fg.rate_limited("0.05s"), prompt(2): fg.server_error(500), prompt(4): fg.MALFORMED,
                  prompt(7): fg.NO_CANDIDATES}

    async def behaviour(call: fg.Call) -> fg.Reply:
        seen[call.prompt] += 1
        if call.prompt == prompt(5):
            return fg.server_error(500)  # never recovers
        if call.prompt == prompt(6):
            return fg.BLOCKED  # permanent: no retry
        if call.prompt == prompt(3) and seen[call.prompt] == 1:
            return await fake.hold()  # outlives the call timeout
        if seen[call.prompt] == 1 and call.prompt in first_time:
            return first_time[call.prompt]
        served_ok[call.prompt] += 1
        return fg.ok(call)

    fake.behaviour = behaviour
    async with gemini_runner(fake, call_timeout_s=2.0):
        job = await batch.create_job(template=TEMPLATE, items=items(12), concurrency=4, max_retries=2,
                                     provider="gemini")
        final = await wait_final(batch, job.id)

    assert final.status is BatchStatus.COMPLETED
    assert (final.completed_items, final.failed_items, final.running_items) == (10, 2, 0)
    assert final.error_message == "2 of 12 items failed" and not final.offline
    by_idx = {i.idx: i for i in (await batch.job_items(job.id)).items}
    for idx in (0, 1, 2, 3, 4, 7, 8, 9, 10, 11):
        assert by_idx[idx].status is BatchStatus.COMPLETED and by_idx[idx].output == fg.answer(prompt(idx))
        # Tokens over every attempt: item 7's first answer (no candidates) still reported 3 prompt tokens.
        assert by_idx[idx].provider == "gemini" and by_idx[idx].tokens_in == (15 if idx == 7 else 12)
    assert by_idx[5].status is BatchStatus.FAILED and by_idx[5].attempts == 3 and "500 INTERNAL" in by_idx[5].error
    assert by_idx[6].status is BatchStatus.FAILED and by_idx[6].attempts == 1 and "blocked" in by_idx[6].error
    assert [by_idx[i].attempts for i in (1, 2, 3, 4, 7)] == [2, 2, 2, 2, 2]
    # No item lost or counted twice: one successful answer per completed item, no call after it.
    assert all(served_ok[prompt(i)] == 1 for i in range(12) if i not in (5, 6))
    assert sum(served_ok.values()) == final.completed_items
    assert counters_match(db) == []

    messages = [line.message for line in (await batch.job_logs(job.id, limit=1000)).logs]
    assert any(m.startswith("item 5 failed after 3 attempt(s): 500 INTERNAL") for m in messages), messages
    assert any(m.startswith("item 6 failed after 1 attempt(s): prompt blocked") for m in messages), messages
    assert any("item 3 call 1 failed (timed out after 2s)" in m for m in messages), messages
    assert any("item 4 call 1 failed (malformed response" in m for m in messages), messages
    assert any(m.startswith("rate limited (429 RESOURCE_EXHAUSTED") for m in messages), messages
    item_lines = [m for m in messages if m.startswith("item ")]
    assert item_lines and all(" failed" in m for m in item_lines), "only failures are logged per item"


async def test_a_429_holds_every_call_until_the_retry_delay_has_passed(
        batch: BatchJobs, db: Db, aiohttp_runner: GeminiRunner) -> None:
    gate = asyncio.Event()
    fake = fg.FakeGemini()

    async def behaviour(call: fg.Call) -> fg.Reply:
        if call.n == 0:
            return fg.rate_limited("1s")
        if call.n in (1, 2):
            await gate.wait()  # the other first calls stay in flight until the cooldown has begun
        return fg.ok(call)

    fake.behaviour = behaviour
    async with aiohttp_runner(fake) as runner:
        job = await batch.create_job(template=TEMPLATE, items=items(9), concurrency=3, provider="gemini")
        await wait_until(lambda: len(fake.calls) == 3 and runner.limiter.cooling_down(), what="429 seen, cooldown on")
        released_at = time.monotonic()
        until = runner.limiter.blocked_until_s
        assert released_at < until  # the check below is meaningful only inside the cooldown
        gate.set()  # two slots free up now: without a shared cooldown they would call at once
        final = await wait_final(batch, job.id)

    assert final.status is BatchStatus.COMPLETED and final.completed_items == 9
    later = [c for c in fake.calls if c.n >= 3]
    assert len(later) == 7  # 6 new items + the retry of the rate-limited one
    assert all(c.at_s >= until for c in later), [round(until - c.at_s, 3) for c in later if c.at_s < until]
    assert len(runner.limiter.cooldowns) == 1
    warnings = [line for line in (await batch.job_logs(job.id)).logs if line.message.startswith("rate limited")]
    assert len(warnings) == 1  # one cooldown, logged once
    assert counters_match(db) == []


async def test_a_429_storm_fails_no_item_and_counts_each_once(
        batch: BatchJobs, db: Db, gemini_runner: GeminiRunner) -> None:
    served_ok: collections.Counter[str] = collections.Counter()
    fake = fg.FakeGemini()

    async def behaviour(call: fg.Call) -> fg.Reply:
        if call.n % 10 in (0, 3, 6):  # 30 % of all calls
            return fg.rate_limited("0.02s")
        served_ok[call.prompt] += 1
        return fg.ok(call)

    fake.behaviour = behaviour
    async with gemini_runner(fake):
        job = await batch.create_job(template=TEMPLATE, items=items(40), concurrency=8, max_retries=0,
                                     provider="gemini")
        final = await wait_final(batch, job.id)
    assert (final.status, final.completed_items, final.failed_items) == (BatchStatus.COMPLETED, 40, 0)
    assert sorted(served_ok) == sorted(prompt(i) for i in range(40)) and set(served_ok.values()) == {1}
    assert counters_match(db) == []
