"""A viewer (read-only account) sees no write buttons: no new job, no selection or bulk bar, no
pause / cancel / delete / run again on a row or in its panel (exports stay), no PC add or
revoke, no device actions, and a line saying the account is view-only. An operator still
has the job buttons; an admin (the API token) the PC and device ones. The server refuses
these calls anyway (test_api_roles.py); this is about not offering them."""

from __future__ import annotations

from typing import AsyncIterator

import pytest
from nicegui.testing import User

from jobsys.auth import Credentials
from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.dashboard.pages import login
from tests.dashboard.supabase_mode import OPERATOR, SupabaseDashboard, log_in, simulated_user, supabase_dashboard
from tests.support.pages import element

SUPABASE_VIEWER = Credentials("reader@example.test", "reader-pw")

JOB_WRITES = ("new-job", "bulk-bar", "select-all", "job-select", "pause", "resume", "cancel-job", "delete",
              "run-again")


async def _log_in_as(user: User, token: str, path: str = "/") -> None:
    user.http_client.headers["Accept-Language"] = "ko"
    await user.open(path)
    await user.should_see(marker="token", retries=50)
    user.find(marker="token").type(token)
    user.find(marker="login").click()
    await user.should_see(marker="connected-count", retries=50)


async def test_a_viewer_is_offered_no_write_action(user: User, jobs: JobSystem, dashboard: object) -> None:
    await add_worker(jobs, "w1", 2)
    await jobs.add_worker_account("pc-lobby")
    paused = (await jobs.create_job(target_url="https://example.com/a", duration_sec=5,
                                    target_type="device_count", target_value=1)).job
    await jobs.pause_job(paused.id)  # a paused job offers resume, cancel, delete and run again
    device = (await jobs.list_devices()).devices[0]
    viewer = await jobs.add_operator_account("vera", "viewer")

    await _log_in_as(user, viewer.token)
    await user.should_see(marker=f"job-{paused.id}", retries=50)
    await user.should_see(marker="read-only")
    for marker in JOB_WRITES:
        await user.should_not_see(marker=marker)
    await user.should_see(marker="export")  # reading stays
    user.find(marker="open-panel").click()
    await user.should_see(marker="panel-export-csv", retries=50)
    for marker in ("panel-pause", "panel-resume", "panel-cancel", "panel-delete", "panel-run-again"):
        await user.should_not_see(marker=marker)

    await user.open("/pcs")
    await user.should_see("pc-lobby", retries=50)
    await user.should_not_see(marker="pc-add")
    await user.should_not_see(marker="pc-revoke")

    await user.open(f"/devices/{device.id}")
    await user.should_see(marker="device-detail-serial", retries=50)
    await user.should_not_see(marker="device-actions")


async def test_an_operator_runs_jobs_but_does_not_manage_pcs(user: User, jobs: JobSystem,
                                                              dashboard: object) -> None:
    await add_worker(jobs, "w1", 1)
    await jobs.add_worker_account("pc-lobby")
    paused = (await jobs.create_job(target_url="https://example.com/a", duration_sec=5)).job
    await jobs.pause_job(paused.id)
    operator = await jobs.add_operator_account("otto", "operator")

    await _log_in_as(user, operator.token)
    await user.should_see(marker=f"job-{paused.id}", retries=50)
    await user.should_not_see(marker="read-only")
    for marker in ("new-job", "bulk-bar", "resume", "cancel-job", "delete", "run-again"):
        await user.should_see(marker=marker)
    await user.open("/pcs")
    await user.should_see("pc-lobby", retries=50)
    await user.should_not_see(marker="pc-add")


async def test_the_api_token_is_the_admin(user: User, jobs: JobSystem, dashboard: object) -> None:
    await add_worker(jobs, "w1", 1)
    await jobs.add_worker_account("pc-lobby")
    device = (await jobs.list_devices()).devices[0]
    await login(user, "/pcs")
    await user.should_see(marker="pc-revoke", retries=50)
    assert element(user, "pc-add").enabled
    await user.open(f"/devices/{device.id}")
    await user.should_see(marker="device-actions", retries=50)


# Supabase mode: the role comes from the operator's JWT (app_metadata.jobsys_role).
@pytest.fixture
async def supabase(db_url: str) -> AsyncIterator[SupabaseDashboard]:
    async with supabase_dashboard(db_url) as started:
        started.auth.add(SUPABASE_VIEWER.email, SUPABASE_VIEWER.password, "viewer")
        yield started


@pytest.fixture
async def supabase_user(supabase: SupabaseDashboard, caplog: pytest.LogCaptureFixture) -> AsyncIterator[User]:
    async with simulated_user(caplog) as simulated:
        yield simulated


@pytest.mark.parametrize(("account", "writes"), [(SUPABASE_VIEWER, False), (OPERATOR, True)])
async def test_supabase_roles_decide_the_job_buttons(supabase_user: User, account: Credentials,
                                                     writes: bool) -> None:
    await log_in(supabase_user, account)
    await supabase_user.should_see(marker="job-list", retries=50)
    if writes:
        await supabase_user.should_see(marker="new-job")
        await supabase_user.should_not_see(marker="read-only")
    else:
        await supabase_user.should_not_see(marker="new-job")
        await supabase_user.should_see(marker="read-only")
