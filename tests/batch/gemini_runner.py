"""A runner whose Gemini provider talks to a FakeGemini, over aiohttp or httpx."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from jobsys.batch.providers.gemini import GeminiProvider
from jobsys.batch.runner import BatchRunner
from tests.batch import fake_gemini as fg
from tests.support.runners import StartRunner

GeminiRunner = Callable[..., contextlib.AbstractAsyncContextManager[BatchRunner]]


def make_gemini_runner(transport: str, start_runner: StartRunner, monkeypatch: pytest.MonkeyPatch) -> GeminiRunner:
    @contextlib.asynccontextmanager
    async def run(fake: fg.FakeGemini, **options: Any) -> AsyncIterator[BatchRunner]:
        if transport == "aiohttp":
            async with fg.serve_aiohttp(fake) as url:
                monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", url)
                yield await start_runner(gemini=GeminiProvider("test-key"), **options)
        else:
            async with fg.mock_httpx(fake) as client:
                provider = GeminiProvider("test-key", base_url=str(client.base_url), httpx_client=client)
                yield await start_runner(gemini=provider, **options)

    return run
