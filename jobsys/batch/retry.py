"""Retry timing: exponential backoff with full jitter for an item's own failures, and the
length of the shared cooldown after a rate limit."""

from __future__ import annotations

import dataclasses
import random

from jobsys.batch.providers.base import CallFailure


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    # 429/503 are the quota talking, not the item failing: they wait out the shared
    # cooldown and have their own, larger budget, so a rate-limit storm fails no item.
    rate_limit_retries: int = 20
    cooldown_default_s: float = 5.0  # a 429 that names no delay: this, doubling per repeat
    cooldown_max_s: float = 300.0

    def backoff_s(self, failures: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^(failures-1))]."""
        return rng.uniform(0.0, min(self.backoff_max_s, self.backoff_base_s * 2 ** (failures - 1)))

    def cooldown_s(self, failure: CallFailure, repeats: int, rng: random.Random) -> float:
        if failure.retry_after_s is not None:
            return min(self.cooldown_max_s, failure.retry_after_s)
        ceiling = min(self.cooldown_max_s, self.cooldown_default_s * 2 ** (repeats - 1))
        return rng.uniform(ceiling / 2, ceiling)
