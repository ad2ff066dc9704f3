"""When the role cannot be checked (the database briefly unreachable while a page loads), an
operator keeps the role last found for the same login: the job buttons stay and no read-only
line appears; a viewer keeps the line that says why nothing can be changed."""

from __future__ import annotations

import pytest
from nicegui.testing import User

from jobsys import errors
from jobsys.system import JobSystem
from tests.dashboard.test_pages_viewer import _log_in_as


def _unreachable(monkeypatch: pytest.MonkeyPatch, jobs: JobSystem) -> None:
    async def operator_session(account: object) -> object:
        raise errors.TransportError("database unreachable")

    monkeypatch.setattr(jobs, "operator_session", operator_session)


async def test_an_operator_keeps_the_last_known_role_when_it_cannot_be_checked(
        user: User, jobs: JobSystem, dashboard: object, monkeypatch: pytest.MonkeyPatch) -> None:
    operator = await jobs.add_operator_account("otto", "operator")
    await _log_in_as(user, operator.token)
    await user.should_see(marker="new-job", retries=50)

    _unreachable(monkeypatch, jobs)
    await user.open("/")
    await user.should_see(marker="new-job", retries=50)
    await user.should_not_see(marker="read-only")


async def test_a_viewer_keeps_the_read_only_line_when_the_role_cannot_be_checked(
        user: User, jobs: JobSystem, dashboard: object, monkeypatch: pytest.MonkeyPatch) -> None:
    viewer = await jobs.add_operator_account("vera", "viewer")
    await _log_in_as(user, viewer.token)
    await user.should_see(marker="read-only", retries=50)

    _unreachable(monkeypatch, jobs)
    await user.open("/")
    await user.should_see(marker="read-only", retries=50)
    await user.should_not_see(marker="new-job")
