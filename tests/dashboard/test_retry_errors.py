"""A refused retry of a device job says why in the reader's language: nothing failed, or the
job's time limit has passed (clone it) — not "a job that is active cannot be retried"."""

from __future__ import annotations

import pytest

from jobsys import IllegalTransition
from jobsys.system import JobSystem
from nicegui_app.i18n import Translator
from nicegui_app.server_errors import error_text
from tests.core.helpers import add_worker

KO, EN = Translator("ko"), Translator("en")


async def test_retry_with_nothing_failed_says_so(jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 1)
    created = await jobs.create_job(target_url="https://example.com/retry", duration_sec=5)
    with pytest.raises(IllegalTransition) as refused:
        await jobs.retry_job(created.job.id)
    assert refused.value.details["reason"] == "nothing_failed"
    assert error_text(KO, refused.value) == "다시 시도할 실패한 실행이 없습니다"
    assert error_text(EN, refused.value) == "No run of this job failed: there is nothing to retry"


def test_retry_after_the_time_limit_points_to_run_again() -> None:
    timed_out = IllegalTransition("the job's time limit has passed: run it again as a new job (clone)",
                                  {"status": "incomplete", "transition": "retry", "reason": "timed_out"})
    assert "다시 실행" in error_text(KO, timed_out)
    assert "Run again" in error_text(EN, timed_out)
