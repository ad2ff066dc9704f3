"""Issue 23: the new-batch dialog shows the runners' shared rate limits of the model typed
(what list_batch_rate_limits knows from the runners' grants), in Korean and English, read
once the dialog is open (a slow read does not hold the dialog back)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest
from nicegui import ui
from nicegui.testing import User

from jobsys import rpc
from jobsys.batch.facade import BatchJobs
from jobsys.system import JobSystem
from tests.dashboard.test_background_dialog import open_dialog
from tests.support.pages import text_of
from tests.support.waiting import wait_until


async def test_the_dialog_shows_the_limits_of_the_model_typed(user: User, batch: BatchJobs) -> None:
    await batch.acquire_rate("gemini:gemini-2.5-flash", 30, 100_000, 10, 60.0)  # as a runner's first call does
    await open_dialog(user)
    assert text_of(user, "batch-rate-limits") == (
        "실행기 한도 (gemini-2.5-flash): 분당 요청 30회 · 분당 입력 토큰 100,000개")
    user.find(marker="batch-model").clear().type("gemini-2.5-pro")
    assert text_of(user, "batch-rate-limits") == "이 모델에 알려진 실행기 한도가 없습니다 (--rpm, --tpm)"
    user.find(marker="batch-model").clear().type("gemini-2.5-flash")
    user.find(marker="batch-mode-batch-api").click()
    assert text_of(user, "batch-rate-limits").endswith("(일괄 처리 요청은 이 한도에 포함되지 않습니다)")


async def test_without_any_limit_the_dialog_says_so_in_english(user: User) -> None:
    await open_dialog(user, language="en")
    assert text_of(user, "batch-rate-limits") == "No runner limit known for this model (--rpm, --tpm)"


class HeldLimits:
    """A transport double: list_batch_rate_limits waits until `release` is set, every other
    call goes through."""

    def __init__(self, call: Callable[..., Awaitable[Any]]) -> None:
        self._call = call
        self.asked = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, function: rpc.SqlFunction, args: Mapping[str, Any] | None = None) -> Any:
        if function == rpc.LIST_BATCH_RATE_LIMITS:
            self.asked.set()
            await self.release.wait()
        return await self._call(function, args)


async def test_the_dialog_opens_while_the_limits_are_still_being_read(
        user: User, batch: BatchJobs, jobs: JobSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    await batch.acquire_rate("gemini:gemini-2.5-flash", 30, None, 10, 60.0)
    held = HeldLimits(jobs.transport.call)
    monkeypatch.setattr(jobs.transport, "call", held)
    await open_dialog(user)
    await wait_until(held.asked.is_set, what="the limits asked for")
    # open with the read still held: the button does not wait for the database
    assert [d.props.get("aria-label") for d in user.find(ui.dialog).elements if d.value] == ["새 백그라운드 작업"]
    assert not held.release.is_set()
    assert text_of(user, "batch-rate-limits") == ""  # not "no limit known" while unknown
    held.release.set()
    await wait_until(lambda: text_of(user, "batch-rate-limits") == "실행기 한도 (gemini-2.5-flash): 분당 요청 30회",
                     what="the limits filled in")
