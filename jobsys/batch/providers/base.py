"""What a provider is: one async call from a rendered prompt to text, and how it failed.

The engine owns retries, backoff and the shared rate limit; a provider makes exactly one
attempt per call and classifies its failure, so only one layer ever retries.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Protocol


@dataclasses.dataclass(frozen=True)
class Request:
    prompt: str
    model: str
    system_instruction: str | None = None
    temperature: float | None = None
    max_output_tokens: int | None = None
    response_schema: dict[str, Any] | None = None  # JSON Schema: ask for JSON output matching it


@dataclasses.dataclass(frozen=True)
class Usage:
    """Tokens of one attempt, as the provider reported them (usage_metadata / usage)."""

    tokens_in: int = 0
    tokens_out: int = 0
    tokens_thinking: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.tokens_in + other.tokens_in, self.tokens_out + other.tokens_out,
                     self.tokens_thinking + other.tokens_thinking)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.tokens_in - other.tokens_in, self.tokens_out - other.tokens_out,
                     self.tokens_thinking - other.tokens_thinking)


@dataclasses.dataclass(frozen=True)
class Completion:
    text: str
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_thinking: int | None = None

    @property
    def usage(self) -> Usage:
        return Usage(self.tokens_in or 0, self.tokens_out or 0, self.tokens_thinking or 0)


class FailureKind(str, enum.Enum):
    RATE_LIMITED = "rate_limited"  # 429 / 503: every call sharing the quota waits (one cooldown)
    TRANSIENT = "transient"  # 5xx, timeout, connection, malformed response: retry this item with backoff
    PERMANENT = "permanent"  # this item cannot succeed as is (bad request, blocked): fail it now
    FATAL = "fatal"  # no item can succeed (bad key, unknown model, daily quota): fail the job


class CallFailure(Exception):
    def __init__(self, kind: FailureKind, reason: str, retry_after_s: float | None = None,
                 usage: Usage | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.retry_after_s = retry_after_s  # what the server asked for (Retry-After, RetryInfo)
        self.usage = usage  # tokens the failed attempt still cost (e.g. output cut at max tokens)


class Provider(Protocol):
    name: str  # stored with every output: "gemini", "offline", "openai_compatible"
    offline: bool  # True: outputs are placeholders, never model text

    async def generate(self, request: Request) -> Completion:
        """One attempt. Raises CallFailure (or asyncio.CancelledError when cancelled)."""

    async def close(self) -> None: ...
