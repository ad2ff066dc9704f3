"""Issue 23, item 4: the openai_compatible provider, the official openai SDK's AsyncOpenAI
against a local stand-in server, run by the same engine: retries and the shared cooldown,
structured output, token accounting (reasoning tokens as thinking), and a bad key failing
the job. A runner advertises openai_compatible only when it has a server configured."""

from __future__ import annotations

import asyncio
import collections
import json
import random
from typing import Any

import pytest

from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchStatus, TokenUsage
from jobsys.batch.providers.offline import OfflineProvider
from jobsys.batch.providers.openai_compat import OpenAICompatibleProvider
from jobsys.batch.providers.registry import ProviderSet
from jobsys.batch.runner import BatchRunner
from jobsys.system import JobSystem
from tests.batch import fake_openai as fo
from tests.batch.conftest import counters_match, items
from tests.support.postgres import Db
from tests.support.runners import StartRunner, runner_options, until_ready, wait_final

TEMPLATE = "Summarise: {text}"
MODEL = "llama-3.1-8b-instruct"
SCHEMA: dict[str, Any] = {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}


async def start_openai_runner(pool: StartRunner, base_url: str, api_key: str | None = None) -> BatchRunner:
    """A runner with an OpenAI-compatible server, stopped with the pool's other runners."""
    jobs = await JobSystem.connect(pool.db_url)
    providers = ProviderSet(offline=OfflineProvider((0.0, 0.01)),
                            openai_compatible=OpenAICompatibleProvider(base_url, api_key))
    runner = BatchRunner(BatchJobs.of(jobs), runner_options(name="llm-runner"), providers, rng=random.Random(7))
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    pool.started[id(runner)] = (runner, task, stop, jobs)
    await until_ready(task, runner.started.is_set, "runner started")
    return runner


async def test_a_batch_on_a_local_server_retries_validates_and_counts_tokens(
        batch: BatchJobs, db: Db, start_runner: StartRunner) -> None:
    seen: collections.Counter[str] = collections.Counter()

    async def behaviour(call: fo.Call) -> fo.Reply:
        seen[call.prompt] += 1
        first = seen[call.prompt] == 1
        if call.prompt.endswith("text 1") and first:
            return fo.error(429, "slow down", {"Retry-After": "0.05"})
        if call.prompt.endswith("text 2") and first:
            return fo.error(500, "worker crashed")
        if call.prompt.endswith("text 3") and first:
            return 200, fo.ok_body("{\"summary\": 5}", 11, 6, 2), {}  # wrong type: asked again
        return 200, fo.ok_body(json.dumps({"summary": f"about {call.prompt[-6:]}"}), 11, 6, 2), {}

    fake = fo.FakeOpenAI(behaviour)
    async with fo.serve(fake) as url:
        await start_openai_runner(start_runner, url, api_key="local-secret")
        job = await batch.create_job(template=TEMPLATE, items=items(4), provider="openai_compatible", model=MODEL,
                                     system_instruction="Be brief.", temperature=0.2, max_output_tokens=64,
                                     response_schema=SCHEMA)
        final = await wait_final(batch, job.id)
    assert (final.status, final.completed_items, final.failed_items) == (BatchStatus.COMPLETED, 4, 0)
    assert len(fake.calls) == 7  # 4 + one 429 + one 500 + one correction: the SDK itself never retried
    body = fake.calls[0].body
    assert body["model"] == MODEL and body["temperature"] == 0.2 and body["max_tokens"] == 64
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "item_output", "schema": SCHEMA}}
    assert fake.calls[0].headers["Authorization"] == "Bearer local-secret"
    page = (await batch.job_items(job.id)).items
    assert {i.provider for i in page} == {"openai_compatible"}
    assert all(json.loads(i.output or "")["summary"].startswith("about") for i in page)
    # 5 answers with usage (4 kept + 1 invalid); completion_tokens 6 include 2 reasoning tokens.
    assert final.usage == TokenUsage(input=55, output=20, thinking=10, retry_input=11, retry_output=4,
                                     retry_thinking=2)
    assert final.cost.usd is None  # no price for a local model: no guess
    assert counters_match(db) == []


async def test_a_bad_key_fails_the_job_with_the_servers_reason(batch: BatchJobs, start_runner: StartRunner) -> None:
    async def behaviour(call: fo.Call) -> fo.Reply:
        return fo.error(401, "invalid api key")

    async with fo.serve(fo.FakeOpenAI(behaviour)) as url:
        await start_openai_runner(start_runner, url)
        job = await batch.create_job(template=TEMPLATE, items=items(3), provider="openai_compatible", model=MODEL)
        final = await wait_final(batch, job.id)
    assert final.status is BatchStatus.FAILED and "401" in (final.error_message or "")
    assert "invalid api key" in (final.error_message or "") and final.failed_items == 3


def test_a_runner_advertises_openai_compatible_only_with_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("JOBSYS_OPENAI_BASE_URL", raising=False)
    assert ProviderSet.from_env().names == ["offline"]
    monkeypatch.setenv("JOBSYS_OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert ProviderSet.from_env().names == ["offline", "openai_compatible"]
    assert ProviderSet.from_env(offline_only=True).names == ["offline"]
