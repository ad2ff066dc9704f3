"""Token prices and cost estimates of AI batches.

The price table lives here, in code, dated: list prices in USD per million tokens, per model
and per mode ("standard": one call per item; "batch_api": Gemini's Batch API, half price).
Thinking tokens are billed as output tokens. The Gemini prices are Google's published list
prices for prompts up to 200k tokens as quoted in March 2026 (ai.google.dev pricing page);
they were not re-checked against a live account here. A deployment with other prices (a
newer list, a contract, its own vLLM server) points JOBSYS_BATCH_PRICES at a JSON file:
{"as_of": "2026-12-01", "models": {"my-model": {"standard": [input, output], ...}}}, which
replaces the built-in table.

A model matches the longest table entry it starts with ("gemini-2.5-flash-lite-preview"
gets "gemini-2.5-flash-lite"); a model with no entry has no cost (None), never a guess.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

from jobsys.batch import template as templates
from jobsys.batch.models import BatchCreate, CostEstimate, TokenUsage

ENV_PRICES = "JOBSYS_BATCH_PRICES"
PRICES_AS_OF = "2026-03"
STANDARD = "standard"
BATCH_API = "batch_api"
TOKENS_PER_PRICE = 1_000_000
CHARS_PER_TOKEN = 4  # the estimate's heuristic: about four characters of text per token
OUTPUT_TOKENS_GUESS = 400  # per item, when the batch sets no max_output_tokens


@dataclasses.dataclass(frozen=True)
class Price:
    input_usd: float  # per million input tokens
    output_usd: float  # per million output tokens (thinking included)


def _both_modes(input_usd: float, output_usd: float) -> dict[str, Price]:
    return {STANDARD: Price(input_usd, output_usd), BATCH_API: Price(input_usd / 2, output_usd / 2)}


BUILT_IN: dict[str, dict[str, Price]] = {
    "gemini-2.5-pro": _both_modes(1.25, 10.00),
    "gemini-2.5-flash": _both_modes(0.30, 2.50),
    "gemini-2.5-flash-lite": _both_modes(0.10, 0.40),
    "gemini-2.0-flash": _both_modes(0.10, 0.40),
    "gemini-2.0-flash-lite": _both_modes(0.075, 0.30),
}


@functools.lru_cache(maxsize=1)
def price_table() -> tuple[str, dict[str, dict[str, Price]]]:
    """(as_of, table): the built-in one, or JOBSYS_BATCH_PRICES's file."""
    path = os.environ.get(ENV_PRICES)
    if not path:
        return PRICES_AS_OF, BUILT_IN
    with open(path, encoding="utf-8") as file:
        raw: dict[str, Any] = json.load(file)
    table = {model: {mode: Price(float(p[0]), float(p[1])) for mode, p in modes.items()}
             for model, modes in raw["models"].items()}
    return str(raw.get("as_of", "unknown")), table


def price_for(model: str, mode: str = STANDARD) -> tuple[str, Price] | None:
    _, table = price_table()
    matches = [name for name in table if model == name or model.startswith(name + "-")]
    if not matches:
        return None
    name = max(matches, key=len)
    price = table[name].get(mode)
    return (name, price) if price is not None else None


def usd(price: Price, tokens_in: int, tokens_out: int) -> float:
    return (tokens_in * price.input_usd + tokens_out * price.output_usd) / TOKENS_PER_PRICE


def job_cost(model: str, usage: TokenUsage, mode: str = STANDARD) -> CostEstimate:
    as_of, _ = price_table()
    found = price_for(model, mode)
    if found is None:
        return CostEstimate(usd=None, retry_usd=None, priced_model=None, prices_as_of=as_of, mode=mode)
    name, price = found
    return CostEstimate(
        usd=usd(price, usage.input, usage.output + usage.thinking),
        retry_usd=usd(price, usage.retry_input, usage.retry_output + usage.retry_thinking),
        priced_model=name, prices_as_of=as_of, mode=mode)


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Before submitting: tokens and cost of one attempt per item (retries not included)."""

    input_tokens: int
    output_tokens: int
    usd: float | None
    priced_model: str | None
    prices_as_of: str


def estimate(spec: BatchCreate, mode: str | None = None) -> Estimate:
    """Heuristic, no API call: input = (rendered prompt + system instruction) characters / 4 per
    item; output = max_output_tokens per item if set (an upper bound), else 400. Thinking
    models spend more output than that; the estimate says so in the docs, not in the number."""
    system_chars = len(spec.system_instruction or "")
    chars = sum(len(templates.render(spec.template, item)) + system_chars for item in spec.items)
    tokens_in = chars // CHARS_PER_TOKEN + len(spec.items)
    tokens_out = (spec.max_output_tokens or OUTPUT_TOKENS_GUESS) * len(spec.items)
    as_of, _ = price_table()
    found = price_for(spec.model, mode or spec.mode.value)
    return Estimate(input_tokens=tokens_in, output_tokens=tokens_out,
                    usd=usd(found[1], tokens_in, tokens_out) if found else None,
                    priced_model=found[0] if found else None, prices_as_of=as_of)
