"""One rate limiter per runner, shared by all its jobs: requests and tokens per window, and
one cooldown that holds every call when the provider says "too many requests".

Windows are sliding (no more than `rpm` calls started in any `window_s`), so a burst at
the start never exceeds the quota the way a full token bucket would. Waiters are served
in arrival order (an asyncio.Lock is FIFO), so no item starves.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Callable

WINDOW_S = 60.0  # quotas are per minute; benchmarks scale it with the rest of time


@dataclasses.dataclass
class Ticket:
    """One granted call; settle() corrects its token estimate once usage is known."""

    at_s: float
    tokens: int


class Cooldown:
    """A limiter's 429 cooldown on its clock: held from now for a delay, never shortened; its
    spans (start, end) kept for logs and tests."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.until_s = 0.0
        self.spans: list[tuple[float, float]] = []

    def active(self) -> bool:
        return self._clock() < self.until_s

    def hold(self, delay_s: float) -> bool:
        """True when this starts a new cooldown rather than extending the current one."""
        now = self._clock()
        until = now + max(0.0, delay_s)
        started = now >= self.until_s
        if until > self.until_s:
            self.until_s = until
            if started or not self.spans:
                self.spans.append((now, until))
            else:
                self.spans[-1] = (self.spans[-1][0], until)
        return started


class RateLimiter:
    def __init__(self, rpm: int | None = None, tpm: int | None = None, *, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rpm is not None and rpm < 1 or tpm is not None and tpm < 1:
            raise ValueError("rpm and tpm must be at least 1 when given")
        self.rpm = rpm
        self.tpm = tpm
        self.window_s = window_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._started: collections.deque[Ticket] = collections.deque()
        self._token_sum = 0
        self._cooldown = Cooldown(clock)
        self.granted = 0

    @property
    def blocked_until_s(self) -> float:
        return self._cooldown.until_s

    @property
    def cooldowns(self) -> list[tuple[float, float]]:
        """(start, end) of each cooldown on the clock, for logs and tests."""
        return self._cooldown.spans

    def cooling_down(self) -> bool:
        return self._cooldown.active()

    def cool_down(self, delay_s: float) -> bool:
        """Hold every call for delay_s from now (never shortens a cooldown). True when this
        starts a new cooldown rather than extending the current one (log it once)."""
        return self._cooldown.hold(delay_s)

    async def acquire(self, tokens: int = 0) -> Ticket:
        """Wait until a call may start, and count it."""
        async with self._lock:
            while True:
                now = self._clock()
                wait_s = self._wait_s(now, tokens)
                if wait_s <= 0:
                    ticket = Ticket(now, tokens)
                    self._started.append(ticket)
                    self._token_sum += tokens
                    self.granted += 1
                    return ticket
                await asyncio.sleep(wait_s)  # re-checked after: a cooldown may have grown meanwhile

    def settle(self, ticket: Ticket, actual_tokens: int | None) -> None:
        if actual_tokens is None or ticket not in self._started:
            return
        self._token_sum += actual_tokens - ticket.tokens
        ticket.tokens = actual_tokens

    def _expire(self, now: float) -> None:
        while self._started and self._started[0].at_s <= now - self.window_s:
            self._token_sum -= self._started.popleft().tokens

    def _wait_s(self, now: float, tokens: int) -> float:
        self._expire(now)
        waits = [self._cooldown.until_s - now]
        if self.rpm is not None and len(self._started) >= self.rpm:
            waits.append(self._started[len(self._started) - self.rpm].at_s + self.window_s - now)
        if self.tpm is not None and self._token_sum + tokens > self.tpm and self._started:
            # Wait for the oldest calls to leave the window until this one fits (or the window
            # is empty: a call larger than the whole budget runs alone).
            excess = self._token_sum + tokens - self.tpm
            freed = 0
            for ticket in self._started:
                freed += ticket.tokens
                if freed >= excess:
                    break
            waits.append(ticket.at_s + self.window_s - now)
        return max(waits)
