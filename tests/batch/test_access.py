"""Who may do what, as PostgREST would call it (role + JWT claims)."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from tests.core.test_access import OPERATOR, WORKER_A, as_user
from tests.support.postgres import Db

RUNNER = {"sub": str(uuid.uuid4()), "role": "authenticated", "app_metadata": {"jobsys_role": "runner"}}
CREATE = ("select jobsys.create_background_job('{\"template\": \"Summarise {text}\", \"model\": \"m\"}', "
          "'[{\"text\": \"a\"}]')")


def test_operators_manage_batches_runners_run_them_anon_does_nothing(db: Db) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_user(db, "anon", None, CREATE)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_user(db, "anon", None, "select * from jobsys.background_jobs")
    with pytest.raises(psycopg.Error) as info:
        as_user(db, "authenticated", WORKER_A, CREATE)
    assert info.value.sqlstate == "JS403"

    [(job,)] = as_user(db, "authenticated", OPERATOR, CREATE)
    assert as_user(db, "authenticated", OPERATOR, "select count(*) from jobsys.background_job_items") == [(1,)]
    with pytest.raises(psycopg.Error) as info:
        as_user(db, "authenticated", OPERATOR, "select jobsys.claim_background_job('op')")
    assert info.value.sqlstate == "JS403"  # claiming is for runners

    assert as_user(db, "authenticated", WORKER_A, "select count(*) from jobsys.background_jobs") == [(0,)]
    with pytest.raises(psycopg.Error) as info:  # a device worker is no runner (issue 16, defect 3)
        as_user(db, "authenticated", WORKER_A, "select jobsys.claim_background_job('runner-1')")
    assert info.value.sqlstate == "JS403"
    [(claimed,)] = as_user(db, "authenticated", RUNNER, "select jobsys.claim_background_job('runner-1')")
    assert claimed["id"] == job["id"]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_user(db, "authenticated", RUNNER, "update jobsys.background_job_items set status = 'completed'")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):  # helpers are not callable from outside
        as_user(db, "authenticated", OPERATOR,
                f"select jobsys.apply_background_counts('{job['id']}', 0, 5, 0, 0)")
    other = {"sub": str(uuid.uuid4()), "role": "authenticated", "app_metadata": {}}
    with pytest.raises(psycopg.Error) as info:
        as_user(db, "authenticated", other, f"select jobsys.get_background_job('{job['id']}')")
    assert info.value.sqlstate == "JS403"
    assert json.dumps(claimed)  # a plain JSON answer, as PostgREST returns it
