"""What a provider is: one async call from a rendered prompt to text, and how it failed.

The engine owns retries, backoff and the shared rate limit; a provider makes exactly one
attempt per call and classifies its failure, so only one layer ever retries.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Protocol


@dataclasses.dataclass(frozen=True)
class Request:
    prompt: str
    model: str
    system_instruction: str | None = None
    temperature: float | None = None
    max_output_tokens: int | None = None


@dataclasses.dataclass(frozen=True)
class Completion:
    text: str
    tokens_in: int | None = None
    tokens_out: int | None = None


class FailureKind(str, enum.Enum):
    RATE_LIMITED = "rate_limited"  # 429 / 503: every call sharing the quota waits (one cooldown)
    TRANSIENT = "transient"  # 5xx, timeout, connection, malformed response: retry this item with backoff
    PERMANENT = "permanent"  # this item cannot succeed as is (bad request, blocked): fail it now
    FATAL = "fatal"  # no item can succeed (bad key, unknown model, daily quota): fail the job


class CallFailure(Exception):
    def __init__(self, kind: FailureKind, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.retry_after_s = retry_after_s  # what the server asked for (Retry-After, RetryInfo)


class Provider(Protocol):
    name: str  # stored with every output: "gemini", "offline"
    offline: bool  # True: outputs are placeholders, never model text

    async def generate(self, request: Request) -> Completion:
        """One attempt. Raises CallFailure (or asyncio.CancelledError when cancelled)."""

    async def close(self) -> None: ...
