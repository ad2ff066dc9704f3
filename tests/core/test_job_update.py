"""Issue 16, defect 5: a PATCH that fails writes nothing. The whole body is validated before
any change, and the status move and the title edit are one SQL function (jobsys.update_job),
so they commit together or not at all."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest

from jobsys import errors
from jobsys.models import JobUpdate
from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.core.test_access import OPERATOR, WORKER_A, as_user
from tests.support.postgres import Db

REGISTER = "select jobsys.register_worker('w', 'h', '[{\"serial\": \"p1\"}]')"


async def new_job(jobs: JobSystem) -> str:
    await add_worker(jobs, "w1", 2)
    created = await jobs.create_job(target_url="https://example.com/", duration_sec=30)
    return str(created.job.id)


def raw_patch(api: httpx.AsyncClient, job_id: str, body: str) -> Any:
    """Sent as typed: json.dumps would refuse to write a lone surrogate escape."""
    return api.patch(f"/api/jobs/{job_id}", content=body.encode(),
                     headers={"content-type": "application/json"})


@pytest.mark.parametrize("body", [
    '{"status": "cancelled", "title": "\\ud800"}',          # the reported case: lone surrogate
    '{"status": "cancelled", "title": "ok \\udfff end"}',
    '{"status": "paused", "title": "' + "t" * 201 + '"}',   # the same bounds as create
    '{"status": "cancelled", "title": "bell\\u0007"}',
    '{"status": "cancelled", "title": "   "}',
])
async def test_a_refused_patch_changes_nothing(
    api: httpx.AsyncClient, jobs: JobSystem, db: Db, body: str
) -> None:
    job_id = await new_job(jobs)
    before = db.dump()
    response = await raw_patch(api, job_id, body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"
    assert db.dump() == before
    assert (await jobs.get_job(job_id)).status.value == "active"


async def test_a_patch_moves_status_and_title_together(api: httpx.AsyncClient, jobs: JobSystem) -> None:
    job_id = await new_job(jobs)
    response = await api.patch(f"/api/jobs/{job_id}", json={"status": "paused", "title": "  renamed  "})
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["title"]) == ("paused", "renamed")
    response = await api.patch(f"/api/jobs/{job_id}", json={"status": "active"})
    assert (response.json()["status"], response.json()["title"]) == ("active", "renamed")
    response = await api.patch(f"/api/jobs/{job_id}", json={"title": "only the title"})
    assert (response.json()["status"], response.json()["title"]) == ("active", "only the title")


async def test_an_illegal_move_keeps_the_old_title_too(
    api: httpx.AsyncClient, jobs: JobSystem, db: Db
) -> None:
    job_id = await new_job(jobs)
    before = db.dump()
    response = await api.patch(f"/api/jobs/{job_id}", json={"status": "active", "title": "new name"})
    assert response.status_code == 409  # resuming a job that is not paused
    assert db.dump() == before


async def test_the_facade_is_one_transaction_even_past_the_model(jobs: JobSystem, db: Db) -> None:
    """A caller that skips the model (model_construct) meets the same bounds in SQL, and the
    status move it asked for does not happen either."""
    job_id = await new_job(jobs)
    before = db.dump()
    unchecked = JobUpdate.model_construct(status="cancelled", title="t" * 201)
    with pytest.raises(errors.InvalidInput):
        await jobs.update_job(job_id, unchecked)
    assert db.dump() == before
    job = await jobs.update_job(job_id, {"status": "cancelled", "title": "done"})
    assert (job.status.value, job.title) == ("cancelled", "done")


def test_update_job_in_sql_is_atomic_and_for_operators(db: Db) -> None:
    as_user(db, "authenticated", WORKER_A, REGISTER)
    [(created,)] = as_user(db, "authenticated", OPERATOR,
                           "select jobsys.create_job('https://example.com', 5, 'all_devices')")
    job_id = created["job"]["id"]
    before = db.dump()
    for args, state in [
        ("p_status => 'cancelled', p_title => ''", "JS400"),
        ("p_status => 'cancelled', p_title => repeat('t', 201)", "JS400"),
        ("p_status => 'completed'", "JS400"),
        ("", "JS400"),  # nothing to change
        ("p_status => 'active', p_title => 'x'", "JS409"),
    ]:
        with pytest.raises(psycopg.Error) as info:
            as_user(db, "authenticated", OPERATOR,
                    f"select jobsys.update_job('{job_id}', {args})".replace(", )", ")"))
        assert info.value.sqlstate == state, args
        assert db.dump() == before, args
    with pytest.raises(psycopg.Error) as info:
        as_user(db, "authenticated", WORKER_A,
                f"select jobsys.update_job('{job_id}', p_status => 'cancelled')")
    assert info.value.sqlstate == "JS403"
    [(job,)] = as_user(db, "authenticated", OPERATOR,
                       f"select jobsys.update_job('{job_id}', p_status => 'paused', p_title => ' both ')")
    assert (job["status"], job["title"]) == ("paused", "both")
