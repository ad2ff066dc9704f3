"""Pydantic models shared by the library, the REST API and the dashboard.

Bounds here repeat the SQL checks on purpose: the edge rejects bad input with a field
by field message before any call, and SQL still refuses whatever slips past.
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import json
import re
import uuid
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field

from jobsys import hub_protocol

URL_MAX_CHARS = 2048
TITLE_MAX_CHARS = 200
DURATION_MAX_SEC = 86_400
DEVICE_COUNT_MAX = 100_000
ALL_DEVICES_VALUE_MAX = 100  # a target_value sent with all_devices (the original plan: 100) is ignored
TIMEOUT_MAX_SEC = 604_800
PRIORITY_MIN, PRIORITY_MAX = -10, 10
START_AT_MAX_AHEAD = dt.timedelta(days=365)  # a job's start_at is at most this far ahead (SQL: create_job)
TOPUP_GRACE_MAX_SEC = 86_400

URL_LABEL_MAX_CHARS = 63  # one label of the host, in its IDNA (punycode) form
URL_HOST_MAX_CHARS = 253
_URL_AUTHORITY_RE = re.compile(r"^https?://([^/?#]*)", re.IGNORECASE)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_WHITESPACE_RE = re.compile(r"\s")
# What a host name label may not contain: ASCII other than letters, digits and hyphens, and
# characters that only look like part of a name (other scripts' spaces and dots, zero-width
# and direction marks, symbols, emoji, fullwidth forms, private use). The same class as in
# jobsys.check_target_url (supabase/schemas/30_device_jobs.sql), both read \uXXXX alike,
# plus lone surrogates, which Postgres text cannot hold.
_HOST_BAD_CHAR_RE = re.compile(
    r"[\u0001-\u002c\u002e\u002f\u003a-\u0040\u005b-\u0060\u007b-\u00bf\u00d7\u00f7\u2000-\u206f"
    r"\u2100-\u2bff\u3000-\u303f\ue000-\uf8ff\ufe00-\ufe6f\ufeff\uff00-\uffff\U0001f000-\U0001ffff"
    r"\U000e0000-\U000e007f\U000f0000-\U0010ffff\ud800-\udfff]")
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE = re.compile(rf"^({_OCTET}\.){{3}}{_OCTET}$")
_IPV6_AUTHORITY_RE = re.compile(r"^\[([0-9A-Fa-f:.]+)\](.*)$")
_PORT_RE = re.compile(r"^:[0-9]{1,5}$")


class TargetType(str, enum.Enum):
    ALL_DEVICES = "all_devices"
    PERCENTAGE = "percentage"
    DEVICE_COUNT = "device_count"


class JobStatus(str, enum.Enum):
    SCHEDULED = "scheduled"  # waiting for its start_at; no runs yet
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    INCOMPLETE = "incomplete"  # ended short of its target: see Job.end_reason
    CANCELLED = "cancelled"


class EndReason(str, enum.Enum):
    """Why an incomplete job ended (docs/state_machine.md)."""

    NO_ELIGIBLE_DEVICES = "no_eligible_devices"  # its runs all ended and no new device came within the grace
    TIMED_OUT = "timed_out"  # its time limit (timeout_sec) passed
    MAX_ATTEMPTS = "max_attempts"  # failed runs (each after its attempts) are the shortfall


class AssignmentStatus(str, enum.Enum):
    PENDING = "pending"
    PAUSED = "paused"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class DeviceStatus(str, enum.Enum):
    """What the dashboard shows for a device (jobsys.device_status): only idle takes a run."""

    IDLE = "idle"
    BUSY = "busy"
    OFFLINE = "offline"
    ERROR = "error"
    UNAUTHORIZED = "unauthorized"  # adb lists it, but USB debugging is not allowed (or no permissions)
    DISABLED = "disabled"
    DRAINING = "draining"  # its run finishes, then it is disabled
    QUARANTINED = "quarantined"  # its last runs failed in a row
    LOW_BATTERY = "low_battery"
    OVERHEATED = "overheated"


def title_from_url(url: str) -> str:
    """Default title: host and path (mirrors jobsys.title_from_url in SQL)."""
    without_scheme = re.sub(r"^[A-Za-z]+://", "", url)
    return re.split(r"[?#]", without_scheme, maxsplit=1)[0].rstrip("/")[:TITLE_MAX_CHARS]


def url_host_problem(url: str) -> str | None:
    """What is wrong with the host (and port) of an http(s) URL, or None. The rules of
    jobsys.check_target_url in SQL, which create_job applies again:

    - no user name or password: https://evil.com@good.com/ goes to good.com;
    - a domain name: labels of letters, digits and inner hyphens, none empty (so no
      trailing dot either), at most 63 characters each and 253 in all, measured in IDNA
      form: an international label (https://한국.kr/) counts as its punycode
      (xn--3e0b707e); the URL itself is kept as typed;
    - or an IPv4 address (a host ending in a number must be one), or an IPv6 address in
      brackets;
    - an optional port from 1 to 65535.
    """
    match = _URL_AUTHORITY_RE.match(url)
    if match is None:
        return "the URL must start with http:// or https:// and name a host"
    authority = match.group(1)
    if "@" in authority:
        return "the URL must not contain a user name or password (user@host): give the host alone"
    if authority.startswith("["):
        bracketed = _IPV6_AUTHORITY_RE.match(authority)
        port = bracketed.group(2) if bracketed else ""
        try:
            ipaddress.IPv6Address(bracketed.group(1) if bracketed else "")
        except ValueError:
            return "the host in brackets is not an IPv6 address"
    else:
        host = authority.partition(":")[0]
        port = authority[len(host):]
        if not host:
            return "there is no host"
        total = -1
        labels = host.split(".")
        for label in labels:
            if not label:
                return "the host has an empty label (two dots in a row, or a dot at either end)"
            if len(label) > URL_LABEL_MAX_CHARS:
                return f"a label of the host is longer than {URL_LABEL_MAX_CHARS} characters"
            if label.startswith("-") or label.endswith("-") or _HOST_BAD_CHAR_RE.search(label):
                return ("a host name has letters, digits, dots and hyphens only "
                        "(no hyphen at either end of a label)")
            size = len(label) if label.isascii() else len("xn--" + label.encode("punycode").decode("ascii"))
            if size > URL_LABEL_MAX_CHARS:
                return (f"a label of the host is longer than {URL_LABEL_MAX_CHARS} characters "
                        "in its IDNA (punycode) form")
            total += 1 + size
        if total > URL_HOST_MAX_CHARS:
            return f"the host is longer than {URL_HOST_MAX_CHARS} characters (in its IDNA form)"
        if re.fullmatch(r"[0-9]+", labels[-1]) and not _IPV4_RE.match(host):
            return "a host ending in a number must be an IPv4 address (four numbers 0-255)"
    if port and not (_PORT_RE.match(port) and 1 <= int(port[1:]) <= 65535):
        return "the port must be a number from 1 to 65535"
    return None


def check_url(url: str) -> str:
    if len(url) > URL_MAX_CHARS:
        raise ValueError(f"URL must be at most {URL_MAX_CHARS} characters")
    if _WHITESPACE_RE.search(url) or _CONTROL_RE.search(url):
        raise ValueError("URL must not contain spaces or control characters")
    problem = url_host_problem(url)
    if problem is not None:
        raise ValueError(problem)
    return url


def check_title(title: str) -> str:
    title = title.strip()
    if not title:
        raise ValueError("title must not be empty")
    if len(title) > TITLE_MAX_CHARS:
        raise ValueError(f"title must be at most {TITLE_MAX_CHARS} characters")
    if _CONTROL_RE.search(title):
        raise ValueError("title must not contain control characters")
    return title


StrictInt = Annotated[int, Field(strict=True)]


class JobCreate(pydantic.BaseModel):
    """What an operator asks for. Unknown fields (counters, status...) are refused."""

    model_config = pydantic.ConfigDict(extra="forbid")

    target_url: str = Field(max_length=URL_MAX_CHARS)
    duration_sec: StrictInt = Field(ge=1, le=DURATION_MAX_SEC)
    target_type: TargetType = TargetType.ALL_DEVICES
    target_value: StrictInt | None = None
    title: str | None = Field(default=None, max_length=TITLE_MAX_CHARS + 100)
    action: Literal["open_url"] = "open_url"
    timeout_sec: StrictInt | None = Field(
        default=None, ge=1, le=TIMEOUT_MAX_SEC,
        description="time limit from creation: then queued runs are cancelled, running ones stopped, "
                    "and the job ends completed or incomplete/timed_out")
    topup_grace_sec: StrictInt | None = Field(
        default=None, ge=0, le=TOPUP_GRACE_MAX_SEC,
        description="how long a job whose runs all ended short waits for new devices before it ends "
                    "incomplete (default: the topup_grace_sec setting, 120)")
    start_at: pydantic.AwareDatetime | None = Field(
        default=None,
        description="RFC 3339 time with a timezone, at most 365 days ahead: the job is scheduled (no runs) "
                    "until then; now or in the past starts it at once. timeout_sec counts from it")
    device_labels: dict[str, Annotated[str, Field(strict=True)]] = Field(
        default_factory=dict,
        description="only devices carrying every one of these label pairs (their worker's or an operator's) "
                    "run the job; percentage and device_count count among them")

    priority: StrictInt = Field(
        default=0, ge=PRIORITY_MIN, le=PRIORITY_MAX,
        description="a device runs the highest-priority job it has first, then the oldest")

    @pydantic.field_validator("device_labels")
    @classmethod
    def _device_labels(cls, value: dict[str, str]) -> dict[str, str]:
        return check_labels(value)

    @pydantic.field_validator("start_at")
    @classmethod
    def _start_at(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value > dt.datetime.now(dt.timezone.utc) + START_AT_MAX_AHEAD:
            raise ValueError("start_at must be at most 365 days ahead")
        return value

    @pydantic.field_validator("target_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)

    @pydantic.field_validator("title")
    @classmethod
    def _title(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return check_title(value)

    @pydantic.model_validator(mode="after")
    def _target(self) -> JobCreate:
        kind, value = self.target_type, self.target_value
        if kind is TargetType.ALL_DEVICES and value is not None and not 1 <= value <= ALL_DEVICES_VALUE_MAX:
            raise ValueError(f"target_value must be empty or between 1 and {ALL_DEVICES_VALUE_MAX} "
                             "when the target is all devices (it is ignored)")
        if kind is TargetType.PERCENTAGE and (value is None or not 1 <= value <= 100):
            raise ValueError("percentage must be between 1 and 100")
        if kind is TargetType.DEVICE_COUNT and (value is None or not 1 <= value <= DEVICE_COUNT_MAX):
            raise ValueError(f"device count must be between 1 and {DEVICE_COUNT_MAX}")
        return self

    @property
    def effective_title(self) -> str:
        return self.title or title_from_url(self.target_url)


class JobUpdate(pydantic.BaseModel):
    """PATCH body: a status move and/or a new title."""

    model_config = pydantic.ConfigDict(extra="forbid")

    status: Literal["paused", "active", "cancelled"] | None = None
    # The same bound as JobCreate.title: a lone surrogate (not valid text) is refused here too.
    title: str | None = Field(default=None, max_length=TITLE_MAX_CHARS + 100)

    @pydantic.field_validator("title")
    @classmethod
    def _title(cls, value: str | None) -> str | None:
        return None if value is None else check_title(value)

    @pydantic.model_validator(mode="after")
    def _something(self) -> JobUpdate:
        if self.status is None and self.title is None:
            raise ValueError("give a status or a title to change")
        return self


class Job(pydantic.BaseModel):
    id: uuid.UUID
    title: str
    action: str
    target_url: str
    duration_sec: int
    target_type: TargetType
    target_value: int | None
    target_count: int
    status: JobStatus
    max_attempts: int
    assigned_count: int
    running_count: int
    completed_count: int
    failed_count: int
    cancelled_count: int
    created_by: uuid.UUID | None = None
    created_at: dt.datetime
    updated_at: dt.datetime
    paused_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None  # when it became completed, incomplete or cancelled
    end_reason: EndReason | None = None  # set when status is incomplete
    timeout_sec: int | None = None
    topup_grace_sec: int | None = None
    start_at: dt.datetime | None = None  # when a scheduled job starts (or started)
    device_labels: dict[str, str] = {}  # only devices carrying all of these run it
    priority: int = 0  # a device claims the highest priority first, then the oldest
    # Short by N: an active job whose runs all ended waits for new devices (since waiting_since).
    waiting_for_devices: int | None = None
    waiting_since: dt.datetime | None = None

    @property
    def progress_percent(self) -> int:
        if self.target_count <= 0:
            return 0
        return min(100, self.completed_count * 100 // self.target_count)


class Assignment(pydantic.BaseModel):
    id: int
    device_id: uuid.UUID
    serial: str
    worker_id: uuid.UUID | None
    worker_name: str | None = None
    status: AssignmentStatus
    attempt: int
    lease_expires_at: dt.datetime | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    result: dict[str, Any] | None
    error: str | None

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def screenshot_url(self) -> str | None:
        """Where an operator fetches the run's screenshot (relative to the dashboard's
        address) when a hub worker uploaded it; None otherwise (hub_protocol.screenshot_url)."""
        return hub_protocol.screenshot_url((self.result or {}).get("evidence_path"))


class JobDetail(Job):
    assignments: list[Assignment]


class CreatedJob(pydantic.BaseModel):
    job: Job
    assigned: int


class RetriedJob(pydantic.BaseModel):
    job: Job
    retried: int  # failed runs put back in the queue


class JobRunRow(pydantic.BaseModel):
    """One device run of a job, as the export writes it."""

    assignment_id: int
    device_serial: str
    worker_name: str | None
    status: AssignmentStatus
    attempt: int
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None
    evidence: str | None  # the screenshot's path (or Storage object / URL) from the run's result
    screenshot_url: str | None = None  # a hub worker's upload: the API path an operator fetches it from


class JobSummary(pydantic.BaseModel):
    total: int
    scheduled: int = 0
    active: int
    paused: int
    completed: int
    incomplete: int = 0
    cancelled: int
    waiting_for_devices: int = 0  # active jobs waiting for new devices


class JobList(pydantic.BaseModel):
    jobs: list[Job]
    summary: JobSummary


class DeviceVitals(pydantic.BaseModel):
    """What a worker reads from a phone at most once a minute (dumpsys battery, dumpsys power,
    adb's device list). Every field is optional: a driver reports what it can read. The
    server keeps a phone whose battery is below `min_battery_pct` or hotter than
    `max_battery_temp_c` out of new work until it recovers (jobsys.fit_state in SQL)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    battery_pct: StrictInt | None = Field(default=None, ge=0, le=100)
    charging: bool | None = None
    temperature_c: float | None = Field(default=None, ge=-40, le=150)
    screen_on: bool | None = None
    # adb's word for the phone: device, unauthorized, offline, "no permissions", recovery...
    adb_state: str | None = Field(default=None, max_length=32)


class Device(pydantic.BaseModel):
    id: uuid.UUID
    serial: str
    model: str
    simulated: bool
    labels: dict[str, Any]  # what its worker reports (model, android_version, pc...): read-only
    operator_labels: dict[str, Any] = {}  # what operators set (rack=A)
    state: str
    status: DeviceStatus
    state_reason: str | None = None  # why it takes no work, in words
    state_changed_at: dt.datetime | None = None
    quarantined_until: dt.datetime | None = None
    failure_streak: int = 0
    vitals: DeviceVitals | None = None
    vitals_at: dt.datetime | None = None
    reboot_requested_at: dt.datetime | None = None
    rebooted_at: dt.datetime | None = None
    worker_id: uuid.UUID | None
    worker_name: str | None
    current_job_id: uuid.UUID | None
    last_heartbeat_at: dt.datetime
    # The last worker session refused this serial because a live session of another worker
    # account holds it; cleared when the device moves (docs/state_machine.md, Devices).
    conflict_worker_id: uuid.UUID | None = None
    conflict_at: dt.datetime | None = None

    @property
    def all_labels(self) -> dict[str, Any]:
        """What a job's device_labels match against: the worker's, the operator's winning."""
        return {**self.labels, **self.operator_labels}


class DeviceSummary(pydantic.BaseModel):
    total: int
    connected: int
    idle: int
    busy: int
    offline: int
    error: int
    disabled: int
    unauthorized: int = 0
    draining: int = 0
    quarantined: int = 0
    low_battery: int = 0
    overheated: int = 0


class DeviceList(pydantic.BaseModel):
    devices: list[Device]
    summary: DeviceSummary


# Devices at scale (issue 20): the device list a page at a time, and counts per PC -------------
NO_WORKER = uuid.UUID(int=0)  # as a worker id filter: the devices no worker session holds


class DeviceFilterState(str, enum.Enum):
    """A device list's state filter: a DeviceStatus, or connected (idle or busy)."""

    CONNECTED = "connected"
    IDLE = "idle"
    BUSY = "busy"
    OFFLINE = "offline"
    ERROR = "error"
    UNAUTHORIZED = "unauthorized"
    DISABLED = "disabled"
    DRAINING = "draining"
    QUARANTINED = "quarantined"
    LOW_BATTERY = "low_battery"
    OVERHEATED = "overheated"


class DeviceFilter(pydantic.BaseModel):
    """What list_devices_page and device_groups narrow to; empty: every device."""

    state: DeviceFilterState | None = None
    labels: dict[str, str] = {}  # every pair must match (the operator's label wins on a shared key)
    q: str | None = pydantic.Field(default=None, max_length=200)  # a substring of the serial


class DevicePage(pydantic.BaseModel):
    """One page of devices by serial; `next_cursor` (a serial) continues it, None on the last.
    `total` and `summary` are None when the caller did not ask for counts."""

    devices: list[Device]
    next_cursor: str | None = None
    total: int | None = None
    summary: DeviceSummary | None = None


class DeviceGroup(pydantic.BaseModel):
    """One PC (worker session; None: devices no worker holds) with its devices' counts."""

    worker_id: uuid.UUID | None
    worker_name: str | None
    total: int
    matching: int  # how many pass the filter asked for
    summary: DeviceSummary


class DeviceGroups(pydantic.BaseModel):
    groups: list[DeviceGroup]
    summary: DeviceSummary


class DeviceVitalsSample(pydantic.BaseModel):
    at: dt.datetime
    battery_pct: int | None = None
    temperature_c: float | None = None
    charging: bool | None = None


class DeviceEvent(pydantic.BaseModel):
    """A state change (with its reason) or a reboot, from the device's history."""

    id: int
    at: dt.datetime
    event: Literal["state", "reboot_requested", "rebooted", "reboot_failed"]
    state: str
    detail: str | None = None


class DeviceRun(pydantic.BaseModel):
    id: int
    job_id: uuid.UUID
    job_title: str
    status: AssignmentStatus
    attempt: int
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None
    result: dict[str, Any] | None

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def screenshot_url(self) -> str | None:
        return hub_protocol.screenshot_url((self.result or {}).get("evidence_path"))


class DeviceDetail(Device):
    """One device with its last 24 hours of vitals, last 100 events and last 50 runs."""

    vitals_history: list[DeviceVitalsSample]
    events: list[DeviceEvent]
    runs: list[DeviceRun]


class DeviceUpdate(pydantic.BaseModel):
    """PATCH /api/devices/{id}: the operator's labels (replacing them), and/or a state:
    disabled | enabled, or drain (its run finishes, then it is disabled)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    labels: dict[str, Annotated[str, Field(strict=True)]] | None = None
    state: Literal["disabled", "enabled"] | None = None
    drain: Literal[True] | None = None

    @pydantic.field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else check_labels(value)

    @pydantic.model_validator(mode="after")
    def _something(self) -> DeviceUpdate:
        if self.labels is None and self.state is None and self.drain is None:
            raise ValueError("give labels, a state (disabled or enabled) or drain: true")
        if self.state is not None and self.drain is not None:
            raise ValueError("give a state or drain, not both")
        return self

    @property
    def state_move(self) -> Literal["disabled", "enabled", "draining"] | None:
        return "draining" if self.drain else self.state


class AuditEntry(pydantic.BaseModel):
    """One operator action, as the function that performed it recorded it."""

    id: int
    at: dt.datetime
    actor_role: str
    actor_id: uuid.UUID | None = None
    actor_name: str | None = None
    action: str
    object_type: Literal["job", "device", "worker_account", "operator_account", "background_job", "system"]
    object_id: str | None = None
    detail: dict[str, Any] = {}


class AuditPage(pydantic.BaseModel):
    entries: list[AuditEntry]

    @property
    def next_before_id(self) -> int | None:
        """Pass as before_id for the next (older) page; None when this page is the last."""
        return self.entries[-1].id if self.entries else None


class FleetLabel(pydantic.BaseModel):
    key: str
    value: str
    total: int  # devices carrying it (among those matching the filter)
    healthy: int  # of which may take a run now


class FleetLabels(pydantic.BaseModel):
    """The label choices of the new-job dialog, with live counts."""

    healthy: int  # healthy devices matching the filter: what a job on all of them would reach
    total: int
    labels: list[FleetLabel]


# Worker side ---------------------------------------------------------------------------
LABELS_MAX = 32
LABEL_KEY_MAX_CHARS = 64
LABEL_VALUE_MAX_CHARS = 256
LABELS_MAX_BYTES = 4096  # as JSON, measured as Postgres writes jsonb as text
_LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    """Device labels within the bounds jobsys.check_device_reports enforces in SQL."""
    if len(labels) > LABELS_MAX:
        raise ValueError(f"at most {LABELS_MAX} labels per device")
    for key, value in labels.items():
        if not _LABEL_KEY_RE.match(key):
            raise ValueError(
                f"label keys must be 1-{LABEL_KEY_MAX_CHARS} characters of letters, digits and _ . : / -")
        if len(value) > LABEL_VALUE_MAX_CHARS:
            raise ValueError(f"label values must be strings of at most {LABEL_VALUE_MAX_CHARS} characters")
    if len(json.dumps(labels, ensure_ascii=False).encode()) > LABELS_MAX_BYTES:
        raise ValueError(f"labels must be at most {LABELS_MAX_BYTES} bytes as JSON")
    return labels


class DeviceReport(pydantic.BaseModel):
    """A device as a worker reports it at registration and heartbeat: what the worker sees.
    `unauthorized`: adb lists the phone, but this PC may not use it. Never `disabled`: that
    is an operator's decision (JobSystem.set_device_state)."""

    serial: str = Field(min_length=1, max_length=200)
    state: Literal["online", "offline", "error", "unauthorized"] = "online"
    model: str = Field(default="", max_length=200)
    simulated: bool = False
    labels: dict[str, Annotated[str, Field(strict=True)]] = Field(default_factory=dict)
    vitals: DeviceVitals | None = None  # sent when read (at most once a minute per phone)

    @pydantic.field_validator("state", mode="before")
    @classmethod
    def _not_disabled(cls, value: Any) -> Any:
        if value == "disabled":
            raise ValueError("a worker may not report a device as disabled: disabling is an operator's "
                             "decision (report online, offline, error or unauthorized)")
        return value

    @pydantic.field_validator("labels", mode="before")
    @classmethod
    def _labels_object(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("labels must be a JSON object")
        return value

    @pydantic.field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return check_labels(value)


class RefusedDevice(pydantic.BaseModel):
    """A serial register_worker or heartbeat did not bind to the session: held by a live session
    of another worker account (code JS423). The worker may report it again; it moves once that
    session is stale or stops listing it, or an operator releases it."""

    serial: str
    code: str
    reason: str


class RegisteredDevice(pydantic.BaseModel):
    id: uuid.UUID
    serial: str
    state: str


class WorkerSession(pydantic.BaseModel):
    worker_id: uuid.UUID
    topic: str
    devices: list[RegisteredDevice]
    refused: list[RefusedDevice] = []  # serials held by another worker account's live session


class HeartbeatReply(pydantic.BaseModel):
    stop: list[int]  # runs the worker holds that it must stop now
    maintenance: dict[str, Any]
    refused: list[RefusedDevice] = []  # with a device report: as WorkerSession.refused
    # Devices of this session an operator asked to reboot (the polling path of the
    # device_reboot event); the worker reboots each and answers with device_rebooted.
    reboot: list[uuid.UUID] = []


class ClaimedAssignment(pydantic.BaseModel):
    assignment_id: int
    attempt: int
    job_id: uuid.UUID
    device_id: uuid.UUID
    serial: str
    action: str
    target_url: str
    duration_sec: int
    lease_expires_at: dt.datetime
    started: bool = False  # claimed with start=True: the run is already started


class RunState(pydantic.BaseModel):
    assignment_id: int
    job_id: uuid.UUID
    device_id: uuid.UUID
    status: AssignmentStatus
    attempt: int


RunOutcome = Literal["completed", "failed", "retry", "release"]


class RunReport(pydantic.BaseModel):
    """How one run ended, for JobSystem.finish_assignments. `retry` re-queues the run while
    attempts remain; `release` puts it back in the queue (the worker will not run it)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    assignment_id: int = pydantic.Field(ge=1)
    attempt: int = pydantic.Field(ge=1)
    outcome: RunOutcome
    result: dict[str, Any] | None = None
    error: str | None = None

    @pydantic.model_validator(mode="after")
    def _failure_says_why(self) -> "RunReport":
        if self.outcome in ("failed", "retry") and not (self.error or "").strip():
            raise ValueError("error must say why the run failed")
        return self


class FinishedRun(pydantic.BaseModel):
    """One report's answer: the run's new state, or stale=True when the run had moved on
    (lease expired and re-queued, job cancelled or deleted) and the report changed nothing."""

    assignment_id: int
    attempt: int
    stale: bool
    job_id: uuid.UUID | None = None
    device_id: uuid.UUID | None = None
    status: AssignmentStatus | None = None
