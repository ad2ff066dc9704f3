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

import jsonschema
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
RESPONSE_SCHEMA_MAX_CHARS = 20_000
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
    OPENAI_COMPATIBLE = "openai_compatible"  # the runner's own OpenAI-compatible server (vLLM, Ollama, ...)


class BatchMode(str, enum.Enum):
    STANDARD = "standard"  # one call per item, in the runner's pool
    BATCH_API = "batch_api"  # Gemini's Batch API: one provider batch, half price, results within 24 h


# Providers a runner needs configured to run a job (auto and offline run anywhere).
CONFIGURED_PROVIDERS = (ProviderChoice.GEMINI, ProviderChoice.OPENAI_COMPATIBLE)


def _remote_refs(value: Any) -> bool:
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            return True
        return any(_remote_refs(v) for v in value.values())
    if isinstance(value, list):
        return any(_remote_refs(v) for v in value)
    return False


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
    response_schema: dict[str, Any] | None = None  # JSON Schema: structured output, validated per item
    mode: BatchMode = BatchMode.STANDARD

    @pydantic.field_validator("response_schema")
    @classmethod
    def _response_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        if _json_chars(value) > RESPONSE_SCHEMA_MAX_CHARS:
            raise ValueError(f"response_schema must be at most {RESPONSE_SCHEMA_MAX_CHARS} characters")
        dialect = value.get("$schema")
        if dialect is not None and not isinstance(dialect, str):
            raise ValueError("response_schema: $schema must be the URI of a JSON Schema draft")
        validator = (jsonschema.Draft202012Validator if dialect is None
                     else jsonschema.validators.validator_for(value, default=None))
        if validator is None:
            raise ValueError(f"response_schema: unknown $schema {str(dialect)[:100]!r}")
        try:
            validator.check_schema(value)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"response_schema is not a valid JSON Schema: {exc.message}") from None
        if _remote_refs(value):  # validation would need the network (and runs on every runner)
            raise ValueError("response_schema: $ref must point inside the schema (#/...)")
        return value

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
    def _batch_api_is_gemini(self) -> BatchCreate:
        if self.mode is BatchMode.BATCH_API and self.provider is not ProviderChoice.GEMINI:
            raise ValueError("mode batch_api needs provider gemini")
        return self

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
        if self.response_schema is not None:
            out["response_schema"] = self.response_schema
        if self.mode is not BatchMode.STANDARD:
            out["mode"] = self.mode.value
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
    response_schema: dict[str, Any] | None = None
    mode: BatchMode = BatchMode.STANDARD


class TokenUsage(pydantic.BaseModel):
    """A job's tokens over every attempt of every run; retry_* is the part spent on attempts
    whose output was not kept (transient retries with usage, invalid structured outputs,
    failed items)."""

    input: int = 0
    output: int = 0
    thinking: int = 0
    retry_input: int = 0
    retry_output: int = 0
    retry_thinking: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output + self.thinking

    @property
    def retry_total(self) -> int:
        return self.retry_input + self.retry_output + self.retry_thinking


class WaitReason(pydantic.BaseModel):
    """Why a pending job is not running: no runner is up (no_runner), or none can run its
    provider (no_capable_runner, e.g. no runner has GEMINI_API_KEY)."""

    code: Literal["no_runner", "no_capable_runner"]
    message: str
    provider: str | None = None


class RateLimit(pydantic.BaseModel):
    """A shared rate limit as the runners last asked for it (--rpm / --tpm), per provider and
    model (key "gemini:gemini-2.5-flash")."""

    key: str
    rpm: int | None
    tpm: int | None
    cooldown_until: dt.datetime | None  # a 429's cooldown, while it runs
    updated_at: dt.datetime

    @property
    def provider(self) -> str:
        return self.key.partition(":")[0] if ":" in self.key else ""

    @property
    def model(self) -> str:
        return self.key.partition(":")[2] if ":" in self.key else self.key


class CostEstimate(pydantic.BaseModel):
    """USD at the price table's prices; None when the model has no price there."""

    usd: float | None
    retry_usd: float | None  # of which spent on attempts whose output was not kept
    priced_model: str | None  # the price table entry used
    prices_as_of: str  # the date the price table was taken from the provider's page
    mode: str = "standard"


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
    usage: TokenUsage = Field(default_factory=TokenUsage)
    wait_reason: WaitReason | None = None  # pending only; filled by get / list

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def cost(self) -> CostEstimate:
        """Estimated USD cost of `usage` at the price table's prices (jobsys/batch/pricing.py)."""
        from jobsys.batch import pricing  # pricing imports this module

        if self.result.get("providers") == ["offline"]:  # placeholders cost nothing: no model was called
            return pricing.job_cost("", TokenUsage())
        return pricing.job_cost(self.payload.model, self.usage, self.payload.mode.value)

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
    summary: BatchSummary  # over all jobs
    matching: int | None = None  # the jobs the filters (status, search) pass; None from an older server


LIST_SORT_KEYS = ("status", "title", "progress", "created", "started", "ended", "duration")
LIST_SORT_PATTERN = rf"^-?({'|'.join(LIST_SORT_KEYS)})$"
LIST_Q_MAX = 200  # list_background_jobs refuses a longer search
LIST_LIMIT_MAX = 1000


class BatchListQuery(pydantic.BaseModel):
    """What list_background_jobs narrows and orders by; the SQL checks the same bounds."""

    model_config = pydantic.ConfigDict(extra="forbid")

    statuses: tuple[BatchStatus, ...] | None = Field(default=None, min_length=1, max_length=len(BatchStatus))
    q: str | None = Field(default=None, max_length=LIST_Q_MAX)  # the title as typed, case-insensitive
    sort: str = Field(default="-created", pattern=LIST_SORT_PATTERN)  # a column, "-" first for descending
    limit: int = Field(default=100, ge=1, le=LIST_LIMIT_MAX)
    offset: int = Field(default=0, ge=0)


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
    usage: TokenUsage = Field(default_factory=TokenUsage)


class BatchItem(pydantic.BaseModel):
    idx: int
    input: dict[str, Any]
    status: ItemStatus
    output: str | None
    error: str | None
    attempts: int
    tokens_in: int | None
    tokens_out: int | None
    tokens_thinking: int | None = None
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
    tokens_in: int | None = None  # tokens_*: the item's totals over this run's attempts
    tokens_out: int | None = None
    tokens_thinking: int | None = None
    retry_tokens_in: int | None = None  # retry_tokens_*: the part of them whose output was not kept
    retry_tokens_out: int | None = None
    retry_tokens_thinking: int | None = None
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
