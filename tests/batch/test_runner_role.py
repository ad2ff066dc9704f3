"""Issue 16, defect 3: AI batch runners have their own role. A device worker can neither run
background jobs nor read them, and a runner's report must name the provider the job asked for.

Claims are set the way PostgREST sets them (SET LOCAL ROLE + request.jwt.claims)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest

from jobsys import errors
from jobsys.auth import JobsysRole
from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import ItemResult
from tests.batch.conftest import dump_batch_tables
from tests.core.test_access import OPERATOR, WORKER_A, as_user
from tests.support.postgres import Db

RUNNER = {"sub": str(uuid.uuid4()), "role": "authenticated", "app_metadata": {"jobsys_role": "runner"}}
SERVICE = {"role": "service_role"}


def create(provider: str = "auto") -> str:
    payload = json.dumps({"template": "Summarise {text}", "model": "m", "provider": provider})
    return f"select jobsys.create_background_job('{payload}', '[{{\"text\": \"a\"}}, {{\"text\": \"b\"}}]')"


def claim_items(job_id: str, token: str) -> str:
    return f"select idx from jobsys.claim_background_items('{job_id}', '{token}', 10)"


def sqlstate(db: Db, role: str, claims: dict[str, Any] | None, statement: str) -> str | None:
    try:
        as_user(db, role, claims, statement)
    except psycopg.Error as exc:
        return exc.sqlstate
    return None


def test_a_device_worker_cannot_act_as_the_batch_runner(db: Db) -> None:
    [(job,)] = as_user(db, "authenticated", OPERATOR, create("offline"))
    [(held,)] = as_user(db, "authenticated", RUNNER, "select jobsys.claim_background_job('runner-1')")
    token = held["lease_token"]
    before = dump_batch_tables(db)

    # every runner function refuses the worker role, with or without a lease token in hand
    for statement in (
        "select jobsys.claim_background_job('worker-as-runner')",
        f"select * from jobsys.claim_background_items('{job['id']}', '{token}', 10)",
        f"select jobsys.report_background_items('{job['id']}', '{token}', "
        "'[{\"idx\": 0, \"status\": \"completed\", \"output\": \"x\", \"provider\": \"offline\"}]')",
        f"select jobsys.renew_background_leases('worker-as-runner', array['{token}']::uuid[])",
        f"select jobsys.finish_background_job('{job['id']}', '{token}', 'stop')",
        f"select jobsys.release_background_job('{job['id']}', '{token}')",
    ):
        assert sqlstate(db, "authenticated", WORKER_A, statement) == "JS403", statement
    assert dump_batch_tables(db) == before

    # templates and inputs stay hidden from workers through RLS
    for table in ("background_jobs", "background_job_items", "background_job_logs"):
        assert as_user(db, "authenticated", WORKER_A, f"select count(*) from jobsys.{table}") == [(0,)], table


def test_the_runner_role_runs_batches_and_reads_what_it_runs(db: Db) -> None:
    [(job,)] = as_user(db, "authenticated", OPERATOR, create())
    [(held,)] = as_user(db, "authenticated", RUNNER, "select jobsys.claim_background_job('runner-1')")
    assert held["id"] == job["id"]
    token = held["lease_token"]
    claimed = as_user(db, "authenticated", RUNNER,
                      f"select idx from jobsys.claim_background_items('{job['id']}', '{token}', 10)")
    assert claimed == [(0,), (1,)]
    [(reply,)] = as_user(db, "authenticated", RUNNER, (
        f"select jobsys.report_background_items('{job['id']}', '{token}', "
        "'[{\"idx\": 0, \"status\": \"completed\", \"output\": \"a\", \"provider\": \"gemini\"}, "
        "{\"idx\": 1, \"status\": \"completed\", \"output\": \"b\", \"provider\": \"offline\"}]')"))
    assert reply["applied"] == 2 and reply["job"]["status"] == "completed"

    # what it runs is readable to it; the logs and the device tables are not
    assert as_user(db, "authenticated", RUNNER, "select count(*) from jobsys.background_jobs") == [(1,)]
    assert as_user(db, "authenticated", RUNNER, "select count(*) from jobsys.background_job_items") == [(2,)]
    assert as_user(db, "authenticated", RUNNER, "select count(*) from jobsys.background_job_logs") == [(0,)]
    assert as_user(db, "authenticated", RUNNER, "select count(*) from jobsys.jobs") == [(0,)]

    # a runner is no operator and no worker
    assert sqlstate(db, "authenticated", RUNNER, create()) == "JS403"
    get = f"select jobsys.get_background_job('{job['id']}')"
    assert sqlstate(db, "authenticated", RUNNER, get) == "JS403"
    assert sqlstate(db, "authenticated", RUNNER, "select jobsys.register_worker('r', 'h', '[]')") == "JS403"
    assert sqlstate(db, "authenticated", RUNNER, "select jobsys.maintain()") == "JS403"

    # the service role (embedded mode: the runner connects as the database owner) still runs them
    as_user(db, "authenticated", OPERATOR, create())
    [(served,)] = as_user(db, "service_role", SERVICE, "select jobsys.claim_background_job('embedded')")
    assert served is not None and served["status"] == "running"


@pytest.mark.parametrize(("asked", "named"), [
    ("offline", "gemini"),   # the defect: offline job, output labelled as model text
    ("gemini", "offline"),   # placeholder text where the job asked for the model
    ("auto", "openai"),      # auto means gemini or offline, nothing else
    ("offline", 7),          # not even a name
])
def test_a_report_must_name_the_provider_the_job_asked_for(db: Db, asked: str, named: object) -> None:
    as_user(db, "authenticated", OPERATOR, create(asked))
    [(held,)] = as_user(db, "authenticated", RUNNER, "select jobsys.claim_background_job('runner-1')")
    job_id, token = held["id"], held["lease_token"]
    as_user(db, "authenticated", RUNNER, claim_items(job_id, token))
    before = dump_batch_tables(db)
    results = json.dumps([{"idx": 0, "status": "completed", "output": "ok",
                            "provider": "offline" if asked == "auto" else asked},
                          {"idx": 1, "status": "completed", "output": "labelled wrongly", "provider": named}])
    with pytest.raises(psycopg.Error) as info:
        as_user(db, "authenticated", RUNNER,
                f"select jobsys.report_background_items('{job_id}', '{token}', '{results}')")
    assert info.value.sqlstate == "JS400"
    assert "provider" in str(info.value)
    assert dump_batch_tables(db) == before  # nothing stored, not even the good result


def test_an_unnamed_provider_is_recorded_as_the_one_the_job_asked_for(db: Db) -> None:
    as_user(db, "authenticated", OPERATOR, create("offline"))
    [(held,)] = as_user(db, "authenticated", RUNNER, "select jobsys.claim_background_job('runner-1')")
    job_id, token = held["id"], held["lease_token"]
    as_user(db, "authenticated", RUNNER, claim_items(job_id, token))
    [(reply,)] = as_user(db, "authenticated", RUNNER, (
        f"select jobsys.report_background_items('{job_id}', '{token}', "
        "'[{\"idx\": 0, \"status\": \"completed\", \"output\": \"x\"}, "
        "{\"idx\": 1, \"status\": \"failed\", \"error\": \"blocked\", \"provider\": null}]')"))
    assert reply["applied"] == 2 and reply["job"]["offline"] is True
    assert db.rows("select idx, provider from jobsys.background_job_items order by idx") == [
        (0, "offline"), (1, "offline")]


async def test_the_library_raises_invalid_input_for_a_wrong_provider(batch: BatchJobs, db: Db) -> None:
    job = await batch.create_job(template="Summarise {text}", items=[{"text": "a"}], provider="offline")
    held = await batch.claim_job("runner-1")
    assert held is not None and held.id == job.id
    await batch.claim_items(job.id, held.lease_token, 10)
    before = dump_batch_tables(db)
    with pytest.raises(errors.InvalidInput):
        await batch.report(job.id, held.lease_token,
                           [ItemResult(idx=0, status="completed", output="x", provider="gemini")])
    assert dump_batch_tables(db) == before


def test_runner_is_a_jobsys_role_of_its_own() -> None:
    assert JobsysRole("runner") is JobsysRole.RUNNER
    assert {r.value for r in JobsysRole} >= {"operator", "worker", "runner"}
