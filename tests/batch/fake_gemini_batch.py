"""A stand-in for Gemini's Batch API endpoints, served by aiohttp.web on loopback; the real
google-genai client reaches it through GOOGLE_GEMINI_BASE_URL:

- POST models/{model}:batchGenerateContent: a new batch (its inline requests recorded),
- GET batches/{id}: its state, scripted per read; once it has ended, the inline responses,
- POST batches/{id}:cancel: recorded, and the batch ends cancelled.

`states` is the state each read returns in turn (the last one repeats); `respond(idx, prompt)`
gives one item's inline response (a GenerateContentResponse body, or {"error": ...}), or None
for an item the batch has no result for (an expired batch's unfinished items).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from tests.batch import fake_gemini as fg

TERMINAL = {"BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED"}


@dataclasses.dataclass
class Batch:
    name: str
    model: str
    display_name: str
    requests: list[dict[str, Any]]
    reads: int = 0
    cancelled: bool = False


def default_respond(idx: int, prompt: str) -> dict[str, Any] | None:
    return {"response": fg.ok_body(fg.answer(prompt))}


class FakeGeminiBatch:
    def __init__(self, states: list[str], respond: Callable[[int, str], dict[str, Any] | None] = default_respond
                 ) -> None:
        self.states = states
        self.respond = respond
        self.batches: list[Batch] = []
        self.cancels: list[str] = []
        self.gate = asyncio.Event()  # while unset, reads never go past the next-to-last state
        self.gate.set()

    def state_of(self, batch: Batch) -> str:
        if batch.cancelled:
            return "BATCH_STATE_CANCELLED"
        last = len(self.states) - 1
        step = min(batch.reads - 1, last if self.gate.is_set() else max(0, last - 1))
        return self.states[max(0, step)]

    def body(self, batch: Batch) -> dict[str, Any]:
        state = self.state_of(batch)
        metadata: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
            "name": batch.name, "displayName": batch.display_name, "model": batch.model, "state": state}
        if state in TERMINAL:
            responses = []
            for request in batch.requests:
                idx = int(request["metadata"]["idx"])
                prompt = request["request"]["contents"][0]["parts"][0]["text"]
                answer = self.respond(idx, prompt)
                if answer is not None:
                    responses.append({**answer, "metadata": request["metadata"]})
            metadata["output"] = {"inlinedResponses": {"inlinedResponses": responses}}
        return {"name": batch.name, "metadata": metadata}

    def find(self, batch_id: str) -> Batch:
        [batch] = [b for b in self.batches if b.name == f"batches/{batch_id}"]
        return batch

    async def handle(self, request: web.Request) -> web.Response:
        path = request.match_info["tail"]
        if request.method == "POST" and path.endswith(":batchGenerateContent"):
            body = json.loads(await request.read())
            spec = body["batch"]
            model = path.split(":")[0].split("/", 1)[1]  # past the API version (v1, v1beta)
            batch = Batch(f"batches/fake-{len(self.batches)}", model,
                          spec.get("displayName", ""), spec["inputConfig"]["requests"]["requests"])
            self.batches.append(batch)
            batch.reads = 1
            return web.json_response(self.body(batch))
        if request.method == "POST" and path.endswith(":cancel"):
            batch = self.find(path.split("/")[-1].removesuffix(":cancel"))
            batch.cancelled = True
            self.cancels.append(batch.name)
            return web.json_response({})
        if request.method == "GET" and "/batches/" in f"/{path}":
            batch = self.find(path.split("/")[-1])
            batch.reads += 1
            return web.json_response(self.body(batch))
        return web.json_response({"error": {"code": 404, "message": path, "status": "NOT_FOUND"}}, status=404)


@contextlib.asynccontextmanager
async def serve(fake: FakeGeminiBatch) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        fake.gate.set()
        await runner.cleanup()
