"""Baselines: the original plan's AI batch loops (spec section 8), re-implemented as written.

- `sequential`: its first version, one item after another
  (`for (const item of items) results.push(await generate(item))`): 50 items x 12 s = 10 min.
- `lockstep`: its proposal, batches of 5 run with `Promise.all`, and a 1 s sleep between
  batches (`await new Promise(r => setTimeout(r, 1000))`): a batch lasts as long as its
  slowest call, and nothing starts while the others of the batch are still out.

Both call the same Provider object as jobsys (the same latency per prompt), so the only
difference is the scheduling. They are given the generous version: no database writes, no
progress polling, no sleep after the last batch. The plan described no per-item retry,
so neither retries (`asyncio.gather` rejects on the first failure, as `Promise.all` does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from jobsys.batch.providers.base import Completion, Provider, Request

BATCH_SIZE = 5
SLEEP_BETWEEN_BATCHES_S = 1.0  # model seconds; the caller scales it with the latencies


async def sequential(provider: Provider, requests: Sequence[Request]) -> list[Completion]:
    return [await provider.generate(request) for request in requests]


async def lockstep(provider: Provider, requests: Sequence[Request], *, batch_size: int = BATCH_SIZE,
                   sleep_s: float = SLEEP_BETWEEN_BATCHES_S) -> list[Completion]:
    results: list[Completion] = []
    for start in range(0, len(requests), batch_size):
        if start:
            await asyncio.sleep(sleep_s)  # the plan's pause between batches
        batch = requests[start:start + batch_size]
        results.extend(await asyncio.gather(*(provider.generate(r) for r in batch)))  # Promise.all
    return results
