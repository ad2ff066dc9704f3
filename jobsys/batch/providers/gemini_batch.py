"""Gemini's Batch API through google-genai (`client.aio.batches`): submit one provider batch
of inline requests keyed by item index, read its state and results, cancel it.

Inline requests only: a batch whose requests exceed INLINE_MAX_BYTES (the API's limit for
inline input, 20 MB) is refused with a reason instead of going through the Files API, which
this module does not do yet.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from google.genai import errors as genai_errors
from google.genai import types

from jobsys.batch.providers.base import CallFailure, Completion, FailureKind, Request
from jobsys.batch.providers.gemini import GeminiProvider, _completion
from jobsys.batch.providers.gemini_errors import classify_api_error, classify_other

INLINE_MAX_BYTES = 20_000_000
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
class ProviderBatch:
    name: str
    state: str  # one of STATES' values (or the provider's own name for one it does not list)
    results: dict[int, Completion | CallFailure]  # by item index; only once the batch has ended
    error: str | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


def _config(request: Request) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        system_instruction=request.system_instruction, temperature=request.temperature,
        max_output_tokens=request.max_output_tokens,
        response_mime_type="application/json" if request.response_schema is not None else None,
        response_json_schema=request.response_schema)


class GeminiBatchApi:
    def __init__(self, provider: GeminiProvider) -> None:
        self._client = provider.client

    async def submit(self, model: str, requests: dict[int, Request], display_name: str) -> str:
        """One provider batch for these items; its name. Raises CallFailure."""
        inlined = [types.InlinedRequest(contents=r.prompt, metadata={KEY: str(idx)}, config=_config(r))
                   for idx, r in sorted(requests.items())]
        size = sum(len(json.dumps(r.model_dump(mode="json", exclude_none=True))) for r in inlined)
        if size > INLINE_MAX_BYTES:
            raise CallFailure(FailureKind.FATAL, f"the batch's requests are {size:,} bytes, over the Batch API's "
                                                 f"inline limit of {INLINE_MAX_BYTES:,} (file input is not supported yet)")
        try:
            job = await self._client.aio.batches.create(
                model=model, src=inlined, config=types.CreateBatchJobConfig(display_name=display_name))
        except genai_errors.APIError as exc:
            raise classify_api_error(exc) from exc
        except Exception as exc:
            raise classify_other(exc) from exc
        if not job.name:
            raise CallFailure(FailureKind.TRANSIENT, "malformed response: the created batch has no name")
        return job.name

    async def get(self, name: str) -> ProviderBatch:
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
        error = getattr(job.error, "message", None) if getattr(job, "error", None) is not None else None
        return ProviderBatch(name=name, state=state, results=results, error=error)

    async def cancel(self, name: str) -> None:
        try:
            await self._client.aio.batches.cancel(name=name)
        except genai_errors.APIError as exc:
            raise classify_api_error(exc) from exc


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
