"""The real google-genai client against a fake Gemini, over both of the SDK's async paths:
aiohttp (its default when installed; reached through GOOGLE_GEMINI_BASE_URL) and an
injected httpx client (respx). One attempt per call: the SDK never retries on its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from jobsys.batch.providers.base import CallFailure, FailureKind, Request
from jobsys.batch.providers.gemini import GeminiProvider
from jobsys.batch.providers.gemini_errors import retry_after_header_s
from tests.batch import fake_gemini as fg

REQUEST = Request(prompt="Summarise: hello", model="gemini-2.5-flash", system_instruction="Be brief.",
                  temperature=0.2, max_output_tokens=64)

ProviderFor = Callable[[fg.FakeGemini], contextlib.AbstractAsyncContextManager[GeminiProvider]]


@pytest.fixture(params=["aiohttp", "httpx"])
def provider_for(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ProviderFor:
    @contextlib.asynccontextmanager
    async def make(fake: fg.FakeGemini) -> AsyncIterator[GeminiProvider]:
        if request.param == "aiohttp":
            async with fg.serve_aiohttp(fake) as url:
                monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", url)  # the SDK's own setting
                provider = GeminiProvider("test-key")
                try:
                    yield provider
                finally:
                    await provider.close()
        else:
            async with fg.mock_httpx(fake) as client:
                provider = GeminiProvider("test-key", base_url=str(client.base_url), httpx_client=client)
                yield provider

    return make


def reply(r: fg.Reply) -> fg.Behaviour:
    async def behaviour(call: fg.Call) -> fg.Reply:
        return r
    return behaviour


async def test_success_sends_the_request_and_reads_text_and_usage(provider_for: ProviderFor) -> None:
    fake = fg.FakeGemini()
    async with provider_for(fake) as provider:
        completion = await provider.generate(REQUEST)
    assert completion.text == fg.answer("Summarise: hello")
    assert (completion.tokens_in, completion.tokens_out) == (12, 7)
    [call] = fake.calls
    assert call.body["systemInstruction"]["parts"][0]["text"] == "Be brief."
    assert call.body["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 64}


@pytest.mark.parametrize("case, response, kind, retry_after_s", [
    ("429 with RetryInfo", fg.rate_limited("1.5s"), FailureKind.RATE_LIMITED, 1.5),
    ("429 with Retry-After only", fg.rate_limited(None, header="2"), FailureKind.RATE_LIMITED, 2.0),
    ("429 fractional RetryInfo", fg.rate_limited("0.837906927s"), FailureKind.RATE_LIMITED, 0.837906927),
    ("503 overloaded", fg.server_error(503, "UNAVAILABLE"), FailureKind.RATE_LIMITED, None),
    ("500", fg.server_error(500), FailureKind.TRANSIENT, None),
    ("malformed body", fg.MALFORMED, FailureKind.TRANSIENT, None),
    ("no candidates", fg.NO_CANDIDATES, FailureKind.TRANSIENT, None),
    ("prompt blocked", fg.BLOCKED, FailureKind.PERMANENT, None),
    ("400 bad request", (400, {"error": {"code": 400, "message": "too long", "status": "INVALID_ARGUMENT"}}, {}),
     FailureKind.PERMANENT, None),
    ("400 bad key", (400, {"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT",
                                     "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                                  "reason": "API_KEY_INVALID"}]}}, {}), FailureKind.FATAL, None),
    ("404 model", fg.model_not_found(), FailureKind.FATAL, None),
    ("429 daily quota", (429, {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
         "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}]}}, {}),
     FailureKind.FATAL, None),
])
async def test_failures_are_classified_after_exactly_one_request(
        provider_for: ProviderFor, case: str, response: fg.Reply, kind: FailureKind,
        retry_after_s: float | None) -> None:
    fake = fg.FakeGemini(reply(response))
    async with provider_for(fake) as provider:
        with pytest.raises(CallFailure) as info:
            await provider.generate(REQUEST)
    assert info.value.kind is kind, info.value.reason
    assert info.value.retry_after_s == pytest.approx(retry_after_s) if retry_after_s else info.value.retry_after_s is None
    assert len(fake.calls) == 1, "the SDK retried on its own"


async def test_a_dropped_connection_is_transient_and_not_retried_by_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    connections = []

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await reader.read(1)
        writer.close()  # the server drops the connection without an answer

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", f"http://127.0.0.1:{port}")
    provider = GeminiProvider("test-key")
    try:
        with pytest.raises(CallFailure) as info:
            await provider.generate(REQUEST)
    finally:
        await provider.close()
        server.close()
    assert info.value.kind is FailureKind.TRANSIENT
    assert len(connections) == 1, "the SDK retried the connection itself"


def test_retry_after_header_forms() -> None:
    assert retry_after_header_s("7") == 7.0
    assert retry_after_header_s("Wed, 21 Oct 2015 07:28:00 GMT", now_s=1445412470.0) == pytest.approx(10.0)
    assert retry_after_header_s("soon") is None and retry_after_header_s(None) is None
