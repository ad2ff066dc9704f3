"""What an AI batch's numbers and messages say, apart from how they are drawn: the segments of
its bar (완료 / 실행 중 / 대기 / 실패 / 취소, the device jobs' colours), what its percentage
counts, its times, whether a retry can help (a missing or rejected key cannot be fixed by
retrying), and its log lines in the reader's language (code + parameters, else the stored
English text).

Kept free of NiceGUI, like job_progress.py, so the table, the side panel and the tests read the
same numbers.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from jobsys.batch.models import BatchJob, BatchLog, BatchStatus
from jobsys.batch.providers.gemini_env import ENV_API_KEY
from jobsys.batch.providers.openai_env import ENV_BASE_URL
from nicegui_app.pages.job_progress import SEGMENT_COLORS, Segment

# Badge colours: white text on each clears WCAG AA (4.5:1), as the device jobs' badges do.
STATUS_BACKGROUNDS: dict[BatchStatus, str] = {
    BatchStatus.PENDING: "#475569",  # slate 7.58:1
    BatchStatus.RUNNING: "#1d4ed8",  # blue 6.70:1
    BatchStatus.COMPLETED: "#15803d",  # green 5.02:1
    BatchStatus.FAILED: "#b91c1c",  # red 6.47:1
    BatchStatus.CANCELLED: "#374151",  # dark grey 10.31:1
}
# "active" in the address: what is not finished yet (queued jobs count too), like the old tab.
ACTIVE = "active"
FILTERS: dict[str, tuple[BatchStatus, ...]] = {
    ACTIVE: (BatchStatus.PENDING, BatchStatus.RUNNING),
    **{status.value: (status,) for status in BatchStatus},
}

# Why a retry cannot help: the runner's configuration, not the items, is what failed.
KEY_MISSING = "gemini_key_missing"
KEY_REJECTED = "gemini_key_rejected"
BASE_URL_MISSING = "openai_base_url_missing"
_REJECTED_RE = re.compile(r"API_KEY_INVALID|API_KEY_EXPIRED|^40[13]\b|PERMISSION_DENIED")


def segments(job: BatchJob) -> list[Segment]:
    """The bar: each item in exactly one part. Failed and cancelled items keep their share, so a
    batch whose items all failed is red, not a full blue bar, and a cancelled one keeps its
    completed part."""
    counts = {
        "completed": job.completed_items,
        "running": job.running_items,
        "waiting": max(job.pending_items, 0),
        "failed": job.failed_items,
        "cancelled": job.cancelled_items,
    }
    whole = max(job.total_items, sum(counts.values()))
    return [Segment(key, counts[key], counts[key] * 100 / whole if whole else 0.0) for key in SEGMENT_COLORS]


def unfinished(job: BatchJob) -> int:
    """Items neither completed, failed nor cancelled: what a cancel stops."""
    return job.total_items - job.completed_items - job.failed_items - job.cancelled_items


def done_percent(job: BatchJob) -> int:
    """Completed items of the total (failures do not count as progress)."""
    return job.completed_items * 100 // job.total_items if job.total_items else 0


def progress_text(t: Callable[..., str], job: BatchJob) -> str:
    """"179/300 (59%)"."""
    return t("batch_progress", done=job.completed_items, total=job.total_items, pct=done_percent(job))


def counts_text(t: Callable[..., str], job: BatchJob) -> str:
    """"완료 179 / 300, 실패 0": what the percentage counts, and the failures beside it."""
    return t("progress_counts", done=job.completed_items, target=job.total_items, failed=job.failed_items)


def duration_s(job: BatchJob, now: dt.datetime) -> float | None:
    if job.started_at is None:
        return None
    return max(((job.completed_at or now) - job.started_at).total_seconds(), 0.0)


def setup_problem(job: BatchJob) -> str | None:
    """What in the runners' setup keeps this job from running: a missing Gemini key, a key the
    provider rejects, or no OpenAI-compatible server configured. From a pending job's wait
    reason, or the error a runner failed the job with. None when nothing is known to be wrong."""
    reason = job.wait_reason if job.status is BatchStatus.PENDING else None
    if reason is not None and reason.code == "no_capable_runner":
        if reason.provider == "gemini":
            return KEY_MISSING
        if reason.provider == "openai_compatible":
            return BASE_URL_MISSING
    if job.status is not BatchStatus.FAILED or not job.error_message:
        return None
    text = job.error_message
    if (ENV_API_KEY in text and "not set" in text) or "needs the Gemini provider" in text:
        return KEY_MISSING
    if ENV_BASE_URL in text and "not set" in text:
        return BASE_URL_MISSING
    if _REJECTED_RE.search(text):
        return KEY_REJECTED
    return None


def retry_helps(job: BatchJob) -> bool:
    """A retry re-queues the failed items: offered only when there are some and the failure was
    not the setup's (a retry would fail the same way until the key is set)."""
    return job.can_retry and setup_problem(job) is None


# Parameters a code's lines keep only in their English message, after a fixed prefix: the
# item_failed error is stored once (it can be 2,000 characters), not again in the metadata.
MESSAGE_PARAMS = {"item_failed": ("error", "attempt(s): ")}


def log_text(t: Callable[..., str], has: Callable[[str], bool], line: BatchLog) -> str:
    """A log line in the reader's language: its code and parameters (metadata) through the
    translations, else the English text stored with it (older lines, unknown codes)."""
    code = line.metadata.get("code")
    key = f"logline_{code}"
    if not isinstance(code, str) or not has(key):
        return line.message
    params: dict[str, Any] = {k: ("–" if v is None else v) for k, v in line.metadata.items()}
    if code in MESSAGE_PARAMS and MESSAGE_PARAMS[code][0] not in params:  # older lines carry it in the metadata
        name, prefix = MESSAGE_PARAMS[code]
        before, found, value = line.message.partition(prefix)
        if not found:
            return line.message
        params[name] = value
    try:
        return t(key, **params)
    except (KeyError, IndexError, ValueError):  # a parameter missing: the stored text says it all
        return line.message
