"""A scripted stand-in for the Gemini API's generateContent, served two ways:

- `serve_aiohttp`: a real local HTTP server (aiohttp.web). The SDK reaches it through
  GOOGLE_GEMINI_BASE_URL with its default async transport, aiohttp - the production path.
- `mock_httpx`: respx routes for an httpx.AsyncClient injected with
  HttpOptions(httpx_async_client=...) - the SDK's httpx path.

A behaviour is an async function of the call; it returns (status, body, headers) or waits
(to hold a call in flight). Every call is recorded with its arrival time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import respx
from aiohttp import web

Reply = tuple[int, Any, dict[str, str]]  # status, JSON body (or raw str), headers


@dataclasses.dataclass
class Call:
    n: int  # 0-based arrival order
    prompt: str
    body: dict[str, Any]
    at_s: float  # time.monotonic() on arrival


Behaviour = Callable[[Call], Awaitable[Reply]]


def ok_body(text: str, tokens_in: int = 12, tokens_out: int = 7) -> dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP",
                            "index": 0}],
            "usageMetadata": {"promptTokenCount": tokens_in, "candidatesTokenCount": tokens_out,
                              "totalTokenCount": tokens_in + tokens_out},
            "modelVersion": "gemini-test"}


def answer(prompt: str) -> str:
    return f"draft for <{prompt}>"


def ok(call: Call) -> Reply:
    return 200, ok_body(answer(call.prompt)), {}


def rate_limited(delay: str | None = "0.3s", header: str | None = None) -> Reply:
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}] if delay else []
    body = {"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                      "status": "RESOURCE_EXHAUSTED", "details": details}}
    return 429, body, ({"Retry-After": header} if header else {})


def server_error(code: int = 500, status: str = "INTERNAL") -> Reply:
    return code, {"error": {"code": code, "message": "An internal error has occurred.", "status": status}}, {}


def model_not_found() -> Reply:
    return 404, {"error": {"code": 404, "message": "models/nope is not found for API version v1beta",
                           "status": "NOT_FOUND"}}, {}


MALFORMED: Reply = (200, "this is not json {", {})
NO_CANDIDATES: Reply = (200, {"usageMetadata": {"promptTokenCount": 3}}, {})
BLOCKED: Reply = (200, {"promptFeedback": {"blockReason": "SAFETY"}}, {})


class FakeGemini:
    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.calls: list[Call] = []
        self.behaviour: Behaviour = behaviour or self._ok
        self.release = asyncio.Event()  # held calls wait on this

    @staticmethod
    async def _ok(call: Call) -> Reply:
        return ok(call)

    async def hold(self) -> Reply:
        """Keep the call in flight until `release` is set, then answer 200."""
        await self.release.wait()
        return 200, ok_body("released late"), {}

    def prompts(self) -> list[str]:
        return [c.prompt for c in self.calls]

    async def handle(self, body_bytes: bytes) -> Reply:
        body = json.loads(body_bytes)
        prompt = body["contents"][0]["parts"][0]["text"]
        call = Call(len(self.calls), prompt, body, time.monotonic())
        self.calls.append(call)
        return await self.behaviour(call)


def _encode(body: Any) -> tuple[bytes, str]:
    if isinstance(body, str):
        return body.encode(), "text/plain"
    return json.dumps(body).encode(), "application/json"


@contextlib.asynccontextmanager
async def serve_aiohttp(fake: FakeGemini) -> AsyncIterator[str]:
    """A local HTTP server; yields its base URL."""

    async def handler(request: web.Request) -> web.Response:
        status, body, headers = await fake.handle(await request.read())
        data, content_type = _encode(body)
        return web.Response(status=status, body=data, headers={**headers, "Content-Type": content_type})

    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        fake.release.set()
        await runner.cleanup()


@contextlib.asynccontextmanager
async def mock_httpx(fake: FakeGemini, base_url: str = "https://gemini.test") -> AsyncIterator[httpx.AsyncClient]:
    """respx routes; yields the httpx client to inject into the SDK."""

    async def side_effect(request: httpx.Request) -> httpx.Response:
        status, body, headers = await fake.handle(request.content)
        data, content_type = _encode(body)
        return httpx.Response(status, content=data, headers={**headers, "Content-Type": content_type})

    with respx.mock(base_url=base_url, assert_all_called=False) as router:
        router.post(path__regex=r"/.*").mock(side_effect=side_effect)
        async with httpx.AsyncClient(base_url=base_url) as client:
            try:
                yield client
            finally:
                fake.release.set()
