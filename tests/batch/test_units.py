"""Pure pieces: templates, the create model, the limiter's arithmetic, retry timing."""

from __future__ import annotations

import asyncio
import random

import pytest

from jobsys.batch import template
from jobsys.batch.examples import EXAMPLES
from jobsys.batch.limiter import RateLimiter, Ticket
from jobsys.batch.models import BatchCreate
from jobsys.batch.providers.base import CallFailure, FailureKind
from jobsys.batch.retry import RetryPolicy


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_templates_render_plain_fields_and_literal_braces() -> None:
    assert template.placeholders("Reply to {review} for {product}; {{json}} {review}") == ["review", "product"]
    assert template.render("{a} {{b}} {c}", {"a": "x", "c": None}) == "x {b} "
    assert template.render("{n} {t}", {"n": 1.5, "t": True}) == "1.5 true"


def test_examples_are_valid_and_preview_the_first_prompt() -> None:
    for example in EXAMPLES:
        spec = BatchCreate(template=example.template, items=list(example.sample_items),
                           system_instruction=example.system_instruction)
        assert "{" not in spec.preview().replace("{{", "")
    assert "in the voice" not in " ".join(e.template for e in EXAMPLES).lower()


def test_payload_carries_only_what_was_given() -> None:
    spec = BatchCreate(template="Summarise {text}", items=[{"text": "a"}], temperature=0.0)
    assert spec.payload() == {"template": "Summarise {text}", "model": "gemini-2.5-flash", "provider": "auto",
                              "temperature": 0.0}


def test_rpm_is_a_sliding_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=3, window_s=60.0, clock=clock)
    for _ in range(3):
        limiter._started.append(Ticket(clock.now, 0))
        clock.now += 10
    assert limiter._wait_s(clock.now, 0) == pytest.approx(30.0)  # the first call leaves the window at 160
    clock.now = 160.0
    assert limiter._wait_s(clock.now, 0) <= 0


async def test_tpm_waits_for_enough_tokens_to_leave_the_window_and_settle_corrects_estimates() -> None:
    clock = FakeClock()
    limiter = RateLimiter(tpm=100, window_s=60.0, clock=clock)
    first = await limiter.acquire(60)
    clock.now += 5
    await limiter.acquire(30)
    assert limiter._wait_s(clock.now, 20) == pytest.approx(55.0)  # needs the first call's 60 back
    limiter.settle(first, 10)  # it used far fewer than estimated
    assert limiter._wait_s(clock.now, 20) <= 0
    clock.now += 100
    assert limiter._wait_s(clock.now, 500) <= 0  # a call larger than the budget runs alone


def test_one_cooldown_grows_and_never_shrinks() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    assert limiter.cool_down(5.0) is True  # starts: log it
    clock.now += 1
    assert limiter.cool_down(2.0) is False  # inside the first: not a new cooldown, no shorter end
    assert limiter.blocked_until_s == pytest.approx(105.0)
    assert limiter.cool_down(10.0) is False
    assert limiter.blocked_until_s == pytest.approx(111.0) and len(limiter.cooldowns) == 1
    assert limiter._wait_s(clock.now, 0) == pytest.approx(10.0)


async def test_waiters_are_served_in_arrival_order() -> None:
    limiter = RateLimiter(rpm=2, window_s=0.05)
    order: list[int] = []

    async def call(i: int) -> None:
        await limiter.acquire()
        order.append(i)

    await asyncio.gather(*(call(i) for i in range(6)))
    assert order == list(range(6)) and limiter.granted == 6


def test_backoff_is_full_jitter_under_a_doubling_cap() -> None:
    policy = RetryPolicy(backoff_base_s=1.0, backoff_max_s=8.0)
    rng = random.Random(1)
    for failures, cap in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        draws = [policy.backoff_s(failures, rng) for _ in range(200)]
        assert 0.0 <= min(draws) and max(draws) <= cap and max(draws) > cap / 2


def test_cooldown_honours_the_server_then_falls_back_to_doubling() -> None:
    policy = RetryPolicy(cooldown_default_s=2.0, cooldown_max_s=60.0)
    rng = random.Random(1)
    assert policy.cooldown_s(CallFailure(FailureKind.RATE_LIMITED, "429", 37.0), 1, rng) == 37.0
    assert policy.cooldown_s(CallFailure(FailureKind.RATE_LIMITED, "429", 600.0), 1, rng) == 60.0
    assert 2.0 <= policy.cooldown_s(CallFailure(FailureKind.RATE_LIMITED, "429"), 2, rng) <= 4.0
