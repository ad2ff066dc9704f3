"""A stand-in for Gemini's Batch API endpoints, served by aiohttp.web on loopback; the real
google-genai client reaches it through GOOGLE_GEMINI_BASE_URL:

- POST models/{model}:batchGenerateContent: a new batch (its inline requests recorded),
- GET batches/{id}: its state, scripted per read; once it has ended, the inline responses,
- POST batches/{id}:cancel: recorded, and the batch ends cancelled,
- the Files API as google-genai 3.6.1 speaks it: POST upload/{version}/files (resumable
  upload: `X-Goog-Upload-Command: start` answers an `X-Goog-Upload-URL`, then one or more
  `upload[, finalize]` chunks to it), a batch created from that file (`inputConfig.fileName`,
  one `{"key", "request"}` JSON line per item), whose ended state names a result file
  (`output.responsesFile`) served by GET files/{id}:download?alt=media (one `{"key",
  "response" | "error"}` line per item), and DELETE files/{id}.

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
    requests: list[dict[str, Any]]  # {"metadata": {"idx": ...}, "request": GenerateContentRequest}
    reads: int = 0
    cancelled: bool = False
    input_file: str | None = None  # created from an uploaded file: answers with a result file
    result_file: str | None = None  # written once, when the batch has ended: once deleted, it is gone

    @property
    def keys(self) -> list[str]:
        return [r["metadata"]["idx"] for r in self.requests]

    @property
    def prompts(self) -> list[str]:
        return [r["request"]["contents"][0]["parts"][0]["text"] for r in self.requests]


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
        self.upload_gate = asyncio.Event()  # while unset, new uploads wait: a runner stuck before its batch exists
        self.upload_gate.set()
        self.uploads_held = 0  # uploads that waited on upload_gate
        self.files: dict[str, bytes] = {}  # uploaded and result files by name (files/...)
        self.uploads: dict[str, bytearray] = {}  # open upload sessions
        self.deleted: list[str] = []
        self.downloads: list[str] = []
        self.download_errors: list[int] = []  # the status each download answers in turn, before they succeed
        self.delete_error: int | None = None  # every delete answers this status (the file stays)
        self.delete_attempts: list[str] = []

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
            answers = []
            for request in batch.requests:
                prompt = request["request"]["contents"][0]["parts"][0]["text"]
                answer = self.respond(int(request["metadata"]["idx"]), prompt)
                if answer is not None:
                    answers.append((request["metadata"], answer))
            if batch.input_file is None:
                responses = [{**answer, "metadata": metadata} for metadata, answer in answers]
                metadata["output"] = {"inlinedResponses": {"inlinedResponses": responses}}
            else:
                if batch.result_file is None:
                    batch.result_file = f"files/result-{batch.name.split('/')[-1]}"
                    self.files[batch.result_file] = b"".join(json.dumps({"key": m["idx"], **answer}).encode() + b"\n"
                                                             for m, answer in answers)
                metadata["output"] = {"responsesFile": batch.result_file}
        return {"name": batch.name, "metadata": metadata}

    def from_file(self, name: str) -> list[dict[str, Any]]:
        lines = self.files[name].decode().splitlines()
        return [{"metadata": {"idx": row["key"]}, "request": row["request"]} for row in map(json.loads, lines)]

    async def upload(self, request: web.Request, path: str) -> web.Response:
        command = request.headers.get("X-Goog-Upload-Command", "")
        if command == "start":  # the resumable session: the client sends the bytes to the URL we name
            if not self.upload_gate.is_set():
                self.uploads_held += 1
                await self.upload_gate.wait()
            session = f"session-{len(self.uploads)}"
            self.uploads[session] = bytearray()
            url = f"http://{request.host}/upload/sessions/{session}"
            return web.json_response({}, headers={"X-Goog-Upload-URL": url})
        session = path.split("/")[-1]
        self.uploads[session] += await request.read()
        if "finalize" not in command:
            return web.json_response({}, headers={"X-Goog-Upload-Status": "active"})
        name = f"files/upload-{session}"
        self.files[name] = bytes(self.uploads.pop(session))
        body = {"file": {"name": name, "mimeType": "application/jsonl", "sizeBytes": str(len(self.files[name])),
                         "state": "ACTIVE"}}
        return web.json_response(body, headers={"X-Goog-Upload-Status": "final"})

    def find(self, batch_id: str) -> Batch:
        [batch] = [b for b in self.batches if b.name == f"batches/{batch_id}"]
        return batch

    async def handle(self, request: web.Request) -> web.Response:
        path = request.match_info["tail"]
        if request.method == "POST" and path.startswith("upload/"):
            return await self.upload(request, path)
        if request.method == "GET" and path.endswith(":download") and request.query.get("alt") == "media":
            name = "files/" + path.split("/")[-1].removesuffix(":download")
            self.downloads.append(name)
            if self.download_errors:
                status = self.download_errors.pop(0)
                return web.json_response({"error": {"code": status, "message": f"scripted {status} for {name}",
                                                    "status": "SCRIPTED"}}, status=status)
            if name not in self.files:  # deleted (or never written)
                return web.json_response({"error": {"code": 404, "message": name, "status": "NOT_FOUND"}}, status=404)
            return web.Response(body=self.files[name], content_type="application/octet-stream")
        if request.method == "DELETE" and "/files/" in f"/{path}":
            name = "files/" + path.split("/")[-1]
            self.delete_attempts.append(name)
            if self.delete_error is not None:
                status = self.delete_error
                return web.json_response({"error": {"code": status, "message": name, "status": "SCRIPTED"}},
                                         status=status)
            if self.files.pop(name, None) is None:
                return web.json_response({"error": {"code": 404, "message": name, "status": "NOT_FOUND"}}, status=404)
            self.deleted.append(name)
            return web.json_response({})
        if request.method == "POST" and path.endswith(":batchGenerateContent"):
            body = json.loads(await request.read())
            spec = body["batch"]
            model = path.split(":")[0].split("/", 1)[1]  # past the API version (v1, v1beta)
            source = spec["inputConfig"]
            if "fileName" in source:
                batch = Batch(f"batches/fake-{len(self.batches)}", model, spec.get("displayName", ""),
                              self.from_file(source["fileName"]), input_file=source["fileName"])
            else:
                batch = Batch(f"batches/fake-{len(self.batches)}", model, spec.get("displayName", ""),
                              source["requests"]["requests"])
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
        fake.upload_gate.set()  # a held upload would keep cleanup waiting
        await runner.cleanup()
