"""The one list of SQL functions the library calls, with their argument types.

Both transports take the same call shape: a function name and a dict of named
arguments. PostgREST passes JSON keys as named arguments; the Postgres transport builds
`jobsys.fn(p_x => %(p_x)s::type)` from the types listed here. A test checks this list
against the functions the migrations create.
"""

from __future__ import annotations

import dataclasses

SCHEMA = "jobsys"


@dataclasses.dataclass(frozen=True)
class SqlFunction:
    name: str
    params: dict[str, str]  # argument name -> SQL type, in declaration order
    returns_set: bool = False  # returns rows (a list) rather than one value


def _fn(name: str, returns_set: bool = False, **params: str) -> SqlFunction:
    return SqlFunction(name, params, returns_set)


# p_max_attempts: null = the max_attempts setting (the library passes null; clone_job copies it).
CREATE_JOB = _fn("create_job", p_target_url="text", p_duration_sec="integer", p_target_type="text",
                 p_target_value="integer", p_title="text", p_action="text", p_max_attempts="integer",
                 p_timeout_sec="integer", p_topup_grace_sec="integer", p_start_at="timestamp with time zone",
                 p_device_labels="jsonb", p_priority="integer")
PAUSE_JOB = _fn("pause_job", p_job_id="uuid")
RESUME_JOB = _fn("resume_job", p_job_id="uuid")
CANCEL_JOB = _fn("cancel_job", p_job_id="uuid")
DELETE_JOB = _fn("delete_job", p_job_id="uuid")
RETRY_JOB = _fn("retry_job", p_job_id="uuid")  # re-queue failed runs; re-open an incomplete job
CLONE_JOB = _fn("clone_job", p_job_id="uuid")  # a new job with the same settings
UPDATE_JOB_TITLE = _fn("update_job_title", p_job_id="uuid", p_title="text")
UPDATE_JOB = _fn("update_job", p_job_id="uuid", p_status="text", p_title="text")  # PATCH: status + title
LIST_JOBS = _fn("list_jobs", p_status="text", p_q="text", p_limit="integer", p_offset="integer")
GET_JOB = _fn("get_job", p_job_id="uuid")
LIST_DEVICES = _fn("list_devices")
SET_DEVICE_STATE = _fn("set_device_state", p_device_id="uuid", p_state="text")
RELEASE_DEVICE = _fn("release_device", p_device_id="uuid")
SET_DEVICE_LABELS = _fn("set_device_labels", p_device_id="uuid", p_labels="jsonb")  # the operator's labels
REQUEST_DEVICE_REBOOT = _fn("request_device_reboot", p_device_id="uuid")
GET_DEVICE = _fn("get_device", p_device_id="uuid")  # with vitals history, events, last runs
FLEET_LABELS = _fn("fleet_labels", p_labels="jsonb")  # the new-job dialog's label choices and counts
# Devices at scale: a page by serial with filters; the counts per PC (one aggregate, no rows)
LIST_DEVICES_PAGE = _fn("list_devices_page", p_status="text", p_worker_id="uuid", p_pc="text", p_labels="jsonb",
                        p_q="text", p_after="text", p_limit="integer", p_with_counts="boolean")
DEVICE_GROUPS = _fn("device_groups", p_status="text", p_labels="jsonb", p_q="text")

REGISTER_WORKER = _fn("register_worker", p_name="text", p_hostname="text", p_devices="jsonb")
HEARTBEAT = _fn("heartbeat", p_worker_id="uuid", p_devices="jsonb", p_running="bigint[]", p_meta="jsonb")
STOP_WORKER = _fn("stop_worker", p_worker_id="uuid")
WORKER_DEVICES = _fn("worker_devices", p_worker_id="uuid")
DEVICE_REBOOTED = _fn("device_rebooted", p_worker_id="uuid", p_device_id="uuid", p_error="text")
CLAIM_ASSIGNMENTS = _fn("claim_assignments", returns_set=True, p_worker_id="uuid",
                        p_device_ids="uuid[]", p_limit="integer", p_start="boolean")
START_ASSIGNMENT = _fn("start_assignment", p_assignment_id="bigint", p_attempt="integer")
COMPLETE_ASSIGNMENT = _fn("complete_assignment", p_assignment_id="bigint", p_attempt="integer",
                          p_result="jsonb")
FAIL_ASSIGNMENT = _fn("fail_assignment", p_assignment_id="bigint", p_attempt="integer", p_error="text",
                      p_retry="boolean", p_result="jsonb")
RELEASE_ASSIGNMENT = _fn("release_assignment", p_assignment_id="bigint", p_attempt="integer",
                         p_reason="text")
FINISH_ASSIGNMENTS = _fn("finish_assignments", p_worker_id="uuid", p_reports="jsonb")

# Worker accounts: the hub's per-PC tokens (operators; the hub alone calls hub_claims)
ADD_WORKER_ACCOUNT = _fn("add_worker_account", p_name="text", p_token_hash="text")
LIST_WORKER_ACCOUNTS = _fn("list_worker_accounts", p_include_revoked="boolean")
REVOKE_WORKER_ACCOUNT = _fn("revoke_worker_account", p_name="text")
HUB_CLAIMS = _fn("hub_claims", p_token_hash="text")
# Operator accounts of embedded mode (admins; the dashboard alone calls operator_claims)
ADD_OPERATOR_ACCOUNT = _fn("add_operator_account", p_name="text", p_role="text", p_token_hash="text")
LIST_OPERATOR_ACCOUNTS = _fn("list_operator_accounts", p_include_revoked="boolean")
REVOKE_OPERATOR_ACCOUNT = _fn("revoke_operator_account", p_name="text")
OPERATOR_CLAIMS = _fn("operator_claims", p_token_hash="text")
# Not the library's: the hub asks it (as the worker) before it forwards a topic's events.
MAY_RECEIVE = _fn("may_receive", p_topic="text")

SCHEMA_VERSION = _fn("schema_version")  # readiness: anyone may ask
# Operations: the audit log, the metrics snapshot, the runs whose screenshots to keep
LIST_AUDIT = _fn("list_audit", p_actor="text", p_object_type="text", p_object_id="text",
                 p_since="timestamp with time zone", p_limit="integer", p_before_id="bigint")
METRICS_SNAPSHOT = _fn("metrics_snapshot")
EXISTING_RUNS = _fn("existing_runs", p_ids="bigint[]")

RESCUE_EXPIRED_LEASES = _fn("rescue_expired_leases")
MARK_STALE = _fn("mark_stale")
MAINTAIN = _fn("maintain", p_force="boolean")

DEVICE_JOBS: tuple[SqlFunction, ...] = (
    CREATE_JOB, PAUSE_JOB, RESUME_JOB, CANCEL_JOB, DELETE_JOB, RETRY_JOB, CLONE_JOB, UPDATE_JOB_TITLE, UPDATE_JOB, LIST_JOBS, GET_JOB,
    LIST_DEVICES, SET_DEVICE_STATE, RELEASE_DEVICE, SET_DEVICE_LABELS, REQUEST_DEVICE_REBOOT, GET_DEVICE,
    FLEET_LABELS, REGISTER_WORKER, HEARTBEAT, STOP_WORKER, WORKER_DEVICES, DEVICE_REBOOTED,
    CLAIM_ASSIGNMENTS,
    START_ASSIGNMENT, COMPLETE_ASSIGNMENT, FAIL_ASSIGNMENT, RELEASE_ASSIGNMENT, FINISH_ASSIGNMENTS,
    ADD_WORKER_ACCOUNT, LIST_WORKER_ACCOUNTS, REVOKE_WORKER_ACCOUNT, HUB_CLAIMS, SCHEMA_VERSION,
    LIST_AUDIT, METRICS_SNAPSHOT, EXISTING_RUNS, ADD_OPERATOR_ACCOUNT, LIST_OPERATOR_ACCOUNTS,
    REVOKE_OPERATOR_ACCOUNT, OPERATOR_CLAIMS,
    RESCUE_EXPIRED_LEASES, MARK_STALE, MAINTAIN,
    LIST_DEVICES_PAGE, DEVICE_GROUPS,
)


# --- Background AI batch jobs (jobsys/batch; migration 20261122000600) -----------------------
# Operators
CREATE_BACKGROUND_JOB = _fn("create_background_job", p_payload="jsonb", p_items="jsonb", p_title="text",
                            p_concurrency="integer", p_max_retries="integer", p_type="text")
CANCEL_BACKGROUND_JOB = _fn("cancel_background_job", p_job_id="uuid")
RETRY_BACKGROUND_JOB = _fn("retry_background_job", p_job_id="uuid")
# p_q: the title as typed; p_sort: a column, "-" first for descending; p_statuses: several (not with p_status)
LIST_BACKGROUND_JOBS = _fn("list_background_jobs", p_status="text", p_limit="integer", p_offset="integer",
                           p_q="text", p_sort="text", p_statuses="text[]")
GET_BACKGROUND_JOB = _fn("get_background_job", p_job_id="uuid")
LIST_BACKGROUND_JOB_LOGS = _fn("list_background_job_logs", p_job_id="uuid", p_limit="integer",
                               p_before_id="bigint")
LIST_BACKGROUND_JOB_ITEMS = _fn("list_background_job_items", p_job_id="uuid", p_status="text",
                                p_limit="integer", p_offset="integer")
LIST_BATCH_RATE_LIMITS = _fn("list_batch_rate_limits")  # the runners' shared limits (staff)
# Runners
CLAIM_BACKGROUND_JOB = _fn("claim_background_job", p_runner_id="text")
CLAIM_RUNNABLE_BACKGROUND_JOB = _fn("claim_runnable_background_job", p_runner_id="text", p_providers="text[]")
ACQUIRE_BATCH_RATE = _fn("acquire_batch_rate", p_key="text", p_rpm="integer", p_tpm="integer", p_tokens="integer",
                         p_window_sec="double precision", p_settle="jsonb")
COOL_DOWN_BATCH_RATE = _fn("cool_down_batch_rate", p_key="text", p_seconds="double precision")
SET_BACKGROUND_PROVIDER_BATCH = _fn("set_background_provider_batch", p_job_id="uuid", p_lease_token="uuid",
                                    p_batch="jsonb")
CLAIM_BACKGROUND_ITEMS = _fn("claim_background_items", returns_set=True, p_job_id="uuid",
                             p_lease_token="uuid", p_limit="integer")
REPORT_BACKGROUND_ITEMS = _fn("report_background_items", p_job_id="uuid", p_lease_token="uuid",
                              p_results="jsonb", p_logs="jsonb")
RENEW_BACKGROUND_LEASES = _fn("renew_background_leases", p_runner_id="text", p_lease_tokens="uuid[]")
FINISH_BACKGROUND_JOB = _fn("finish_background_job", p_job_id="uuid", p_lease_token="uuid", p_error="text")
RELEASE_BACKGROUND_JOB = _fn("release_background_job", p_job_id="uuid", p_lease_token="uuid",
                             p_reason="text")

BATCH: tuple[SqlFunction, ...] = (
    CREATE_BACKGROUND_JOB, CANCEL_BACKGROUND_JOB, RETRY_BACKGROUND_JOB, LIST_BACKGROUND_JOBS,
    GET_BACKGROUND_JOB, LIST_BACKGROUND_JOB_LOGS, LIST_BACKGROUND_JOB_ITEMS, CLAIM_BACKGROUND_JOB,
    CLAIM_BACKGROUND_ITEMS, REPORT_BACKGROUND_ITEMS, RENEW_BACKGROUND_LEASES, FINISH_BACKGROUND_JOB,
    RELEASE_BACKGROUND_JOB,
    CLAIM_RUNNABLE_BACKGROUND_JOB,
    ACQUIRE_BATCH_RATE, COOL_DOWN_BATCH_RATE,
    SET_BACKGROUND_PROVIDER_BATCH, LIST_BATCH_RATE_LIMITS,
)
ALL: tuple[SqlFunction, ...] = DEVICE_JOBS + BATCH  # every function the library calls
