"""The offline provider: no network, no model. For the embedded demo, tests and benchmarks
when no API key is set. Its text is derived from the prompt (the same prompt always gives
the same text and the same simulated latency) and says plainly that it is not model output.
"""

from __future__ import annotations

import asyncio
import hashlib

from jobsys.batch.providers.base import Completion, Request

OFFLINE_LABEL = "[offline draft: no model was called]"
DEFAULT_LATENCY_S = (0.2, 0.8)
_CHARS_PER_TOKEN = 4  # rough, for token counters and the TPM limiter


class OfflineProvider:
    name = "offline"
    offline = True

    def __init__(self, latency_s: tuple[float, float] = DEFAULT_LATENCY_S) -> None:
        low, high = latency_s
        if not 0 <= low <= high:
            raise ValueError("latency range must satisfy 0 <= low <= high")
        self.latency_s = (low, high)
        self.calls = 0

    def latency_for(self, prompt: str) -> float:
        low, high = self.latency_s
        fraction = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big") / 2**32
        return low + (high - low) * fraction

    async def generate(self, request: Request) -> Completion:
        self.calls += 1
        await asyncio.sleep(self.latency_for(request.prompt))  # simulated model latency
        return Completion(text=offline_text(request.prompt), tokens_in=len(request.prompt) // _CHARS_PER_TOKEN + 1,
                          tokens_out=40)

    async def close(self) -> None:
        return None


def offline_text(prompt: str) -> str:
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    first_line = " ".join(prompt.split())[:160]
    return f"{OFFLINE_LABEL} {len(prompt.split())} words in the prompt, ref {digest}. Prompt began: {first_line}"
