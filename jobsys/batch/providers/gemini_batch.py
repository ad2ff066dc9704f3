"""Gemini's Batch API through google-genai (`client.aio.batches`): submit one provider batch
keyed by item index, read its state and results, cancel it.

Up to `inline_max_bytes` of requests (the API's limit for inline input, 20 MB) go inline;
above it they are written to a JSONL file (one `{"key": idx, "request": ...}` line per item,
the REST GenerateContentRequest), uploaded through the Files API (`client.aio.files.upload`)
and the batch is created from the file's name. Such a batch answers with a result file
(`dest.file_name`, one `{"key", "response" | "error"}` line per item), downloaded
(`client.aio.files.download`) and read once the batch has ended, then deleted by the run
once its results are stored. Writing the input file and parsing the result file (both can be
gigabytes) run in a worker thread: the event loop also renews every job's lease.

A result file that cannot be read for good (404: expired or deleted, another 4xx) leaves the
batch's items without results, with the reason (`ProviderBatch.results_error`), rather than
failing the job or polling forever; a transient read failure raises ResultFileFailure, for
the caller to try again a bounded number of times.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

from google.genai import errors as genai_errors
from google.genai import types

from jobsys.batch.providers.base import CallFailure, Completion, FailureKind, Request
from jobsys.batch.providers.gemini import GeminiProvider, _completion
from jobsys.batch.providers.gemini_errors import classify_api_error, classify_other, describe

INLINE_MAX_BYTES = 20_000_000
FILE_MAX_BYTES = 2_000_000_000  # the Files API's limit for one file
FILE_MIME_TYPE = "jsonl"  # as Google's Batch API guide uploads its input file
KEY = "idx"  # each request's metadata key: the item index, how responses find their item

# google-genai's job states, as jobsys names them (and logs them).
STATES = {
    "JOB_STATE_QUEUED": "queued", "JOB_STATE_PENDING": "queued", "JOB_STATE_RUNNING": "running",
    "JOB_STATE_SUCCEEDED": "succeeded", "JOB_STATE_PARTIALLY_SUCCEEDED": "partially_succeeded",
    "JOB_STATE_FAILED": "failed", "JOB_STATE_CANCELLING": "cancelling", "JOB_STATE_CANCELLED": "cancelled",
    "JOB_STATE_EXPIRED": "expired",
}
FINAL_STATES = {"succeeded", "partially_succeeded", "failed", "cancelled", "expired"}


@dataclasses.dataclass(frozen=True)
class Submitted:
    name: str  # the provider batch
    input_file: str | None = None  # the uploaded JSONL file (Files API path), deleted when the batch ends


@dataclasses.dataclass(frozen=True)
class ProviderBatch:
    name: str
    state: str  # one of STATES' values (or the provider's own name for one it does not list)
    results: dict[int, Completion | CallFailure]  # by item index; only once the batch has ended
    error: str | None = None
    result_file: str | None = None  # the Files API path: where the results were read from
    results_error: str | None = None  # the result file could not be read: why its items have no result

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


class ResultFileFailure(CallFailure):
    """Reading an ended batch's result file failed transiently (5xx, 429, a dropped
    connection). `batch` is the ended batch without the file's results, for a caller that
    gives up on the file."""

    def __init__(self, failure: CallFailure, batch: ProviderBatch) -> None:
        super().__init__(failure.kind, failure.reason, failure.retry_after_s)
        self.batch = batch


def _config(request: Request) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        system_instruction=request.system_instruction, temperature=request.temperature,
        max_output_tokens=request.max_output_tokens,
        response_mime_type="application/json" if request.response_schema is not None else None,
        response_json_schema=request.response_schema)


def _rest_request(request: Request) -> dict[str, Any]:
    """One line's `request` in the input file: a GenerateContentRequest as the REST API takes
    it (what the SDK sends for an inline request)."""
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": request.prompt}]}]}
    if request.system_instruction is not None:
        body["systemInstruction"] = {"role": "user", "parts": [{"text": request.system_instruction}]}
    config = {"temperature": request.temperature, "maxOutputTokens": request.max_output_tokens}
    if request.response_schema is not None:
        config |= {"responseMimeType": "application/json", "responseJsonSchema": request.response_schema}
    config = {k: v for k, v in config.items() if v is not None}
    if config:
        body["generationConfig"] = config
    return body


def _jsonl(requests: dict[int, Request]) -> bytes:
    return b"".join(json.dumps({"key": str(idx), "request": _rest_request(r)}, ensure_ascii=False).encode() + b"\n"
                    for idx, r in sorted(requests.items()))


def _inlined(requests: dict[int, Request]) -> tuple[list[types.InlinedRequest], int]:
    """Runs in a worker thread. The inline requests and their size as JSON."""
    inlined = [types.InlinedRequest(contents=r.prompt, metadata={KEY: str(idx)}, config=_config(r))
               for idx, r in sorted(requests.items())]
    return inlined, sum(len(json.dumps(r.model_dump(mode="json", exclude_none=True))) for r in inlined)


def _write_input_file(path: pathlib.Path, requests: dict[int, Request]) -> int:
    """Runs in a worker thread. The file's size in bytes."""
    data = _jsonl(requests)
    if len(data) > FILE_MAX_BYTES:
        raise CallFailure(FailureKind.FATAL, f"the batch's input file would be {len(data):,} bytes, over the "
                                             f"Files API's limit of {FILE_MAX_BYTES:,}")
    path.write_bytes(data)
    return len(data)


def _parse_result_file(path: pathlib.Path) -> dict[int, Completion | CallFailure]:
    """Runs in a worker thread: one pydantic parse per line, for up to gigabytes of lines."""
    results: dict[int, Completion | CallFailure] = {}
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line we cannot read leaves its item without a result (it fails saying so)
            key = row.get("key") if isinstance(row, dict) else None
            if key is None or not str(key).isdigit():
                continue
            results[int(key)] = _file_result(row)
    return results


def _download_failure(name: str, exc: genai_errors.APIError) -> CallFailure:
    """A failed result-file download. 404 is the file gone (expired after 48 h, or deleted):
    permanent for this file, not the job's unknown model. 401/403 (the key) stay fatal."""
    if exc.code == 404:
        return CallFailure(FailureKind.PERMANENT, f"result file {name} not found (expired or deleted): {describe(exc)}")
    failure = classify_api_error(exc)
    if failure.kind is FailureKind.FATAL and exc.code not in (401, 403):
        return CallFailure(FailureKind.PERMANENT, f"result file {name}: {failure.reason}")
    return failure


class GeminiBatchApi:
    def __init__(self, provider: GeminiProvider, *, inline_max_bytes: int = INLINE_MAX_BYTES) -> None:
        self._client = provider.client
        self.inline_max_bytes = inline_max_bytes  # above it, the Files API path

    async def submit(self, model: str, requests: dict[int, Request], display_name: str) -> Submitted:
        """One provider batch for these items, inline or from an uploaded file. Raises CallFailure."""
        inlined, size = await asyncio.to_thread(_inlined, requests)  # off the loop: a pydantic dump per item
        input_file: str | None = None
        src: Any = inlined
        if size > self.inline_max_bytes:
            input_file = src = await self._upload(requests, display_name)
        try:
            job = await self._client.aio.batches.create(
                model=model, src=src, config=types.CreateBatchJobConfig(display_name=display_name))
        except Exception as exc:
            if input_file is not None:  # the next attempt uploads its own
                await self.delete_file(input_file)
            if isinstance(exc, genai_errors.APIError):
                raise classify_api_error(exc) from exc
            raise classify_other(exc) from exc
        if not job.name:
            raise CallFailure(FailureKind.TRANSIENT, "malformed response: the created batch has no name")
        return Submitted(job.name, input_file)

    async def _upload(self, requests: dict[int, Request], display_name: str) -> str:
        """The input file through the Files API (resumable upload); its name (files/...)."""
        tmp = pathlib.Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="jobsys-batch-"))
        try:
            path = tmp / f"{display_name}.jsonl"
            await asyncio.to_thread(_write_input_file, path, requests)
            try:
                uploaded = await self._client.aio.files.upload(
                    file=os.fspath(path),
                    config=types.UploadFileConfig(display_name=display_name, mime_type=FILE_MIME_TYPE))
            except genai_errors.APIError as exc:
                raise classify_api_error(exc) from exc
            except Exception as exc:
                raise classify_other(exc) from exc
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
        if not uploaded.name:
            raise CallFailure(FailureKind.TRANSIENT, "malformed response: the uploaded file has no name")
        return uploaded.name

    async def delete_file(self, name: str) -> None:
        """Best effort: the Files API drops files after 48 h anyway."""
        try:
            await self._client.aio.files.delete(name=name)
        except Exception:  # noqa: BLE001 - a leftover file expires on its own
            return

    async def get(self, name: str) -> ProviderBatch:
        """The batch's state; once it has ended, its results (inline or from the result file).
        Raises CallFailure (ResultFileFailure: the batch ended, its result file is not read yet)."""
        try:
            job = await self._client.aio.batches.get(name=name)
        except genai_errors.APIError as exc:
            raise classify_api_error(exc) from exc
        except Exception as exc:
            raise classify_other(exc) from exc
        raw_state = getattr(job.state, "value", job.state) or "JOB_STATE_UNSPECIFIED"
        state = STATES.get(str(raw_state), str(raw_state).lower())
        results: dict[int, Completion | CallFailure] = {}
        for response in (job.dest.inlined_responses or []) if job.dest is not None else []:
            key = (response.metadata or {}).get(KEY)
            if key is None or not str(key).isdigit():
                continue
            results[int(key)] = _result(response)
        result_file = job.dest.file_name if job.dest is not None else None
        error = getattr(job.error, "message", None) if getattr(job, "error", None) is not None else None
        ended = ProviderBatch(name=name, state=state, results=results, error=error, result_file=result_file)
        if not (result_file and ended.final):
            return ended
        try:
            from_file = await self._read_result_file(result_file)
        except CallFailure as failure:
            if failure.kind is FailureKind.PERMANENT:  # reading it again will not help: its items fail, saying why
                return dataclasses.replace(ended, results_error=failure.reason)
            if failure.kind is FailureKind.FATAL:
                raise
            raise ResultFileFailure(failure, ended) from failure
        return dataclasses.replace(ended, results={**results, **from_file})

    async def _read_result_file(self, name: str) -> dict[int, Completion | CallFailure]:
        """The result file, streamed to disk and parsed in a worker thread (it can be gigabytes)."""
        tmp = pathlib.Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="jobsys-batch-"))
        try:
            path = tmp / "results.jsonl"
            try:
                await self._client.aio.files.download(file=name, destination=os.fspath(path))
            except genai_errors.APIError as exc:
                raise _download_failure(name, exc) from exc
            except Exception as exc:
                raise classify_other(exc) from exc
            try:
                return await asyncio.to_thread(_parse_result_file, path)
            except OSError as exc:  # e.g. the disk filled up mid-download: try again later
                raise CallFailure(FailureKind.TRANSIENT, f"result file {name}: {exc!r}"[:300]) from exc
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)

    async def cancel(self, name: str) -> None:
        try:
            await self._client.aio.batches.cancel(name=name)
        except genai_errors.APIError as exc:
            raise classify_api_error(exc) from exc


def _file_result(row: dict[str, Any]) -> Completion | CallFailure:
    error = row.get("error") or row.get("status")
    if error:
        message = error.get("message") if isinstance(error, dict) else None
        return CallFailure(FailureKind.PERMANENT, f"provider batch: {' '.join(str(message or error).split())[:300]}")
    try:
        # As the SDK reads its own responses: fields it does not know yet are dropped, not refused.
        response = types.GenerateContentResponse._from_response(response=row.get("response") or {}, kwargs={})
    except ValueError as exc:
        return CallFailure(FailureKind.PERMANENT, f"provider batch: malformed response ({str(exc)[:200]})")
    if not row.get("response"):
        return CallFailure(FailureKind.PERMANENT, "provider batch: no response for this item")
    try:
        return _completion(response)
    except CallFailure as failure:
        return failure


def _result(response: Any) -> Completion | CallFailure:
    if response.error is not None:
        message = getattr(response.error, "message", None) or str(response.error)
        return CallFailure(FailureKind.PERMANENT, f"provider batch: {' '.join(str(message).split())[:300]}")
    if response.response is None:
        return CallFailure(FailureKind.PERMANENT, "provider batch: no response for this item")
    try:
        return _completion(response.response)
    except CallFailure as failure:
        return failure
