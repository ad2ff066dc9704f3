"""Pydantic models shared by the library, the REST API and the dashboard.

Bounds here repeat the SQL checks on purpose: the edge rejects bad input with a field
by field message before any call, and SQL still refuses whatever slips past.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import uuid
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field

URL_MAX_CHARS = 2048
TITLE_MAX_CHARS = 200
DURATION_MAX_SEC = 86_400
DEVICE_COUNT_MAX = 100_000

_URL_RE = re.compile(r"^https?://[^\s/?#@]+", re.IGNORECASE)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_WHITESPACE_RE = re.compile(r"\s")


class TargetType(str, enum.Enum):
    ALL_DEVICES = "all_devices"
    PERCENTAGE = "percentage"
    DEVICE_COUNT = "device_count"


class JobStatus(str, enum.Enum):
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class AssignmentStatus(str, enum.Enum):
    PENDING = "pending"
    PAUSED = "paused"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class DeviceStatus(str, enum.Enum):
    IDLE = "idle"
    BUSY = "busy"
    OFFLINE = "offline"
    ERROR = "error"
    DISABLED = "disabled"


def title_from_url(url: str) -> str:
    """Default title: host and path (mirrors jobsys.title_from_url in SQL)."""
    without_scheme = re.sub(r"^[A-Za-z]+://", "", url)
    return re.split(r"[?#]", without_scheme, maxsplit=1)[0].rstrip("/")[:TITLE_MAX_CHARS]


def check_url(url: str) -> str:
    if len(url) > URL_MAX_CHARS:
        raise ValueError(f"URL must be at most {URL_MAX_CHARS} characters")
    if _WHITESPACE_RE.search(url) or _CONTROL_RE.search(url):
        raise ValueError("URL must not contain spaces or control characters")
    if not _URL_RE.match(url):
        raise ValueError("URL must start with http:// or https:// and name a host")
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
        if kind is TargetType.ALL_DEVICES and value is not None:
            raise ValueError("target_value must be empty when the target is all devices")
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
    title: str | None = None

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
    status: AssignmentStatus
    attempt: int
    lease_expires_at: dt.datetime | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    result: dict[str, Any] | None
    error: str | None


class JobDetail(Job):
    assignments: list[Assignment]


class CreatedJob(pydantic.BaseModel):
    job: Job
    assigned: int


class JobSummary(pydantic.BaseModel):
    total: int
    active: int
    paused: int
    completed: int
    cancelled: int


class JobList(pydantic.BaseModel):
    jobs: list[Job]
    summary: JobSummary


class Device(pydantic.BaseModel):
    id: uuid.UUID
    serial: str
    model: str
    simulated: bool
    labels: dict[str, Any]
    state: str
    status: DeviceStatus
    worker_id: uuid.UUID | None
    worker_name: str | None
    current_job_id: uuid.UUID | None
    last_heartbeat_at: dt.datetime


class DeviceSummary(pydantic.BaseModel):
    total: int
    connected: int
    idle: int
    busy: int
    offline: int
    error: int
    disabled: int


class DeviceList(pydantic.BaseModel):
    devices: list[Device]
    summary: DeviceSummary


# Worker side ---------------------------------------------------------------------------
class DeviceReport(pydantic.BaseModel):
    """A device as a worker reports it at registration and heartbeat."""

    serial: str = Field(min_length=1, max_length=200)
    state: Literal["online", "offline", "error", "disabled"] = "online"
    model: str = Field(default="", max_length=200)
    simulated: bool = False
    labels: dict[str, str] = {}


class RegisteredDevice(pydantic.BaseModel):
    id: uuid.UUID
    serial: str
    state: str


class WorkerSession(pydantic.BaseModel):
    worker_id: uuid.UUID
    topic: str
    devices: list[RegisteredDevice]


class HeartbeatReply(pydantic.BaseModel):
    stop: list[int]  # runs the worker holds that it must stop now
    maintenance: dict[str, Any]


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
