"""Bad input at the library edge and at the SQL functions: a clear typed error, nothing stored."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from jobsys import InvalidInput, JobsysError, NotFound
from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.support.postgres import Db

GOOD: dict[str, Any] = {"target_url": "https://example.com/page", "duration_sec": 30}

BAD_CREATES: list[tuple[str, dict[str, Any]]] = [
    ("ftp scheme", {"target_url": "ftp://example.com"}),
    ("javascript scheme", {"target_url": "javascript:alert(1)"}),
    ("no host", {"target_url": "https://"}),
    ("space in url", {"target_url": "https://exa mple.com"}),
    ("newline in url", {"target_url": "https://example.com/\nx"}),
    ("url too long", {"target_url": "https://example.com/" + "a" * 2040}),
    ("empty url", {"target_url": ""}),
    ("duration zero", {"duration_sec": 0}),
    ("duration too long", {"duration_sec": 86401}),
    ("duration as text", {"duration_sec": "30"}),
    ("duration float", {"duration_sec": 1.5}),
    ("percentage zero", {"target_type": "percentage", "target_value": 0}),
    ("percentage 101", {"target_type": "percentage", "target_value": 101}),
    ("percentage missing", {"target_type": "percentage"}),
    ("count zero", {"target_type": "device_count", "target_value": 0}),
    ("count too big", {"target_type": "device_count", "target_value": 100001}),
    ("value with all out of range", {"target_type": "all_devices", "target_value": 101}),
    ("timeout zero", {"timeout_sec": 0}),
    ("timeout over a week", {"timeout_sec": 604801}),
    ("grace negative", {"topup_grace_sec": -1}),
    ("grace over a day", {"topup_grace_sec": 86401}),
    ("unknown target", {"target_type": "some_devices"}),
    ("title too long", {"title": "t" * 201}),
    ("title control char", {"title": "bad\x00title"}),
    ("unknown action", {"action": "like_video"}),
    ("counter smuggled in", {"completed_count": 5}),
    ("status smuggled in", {"status": "completed"}),
]


@pytest.mark.parametrize("case, change", BAD_CREATES, ids=[c for c, _ in BAD_CREATES])
async def test_create_rejects_bad_input_and_stores_nothing(
        jobs: JobSystem, db: Db, case: str, change: dict[str, Any]) -> None:
    await add_worker(jobs, "w1", 2)
    before = db.dump()
    with pytest.raises(InvalidInput) as info:
        await jobs.create_job(**{**GOOD, **change})
    assert info.value.message  # says what is wrong
    assert db.dump() == before


SQL_BAD_CREATES = [
    ("select jobsys.create_job('ftp://x.org', 5, 'all_devices')", "JS400"),
    ("select jobsys.create_job('https://x.org', 0, 'all_devices')", "JS400"),
    ("select jobsys.create_job('https://x.org', 5, 'percentage', 0)", "JS400"),
    ("select jobsys.create_job('https://x.org', 5, 'device_count', 100001)", "JS400"),
    ("select jobsys.create_job('https://x.org', 5, 'all_devices', null, repeat('t', 201))", "JS400"),
    ("select jobsys.create_job('https://x.org''; drop table jobsys.jobs; --', 5, 'all_devices')", "JS400"),
    ("select jobsys.create_job('https://x.org', 5, 'all_devices', null, null, 'tap')", "JS400"),
    ("select jobsys.create_job('https://x.org', 5, 'all_devices', p_priority => 11)", "JS400"),
    ("select jobsys.create_job('https://x.org', 5, 'all_devices', p_priority => null)", "JS400"),
    ("select jobsys.pause_job('00000000-0000-0000-0000-000000000000')", "JS404"),
    ("select jobsys.pause_job('not-a-uuid')", "22P02"),
    ("select jobsys.complete_assignment(123456, 1)", "JS404"),
    ("select jobsys.fail_assignment(123456, 1, '')", "JS400"),
    ("select jobsys.register_worker('', '')", "JS400"),
    ("select jobsys.register_worker('w', '', '[{\"serial\": 5}]')", "JS400"),
    ("select jobsys.register_worker('w', '', '{\"serial\": \"x\"}')", "JS400"),
    ("select jobsys.register_worker('w', '', '[{\"serial\": \"x\", \"state\": \"happy\"}]')", "JS400"),
    ("select jobsys.list_jobs('running')", "JS400"),
    ("select jobsys.list_jobs(null, null, 0)", "JS400"),
]


@pytest.mark.parametrize("statement, sqlstate", SQL_BAD_CREATES)
def test_sql_functions_reject_bad_input(db: Db, statement: str, sqlstate: str) -> None:
    before = db.dump()
    with pytest.raises(psycopg.Error) as info:
        db.run(statement)
    assert info.value.sqlstate == sqlstate
    assert info.value.diag.message_primary
    assert db.dump() == before


async def test_malformed_ids_are_invalid_input_not_crashes(jobs: JobSystem) -> None:
    with pytest.raises(InvalidInput):
        await jobs.get_job("not-a-uuid")
    with pytest.raises(NotFound):
        await jobs.get_job("00000000-0000-0000-0000-000000000000")


async def test_errors_carry_code_message_details(jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 1)
    created = await jobs.create_job(**GOOD)
    await jobs.cancel_job(created.job.id)
    with pytest.raises(JobsysError) as info:
        await jobs.pause_job(created.job.id)
    body = info.value.as_dict()
    assert body["code"] == "conflict"
    assert "cancelled" in body["message"]
    assert body["details"]["status"] == "cancelled"


DIRECT_JOB_WRITES = [
    ("bad url", "target_url = 'ftp://example.com'"),
    ("empty title", "title = ''"),
    ("title too long", "title = repeat('x', 201)"),
    ("duration zero", "duration_sec = 0"),
    ("percentage 101", "target_type = 'percentage', target_value = 101"),
    ("all_devices with a value", "target_value = 5"),
    ("max_attempts zero", "max_attempts = 0"),
    ("unknown action", "action = 'tap'"),
]


COLUMNS = "title, action, target_url, duration_sec, target_type, target_value, target_count, max_attempts"


@pytest.mark.parametrize("name,assignment", DIRECT_JOB_WRITES, ids=[n for n, _ in DIRECT_JOB_WRITES])
async def test_job_rows_keep_their_bounds_even_written_directly(
    jobs: JobSystem, db: Db, name: str, assignment: str
) -> None:
    """Writes that bypass the functions (the service role, a migration) meet the same
    bounds in the table: an update or an insert breaking one fails with 23514."""
    await add_worker(jobs, "w1", 1)
    job = (await jobs.create_job(**GOOD)).job
    before = db.dump()
    with pytest.raises(psycopg.errors.CheckViolation, match="jobs_input_check"):
        db.run(f"update jobsys.jobs set {assignment} where id = %s", (job.id,))
    with pytest.raises(psycopg.errors.CheckViolation, match="jobs_input_check"):
        # A copy of the good row with the bad value, inserted: one transaction, so the
        # scratch table goes with the failed insert.
        db.run(f"""do $$ begin
            create temp table bad_copy on commit drop as
              select {COLUMNS} from jobsys.jobs where id = '{job.id}';
            update bad_copy set {assignment};
            insert into jobsys.jobs ({COLUMNS}) select {COLUMNS} from bad_copy;
          end $$""")
    assert db.dump() == before
