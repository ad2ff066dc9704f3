"""Issue 16: the access matrix. Every caller (anon, two workers, a runner, an operator, a
signed-in user with no jobsys role, the service role) against every function the library
calls (jobsys.rpc.ALL) and every jobsys table, on the real SQL, with claims set the way
PostgREST sets them (SET LOCAL ROLE + request.jwt.claims, one transaction per request).

A function call is judged only "forbidden" (JS403, or 42501 insufficient privilege) or "not
forbidden": an allowed call may still fail for its own reasons (a stale run, an illegal
move). Every call is rolled back, so each cell sees the same database. A table read is judged
by the exact rows the caller sees through row level security.

The expectations are tables keyed by name, and their keys must equal the functions in
jobsys.rpc and the tables in the jobsys schema: a new function or table fails here, by name,
until its row is written."""

from __future__ import annotations

import json
from typing import Any, Iterator

import psycopg
import pytest
from psycopg import sql

from jobsys import rpc
from tests.support.postgres import Db
from tests.transport.tokens import ANON, SERVICE, Identity, user

WORKER_A = user("worker-a", "worker")
WORKER_B = user("worker-b", "worker")
RUNNER = user("runner", "runner")
OPERATOR = user("operator", "operator")
VIEWER = user("viewer", "viewer")
ADMIN = user("admin", "admin")
NO_ROLE = user("nobody", None)
ROLES: dict[str, Identity] = {
    "anon": ANON, "worker_a": WORKER_A, "worker_b": WORKER_B, "runner": RUNNER, "viewer": VIEWER,
    "operator": OPERATOR, "admin": ADMIN, "no_role": NO_ROLE, "service": SERVICE,
}
FORBIDDEN = {"JS403", "42501"}

# Who may call what. The worker-session rows are called with worker B's session (and B's
# running assignment), so worker A calling them is acting as another worker.
READERS = frozenset({"viewer", "operator", "admin", "service"})  # staff: the reads
OPERATORS = frozenset({"operator", "admin", "service"})  # jobs and AI batches
ADMINS = frozenset({"admin", "service"})  # devices, PCs, accounts, the audit log
SESSION_OWNER = frozenset({"worker_b", "service"})
ANY_WORKER = frozenset({"worker_a", "worker_b", "service"})
UPKEEP = frozenset({"viewer", "operator", "admin", "worker_a", "worker_b", "service"})
RUNNERS = frozenset({"runner", "service"})

CALLS: dict[str, frozenset[str]] = {
    # device jobs: operators
    "create_job": OPERATORS, "pause_job": OPERATORS, "resume_job": OPERATORS, "cancel_job": OPERATORS,
    "delete_job": OPERATORS, "retry_job": OPERATORS, "clone_job": OPERATORS,
    "update_job_title": OPERATORS, "update_job": OPERATORS,
    "list_jobs": READERS, "get_job": READERS, "list_devices": READERS,
    # devices: admins; their reads: staff
    "release_device": ADMINS, "set_device_state": ADMINS, "set_device_labels": ADMINS,
    "request_device_reboot": ADMINS, "get_device": READERS, "fleet_labels": READERS,
    "list_devices_page": READERS, "device_groups": READERS,  # devices at scale (issue 20)
    # worker accounts (the hub's PCs): admins; the hub's own token lookup: the service alone
    "add_worker_account": ADMINS, "list_worker_accounts": READERS, "revoke_worker_account": ADMINS,
    "hub_claims": frozenset({"service"}),
    # operator accounts (embedded mode): admins; the dashboard's own token lookup: the service alone
    "add_operator_account": ADMINS, "list_operator_accounts": ADMINS, "revoke_operator_account": ADMINS,
    "operator_claims": frozenset({"service"}),
    # operations: operators
    "list_audit": ADMINS, "metrics_snapshot": READERS, "existing_runs": OPERATORS,
    # readiness probes: anyone, signed in or not
    "schema_version": frozenset(ROLES),
    # device jobs: workers, each only as itself
    "register_worker": ANY_WORKER,
    "heartbeat": SESSION_OWNER, "stop_worker": SESSION_OWNER, "worker_devices": SESSION_OWNER,
    "device_rebooted": SESSION_OWNER,
    "claim_assignments": SESSION_OWNER, "start_assignment": SESSION_OWNER,
    "complete_assignment": SESSION_OWNER, "fail_assignment": SESSION_OWNER,
    "release_assignment": SESSION_OWNER, "finish_assignments": SESSION_OWNER,
    # upkeep: anyone with device business
    "rescue_expired_leases": UPKEEP, "mark_stale": UPKEEP, "maintain": UPKEEP,
    # background jobs: operators
    "create_background_job": OPERATORS, "cancel_background_job": OPERATORS,
    "retry_background_job": OPERATORS, "list_background_jobs": READERS, "get_background_job": READERS,
    "list_background_job_logs": READERS, "list_background_job_items": READERS,
    # background jobs: runners only (not workers)
    "claim_background_job": RUNNERS, "claim_background_items": RUNNERS, "report_background_items": RUNNERS,
    "renew_background_leases": RUNNERS, "finish_background_job": RUNNERS, "release_background_job": RUNNERS,
    "claim_runnable_background_job": RUNNERS,
    "acquire_batch_rate": RUNNERS, "cool_down_batch_rate": RUNNERS,
    "set_background_provider_batch": RUNNERS,
    "list_batch_rate_limits": READERS,  # the runners' shared limits, for the new-batch dialog
}

# Which rows each caller reads. "all", "none", "own" (the worker's own sessions, their devices
# and those devices' assignments), or "denied" (no table privilege at all).
ALL_ROWS = {"anon": "denied", "worker_a": "none", "worker_b": "none", "runner": "none", "viewer": "all",
            "operator": "all", "admin": "all", "no_role": "none", "service": "all"}
OWN_ROWS = ALL_ROWS | {"worker_a": "own", "worker_b": "own"}
RUNNER_ROWS = ALL_ROWS | {"runner": "all"}
NOBODY = ALL_ROWS | {"viewer": "none", "operator": "none", "admin": "none"}
ADMIN_ROWS = NOBODY | {"admin": "all"}
READS: dict[str, dict[str, str]] = {
    "settings": ALL_ROWS,
    "maintenance_state": NOBODY,  # bookkeeping of maintain(); read by nobody but the service
    "workers": OWN_ROWS,
    "devices": OWN_ROWS,
    "jobs": ALL_ROWS,
    "job_assignments": OWN_ROWS,
    "job_run_counts": ALL_ROWS,  # the run counters of claims and finishes: as the jobs
    "job_progress_marks": NOBODY,  # the job_progress throttle's bookkeeping
    "background_jobs": RUNNER_ROWS,       # templates: operators, and the runners that run them
    "background_job_items": RUNNER_ROWS,  # inputs and outputs: the same
    "background_job_logs": ALL_ROWS,
    "worker_accounts": ALL_ROWS,  # without the token digest: READ_COLUMNS
    "device_events": ALL_ROWS,  # a device's history: operators
    "device_vitals": ALL_ROWS,
    "background_runners": NOBODY,  # what each runner can run: read by the functions only
    "batch_rate_limits": NOBODY, "batch_rate_grants": NOBODY,  # the runners' shared rate limit
    "audit_log": ADMIN_ROWS,  # who did what: admins
    "operator_accounts": {role: "denied" for role in ROLES} | {"service": "all"},  # through the functions only
}
# Tables whose readers see some columns only; the rest is the service's.
READ_COLUMNS = {"worker_accounts": "id, name, created_at, last_seen_at, revoked_at"}
# Which rows are a worker's own, as a filter over the table (alias t) for the session's user.
OWN_FILTER = {
    "workers": "t.user_id = %(sub)s",
    "devices": "t.worker_id in (select w.id from jobsys.workers w where w.user_id = %(sub)s)",
    "job_assignments": """t.device_id in (select d.id from jobsys.devices d join jobsys.workers w
                                          on w.id = d.worker_id where w.user_id = %(sub)s)""",
}


class World:
    """What the calls name: two worker sessions with a phone each, a job running on both, a
    background job held by a runner and one still pending."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.session_a = self.register(WORKER_A, "phone-a")
        self.session_b = self.register(WORKER_B, "phone-b")
        # A device's history (device_events, device_vitals): a spare phone disabled, a reading.
        self.call(WORKER_A, "select jobsys.heartbeat(%s, %s::jsonb)", (self.session_a, json.dumps(
            [{"serial": "phone-a"}, {"serial": "phone-spare", "state": "offline", "vitals": {"battery_pct": 80}}])))
        [(spare,)] = self.call(SERVICE, "select id from jobsys.devices where serial = 'phone-spare'")
        self.call(ADMIN, "select jobsys.set_device_state(%s, 'disabled')", (spare,))
        [(created,)] = self.call(OPERATOR,
                                 "select jobsys.create_job('https://example.com/', 30, 'all_devices')")
        self.job = created["job"]["id"]
        self.call(WORKER_A, f"select * from jobsys.claim_assignments('{self.session_a}', p_start => true)")
        [(run,)] = self.call(WORKER_B, "select to_jsonb(c) from jobsys.claim_assignments("
                                       f"'{self.session_b}', p_start => true) c")
        self.assignment_b, self.attempt_b = run["assignment_id"], run["attempt"]
        self.device_b = run["device_id"]
        create = ("select jobsys.create_background_job("
                  "'{\"template\": \"Summarise {text}\", \"model\": \"m\"}', "
                  "'[{\"text\": \"a\"}, {\"text\": \"b\"}]')")
        self.call(OPERATOR, create)
        self.call(OPERATOR, create)
        [(held,)] = self.call(RUNNER, "select jobsys.claim_background_job('matrix-runner')")
        self.batch_job, self.lease_token = held["id"], held["lease_token"]
        self.call(SERVICE, "insert into jobsys.background_runners (runner_id, providers) "
                           "values ('matrix-runner', '{offline}') returning 1")
        self.call(RUNNER, "select jobsys.acquire_batch_rate('gemini-2.5-flash', 60, null, 10)")
        self.call(SERVICE, "select jobsys.add_worker_account('matrix-pc', %s)", ("ab" * 32,))
        self.call(SERVICE, "select jobsys.add_operator_account('matrix-viewer', 'viewer', %s)", ("ef" * 32,))

    def call(self, who: Identity, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db.url) as conn:
            conn.execute(sql.SQL("set local role {}").format(sql.Identifier(who.db_role)))
            conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(who.claims),))
            return conn.execute(statement, params).fetchall()

    def register(self, who: Identity, serial: str) -> str:
        [(reply,)] = self.call(who, "select jobsys.register_worker(%s, 'pc', %s::jsonb)",
                               (who.name, json.dumps([{"serial": serial}])))
        return str(reply["worker_id"])

    def arguments(self, fn: rpc.SqlFunction) -> dict[str, Any]:
        """Well-formed arguments naming things that exist, so a refusal is about who calls."""
        batch = fn in rpc.BATCH
        known: dict[str, Any] = {
            "p_job_id": self.batch_job if batch else self.job,
            "p_worker_id": self.session_b,
            "p_assignment_id": self.assignment_b, "p_attempt": self.attempt_b,
            "p_device_id": self.device_b, "p_device_ids": None, "p_state": "disabled",
            "p_lease_token": self.lease_token, "p_lease_tokens": [self.lease_token],
            "p_runner_id": "matrix-runner", "p_name": "matrix-pc", "p_hostname": "h",
            "p_devices": json.dumps([{"serial": "phone-matrix"}]), "p_running": [self.assignment_b],
            "p_target_url": "https://example.com/", "p_duration_sec": 5, "p_target_type": "all_devices",
            "p_target_value": None, "p_title": "matrix", "p_action": "open_url",
            "p_max_attempts": None, "p_timeout_sec": None, "p_topup_grace_sec": None,
            "p_start_at": None, "p_device_labels": None, "p_priority": 0, "p_actor": None, "p_object_type": None,
            "p_object_id": None, "p_since": None, "p_ids": [self.assignment_b], "p_labels": json.dumps({"rack": "A"}),
            "p_status": "paused" if fn.name == "update_job" else None, "p_q": None,
            "p_limit": 10, "p_offset": 0, "p_before_id": None, "p_start": False, "p_force": True,
            "p_result": json.dumps({}), "p_error": "matrix", "p_retry": False, "p_reason": "matrix",
            "p_reports": json.dumps([{"assignment_id": self.assignment_b, "attempt": self.attempt_b,
                                      "outcome": "completed", "result": {}}]),
            "p_payload": json.dumps({"template": "Summarise {text}", "model": "m"}),
            "p_items": json.dumps([{"text": "a"}]), "p_concurrency": 1, "p_max_retries": 0,
            "p_type": "ai_batch",
            "p_results": json.dumps([{"idx": 0, "status": "completed", "output": "x",
                                      "provider": "offline"}]),
            "p_logs": json.dumps([]),
            "p_providers": ["offline"],
            "p_key": "gemini-2.5-flash", "p_rpm": 60, "p_tpm": None, "p_tokens": 10, "p_window_sec": 60.0,
            "p_settle": json.dumps([]), "p_seconds": 1.0,
            "p_batch": json.dumps({"name": "batches/matrix", "state": "queued"}),
            "p_token_hash": "cd" * 32, "p_role": "viewer", "p_include_revoked": True, "p_meta": json.dumps({"push": "polling"}),
            "p_pc": None, "p_after": None, "p_with_counts": True,  # list_devices_page
            "p_sort": "-created", "p_statuses": ["pending", "running"],  # list_background_jobs
        }
        missing = [p for p in fn.params if p not in known]
        assert not missing, f"{fn.name}: give the matrix a value for {missing}"
        return {p: known[p] for p in fn.params}

    def outcome(self, who: Identity, fn: rpc.SqlFunction) -> str:
        """'forbidden' or 'allowed' (which includes failing for any other reason)."""
        args = self.arguments(fn)
        call = sql.SQL("{}.{}({})").format(
            sql.Identifier(rpc.SCHEMA), sql.Identifier(fn.name),
            sql.SQL(", ").join(sql.SQL("{} => {}::{}").format(sql.Identifier(p), sql.Placeholder(p),
                                                              sql.SQL(fn.params[p])) for p in args))
        statement = sql.SQL("select * from {}" if fn.returns_set else "select {}").format(call)
        with psycopg.connect(self.db.url) as conn:
            try:
                with conn.transaction(force_rollback=True):
                    conn.execute(sql.SQL("set local role {}").format(sql.Identifier(who.db_role)))
                    conn.execute("select set_config('request.jwt.claims', %s, true)",
                                 (json.dumps(who.claims),))
                    conn.execute(statement, args)
            except psycopg.Error as exc:
                return "forbidden" if exc.sqlstate in FORBIDDEN else "allowed"
        return "allowed"

    def rows(self, who: Identity | None, table: str, where: str = "true", params: Any = None) -> set[str]:
        """The rows of a table as `who` sees them (None: the database owner, past RLS)."""
        query = sql.SQL("select to_jsonb(t)::text from (select " + READ_COLUMNS.get(table, "*")
                        + " from jobsys.{}) t where " + where).format(sql.Identifier(table))
        if who is None:
            return {r[0] for r in self.db.rows(query, params)}
        return {r[0] for r in self.call(who, query, params)}


@pytest.fixture
def world(db: Db) -> World:
    return World(db)


@pytest.fixture(scope="module")
def sizes() -> Iterator[dict[str, int]]:
    checked = {"calls": 0, "reads": 0}
    yield checked
    print(f"\naccess matrix: {len(ROLES)} callers x {len(rpc.ALL)} functions = {checked['calls']} calls, "
          f"{len(READS)} tables x {len(ROLES)} callers = {checked['reads']} reads checked")


def test_every_function_and_table_has_its_row(db: Db) -> None:
    functions = {fn.name for fn in rpc.ALL}
    missing, extra = sorted(functions - set(CALLS)), sorted(set(CALLS) - functions)
    assert not missing, f"functions in jobsys.rpc without a row in CALLS: {missing}"
    assert not extra, f"rows in CALLS for functions jobsys.rpc does not have: {extra}"
    tables = {r[0] for r in db.rows(
        "select relname from pg_class where relnamespace = 'jobsys'::regnamespace and relkind in ('r', 'p')")}
    assert set(READS) == tables, f"tables without a row: {sorted(tables - set(READS))}; " \
                                 f"rows without a table: {sorted(set(READS) - tables)}"
    assert all(set(row) == set(ROLES) for row in READS.values())
    assert all(allowed <= set(ROLES) for allowed in CALLS.values())


def test_who_may_call_what(world: World, sizes: dict[str, int], record_property: Any) -> None:
    wrong: list[str] = []
    for fn in rpc.ALL:
        for role, who in ROLES.items():
            expected = "allowed" if role in CALLS[fn.name] else "forbidden"
            got = world.outcome(who, fn)
            sizes["calls"] += 1
            if got != expected:
                wrong.append(f"{role} -> {fn.name}: {got}, expected {expected}")
    record_property("access_matrix_calls", sizes["calls"])
    assert sizes["calls"] == len(rpc.ALL) * len(ROLES)
    assert not wrong, "\n".join(wrong)


def test_who_reads_which_rows(world: World, sizes: dict[str, int], record_property: Any) -> None:
    wrong: list[str] = []
    for table, row in READS.items():
        everything = world.rows(None, table)
        assert everything, f"the world has no {table} row to hide"
        for role, who in ROLES.items():
            sizes["reads"] += 1
            expected_kind = row[role]
            if expected_kind == "denied":
                try:
                    world.rows(who, table)
                except psycopg.errors.InsufficientPrivilege:
                    continue
                wrong.append(f"{role} reads {table}: allowed, expected no privilege")
                continue
            if expected_kind == "own":
                expected = world.rows(None, table, OWN_FILTER[table], {"sub": who.claims["sub"]})
                assert expected and expected != everything, f"{table}: {role} should own some rows, not all"
            else:
                expected = everything if expected_kind == "all" else set()
            got = world.rows(who, table)
            if got != expected:
                wrong.append(f"{role} reads {table}: {len(got)} row(s), "
                             f"expected {expected_kind} ({len(expected)})")
    record_property("access_matrix_reads", sizes["reads"])
    assert not wrong, "\n".join(wrong)


def test_nobody_but_the_service_reads_token_digests(world: World) -> None:
    for role, who in ROLES.items():
        if role == "service":
            continue
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            world.call(who, "select token_hash from jobsys.worker_accounts")


def test_worker_a_cannot_use_worker_b_session(world: World) -> None:
    """The matrix's session rows, said once more in the issue's words."""
    for name in ("heartbeat", "claim_assignments", "finish_assignments", "complete_assignment"):
        fn = next(f for f in rpc.ALL if f.name == name)
        assert world.outcome(WORKER_A, fn) == "forbidden", name
        assert world.outcome(WORKER_B, fn) == "allowed", name
