"""One rate limit across runners, kept in the database (jobsys.acquire_batch_rate).

Gemini's quotas are per project and model, not per process: with the per-runner limiter
two runners at --rpm 30 send 60 calls a minute. This limiter asks the database for every
call instead: the grants of all runners sit in one sliding window per key (the provider and
model), serialised by a row lock, so no window ever holds more than `rpm` calls or `tpm`
prompt tokens, whichever runner started them. A 429's cooldown is kept there too: the
runner that saw it holds its own calls at once and tells the others through the database,
whose next grant waits for it.

Same interface as RateLimiter (acquire / settle / cool_down), so JobRun uses either. One
database call per call granted (plus one per cooldown); corrected token counts ride along
with the next grant.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Callable

from jobsys import errors
from jobsys.batch.facade import BatchJobs
from jobsys.batch.limiter import WINDOW_S, Cooldown, Ticket

log = logging.getLogger("jobsys.batch")

GRANTS_KEPT = 1000  # recent grant times, for logs and tests
WAIT_MAX_S = 5.0  # ask again at least this often while waiting (another runner may free a slot)
RETRY_MAX_S = 5.0


@dataclasses.dataclass
class SharedTicket(Ticket):
    grant_id: int = 0


class SharedRateLimiter:
    def __init__(self, batch: BatchJobs, key: str, rpm: int | None = None, tpm: int | None = None, *,
                 window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        if rpm is not None and rpm < 1 or tpm is not None and tpm < 1:
            raise ValueError("rpm and tpm must be at least 1 when given")
        self.batch = batch
        self.key = key
        self.rpm = rpm
        self.tpm = tpm
        self.window_s = window_s
        self._clock = clock
        self._lock = asyncio.Lock()  # FIFO among this runner's calls; the database orders runners
        self._cooldown = Cooldown(clock)  # this runner's own view of the cooldown: holds its calls at once
        self._settle: list[tuple[int, int]] = []
        self._tells: set[asyncio.Task[None]] = set()
        self.granted = 0
        self.granted_at: collections.deque[float] = collections.deque(maxlen=GRANTS_KEPT)  # database clock, epoch s

    @property
    def blocked_until_s(self) -> float:
        return self._cooldown.until_s

    @property
    def cooldowns(self) -> list[tuple[float, float]]:
        return self._cooldown.spans

    def cooling_down(self) -> bool:
        return self._cooldown.active()

    def cool_down(self, delay_s: float) -> bool:
        """Hold this runner's calls now and every runner's through the database. True when
        this starts a cooldown here (log it once)."""
        started = self._cooldown.hold(delay_s)
        task = asyncio.get_running_loop().create_task(self._tell(delay_s), name=f"rate-cooldown-{self.key}")
        self._tells.add(task)
        task.add_done_callback(self._tells.discard)
        return started

    async def _tell(self, delay_s: float) -> None:
        try:
            await self.batch.cool_down_rate(self.key, delay_s)
        except errors.JobsysError as exc:  # the others then learn of the quota from their own 429s
            log.warning("shared rate limit %s: could not share a %.1fs cooldown (%s)", self.key, delay_s, exc.message)

    async def acquire(self, tokens: int = 0) -> SharedTicket:
        """Wait until the shared window has room (and no cooldown runs), and count the call."""
        async with self._lock:
            retry_s = 0.2
            while True:
                local_wait_s = self._cooldown.until_s - self._clock()
                if local_wait_s > 0:
                    await asyncio.sleep(local_wait_s)  # our own cooldown: no need to ask
                    continue
                settle, self._settle = self._settle, []
                try:
                    reply = await self.batch.acquire_rate(self.key, self.rpm, self.tpm, tokens, self.window_s, settle)
                except errors.JobsysError as exc:  # an outage (or a refusal): the item waits, never lost
                    self._settle = settle + self._settle
                    log.warning("shared rate limit %s waits for the database (%s)", self.key, exc.message)
                    await asyncio.sleep(retry_s)
                    retry_s = min(retry_s * 2, RETRY_MAX_S)
                    continue
                if reply.get("granted"):
                    self.granted += 1
                    self.granted_at.append(float(reply["at"]))
                    return SharedTicket(self._clock(), tokens, int(reply["grant_id"]))
                await asyncio.sleep(min(float(reply["wait_s"]), WAIT_MAX_S))  # the database said how long

    def settle(self, ticket: Ticket, actual_tokens: int | None) -> None:
        if actual_tokens is None or not isinstance(ticket, SharedTicket) or actual_tokens == ticket.tokens:
            return
        ticket.tokens = actual_tokens
        self._settle.append((ticket.grant_id, actual_tokens))

    async def close(self) -> None:
        for task in list(self._tells):
            task.cancel()
        await asyncio.gather(*self._tells, return_exceptions=True)
