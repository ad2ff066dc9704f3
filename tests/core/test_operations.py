"""Issue 21: the audit log (every operator action, written by the function that performs it,
once, with its actor; never a secret), retention (only what is old and finished goes, a few
at a time, while jobs run) and the metrics snapshot."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from jobsys import IllegalTransition, InvalidInput
from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.support.postgres import Db
from tests.transport.tokens import user

URL = "https://example.com/ops"


def actions(db: Db) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in db.rows("select action, object_type from jobsys.audit_log order by id")]


async def test_every_operator_action_is_audited_once(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 2)
    job = (await jobs.create_job(target_url=URL, duration_sec=5)).job
    await jobs.pause_job(job.id)
    await jobs.resume_job(job.id)
    await jobs.rename_job(job.id, "renamed")
    await jobs.update_job(job.id, {"status": "paused"})  # the move's own entry, not a second one
    with pytest.raises(IllegalTransition):
        await jobs.pause_job(job.id)  # refused: no entry
    await jobs.cancel_job(job.id)
    clone = (await jobs.clone_job(job.id)).job
    await jobs.delete_job(clone.id)
    device = session.devices[0].id
    await jobs.set_device_labels(device, {"rack": "A"})
    await jobs.set_device_state(device, "draining")
    await jobs.set_device_state(device, "enabled")
    await jobs.set_device_state(device, "disabled")
    await jobs.set_device_state(device, "enabled")
    await jobs.request_device_reboot(device)
    await jobs.release_device(device)
    enrolled = await jobs.add_worker_account("pc-2")
    await jobs.revoke_worker_account("pc-2")
    with pytest.raises(InvalidInput):
        await jobs.set_device_labels(device, {"bad key": "x"})  # refused: no entry
    assert actions(db) == [
        ("create", "job"), ("pause", "job"), ("resume", "job"), ("rename", "job"), ("pause", "job"),
        ("cancel", "job"), ("clone", "job"), ("create", "job"), ("delete", "job"),
        ("label", "device"), ("drain", "device"), ("enable", "device"), ("disable", "device"),
        ("enable", "device"), ("reboot", "device"), ("release", "device"),
        ("add_pc", "worker_account"), ("revoke_pc", "worker_account")]
    page = await jobs.list_audit(object_type="job", object_id=str(clone.id))
    assert [e.action for e in page.entries] == ["delete", "create"]
    assert page.entries[0].detail["title"] == clone.title  # what was deleted is still named
    labelled = (await jobs.list_audit(object_type="device", limit=100)).entries[-1]
    assert labelled.detail == {"serial": session.devices[0].serial, "before": {}, "after": {"rack": "A"}}
    everything = json.dumps([r[0] for r in db.rows("select to_jsonb(a) from jobsys.audit_log a")])
    assert enrolled.token not in everything and "token" not in everything  # never a secret
    older = await jobs.list_audit(limit=5, before_id=(await jobs.list_audit(limit=5)).next_before_id)
    assert len(older.entries) == 5 and older.entries[0].id < (await jobs.list_audit(limit=5)).entries[-1].id


def test_the_actor_is_the_signed_in_operator(db: Db) -> None:
    operator = user("ops@example.com", "admin")
    claims = {**operator.claims, "email": "ops@example.com"}
    with psycopg.connect(db.url) as conn:
        conn.execute("set local role authenticated")
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        conn.execute("select jobsys.add_worker_account('pc-x', %s)", ("ab" * 32,))
    [(role, actor_id, name)] = db.rows("select actor_role, actor_id::text, actor_name from jobsys.audit_log")
    assert (role, actor_id, name) == ("admin", claims["sub"], "ops@example.com")


async def test_bad_audit_filters_are_refused(jobs: JobSystem) -> None:
    with pytest.raises(InvalidInput):
        await jobs.list_audit(object_type="planet")
    with pytest.raises(InvalidInput):
        await jobs.list_audit(limit=0)


async def test_retention_purges_only_old_finished_work_in_batches(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 1)
    for i in range(205):
        db.run("insert into jobsys.jobs (title, target_url, duration_sec, target_type, target_count, max_attempts,"
               " status, finished_at) values (%s, %s, 5, 'all_devices', 1, 3, 'completed', now() - interval '40 days')",
               (f"old {i}", URL))
    recent = (await jobs.create_job(target_url=URL, duration_sec=5)).job  # running: never purged
    db.run("update jobsys.jobs set created_at = now() - interval '60 days' where id = %s", (recent.id,))
    await jobs.claim_assignments(session.worker_id, start=True)
    await jobs.maintain(force=True)  # at most 200 a round
    assert db.value("select count(*) from jobsys.jobs where title like 'old %%'") == 5
    assert (await jobs.get_job(recent.id)).running_count == 1
    await jobs.maintain(force=True)  # at most once a minute
    assert db.value("select count(*) from jobsys.jobs where title like 'old %%'") == 5
    db.run("update jobsys.maintenance_state set last_purge_at = '-infinity'")
    db.setting("retention_days", 0)  # 0 keeps everything
    await jobs.maintain(force=True)
    assert db.value("select count(*) from jobsys.jobs where title like 'old %%'") == 5
    db.setting("retention_days", 30)
    db.run("update jobsys.maintenance_state set last_purge_at = '-infinity'")  # a minute later
    await jobs.maintain(force=True)
    assert db.value("select count(*) from jobsys.jobs where title like 'old %%'") == 0
    purges = db.rows("select detail, actor_role, actor_id from jobsys.audit_log where action = 'purge' order by id")
    assert [(p["jobs"], role, actor) for p, role, actor in purges] == [(200, "system", None), (5, "system", None)]
    assert db.counters_match() == []


async def test_existing_runs_names_the_runs_still_stored(jobs: JobSystem) -> None:
    session = await add_worker(jobs, "w1", 1)
    await jobs.create_job(target_url=URL, duration_sec=5)
    [run] = await jobs.claim_assignments(session.worker_id)
    assert await jobs.existing_runs([run.assignment_id, 999_999]) == {run.assignment_id}


async def test_metrics_snapshot_counts_jobs_runs_devices_and_vitals(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 3)
    await jobs.create_job(target_url=URL, duration_sec=5)
    [first, *_] = await jobs.claim_assignments(session.worker_id, start=True)
    await jobs.complete_assignment(first.assignment_id, first.attempt, {})
    snapshot: dict[str, Any] = await jobs.metrics_snapshot()
    assert snapshot["jobs"] == {"active": 1}
    assert snapshot["runs"] == {"queued": 0, "running": 2, "completed": 1, "failed": 0, "cancelled": 0}
    assert sorted((d["pc"], d["status"], d["n"]) for d in snapshot["devices"]) == [("w1", "busy", 2), ("w1", "idle", 1)]


# The REST edge -----------------------------------------------------------------------------------

def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_move_with_a_job_and_need_the_token(jobs: JobSystem, api: Any) -> None:
    import httpx

    from nicegui_app.api import create_api_app

    session = await add_worker(jobs, "w1", 2)
    await jobs.create_job(target_url=URL, duration_sec=5)
    before = samples((await api.get("/metrics")).text)
    assert before[("jobsys_runs", (("status", "queued"),))] == 2
    assert before[("jobsys_jobs", (("status", "active"),))] == 1
    assert before[("jobsys_devices", (("pc", "w1"), ("status", "idle")))] == 2
    for run in await jobs.claim_assignments(session.worker_id, start=True):
        await jobs.complete_assignment(run.assignment_id, run.attempt, {})
    after = samples((await api.get("/metrics")).text)
    assert after[("jobsys_runs", (("status", "completed"),))] == 2
    assert after[("jobsys_jobs", (("status", "completed"),))] == 1
    async with httpx.AsyncClient(transport=httpx.ASGITransport(create_api_app(jobs, "t" * 24)),
                                 base_url="http://api.test") as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 401
    async with httpx.AsyncClient(transport=httpx.ASGITransport(create_api_app(jobs, "t" * 24, metrics_public=True)),
                                 base_url="http://api.test") as scraper:
        public = await scraper.get("/metrics")
        assert public.status_code == 200 and public.headers["content-type"].startswith("text/plain")


async def test_audit_route_filters_and_refuses_bad_queries(jobs: JobSystem, api: Any) -> None:
    await add_worker(jobs, "w1", 1)
    job = (await jobs.create_job(target_url=URL, duration_sec=5)).job
    await jobs.cancel_job(job.id)
    page = (await api.get("/api/audit", params={"object_type": "job", "object_id": str(job.id)})).json()
    assert [e["action"] for e in page["entries"]] == ["cancel", "create"]
    assert page["entries"][0]["actor_role"] == "service"
    for bad in ({"object_type": "planet"}, {"limit": 0}, {"since": "yesterday"}):
        response = await api.get("/api/audit", params=bad)
        assert response.status_code == 422, bad


async def test_ai_batches_are_audited_and_viewers_read_them(jobs: JobSystem) -> None:
    from jobsys.batch.facade import BatchJobs
    from jobsys.operator_accounts import token_digest

    batch = await BatchJobs.of(jobs).create_job(template="Summarise: {text}", items=[{"text": "a"}])
    await BatchJobs.of(jobs).cancel_job(batch.id)
    entries = (await jobs.list_audit(object_type="background_job")).entries
    assert [e.action for e in entries] == ["cancel", "create"] and entries[1].detail["items"] == 1
    viewer = await jobs.add_operator_account("vera", "viewer")
    as_viewer = BatchJobs.of((await jobs.operator_session(token_digest(viewer.token))).jobs)
    assert (await as_viewer.get_job(batch.id)).id == batch.id


async def test_retention_counts_fractions_of_a_day_and_purges_old_batches(jobs: JobSystem, db: Db) -> None:
    from jobsys.batch.facade import BatchJobs

    batch = BatchJobs.of(jobs)
    old = await batch.create_job(template="Summarise: {text}", items=[{"text": "a"}])
    fresh = await batch.create_job(template="Summarise: {text}", items=[{"text": "b"}])
    for created in (old, fresh):
        await batch.cancel_job(created.id)
    db.run("update jobsys.background_jobs set completed_at = now() - interval '20 hours' where id = %s", (old.id,))
    db.run("update jobsys.background_jobs set completed_at = now() - interval '2 hours' where id = %s", (fresh.id,))
    db.setting("retention_days", 0.5)  # 12 hours, not 0 days
    await jobs.maintain(force=True)
    left = {r[0] for r in db.rows("select id from jobsys.background_jobs")}
    assert left == {fresh.id}
