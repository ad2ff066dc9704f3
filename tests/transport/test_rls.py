"""Migration 20261122000700 on real Postgres: a no-op without Supabase's schemas; with
their minimal shapes, the Realtime join rule (checked with Realtime's own query) and the
evidence bucket's policies, for anon, two workers, an operator, a user without a role and
the service role."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tests.support.postgres import Db
from tests.transport.conftest import REALTIME_MIGRATION
from tests.transport.realtime_double import realtime_can_read
from tests.transport.tokens import ANON, SERVICE, Identity, user

OPERATOR = user("operator", "operator")
WORKER_A = user("worker-a", "worker")
WORKER_B = user("worker-b", "worker")
NO_ROLE = user("nobody", None)
RUNNER = user("runner", "runner")
BUCKET = "jobsys-evidence"


def as_user(db_url: str, identity: Identity, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    """One transaction as PostgREST runs a request: SET LOCAL ROLE + request.jwt.claims."""
    with psycopg.connect(db_url) as conn:
        conn.execute(f"set local role {identity.db_role}")
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(identity.claims),))
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def register(db_url: str, identity: Identity, serial: str) -> str:
    [(reply,)] = as_user(db_url, identity, "select jobsys.register_worker(%s, 'pc', %s::jsonb)",
                         (identity.name, json.dumps([{"serial": serial}])))
    return str(reply["worker_id"])


def test_without_realtime_and_storage_the_migration_changes_nothing_else(db: Db) -> None:
    assert db.value("select to_regnamespace('realtime') is null and to_regnamespace('storage') is null")
    assert db.value("select count(*) from pg_policies where policyname like 'jobsys_%'") == 0
    assert db.value("select to_regprocedure('jobsys.may_receive(text)') is not null")


def test_the_migration_can_run_again(supabase_db: str, db: Db) -> None:
    policies = "select policyname from pg_policies where policyname like 'jobsys_%' order by 1"
    before = db.rows(policies)
    db.run(REALTIME_MIGRATION.read_text(encoding="utf-8"))
    assert db.rows(policies) == before and len(before) == 4
    assert db.rows(f"select public from storage.buckets where id = '{BUCKET}'") == [(False,)]


async def test_realtime_topics_are_readable_only_by_their_audience(supabase_db: str) -> None:
    worker_a, worker_b = register(supabase_db, WORKER_A, "a1"), register(supabase_db, WORKER_B, "b1")
    topic_a, topic_b = f"jobsys:worker:{worker_a}", f"jobsys:worker:{worker_b}"
    dashboard, runners = "jobsys:dashboard", "jobsys:runners"
    expected: list[tuple[Identity, str, bool]] = [
        (OPERATOR, dashboard, True), (OPERATOR, topic_a, False), (OPERATOR, "chat:lobby", False),
        (OPERATOR, runners, False),
        (RUNNER, runners, True), (RUNNER, dashboard, False), (RUNNER, topic_a, False),
        (WORKER_A, runners, False), (NO_ROLE, runners, False), (ANON, runners, False), (SERVICE, runners, True),
        (WORKER_A, topic_a, True), (WORKER_A, topic_b, False), (WORKER_A, dashboard, False),
        (WORKER_A, "jobsys:worker:not-a-uuid", False),
        (WORKER_B, topic_b, True), (WORKER_B, topic_a, False),
        (NO_ROLE, dashboard, False), (NO_ROLE, topic_a, False),
        (ANON, dashboard, False), (ANON, topic_a, False),
        (SERVICE, dashboard, True), (SERVICE, topic_a, True),  # service_role bypasses RLS
    ]
    async with await psycopg.AsyncConnection.connect(supabase_db) as conn:
        for identity, topic, may_read in expected:
            result = await realtime_can_read(conn, topic, identity.claims)
            assert result["broadcast"] is may_read, (identity.name, topic)
            if identity is not SERVICE:
                assert result["presence"] is False, (identity.name, topic)  # broadcast only


def test_the_database_broadcasts_privately_on_the_push_topics(supabase_db: str, db: Db) -> None:
    worker_a = register(supabase_db, WORKER_A, "a1")
    [(created,)] = as_user(supabase_db, OPERATOR, "select jobsys.create_job('https://example.com', 5, 'all_devices')")
    job_id = created["job"]["id"]
    rows = db.rows("select topic, event, private, payload ->> 'job_id' from realtime.messages"
                   " where extension = 'broadcast' order by inserted_at")
    assert ("jobsys:dashboard", "job_progress", True, job_id) in rows
    assert (f"jobsys:worker:{worker_a}", "assignment", True, job_id) in rows
    assert all(private for _, _, private, _ in rows)


def test_evidence_objects_follow_their_worker_session(supabase_db: str) -> None:
    worker_a, worker_b = register(supabase_db, WORKER_A, "a1"), register(supabase_db, WORKER_B, "b1")
    insert = "insert into storage.objects (bucket_id, name) values (%s, %s)"
    as_user(supabase_db, WORKER_A, insert, (BUCKET, f"{worker_a}/1-1.png"))
    as_user(supabase_db, WORKER_B, insert, (BUCKET, f"{worker_b}/2-1.png"))
    for identity, name in [(WORKER_A, f"{worker_b}/3-1.png"), (WORKER_A, "not-a-uuid/3-1.png"),
                           (OPERATOR, f"{worker_a}/3-1.png"), (NO_ROLE, f"{worker_a}/3-1.png")]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # new row violates row-level security
            as_user(supabase_db, identity, insert, (BUCKET, name))

    names = "select name from storage.objects where bucket_id = %s order by name"
    assert set(as_user(supabase_db, OPERATOR, names, (BUCKET,))) == {(f"{worker_a}/1-1.png",), (f"{worker_b}/2-1.png",)}
    assert as_user(supabase_db, WORKER_A, names, (BUCKET,)) == [(f"{worker_a}/1-1.png",)]
    assert as_user(supabase_db, ANON, names, (BUCKET,)) == []
    assert as_user(supabase_db, NO_ROLE, names, (BUCKET,)) == []

    delete = "delete from storage.objects where bucket_id = %s returning name"
    assert as_user(supabase_db, WORKER_A, delete, (BUCKET,)) == []  # workers never delete evidence
    assert len(as_user(supabase_db, OPERATOR, delete, (BUCKET,))) == 2
