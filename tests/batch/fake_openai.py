"""A scripted stand-in for an OpenAI-compatible server's /v1/chat/completions (what vLLM,
Ollama and llama.cpp's server answer), served by aiohttp.web on loopback. The real openai
SDK's AsyncOpenAI is pointed at it. A behaviour is an async function of the call returning
(status, JSON body, headers); every call is recorded."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

Reply = tuple[int, Any, dict[str, str]]


@dataclasses.dataclass
class Call:
    n: int
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def prompt(self) -> str:
        return str(self.body["messages"][-1]["content"])


Behaviour = Callable[[Call], Awaitable[Reply]]


def ok_body(text: str, prompt_tokens: int = 11, completion_tokens: int = 6, reasoning: int = 0,
            finish: str = "stop") -> dict[str, Any]:
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "local-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens,
                      "completion_tokens_details": {"reasoning_tokens": reasoning}}}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return status, {"error": {"message": message, "type": "error", "code": status}}, headers or {}


class FakeOpenAI:
    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.calls: list[Call] = []
        self.behaviour = behaviour or self._ok

    @staticmethod
    async def _ok(call: Call) -> Reply:
        return 200, ok_body(f"answer to <{call.prompt}>"), {}

    async def handle(self, request: web.Request) -> web.Response:
        call = Call(len(self.calls), json.loads(await request.read()), dict(request.headers))
        self.calls.append(call)
        status, body, headers = await self.behaviour(call)
        return web.Response(status=status, body=json.dumps(body).encode(),
                            headers={**headers, "Content-Type": "application/json"})


@contextlib.asynccontextmanager
async def serve(fake: FakeOpenAI) -> AsyncIterator[str]:
    """Yields the base URL (…/v1) to give the SDK."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()
