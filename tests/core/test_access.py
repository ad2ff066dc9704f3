"""Row level security and function authorization as the migration sets them, checked by
switching role and JWT claims the way PostgREST does."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest

from tests.support.postgres import Db

OPERATOR = {"sub": str(uuid.uuid4()), "role": "authenticated", "app_metadata": {"jobsys_role": "operator"}}
WORKER_A = {"sub": str(uuid.uuid4()), "role": "authenticated", "app_metadata": {"jobsys_role": "worker"}}
WORKER_B = {"sub": str(uuid.uuid4()), "role": "authenticated", "app_metadata": {"jobsys_role": "worker"}}


def as_user(db: Db, role: str, claims: dict[str, Any] | None, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db.url) as conn:  # one transaction: SET LOCAL like PostgREST
        conn.execute(f"set local role {role}")
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims or {}),))
        return conn.execute(statement).fetchall()


def register(db: Db, claims: dict[str, Any], name: str, serial: str) -> str:
    [(reply,)] = as_user(db, "authenticated", claims,
                         f"select jobsys.register_worker('{name}', 'h', '[{{\"serial\": \"{serial}\"}}]')")
    return str(reply["worker_id"])


def test_roles_see_and_do_only_what_they_may(db: Db) -> None:
    worker_a = register(db, WORKER_A, "a", "phone-a")
    register(db, WORKER_B, "b", "phone-b")
    [(created,)] = as_user(db, "authenticated", OPERATOR,
                           "select jobsys.create_job('https://example.com', 5, 'all_devices')")
    job_id = created["job"]["id"]
    assert created["assigned"] == 2

    # anon: reads nothing, calls nothing
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_user(db, "anon", None, "select * from jobsys.jobs")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_user(db, "anon", None, "select jobsys.create_job('https://example.com', 5, 'all_devices')")

    # operator: reads jobs and every device
    assert as_user(db, "authenticated", OPERATOR, "select count(*) from jobsys.jobs") == [(1,)]
    assert as_user(db, "authenticated", OPERATOR, "select count(*) from jobsys.devices") == [(2,)]

    # worker A: its own device and assignment only; no jobs; cannot act as B or as operator
    assert as_user(db, "authenticated", WORKER_A, "select serial from jobsys.devices") == [("phone-a",)]
    assert as_user(db, "authenticated", WORKER_A, "select count(*) from jobsys.job_assignments") == [(1,)]
    assert as_user(db, "authenticated", WORKER_A, "select count(*) from jobsys.jobs") == [(0,)]
    with pytest.raises(psycopg.Error) as info:
        as_user(db, "authenticated", WORKER_B, f"select * from jobsys.claim_assignments('{worker_a}')")
    assert info.value.sqlstate == "JS403"
    with pytest.raises(psycopg.Error) as info:
        as_user(db, "authenticated", WORKER_A, f"select jobsys.pause_job('{job_id}')")
    assert info.value.sqlstate == "JS403"
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_user(db, "authenticated", WORKER_A, "update jobsys.job_assignments set status = 'completed'")
    claimed = as_user(db, "authenticated", WORKER_A, f"select serial from jobsys.claim_assignments('{worker_a}')")
    assert claimed == [("phone-a",)]

    # an operator cannot impersonate a worker session
    with pytest.raises(psycopg.Error) as info:
        as_user(db, "authenticated", OPERATOR, f"select jobsys.heartbeat('{worker_a}')")
    assert info.value.sqlstate == "JS403"

    # the service role does everything
    assert as_user(db, "service_role", {"role": "service_role"}, "select count(*) from jobsys.jobs") == [(1,)]
