"""Gemini through google-genai's async client (`client.aio.models.generate_content`).

One layer retries: the SDK's own retries are switched off (HttpRetryOptions(attempts=1),
which also stops its implicit retry of aiohttp connection errors) and the engine retries
with its shared cooldown and backoff. The key comes from GEMINI_API_KEY; the base URL from
the SDK's own GOOGLE_GEMINI_BASE_URL unless one is given, so a proxy can sit in between.
"""

from __future__ import annotations

from typing import Any

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from jobsys.batch.providers.base import CallFailure, Completion, FailureKind, Request, Usage
from jobsys.batch.providers.gemini_errors import classify_api_error, classify_other

_BLOCKING_FINISH = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
                    "LANGUAGE", "MALFORMED_FUNCTION_CALL", "MAX_TOKENS"}  # retrying gives the same


class GeminiProvider:
    name = "gemini"
    offline = False

    def __init__(self, api_key: str, *, base_url: str | None = None, httpx_client: Any = None,
                 aiohttp_session: Any = None) -> None:
        """httpx_client / aiohttp_session: inject a client (tests, custom pools). Without
        them the SDK uses aiohttp when it is installed, else httpx."""
        http_options = types.HttpOptions(
            base_url=base_url,
            retry_options=types.HttpRetryOptions(attempts=1),
            httpx_async_client=httpx_client,
            aiohttp_client=aiohttp_session,
        )
        self._client = genai.Client(api_key=api_key, vertexai=False, http_options=http_options)

    @property
    def client(self) -> genai.Client:
        """The SDK client, for the Batch API mode (gemini_batch.py)."""
        return self._client

    async def generate(self, request: Request) -> Completion:
        config = types.GenerateContentConfig(
            system_instruction=request.system_instruction,
            temperature=request.temperature,
            max_output_tokens=request.max_output_tokens,
            # No tools are used; without this the SDK runs its function-calling loop (and
            # logs a line) around every call.
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            # Structured output: JSON constrained by the batch's JSON Schema as given (the
            # engine still validates every answer).
            response_mime_type="application/json" if request.response_schema is not None else None,
            response_json_schema=request.response_schema,
        )
        try:
            response = await self._client.aio.models.generate_content(
                model=request.model, contents=request.prompt, config=config)
        except genai_errors.APIError as exc:
            raise classify_api_error(exc) from exc
        except CallFailure:
            raise
        except Exception as exc:
            raise classify_other(exc) from exc
        return _completion(response)

    async def close(self) -> None:
        await self._client.aio.aclose()


def _usage(response: types.GenerateContentResponse) -> Usage | None:
    usage = response.usage_metadata
    if usage is None:
        return None
    return Usage(usage.prompt_token_count or 0, usage.candidates_token_count or 0, usage.thoughts_token_count or 0)


def _completion(response: types.GenerateContentResponse) -> Completion:
    text = response.text
    usage = _usage(response)
    if not text:
        feedback = response.prompt_feedback
        block = feedback.block_reason if feedback is not None else None
        candidate = response.candidates[0] if response.candidates else None
        finish = candidate.finish_reason if candidate is not None else None
        finish_name = getattr(finish, "value", finish)
        if block is not None:
            raise CallFailure(FailureKind.PERMANENT, f"prompt blocked ({getattr(block, 'value', block)})",
                              usage=usage)
        if finish_name in _BLOCKING_FINISH:
            raise CallFailure(FailureKind.PERMANENT, f"no text: generation stopped ({finish_name})", usage=usage)
        if candidate is None:
            raise CallFailure(FailureKind.TRANSIENT, "malformed response: no candidates", usage=usage)
        raise CallFailure(FailureKind.TRANSIENT, f"empty response (finish reason {finish_name or 'none'})",
                          usage=usage)
    if usage is None:
        return Completion(text=text)
    return Completion(text=text, tokens_in=usage.tokens_in, tokens_out=usage.tokens_out,
                      tokens_thinking=usage.tokens_thinking)
