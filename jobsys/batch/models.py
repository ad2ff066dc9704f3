"""Pydantic models of AI batch jobs, shared by the library, the REST API and the dashboard.

Bounds repeat the SQL checks (jobsys.check_ai_batch) on purpose: the edge answers with a
field-by-field message before any call, and SQL still refuses whatever slips past.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import re
import uuid
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field

from jobsys.batch import template as templates
from jobsys.models import check_title

ITEMS_MAX = 10_000
ITEM_MAX_CHARS = 20_000  # one item's JSON
ITEMS_MAX_TOTAL_BYTES = 16_000_000  # all items' JSON together
TEMPLATE_MAX_CHARS = 20_000
SYSTEM_INSTRUCTION_MAX_CHARS = 20_000
CONCURRENCY_DEFAULT = 5
CONCURRENCY_MAX = 64
MAX_RETRIES_DEFAULT = 3
MAX_RETRIES_MAX = 10
MAX_OUTPUT_TOKENS_MAX = 65_536
DEFAULT_MODEL = "gemini-2.5-flash"

_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")

Scalar = str | int | float | bool | None
StrictInt = Annotated[int, Field(strict=True)]


class BatchStatus(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.CANCELLED)


ItemStatus = BatchStatus  # items move through the same five states


class LogLevel(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class ProviderChoice(str, enum.Enum):
    AUTO = "auto"  # Gemini when the runner has GEMINI_API_KEY, else offline
    GEMINI = "gemini"
    OFFLINE = "offline"  # placeholder drafts, no model call; always labelled offline


def _json_chars(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(", ", ": ")))


class BatchCreate(pydantic.BaseModel):
    """An `ai_batch` job as an operator submits it. Unknown fields are refused."""

    model_config = pydantic.ConfigDict(extra="forbid")

    template: str = Field(min_length=1, max_length=TEMPLATE_MAX_CHARS)
    items: list[dict[str, Scalar]] = Field(min_length=1, max_length=ITEMS_MAX)
    model: str = DEFAULT_MODEL
    title: str | None = None
    system_instruction: str | None = Field(default=None, max_length=SYSTEM_INSTRUCTION_MAX_CHARS)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_output_tokens: StrictInt | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS_MAX)
    concurrency: StrictInt = Field(default=CONCURRENCY_DEFAULT, ge=1, le=CONCURRENCY_MAX)
    max_retries: StrictInt = Field(default=MAX_RETRIES_DEFAULT, ge=0, le=MAX_RETRIES_MAX)
    provider: ProviderChoice = ProviderChoice.AUTO

    @pydantic.field_validator("items", mode="before")
    @classmethod
    def _item_shapes(cls, value: Any) -> Any:
        # One clear message per bad item instead of pydantic's per-type union errors.
        if isinstance(value, list):
            for idx, item in enumerate(value[: ITEMS_MAX + 1]):
                if not isinstance(item, dict):
                    # ValueError, not TypeError: pydantic reports only ValueError as a field error
                    raise ValueError(f"item {idx} must be an object of fields, e.g. {{\"text\": \"...\"}}")  # noqa: TRY004
                for key, field_value in item.items():
                    if isinstance(field_value, (dict, list, tuple)):
                        raise ValueError(f"item {idx} field {key!r} is a nested object or list; field values "  # noqa: TRY004
                                         "must be text, numbers, true/false or null")
        return value

    @pydantic.field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("template must not be blank")
        if not templates.placeholders(value):  # also raises on malformed placeholders
            raise ValueError("template has no {placeholder}: name the item fields it uses, e.g. {text}")
        return value

    @pydantic.field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if not _MODEL_RE.match(value):
            raise ValueError("model must be a model name such as gemini-2.5-flash")
        return value

    @pydantic.field_validator("title")
    @classmethod
    def _title(cls, value: str | None) -> str | None:
        return None if value is None or not value.strip() else check_title(value)

    @pydantic.model_validator(mode="after")
    def _items_fit_template(self) -> BatchCreate:
        fields = templates.placeholders(self.template)
        total = 0
        for idx, item in enumerate(self.items):
            size = _json_chars(item)
            if size > ITEM_MAX_CHARS:
                raise ValueError(f"item {idx} is larger than {ITEM_MAX_CHARS} characters")
            total += size
            missing = [f for f in fields if f not in item]
            if missing:
                raise ValueError(f"item {idx} has no field {missing[0]}, which the template uses")
        if total > ITEMS_MAX_TOTAL_BYTES:
            raise ValueError(f"items must total at most {ITEMS_MAX_TOTAL_BYTES // 1_000_000} MB")
        return self

    @property
    def placeholders(self) -> list[str]:
        return templates.placeholders(self.template)

    def payload(self) -> dict[str, Any]:
        """The job payload as create_background_job takes it (the items go separately)."""
        out: dict[str, Any] = {"template": self.template, "model": self.model, "provider": self.provider.value}
        if self.system_instruction:
            out["system_instruction"] = self.system_instruction
        if self.temperature is not None:
            out["temperature"] = self.temperature
        if self.max_output_tokens is not None:
            out["max_output_tokens"] = self.max_output_tokens
        return out

    def preview(self, index: int = 0) -> str:
        """The rendered prompt of one item (the new-batch dialog shows the first)."""
        return templates.render(self.template, self.items[index])


class BatchPayload(pydantic.BaseModel):
    """The stored payload of an ai_batch job."""

    template: str
    model: str
    provider: ProviderChoice = ProviderChoice.AUTO
    system_instruction: str | None = None
    temperature: float | None = None
    max_output_tokens: int | None = None
    placeholders: list[str] = []


class BatchJob(pydantic.BaseModel):
    id: uuid.UUID
    type: Literal["ai_batch"]
    title: str
    status: BatchStatus
    payload: BatchPayload
    result: dict[str, Any]
    offline: bool  # some outputs came from the offline provider: placeholders, not model text
    concurrency: int
    total_items: int
    running_items: int
    completed_items: int
    failed_items: int
    cancelled_items: int
    progress_percent: int
    retry_count: int
    max_retries: int
    error_message: str | None
    created_by: uuid.UUID | None = None
    created_at: dt.datetime
    updated_at: dt.datetime
    started_at: dt.datetime | None
    completed_at: dt.datetime | None
    lease_owner: str | None
    lease_expires_at: dt.datetime | None

    @property
    def pending_items(self) -> int:
        return self.total_items - self.running_items - self.completed_items - self.failed_items - self.cancelled_items

    @property
    def can_retry(self) -> bool:
        return self.status in (BatchStatus.COMPLETED, BatchStatus.FAILED) and self.failed_items > 0

    @property
    def can_cancel(self) -> bool:
        return self.status in (BatchStatus.PENDING, BatchStatus.RUNNING)


class BatchSummary(pydantic.BaseModel):
    total: int
    pending: int
    running: int
    completed: int
    failed: int
    cancelled: int


class BatchJobList(pydantic.BaseModel):
    jobs: list[BatchJob]
    summary: BatchSummary


class BatchProgress(pydantic.BaseModel):
    """The payload of a background_job_progress event."""

    job_id: uuid.UUID
    status: BatchStatus
    total_items: int
    running_items: int
    completed_items: int
    failed_items: int
    cancelled_items: int
    progress_percent: int
    error_message: str | None = None
    offline: bool = False
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


class BatchItem(pydantic.BaseModel):
    idx: int
    input: dict[str, Any]
    status: ItemStatus
    output: str | None
    error: str | None
    attempts: int
    tokens_in: int | None
    tokens_out: int | None
    latency_ms: int | None
    provider: str | None
    runner_id: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class BatchItemPage(pydantic.BaseModel):
    items: list[BatchItem]
    total: int  # items matching the filter, for paging


class BatchLog(pydantic.BaseModel):
    id: int
    level: LogLevel
    message: str
    metadata: dict[str, Any]
    created_at: dt.datetime


class BatchLogPage(pydantic.BaseModel):
    logs: list[BatchLog]  # newest first
    next_before_id: int | None  # pass as before_id for the next (older) page; None at the end


# Runner side -----------------------------------------------------------------------------
class ClaimedBatchJob(BatchJob):
    lease_token: uuid.UUID
    lease_sec: float


class ClaimedItem(pydantic.BaseModel):
    idx: int
    input: dict[str, Any]
    attempts: int


@dataclasses.dataclass(frozen=True)
class ItemResult:
    """One item's outcome as a runner reports it."""

    idx: int
    status: Literal["completed", "failed"]
    output: str | None = None
    error: str | None = None
    attempts: int = 1
    tokens_in: int | None = None
    tokens_out: int | None = None
    latency_ms: int | None = None
    provider: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclasses.dataclass(frozen=True)
class LogLine:
    level: LogLevel
    message: str
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"level": self.level.value, "message": self.message, "metadata": self.metadata}


class ReportReply(pydantic.BaseModel):
    applied: int
    stale: list[int]  # results not counted: the item was no longer running under this lease
    job: BatchProgress
