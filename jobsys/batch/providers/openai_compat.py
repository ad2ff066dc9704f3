"""An OpenAI-compatible server (vLLM, Ollama, llama.cpp's server, or any compatible endpoint)
through the official openai SDK's async client: chat completions, one attempt per call.

As for Gemini, only the engine retries (max_retries=0 here) and failures are sorted into the
engine's four kinds. Structured output uses response_format json_schema, which vLLM, Ollama
and llama.cpp's server accept; the engine validates every answer either way.
"""

from __future__ import annotations

from typing import Any

import openai

from jobsys.batch.providers.base import CallFailure, Completion, FailureKind, Request, Usage
from jobsys.batch.providers.gemini_errors import retry_after_header_s

NO_KEY = "not-needed"  # the SDK insists on a key; local servers ignore it
REASON_MAX_CHARS = 300
_FATAL_CODES = {401, 403, 404}  # bad key, no permission, unknown model: true for every item


class OpenAICompatibleProvider:
    name = "openai_compatible"
    offline = False

    def __init__(self, base_url: str, api_key: str | None = None, *, http_client: Any = None) -> None:
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or NO_KEY, max_retries=0,
                                          http_client=http_client)

    async def generate(self, request: Request) -> Completion:
        messages: list[dict[str, str]] = []
        if request.system_instruction:
            messages.append({"role": "system", "content": request.system_instruction})
        messages.append({"role": "user", "content": request.prompt})
        extra: dict[str, Any] = {}
        if request.temperature is not None:
            extra["temperature"] = request.temperature
        if request.max_output_tokens is not None:
            extra["max_tokens"] = request.max_output_tokens  # what local servers read (not max_completion_tokens)
        if request.response_schema is not None:
            extra["response_format"] = {"type": "json_schema",
                                        "json_schema": {"name": "item_output", "schema": request.response_schema}}
        try:
            response = await self._client.chat.completions.create(model=request.model, messages=messages,
                                                                  **extra)  # type: ignore[call-overload]
        except openai.APIStatusError as exc:
            raise classify_status_error(exc) from exc
        except openai.APITimeoutError as exc:
            raise CallFailure(FailureKind.TRANSIENT, "timed out") from exc
        except openai.APIConnectionError as exc:
            raise CallFailure(FailureKind.TRANSIENT, f"connection failed ({str(exc)[:200]})") from exc
        except openai.APIResponseValidationError as exc:
            raise CallFailure(FailureKind.TRANSIENT, f"malformed response ({str(exc)[:200]})") from exc
        return _completion(response)

    async def close(self) -> None:
        await self._client.close()


def _usage(response: Any) -> Usage | None:
    usage = getattr(response, "usage", None)
    if usage is None:
        return None
    details = getattr(usage, "completion_tokens_details", None)
    thinking = (getattr(details, "reasoning_tokens", None) or 0) if details is not None else 0
    # completion_tokens includes reasoning tokens; keep them apart as Gemini reports them.
    return Usage(usage.prompt_tokens or 0, max(0, (usage.completion_tokens or 0) - thinking), thinking)


def _completion(response: Any) -> Completion:
    usage = _usage(response)
    choices = getattr(response, "choices", None) or []
    if not choices:
        raise CallFailure(FailureKind.TRANSIENT, "malformed response: no choices", usage=usage)
    choice = choices[0]
    text = choice.message.content if choice.message is not None else None
    if choice.finish_reason == "length":
        raise CallFailure(FailureKind.PERMANENT, "no complete text: output cut at max_output_tokens", usage=usage)
    if choice.finish_reason == "content_filter":
        raise CallFailure(FailureKind.PERMANENT, "no text: blocked by the server's content filter", usage=usage)
    if not text:
        raise CallFailure(FailureKind.TRANSIENT, f"empty response (finish reason {choice.finish_reason or 'none'})",
                          usage=usage)
    if usage is None:
        return Completion(text=text)
    return Completion(text=text, tokens_in=usage.tokens_in, tokens_out=usage.tokens_out,
                      tokens_thinking=usage.tokens_thinking)


def describe(exc: openai.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    inner = body.get("error", body) if isinstance(body, dict) else {}
    message = inner.get("message") if isinstance(inner, dict) else None
    text = f"{exc.status_code}: {' '.join(str(message or exc.message).split())}"
    return text[:REASON_MAX_CHARS]


def classify_status_error(exc: openai.APIStatusError) -> CallFailure:
    code = exc.status_code
    reason = describe(exc)
    if code in (429, 503):
        return CallFailure(FailureKind.RATE_LIMITED, reason,
                           retry_after_s=retry_after_header_s(exc.response.headers.get("retry-after")))
    if code in (408, 409) or code >= 500:
        return CallFailure(FailureKind.TRANSIENT, reason)
    if code in _FATAL_CODES:
        return CallFailure(FailureKind.FATAL, reason)
    return CallFailure(FailureKind.PERMANENT, reason)
