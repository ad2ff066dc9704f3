"""The audit page (issue 21): admins read who did what, newest first, in their language,
filtered by object; anyone else is told that only admins may read it."""

from __future__ import annotations

from nicegui.testing import User

from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.dashboard.pages import login


async def test_the_log_lists_actions_newest_first_and_filters_by_object(
        user: User, jobs: JobSystem, dashboard: object) -> None:
    session = await add_worker(jobs, "w1", 1)
    job = (await jobs.create_job(target_url="https://example.com/audited", duration_sec=5)).job
    await jobs.cancel_job(job.id)
    await jobs.set_device_state(session.devices[0].id, "disabled")
    await login(user, "/audit")  # the API token: the service, allowed
    await user.should_see("감사 로그")
    await user.should_see("취소")
    await user.should_see("비활성화")
    await user.should_see("API 토큰")
    entries = user.find(marker="audit-entries")
    assert len(entries.elements) == 1
    select = next(iter(user.find(marker="audit-object").elements))
    select.set_value("device")  # as choosing 기기 in the list does
    await user.should_not_see("취소", retries=20)
    await user.should_see("비활성화")
    await user.should_see(marker="audit-object")  # still on the audit page


async def test_a_viewer_is_told_only_admins_may_read_it(user: User, jobs: JobSystem, dashboard: object) -> None:
    viewer = await jobs.add_operator_account("vera", "viewer")
    user.http_client.headers["Accept-Language"] = "en"
    await user.open("/audit")
    user.find(marker="token").type(viewer.token)
    user.find(marker="login").click()
    await user.should_see("Only admins may read the audit log", retries=20)
