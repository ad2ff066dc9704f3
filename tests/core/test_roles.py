"""Issue 21: named operator accounts with roles in embedded mode. A viewer reads only, an
operator also runs jobs, an admin also manages devices, PCs and accounts; every call made
with an account's token runs with its claims, so the SQL's own role checks decide. Tokens are
stored as digests; a revoked token is refused at once; the audit log names the account."""

from __future__ import annotations

import httpx
import pytest

from jobsys import Forbidden, InvalidInput, errors
from jobsys.operator_accounts import StaffRole, token_digest
from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.support.postgres import Db

URL = "https://example.com/roles"


async def test_each_role_does_what_it_may_and_nothing_more(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 2)
    viewer = await jobs.add_operator_account("vera", "viewer")
    operator = await jobs.add_operator_account("omar", StaffRole.OPERATOR)
    admin = await jobs.add_operator_account("ada", "admin")
    as_viewer = (await jobs.operator_session(token_digest(viewer.token))).jobs
    as_operator = (await jobs.operator_session(token_digest(operator.token))).jobs
    as_admin = (await jobs.operator_session(token_digest(admin.token))).jobs
    device = session.devices[0].id

    job = (await as_operator.create_job(target_url=URL, duration_sec=5)).job
    assert (await as_viewer.get_job(job.id)).id == job.id and (await as_viewer.list_devices()).summary.total == 2
    with pytest.raises(Forbidden):
        await as_viewer.create_job(target_url=URL, duration_sec=5)
    with pytest.raises(Forbidden):
        await as_viewer.pause_job(job.id)
    with pytest.raises(Forbidden):
        await as_operator.set_device_state(device, "disabled")
    with pytest.raises(Forbidden):
        await as_operator.add_worker_account("pc-9")
    with pytest.raises(Forbidden):
        await as_operator.list_audit()
    with pytest.raises(Forbidden):
        await as_operator.add_operator_account("eve", "admin")  # no one makes themselves admin
    await as_admin.set_device_state(device, "disabled")
    await as_admin.add_operator_account("vic", "viewer")
    entries = (await as_admin.list_audit(limit=3)).entries
    assert [(e.action, e.actor_role, e.actor_name) for e in entries[:2]] == [
        ("add_account", "admin", "ada"), ("disable", "admin", "ada")]
    assert db.value("select count(*) from jobsys.operator_accounts where token_hash = %s",
                    (token_digest(viewer.token),)) == 1
    assert db.value("select count(*) from jobsys.operator_accounts where token_hash = %s", (viewer.token,)) == 0


async def test_a_revoked_account_is_refused_at_once(jobs: JobSystem) -> None:
    enrolled = await jobs.add_operator_account("omar", "operator")
    as_operator = (await jobs.operator_session(token_digest(enrolled.token))).jobs
    await as_operator.list_jobs()
    revoked = await jobs.revoke_operator_account("omar")
    assert revoked.revoked_at is not None
    with pytest.raises(errors.Unauthorized):
        await as_operator.list_jobs()
    with pytest.raises(errors.Unauthorized):
        await jobs.operator_session(token_digest(enrolled.token))
    listed = await jobs.list_operator_accounts(include_revoked=True)
    assert [(a.name, a.revoked_at is not None) for a in listed.accounts] == [("omar", True)]
    assert (await jobs.add_operator_account("omar", "viewer")).account.role is StaffRole.VIEWER  # the name is free


async def test_bad_account_input_is_refused_with_nothing_stored(jobs: JobSystem, db: Db) -> None:
    await jobs.add_operator_account("omar", "operator")
    before = db.dump()
    for name, role in (("", "viewer"), ("a\nb", "viewer"), ("x" * 65, "viewer"), ("ok", "root")):
        with pytest.raises(InvalidInput):
            await jobs.add_operator_account(name, role)
    with pytest.raises(errors.IllegalTransition):
        await jobs.add_operator_account("omar", "admin")
    with pytest.raises(errors.NotFound):
        await jobs.revoke_operator_account("nobody")
    assert db.dump() == before


async def test_the_api_takes_an_account_token_with_its_role(jobs: JobSystem, api: httpx.AsyncClient) -> None:
    from nicegui_app.api import create_api_app

    await add_worker(jobs, "w1", 1)
    viewer = await jobs.add_operator_account("vera", "viewer")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(create_api_app(jobs, "t" * 24)),
                                 base_url="http://api.test",
                                 headers={"Authorization": f"Bearer {viewer.token}"}) as as_viewer:
        assert (await as_viewer.get("/api/jobs")).status_code == 200
        assert (await as_viewer.get("/metrics")).status_code == 200
        refused = await as_viewer.post("/api/jobs", json={"target_url": URL, "duration_sec": 5})
        assert refused.status_code == 403 and refused.json()["error"]["code"]
        await jobs.revoke_operator_account("vera")
        gone = await as_viewer.get("/api/jobs")
        assert gone.status_code == 401 and "revoked" in gone.json()["error"]["message"]
        forged = await as_viewer.get("/api/jobs", headers={"Authorization": "Bearer jso_not-a-token"})
        assert forged.status_code == 401
