"""Helpers for page tests: log in through the login page, act as a worker. Finding
elements by marker is in tests/support/pages.py."""

from __future__ import annotations

from typing import Any

from nicegui.testing import User

from tests.dashboard.conftest import TOKEN


async def login(user: User, path: str = "/", language: str = "ko") -> None:
    """Open `path` as a browser preferring `language` would, logging in on the way."""
    user.http_client.headers["Accept-Language"] = language
    await user.open(path)
    await user.should_see(marker="token", retries=50)
    user.find(marker="token").type(TOKEN)
    user.find(marker="login").click()
    await user.should_see(marker="connected-count", retries=50)


async def finish_runs(
    jobs: Any, worker_id: Any, completed: int = 0, failed: int = 0, running: int = 0
) -> None:
    """Act as the worker: claim runs and complete, fail or just start them."""
    claimed = await jobs.claim_assignments(worker_id, limit=completed + failed + running)
    assert len(claimed) == completed + failed + running, claimed
    for index, run in enumerate(claimed):
        await jobs.start_assignment(run.assignment_id, run.attempt)
        if index < completed:
            await jobs.complete_assignment(run.assignment_id, run.attempt, {"elapsed_sec": 1})
        elif index < completed + failed:
            await jobs.fail_assignment(run.assignment_id, run.attempt, "screen locked")
