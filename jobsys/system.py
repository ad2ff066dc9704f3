"""JobSystem: the typed async facade. One method per transition, plus the reads the
dashboard needs. It knows nothing of psycopg or PostgREST: a Transport does the calls.

The worker and the dashboard reach transports only through here: the push types
(Subscription, EventHandler, StateHandler) and the evidence store are re-exported.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any, Iterable, Literal, Sequence

from jobsys import errors, rpc, validation
from jobsys.events import DASHBOARD_TOPIC, worker_topic
from jobsys.models import (
    AuditPage, ClaimedAssignment, CreatedJob, Device, DeviceDetail, DeviceFilter, DeviceGroups, DeviceList,
    DevicePage, DeviceReport, DeviceUpdate, FinishedRun,
    FleetLabels, HeartbeatReply, Job, JobCreate, JobDetail, JobList, JobRunRow, JobStatus, JobUpdate,
    RegisteredDevice, RetriedJob, RunReport, RunState, WorkerSession,
)
from jobsys.operator_accounts import (
    EnrolledOperator, OperatorAccount, OperatorAccountList, OperatorAccountName, StaffRole, new_operator_token,
)
from jobsys.transport.base import EventHandler, EvidenceUploader, StateHandler, Subscription, Transport
from jobsys.worker_accounts import (
    EnrolledWorker, WorkerAccount, WorkerAccountList, WorkerAccountName, new_token, token_digest,
)

__all__ = ["EventHandler", "EvidenceUploader", "JobId", "JobSystem", "MAX_REPORTS", "StateHandler", "Subscription"]

JobId = uuid.UUID | str


@dataclasses.dataclass(frozen=True)
class OperatorSession:
    """An embedded operator account signed in: the JobSystem that calls as it, and who it is."""

    jobs: JobSystem
    name: str
    role: StaffRole
MAX_REPORTS = 1000  # per finish_assignments call; the SQL function enforces the same bound


def _evidence(result: dict[str, Any] | None) -> str | None:
    value = (result or {}).get("evidence_path")
    return value if isinstance(value, str) and value else None


class JobSystem:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    @classmethod
    async def connect(cls, database_url: str, *, push: bool = True) -> JobSystem:
        """A JobSystem on the Postgres transport."""
        from jobsys.transport.postgres import PostgresTransport

        return cls(await PostgresTransport(database_url, push=push).open())

    async def close(self) -> None:
        await self.transport.close()

    async def __aenter__(self) -> JobSystem:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # Operators: jobs -------------------------------------------------------------------
    async def create_job(self, spec: JobCreate | None = None, /, **fields: Any) -> CreatedJob:
        """Store a device job and distribute it now (or, with a future `start_at`, schedule it:
        maintain() starts it then). `spec` or the same fields as keywords."""
        spec = spec if spec is not None else validation.validated(JobCreate, fields)
        raw = await self.transport.call(rpc.CREATE_JOB, {
            "p_target_url": spec.target_url,
            "p_duration_sec": spec.duration_sec,
            "p_target_type": spec.target_type.value,
            "p_target_value": spec.target_value,
            "p_title": spec.effective_title,
            "p_action": spec.action,
            "p_max_attempts": None,
            "p_timeout_sec": spec.timeout_sec,
            "p_topup_grace_sec": spec.topup_grace_sec,
            "p_start_at": spec.start_at.isoformat() if spec.start_at is not None else None,
            "p_device_labels": spec.device_labels or None,
            "p_priority": spec.priority,
        })
        return CreatedJob.model_validate(raw)

    async def pause_job(self, job_id: JobId) -> Job:
        return Job.model_validate(await self.transport.call(
            rpc.PAUSE_JOB, {"p_job_id": validation.as_uuid(job_id, "job_id")}))

    async def resume_job(self, job_id: JobId) -> Job:
        return Job.model_validate(await self.transport.call(
            rpc.RESUME_JOB, {"p_job_id": validation.as_uuid(job_id, "job_id")}))

    async def cancel_job(self, job_id: JobId) -> Job:
        return Job.model_validate(await self.transport.call(
            rpc.CANCEL_JOB, {"p_job_id": validation.as_uuid(job_id, "job_id")}))

    async def delete_job(self, job_id: JobId) -> None:
        await self.transport.call(rpc.DELETE_JOB, {"p_job_id": validation.as_uuid(job_id, "job_id")})

    async def retry_job(self, job_id: JobId) -> RetriedJob:
        """Put the job's failed runs back in the queue (a new attempt series, from 1) and
        re-open an incomplete job as active. IllegalTransition when nothing failed."""
        return RetriedJob.model_validate(await self.transport.call(
            rpc.RETRY_JOB, {"p_job_id": validation.as_uuid(job_id, "job_id")}))

    async def clone_job(self, job_id: JobId) -> CreatedJob:
        """A new job with the settings of `job_id`, distributed now."""
        return CreatedJob.model_validate(await self.transport.call(
            rpc.CLONE_JOB, {"p_job_id": validation.as_uuid(job_id, "job_id")}))

    async def export_job_runs(self, job_id: JobId) -> list[JobRunRow]:
        """One row per device run of the job (serial, worker, status, attempt, times, error,
        evidence), in serial order: what the REST export and the CLI write as CSV or JSONL."""
        detail = await self.get_job(job_id)
        return [JobRunRow(
            assignment_id=a.id, device_serial=a.serial, worker_name=a.worker_name, status=a.status,
            attempt=a.attempt, started_at=a.started_at, finished_at=a.finished_at, error=a.error,
            evidence=_evidence(a.result), screenshot_url=a.screenshot_url) for a in detail.assignments]

    async def rename_job(self, job_id: JobId, title: str) -> Job:
        update = validation.validated(JobUpdate, {"title": title})
        return Job.model_validate(await self.transport.call(
            rpc.UPDATE_JOB_TITLE,
            {"p_job_id": validation.as_uuid(job_id, "job_id"), "p_title": update.title}))

    async def update_job(self, job_id: JobId, update: JobUpdate | dict[str, Any]) -> Job:
        """PATCH semantics: a title edit and/or a status move (paused / active / cancelled),
        in one call of jobsys.update_job: both happen or neither (a refused title leaves the
        status alone, a refused move the title). A rename is allowed in every state."""
        update = update if isinstance(update, JobUpdate) else validation.validated(JobUpdate, update)
        return Job.model_validate(await self.transport.call(rpc.UPDATE_JOB, {
            "p_job_id": validation.as_uuid(job_id, "job_id"),
            "p_status": update.status, "p_title": update.title}))

    async def list_jobs(
        self, status: JobStatus | str | None = None, q: str | None = None, limit: int = 100, offset: int = 0
    ) -> JobList:
        status_value = JobStatus(status).value if status else None
        return JobList.model_validate(await self.transport.call(rpc.LIST_JOBS, {
            "p_status": status_value, "p_q": q or None, "p_limit": limit, "p_offset": offset}))

    async def get_job(self, job_id: JobId) -> JobDetail:
        return JobDetail.model_validate(await self.transport.call(
            rpc.GET_JOB, {"p_job_id": validation.as_uuid(job_id, "job_id")}))

    async def list_devices(self) -> DeviceList:
        return DeviceList.model_validate(await self.transport.call(rpc.LIST_DEVICES))

    async def list_devices_page(
        self, filter: DeviceFilter | dict[str, Any] | None = None, *, worker_id: JobId | None = None,
        pc: str | None = None, after: str | None = None, limit: int = 100, with_counts: bool = True,
    ) -> DevicePage:
        """Up to `limit` (1-1000) devices passing `filter` after the serial `after`, by serial
        (pass the page's next_cursor for the next). `worker_id` narrows to one worker session
        (NO_WORKER: devices no worker holds), `pc` to a worker's name. Without `with_counts`
        the fleet is not counted (the Devices page reads its counts from device_groups)."""
        checked = validation.validated(DeviceFilter, filter or {})
        return DevicePage.model_validate(await self.transport.call(rpc.LIST_DEVICES_PAGE, {
            "p_status": checked.state.value if checked.state else None,
            "p_worker_id": validation.as_uuid(worker_id, "worker_id") if worker_id is not None else None,
            "p_pc": pc, "p_labels": checked.labels, "p_q": checked.q or None, "p_after": after,
            "p_limit": limit, "p_with_counts": with_counts}))

    async def device_groups(self, filter: DeviceFilter | dict[str, Any] | None = None) -> DeviceGroups:
        """The devices' counts per PC (worker session) and for the fleet, from one aggregate;
        `matching` counts those passing `filter`. No device rows: cheap for any fleet size."""
        checked = validation.validated(DeviceFilter, filter or {})
        return DeviceGroups.model_validate(await self.transport.call(rpc.DEVICE_GROUPS, {
            "p_status": checked.state.value if checked.state else None,
            "p_labels": checked.labels, "p_q": checked.q or None}))

    async def set_device_state(self, device_id: JobId,
                               state: Literal["disabled", "enabled", "draining"]) -> Device:
        """Disable a device (no new runs; the run it is running goes back to the queue), drain
        it (its run finishes, then it is disabled) or enable it again (back to what its worker
        reports; ends a quarantine). Operators only; workers cannot."""
        if state not in ("disabled", "enabled", "draining"):
            raise errors.InvalidInput("state must be disabled, draining or enabled", {"field": "state"})
        return Device.model_validate(await self.transport.call(rpc.SET_DEVICE_STATE, {
            "p_device_id": validation.as_uuid(device_id, "device_id"), "p_state": state}))

    async def set_device_labels(self, device_id: JobId, labels: dict[str, str]) -> Device:
        """Replace a device's operator labels (a key its worker reports is refused)."""
        checked = validation.validated(DeviceUpdate, {"labels": labels})
        return Device.model_validate(await self.transport.call(rpc.SET_DEVICE_LABELS, {
            "p_device_id": validation.as_uuid(device_id, "device_id"), "p_labels": checked.labels}))

    async def update_device(self, device_id: JobId, update: DeviceUpdate | dict[str, Any]) -> Device:
        """PATCH /api/devices/{id}: labels and/or a state move (disable, enable, drain)."""
        checked = validation.validated(DeviceUpdate, update)
        device: Device | None = None
        if checked.labels is not None:
            device = await self.set_device_labels(device_id, checked.labels)
        if checked.state_move is not None:
            device = await self.set_device_state(device_id, checked.state_move)
        assert device is not None  # DeviceUpdate asks for one of them
        return device

    async def request_device_reboot(self, device_id: JobId) -> Device:
        """Ask the device's worker to reboot it; refused while it runs a run or is offline."""
        return Device.model_validate(await self.transport.call(
            rpc.REQUEST_DEVICE_REBOOT, {"p_device_id": validation.as_uuid(device_id, "device_id")}))

    async def get_device(self, device_id: JobId) -> DeviceDetail:
        return DeviceDetail.model_validate(await self.transport.call(
            rpc.GET_DEVICE, {"p_device_id": validation.as_uuid(device_id, "device_id")}))

    async def fleet_labels(self, labels: dict[str, str] | None = None) -> FleetLabels:
        """The label pairs of the devices matching `labels`, with live counts."""
        checked = validation.validated(DeviceUpdate, {"labels": labels or {}})
        return FleetLabels.model_validate(await self.transport.call(rpc.FLEET_LABELS, {"p_labels": checked.labels}))

    async def release_device(self, device_id: JobId) -> Device:
        """Unbind a device from its worker session (a phone moved to another PC): its running
        run goes back to the queue as on lease expiry, and the next registration takes it."""
        return Device.model_validate(await self.transport.call(
            rpc.RELEASE_DEVICE, {"p_device_id": validation.as_uuid(device_id, "device_id")}))

    # Operators: worker accounts (PCs joining the hub) ---------------------------------
    async def add_worker_account(self, name: str) -> EnrolledWorker:
        """A new PC account and its token (shown once; only its digest is stored)."""
        checked = validation.validated(WorkerAccountName, {"name": name})
        token = new_token()
        account = WorkerAccount.model_validate(await self.transport.call(
            rpc.ADD_WORKER_ACCOUNT, {"p_name": checked.name, "p_token_hash": token_digest(token)}))
        return EnrolledWorker(account=account, token=token)

    async def list_worker_accounts(self, include_revoked: bool = False) -> WorkerAccountList:
        return WorkerAccountList.model_validate(await self.transport.call(
            rpc.LIST_WORKER_ACCOUNTS, {"p_include_revoked": include_revoked}))

    async def revoke_worker_account(self, name: str) -> WorkerAccount:
        """Refuse the PC's token from now on; its sessions end and its devices go offline."""
        checked = validation.validated(WorkerAccountName, {"name": name})
        return WorkerAccount.model_validate(await self.transport.call(
            rpc.REVOKE_WORKER_ACCOUNT, {"p_name": checked.name}))

    # Admins: operator accounts (embedded mode) -----------------------------------------
    async def add_operator_account(self, name: str, role: StaffRole | str) -> EnrolledOperator:
        """A new named account with a role and its token (shown once; only its digest is stored)."""
        checked = validation.validated(OperatorAccountName, {"name": name})
        try:
            staff_role = StaffRole(role)
        except ValueError:
            raise errors.InvalidInput("role must be viewer, operator or admin", {"field": "role"}) from None
        token = new_operator_token()
        account = OperatorAccount.model_validate(await self.transport.call(rpc.ADD_OPERATOR_ACCOUNT, {
            "p_name": checked.name, "p_role": staff_role.value, "p_token_hash": token_digest(token)}))
        return EnrolledOperator(account=account, token=token)

    def for_operator(self, token_digest_hex: str) -> JobSystem:
        """A JobSystem whose calls run as the embedded operator account behind this digest,
        unchecked until its first call (operator_session checks it)."""
        from jobsys.transport.postgres import PostgresTransport

        if not isinstance(self.transport, PostgresTransport):
            raise errors.Forbidden("operator accounts exist in embedded mode only")
        return JobSystem(self.transport.as_operator(token_digest_hex))

    async def operator_session(self, token_digest_hex: str) -> OperatorSession:
        """The JobSystem the embedded operator account behind this token digest acts through
        (every call as that account: its role is checked by the SQL), with its name and role.
        Unauthorized for an unknown or revoked token; Forbidden where there are no embedded
        accounts (Supabase mode: operators sign in with Supabase)."""
        from jobsys.transport.postgres import PostgresTransport

        jobs = self.for_operator(token_digest_hex)
        assert isinstance(self.transport, PostgresTransport)  # for_operator checked it
        claims = await self.transport.operator_claims(token_digest_hex)
        return OperatorSession(jobs=jobs,
                               name=str(claims["jobsys_account"]),
                               role=StaffRole(claims["app_metadata"]["jobsys_role"]))

    async def list_operator_accounts(self, include_revoked: bool = False) -> OperatorAccountList:
        return OperatorAccountList.model_validate(await self.transport.call(
            rpc.LIST_OPERATOR_ACCOUNTS, {"p_include_revoked": include_revoked}))

    async def revoke_operator_account(self, name: str) -> OperatorAccount:
        """Refuse the account's token from now on."""
        checked = validation.validated(OperatorAccountName, {"name": name})
        return OperatorAccount.model_validate(await self.transport.call(
            rpc.REVOKE_OPERATOR_ACCOUNT, {"p_name": checked.name}))

    # Workers ---------------------------------------------------------------------------
    async def register_worker(
        self, name: str, devices: Iterable[DeviceReport], hostname: str = ""
    ) -> WorkerSession:
        return WorkerSession.model_validate(await self.transport.call(rpc.REGISTER_WORKER, {
            "p_name": name, "p_hostname": hostname,
            "p_devices": [d.model_dump(mode="json") for d in devices]}))

    async def heartbeat(
        self, worker_id: JobId, devices: Iterable[DeviceReport] | None = None,
        running: Iterable[int] | None = None, meta: dict[str, str] | None = None,
    ) -> HeartbeatReply:
        """`meta`: what the PC view shows of this session (version, push state), merged in."""
        return HeartbeatReply.model_validate(await self.transport.call(rpc.HEARTBEAT, {
            "p_worker_id": validation.as_uuid(worker_id, "worker_id"),
            "p_devices": None if devices is None else [d.model_dump(mode="json") for d in devices],
            "p_running": None if running is None else list(running), "p_meta": meta}))

    async def worker_devices(self, worker_id: JobId) -> list[RegisteredDevice]:
        raw = await self.transport.call(
            rpc.WORKER_DEVICES, {"p_worker_id": validation.as_uuid(worker_id, "worker_id")})
        return [RegisteredDevice.model_validate(d) for d in raw]

    async def device_rebooted(self, worker_id: JobId, device_id: JobId, error: str | None = None) -> None:
        """The worker's answer to a reboot request: the phone is back (error None), or why not."""
        await self.transport.call(rpc.DEVICE_REBOOTED, {
            "p_worker_id": validation.as_uuid(worker_id, "worker_id"),
            "p_device_id": validation.as_uuid(device_id, "device_id"), "p_error": error})

    async def stop_worker(self, worker_id: JobId) -> None:
        await self.transport.call(
            rpc.STOP_WORKER, {"p_worker_id": validation.as_uuid(worker_id, "worker_id")})

    async def claim_assignments(
        self, worker_id: JobId, device_ids: Iterable[uuid.UUID] | None = None, limit: int | None = None,
        *, start: bool = False,
    ) -> list[ClaimedAssignment]:
        """The next run of each free device of the worker. start=True also starts them (one
        call instead of a start_assignment per run), for a worker that begins at once."""
        rows = await self.transport.call_rows(rpc.CLAIM_ASSIGNMENTS, {
            "p_worker_id": validation.as_uuid(worker_id, "worker_id"),
            "p_device_ids": None if device_ids is None else list(device_ids),
            "p_limit": limit, "p_start": start})
        return [ClaimedAssignment.model_validate(row) for row in rows]

    async def start_assignment(self, assignment_id: int, attempt: int) -> None:
        await self.transport.call(rpc.START_ASSIGNMENT, {"p_assignment_id": assignment_id, "p_attempt": attempt})

    async def complete_assignment(
        self, assignment_id: int, attempt: int, result: dict[str, Any] | None = None
    ) -> RunState:
        return RunState.model_validate(await self.transport.call(rpc.COMPLETE_ASSIGNMENT, {
            "p_assignment_id": assignment_id, "p_attempt": attempt, "p_result": result or {}}))

    async def fail_assignment(
        self, assignment_id: int, attempt: int, error: str, *, retry: bool = False,
        result: dict[str, Any] | None = None,
    ) -> RunState:
        return RunState.model_validate(await self.transport.call(rpc.FAIL_ASSIGNMENT, {
            "p_assignment_id": assignment_id, "p_attempt": attempt, "p_error": error,
            "p_retry": retry, "p_result": result}))

    async def release_assignment(self, assignment_id: int, attempt: int, reason: str | None = None) -> RunState:
        return RunState.model_validate(await self.transport.call(rpc.RELEASE_ASSIGNMENT, {
            "p_assignment_id": assignment_id, "p_attempt": attempt, "p_reason": reason}))

    async def finish_assignments(
        self, worker_id: JobId, reports: Sequence[RunReport | dict[str, Any]]
    ) -> list[FinishedRun]:
        """Finish up to MAX_REPORTS runs of one worker in one transaction (one counter update
        per job). A run that has moved on comes back with stale=True rather than raising, so
        one late report never blocks the others; answers are in the order of `reports`."""
        if not 1 <= len(reports) <= MAX_REPORTS:
            raise errors.InvalidInput(f"between 1 and {MAX_REPORTS} reports per call",
                                      {"field": "reports", "count": len(reports)})
        checked = [r if isinstance(r, RunReport) else validation.validated(RunReport, r) for r in reports]
        answer = await self.transport.call(rpc.FINISH_ASSIGNMENTS, {
            "p_worker_id": validation.as_uuid(worker_id, "worker_id"),
            "p_reports": [r.model_dump(exclude_none=True) for r in checked]})
        return [FinishedRun.model_validate(item) for item in answer]

    # Upkeep (runs automatically from heartbeats; exposed for tests and admin) ----------
    # Operators: operations ---------------------------------------------------------------
    async def list_audit(self, *, actor: str | None = None, object_type: str | None = None,
                         object_id: str | None = None, since: dt.datetime | None = None, limit: int = 100,
                         before_id: int | None = None) -> AuditPage:
        """The audit log, newest first; `before_id` pages to older entries."""
        return AuditPage.model_validate(await self.transport.call(rpc.LIST_AUDIT, {
            "p_actor": actor, "p_object_type": object_type, "p_object_id": object_id,
            "p_since": since.isoformat() if since is not None else None, "p_limit": limit,
            "p_before_id": before_id}))

    async def metrics_snapshot(self) -> dict[str, Any]:
        """What GET /metrics exposes from the database (jobsys.metrics)."""
        return dict(await self.transport.call(rpc.METRICS_SNAPSHOT))

    async def existing_runs(self, ids: Sequence[int]) -> set[int]:
        """Which of these run ids still exist (retention purges the others)."""
        return set(await self.transport.call(rpc.EXISTING_RUNS, {"p_ids": list(ids)}) or [])

    async def schema_version(self) -> str | None:
        """The newest migration applied to the database (readiness); None if none was recorded."""
        return await self.transport.call(rpc.SCHEMA_VERSION)

    async def rescue_expired_leases(self) -> int:
        return int(await self.transport.call(rpc.RESCUE_EXPIRED_LEASES))

    async def mark_stale(self) -> int:
        return int(await self.transport.call(rpc.MARK_STALE))

    async def maintain(self, force: bool = False) -> dict[str, Any]:
        return dict(await self.transport.call(rpc.MAINTAIN, {"p_force": force}))

    # Push ------------------------------------------------------------------------------
    async def subscribe_dashboard(self, on_event: EventHandler, on_state: StateHandler | None = None) -> Subscription:
        return await self.transport.subscribe([DASHBOARD_TOPIC], on_event, on_state)

    async def subscribe_worker(
        self, worker_id: JobId, on_event: EventHandler, on_state: StateHandler | None = None
    ) -> Subscription:
        return await self.transport.subscribe([worker_topic(worker_id)], on_event, on_state)

    # Evidence --------------------------------------------------------------------------
    def auth_problem(self) -> str | None:
        """Why this process cannot sign in now (Supabase mode: Auth refused the login or is
        unavailable), for readiness checks and the PC's own logs; None when it can, or where
        there is no sign-in (the Postgres and hub transports)."""
        tokens = getattr(self.transport, "tokens", None)
        state = getattr(tokens, "state", None)
        if state is None or getattr(state, "value", "signed_in") == "signed_in":
            return None
        return f"{state.value}: {getattr(tokens, 'problem', None) or 'Supabase Auth unavailable'}"

    def evidence_store(self) -> EvidenceUploader | None:
        """Where a worker uploads evidence files, acting as this JobSystem's user (Supabase:
        Storage), or None when they stay in the worker's local directory (Postgres). A new
        store each call; the caller closes it."""
        return self.transport.evidence_store()
