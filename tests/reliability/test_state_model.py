"""Hypothesis stateful test: random sequences of transitions against a small model of the
spec, with the invariants checked on the real database after every step."""

from __future__ import annotations

import json
import os
from typing import Any

import hypothesis.strategies as st
import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from jobsys import embedded
from tests.support.postgres import COUNTER_MISMATCHES_SQL, EXACT_JOBS, DatabaseCopies, Db

ACTIVE, PAUSED, COMPLETED, CANCELLED = "active", "paused", "completed", "cancelled"
INCOMPLETE = "incomplete"
SCHEDULED = "scheduled"


class JobsysModel(RuleBasedStateMachine):
    admin_url: str = ""
    copies: DatabaseCopies

    @initialize()
    def fresh_database(self) -> None:
        self.dbname = self.copies.take()
        self.db = Db(embedded.database_url(self.admin_url, self.dbname))
        self.conn = psycopg.connect(self.db.url, autocommit=True)
        self.conn.execute("select setseed(0.5)")  # device choice uses random(): replayable examples
        self.db.run("update jobsys.settings set value = 2 where key = 'max_attempts'")
        self.db.run("update jobsys.settings set value = 0 where key = 'topup_grace_sec'")  # jobs end short at once
        self.db.run("update jobsys.settings set value = 2 where key = 'quarantine_after_failures'")
        self.workers: list[str] = []
        self.devices = 0
        self.jobs: dict[str, str] = {}  # job id -> status the model expects
        self.running: dict[int, int] = {}  # assignment id -> attempt we hold
        self.terminal: dict[int, tuple[Any, ...]] = {}

    def teardown(self) -> None:
        if hasattr(self, "conn"):
            self.conn.close()
        if hasattr(self, "dbname"):
            self.copies.drop(self.dbname)

    def pick_running(self, data: st.DataObject) -> int | None:
        """One of the runs we hold. The draw never depends on the database (which devices a
        claim got depends on random uuids), so hypothesis can replay examples."""
        index = data.draw(st.integers(0, 10_000))
        return sorted(self.running)[index % len(self.running)] if self.running else None

    def call(self, statement: str, params: Any = None) -> Any:
        cur = self.conn.execute(statement, params)
        return cur.fetchall() if cur.description else []

    def expect_error(self, sqlstate: str, statement: str, params: Any = None) -> None:
        with pytest.raises(psycopg.Error) as info:
            self.call(statement, params)
        assert info.value.sqlstate == sqlstate, (statement, info.value)

    # Fleet -----------------------------------------------------------------------------
    @rule(devices=st.integers(1, 4))
    def add_worker(self, devices: int) -> None:
        serials = [{"serial": f"d{self.devices + i}"} for i in range(devices)]
        self.devices += devices
        [(reply,)] = self.call("select jobsys.register_worker('w', 'h', %s)", (json.dumps(serials),))
        self.workers.append(reply["worker_id"])

    @precondition(lambda self: self.devices > 0)
    @rule(data=st.data())
    def device_goes_stale(self, data: st.DataObject) -> None:
        serial = f"d{data.draw(st.integers(0, self.devices - 1))}"
        self.call("update jobsys.devices set last_heartbeat_at = now() - interval '1 hour' where serial = %s",
                  (serial,))
        self.call("select jobsys.maintain(true)")

    @precondition(lambda self: self.devices > 0)
    @rule(data=st.data(), move=st.sampled_from(["disabled", "draining", "enabled"]))
    def operator_moves_a_device(self, data: st.DataObject, move: str) -> None:
        serial = f"d{data.draw(st.integers(0, self.devices - 1))}"
        [(device, running)] = self.call("select id, running_assignment_id from jobsys.devices where serial = %s",
                                        (serial,))
        self.call("select jobsys.set_device_state(%s, %s)", (device, move))
        if move == "disabled" and running is not None:
            self.running.pop(running, None)  # stopped: our report of it would be stale
        for job in list(self.jobs):
            self.jobs[job] = self.current_status(job)

    @precondition(lambda self: self.devices > 0)
    @rule(data=st.data(), rack=st.sampled_from(["A", "B"]))
    def operator_labels_a_device(self, data: st.DataObject, rack: str) -> None:
        serial = f"d{data.draw(st.integers(0, self.devices - 1))}"
        self.call("select jobsys.set_device_labels((select id from jobsys.devices where serial = %s), %s)",
                  (serial, json.dumps({"rack": rack})))
        for job in list(self.jobs):
            self.jobs[job] = self.current_status(job)

    @rule(data=st.data())
    def lease_expires(self, data: st.DataObject) -> None:
        assignment = self.pick_running(data)
        if assignment is None:
            return
        self.call("update jobsys.job_assignments set lease_expires_at = now() - interval '1 second'"
                  " where id = %s", (assignment,))
        self.call("select jobsys.rescue_expired_leases()")
        self.running.pop(assignment)  # our run is stale now

    # Operators -------------------------------------------------------------------------
    @rule(kind=st.sampled_from(["all_devices", "percentage", "device_count"]), value=st.integers(1, 6),
          scheduled=st.booleans(), rack=st.sampled_from([None, "A"]))
    def create_job(self, kind: str, value: int, scheduled: bool, rack: str | None) -> None:
        labels = {} if rack is None else {"rack": rack}
        healthy = self.call("select count(*) from jobsys.devices d where state = 'online'"
                            " and last_heartbeat_at > jobsys.healthy_cutoff()"
                            " and d.labels || d.operator_labels @> %s", (json.dumps(labels),))[0][0]
        target_value = None if kind == "all_devices" else (value * 15 if kind == "percentage" else value)
        # A scheduled job starts an hour from now (start_time_comes moves it), with no runs until then.
        statement = ("select jobsys.create_job('https://example.com', 5, %s, %s, p_device_labels => %s, p_start_at => "
                     + ("now() + interval '1 hour')" if scheduled else "null)"))
        if kind != "device_count" and healthy == 0 and not scheduled:
            self.expect_error("JS409", statement, (kind, target_value, json.dumps(labels)))
            return
        [(reply,)] = self.call(statement, (kind, target_value, json.dumps(labels)))
        self.jobs[reply["job"]["id"]] = SCHEDULED if scheduled else ACTIVE
        assert reply["job"]["status"] == self.jobs[reply["job"]["id"]]

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def start_time_comes(self, data: st.DataObject) -> None:
        """A scheduled job's start_at passes: maintain() starts it (or ends it, no device)."""
        job = data.draw(st.sampled_from(list(self.jobs)))
        before = self.current_status(job)
        self.call("update jobsys.jobs set start_at = now() - interval '1 second'"
                  " where id = %s and start_at is not null", (job,))
        self.call("select jobsys.maintain(true)")
        self.refresh()
        if before == SCHEDULED:
            assert self.jobs[job] in (ACTIVE, COMPLETED, INCOMPLETE)
        elif before in (COMPLETED, INCOMPLETE, CANCELLED):
            assert self.jobs[job] == before

    def _job_move(self, fn: str, legal_from: set[str], to: str | None, job: str) -> None:
        status = self.current_status(job)
        if status in legal_from:
            self.call(f"select jobsys.{fn}(%s)", (job,))
            if to is None:
                del self.jobs[job]
            else:
                self.jobs[job] = self.current_status(job)  # may complete at once on resume
                # resume may complete at once; a job paused before it started is scheduled
                # again, or starts (incomplete at once when no device is healthy).
                assert self.jobs[job] in ({to, COMPLETED, SCHEDULED, INCOMPLETE} if to == ACTIVE else {to})
        else:
            self.expect_error("JS409", f"select jobsys.{fn}(%s)", (job,))

    def current_status(self, job: str) -> str:
        return self.call("select status from jobsys.jobs where id = %s", (job,))[0][0]

    def refresh(self) -> None:
        for job in list(self.jobs):
            self.jobs[job] = self.current_status(job)
        self.running = {a: n for a, n in self.running.items()
                        if self.call("select 1 from jobsys.job_assignments where id = %s and status = 'running'",
                                     (a,))}

    @rule()
    def maintain_settles_jobs(self) -> None:
        """Upkeep: a job with no live run, still short, waits out the grace (0 s here) and
        ends incomplete; the next round ends it."""
        self.call("select jobsys.maintain(true)")
        self.refresh()

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def time_limit_passes(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(list(self.jobs)))
        before = self.current_status(job)
        # The limit counts from start_at when the job has one (a scheduled job also starts now).
        self.call("update jobsys.jobs set timeout_sec = 1, created_at = now() - interval '1 hour',"
                  " start_at = case when start_at is not null then now() - interval '1 hour' end where id = %s",
                  (job,))
        self.call("select jobsys.maintain(true)")
        self.refresh()
        if before in (ACTIVE, PAUSED, SCHEDULED):
            assert self.jobs[job] in (COMPLETED, INCOMPLETE)
            assert self.call("select count(*) from jobsys.job_assignments where job_id = %s"
                             " and status in ('pending', 'paused', 'running')", (job,))[0][0] == 0
        else:
            assert self.jobs[job] == before

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def retry_failed(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(list(self.jobs)))
        status = self.current_status(job)
        failed = [a for (a,) in self.call("select id from jobsys.job_assignments where job_id = %s"
                                          " and status = 'failed'", (job,))]
        if status in (ACTIVE, PAUSED, INCOMPLETE) and failed:
            self.call("select jobsys.retry_job(%s)", (job,))
            for assignment in failed:  # retry is the one move out of failed
                self.terminal.pop(assignment, None)
            self.jobs[job] = self.current_status(job)
            assert self.jobs[job] == (PAUSED if status == PAUSED else ACTIVE)
        else:
            self.expect_error("JS409", "select jobsys.retry_job(%s)", (job,))

    @precondition(lambda self: self.jobs)
    @rule(data=st.data(), move=st.sampled_from(["pause", "resume", "cancel", "delete"]))
    def job_move(self, data: st.DataObject, move: str) -> None:
        job = data.draw(st.sampled_from(list(self.jobs)))  # creation order: uuids are random
        if move == "pause":
            self._job_move("pause_job", {ACTIVE, SCHEDULED}, PAUSED, job)
        elif move == "resume":
            self._job_move("resume_job", {PAUSED}, ACTIVE, job)
        elif move == "cancel":
            self._job_move("cancel_job", {ACTIVE, PAUSED, SCHEDULED}, CANCELLED, job)
        else:
            self._job_move("delete_job", {SCHEDULED, ACTIVE, PAUSED, COMPLETED, INCOMPLETE, CANCELLED}, None, job)
        self.running = {a: n for a, n in self.running.items()
                        if self.call("select 1 from jobsys.job_assignments where id = %s and status = 'running'",
                                     (a,))}

    # Workers ---------------------------------------------------------------------------
    @precondition(lambda self: self.workers)
    @rule(data=st.data())
    def claim(self, data: st.DataObject) -> None:
        worker = data.draw(st.sampled_from(self.workers))
        rows = self.call("select assignment_id, attempt, job_id from jobsys.claim_assignments(%s)", (worker,))
        for assignment, attempt, job in rows:
            assert self.current_status(str(job)) == ACTIVE, "a claim returned work of a job that is not active"
            self.running[assignment] = attempt

    @rule(data=st.data(), outcome=st.sampled_from(["complete", "fail", "retry", "release", "start"]))
    def report(self, data: st.DataObject, outcome: str) -> None:
        assignment = self.pick_running(data)
        if assignment is None:
            return
        attempt = self.running[assignment]
        statement = {
            "complete": "select jobsys.complete_assignment(%s, %s)",
            "fail": "select jobsys.fail_assignment(%s, %s, 'broken')",
            "retry": "select jobsys.fail_assignment(%s, %s, 'flaky', true)",
            "release": "select jobsys.release_assignment(%s, %s)",
            "start": "select jobsys.start_assignment(%s, %s)",
        }[outcome]
        self.call(statement, (assignment, attempt))
        if outcome != "start":
            self.running.pop(assignment)
        for job in list(self.jobs):
            self.jobs[job] = self.current_status(job)

    @rule(data=st.data())
    def late_report_after_rescue_is_stale(self, data: st.DataObject) -> None:
        assignment = self.pick_running(data)
        if assignment is None:
            return
        attempt = self.running.pop(assignment)
        self.call("update jobsys.job_assignments set lease_expires_at = now() - interval '1 second'"
                  " where id = %s", (assignment,))
        self.call("select jobsys.rescue_expired_leases()")
        self.expect_error("JS410", "select jobsys.complete_assignment(%s, %s)", (assignment, attempt))

    # Invariants ------------------------------------------------------------------------
    @invariant()
    def counters_equal_count(self) -> None:
        if hasattr(self, "db"):
            assert self.call(COUNTER_MISMATCHES_SQL) == []

    @invariant()
    def one_running_per_device_and_mutex_consistent(self) -> None:
        if not hasattr(self, "db"):
            return
        assert self.call("""select count(*) from (select device_id from jobsys.job_assignments
                            where status = 'running' group by device_id having count(*) > 1) x""")[0][0] == 0
        assert self.call("""select count(*) from jobsys.job_assignments a
                            where a.status = 'running' and not exists (
                              select 1 from jobsys.devices d
                              where d.id = a.device_id and d.running_assignment_id = a.id)""")[0][0] == 0
        assert self.call("""select count(*) from jobsys.devices d
                            left join jobsys.job_assignments a on a.id = d.running_assignment_id
                            where d.running_assignment_id is not null
                              and a.status is distinct from 'running'""")[0][0] == 0
        # Disabled and quarantined devices run nothing (draining ones finish what they run).
        assert self.call("""select count(*) from jobsys.devices
                            where state in ('disabled', 'quarantined') and running_assignment_id is not null
                           """)[0][0] == 0
        # A run goes only to a device carrying its job's labels.
        assert self.call("""select count(*) from jobsys.job_assignments a
                            join jobsys.jobs j on j.id = a.job_id join jobsys.devices d on d.id = a.device_id
                            where a.status in ('pending', 'running')
                              and not (d.labels || d.operator_labels) @> j.device_labels""")[0][0] == 0

    @invariant()
    def paused_jobs_run_nothing_new_and_completed_reach_target(self) -> None:
        if not hasattr(self, "db"):
            return
        assert self.call(f"""select count(*) from {EXACT_JOBS} j
                             where status = 'completed' and completed_count < target_count""")[0][0] == 0
        assert self.call("""select count(*) from jobsys.job_assignments a join jobsys.jobs j on j.id = a.job_id
                            where j.status = 'paused' and a.status = 'pending'""")[0][0] == 0
        # A scheduled job has no run at all (and so nothing a claim could take).
        assert self.call("""select count(*) from jobsys.job_assignments a join jobsys.jobs j on j.id = a.job_id
                            where j.status = 'scheduled'""")[0][0] == 0
        # Ended jobs hold no live run; an incomplete one says why and is short.
        assert self.call("""select count(*) from jobsys.job_assignments a join jobsys.jobs j on j.id = a.job_id
                            where j.status in ('completed', 'incomplete', 'cancelled')
                              and a.status in ('pending', 'paused', 'running')""")[0][0] == 0
        assert self.call(f"""select count(*) from {EXACT_JOBS} j
                             where status = 'incomplete' and (end_reason is null or finished_at is null
                                                              or completed_count >= target_count)
                               -- but a scheduled job that found no healthy device at its start
                               -- (target 0: percentage / all_devices of none) ends at once
                               and not (target_count = 0 and end_reason = 'no_eligible_devices')""")[0][0] == 0

    @invariant()
    def terminal_assignments_never_change(self) -> None:
        if not hasattr(self, "db"):
            return
        rows = self.call("""select id, status, attempt, finished_at, result, error from jobsys.job_assignments
                            where status in ('completed', 'failed', 'cancelled')""")
        now = {row[0]: row for row in rows}
        existing = {row[0] for row in self.call("select id from jobsys.job_assignments")}
        for assignment, before in self.terminal.items():
            if assignment in existing:
                assert now.get(assignment) == before, f"terminal assignment {assignment} changed"
        self.terminal = {a: r for a, r in {**self.terminal, **now}.items() if a in existing}


@pytest.fixture
def model(pg_server: Any, database_copies: DatabaseCopies) -> type[JobsysModel]:
    JobsysModel.admin_url = pg_server.get_uri()
    JobsysModel.copies = database_copies  # each example's database, made ahead
    return JobsysModel


def test_state_machine_model(model: type[JobsysModel]) -> None:
    # CI runs a bounded form; JOBSYS_SOAK=1 runs the long one.
    examples = 300 if os.environ.get("JOBSYS_SOAK") else 30
    run_state_machine_as_test(model, settings=settings(
        max_examples=examples, stateful_step_count=25, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
