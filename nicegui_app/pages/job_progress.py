"""What a device job's numbers say, apart from how they are drawn: the segments of its bar
(완료 / 실행 중 / 대기 / 실패 / 취소), the queued count, its times (started, ended, age,
duration), the colours of its states and the contrast those colours keep with their text.

Kept free of NiceGUI so the table, the side panel and the tests read the same numbers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Callable

from jobsys.models import Job, JobStatus

# Badge and bar colours. Each badge is white text on its colour and every pair clears WCAG AA
# for normal text (4.5:1); test_pages_jobs_table.py checks the ratios, the report states them.
BADGE_TEXT = "#ffffff"
STATUS_BACKGROUNDS: dict[JobStatus, str] = {
    JobStatus.SCHEDULED: "#475569",  # slate 7.58:1
    JobStatus.ACTIVE: "#1d4ed8",  # blue 6.70:1
    JobStatus.PAUSED: "#b45309",  # amber 5.02:1 (Quasar's orange was 2.16:1)
    JobStatus.COMPLETED: "#15803d",  # green 5.02:1 (Quasar's positive was 2.57:1)
    JobStatus.INCOMPLETE: "#b91c1c",  # red 6.47:1
    JobStatus.CANCELLED: "#374151",  # dark grey 10.31:1
}
SEGMENT_COLORS: dict[str, str] = {  # the bar's segments, in the order they are drawn
    "completed": "#15803d",
    "running": "#1d4ed8",
    "waiting": "#6b7280",  # 4.83:1 on white: a segment stays visible next to the track
    "failed": "#b91c1c",
    "cancelled": "#374151",
}
RUN_BACKGROUNDS: dict[str, str] = {  # a device run's status badge (pending and paused runs wait)
    "pending": "#4b5563",
    "paused": "#b45309",
    "running": "#1d4ed8",
    "completed": "#15803d",
    "failed": "#b91c1c",
    "cancelled": "#374151",
}
MUTED_TEXT = "#4b5563"  # secondary text on white: 7.56:1 (Tailwind's gray-500 is 4.83:1, close to the line)
STATUS_ORDER = {status: index for index, status in enumerate(JobStatus)}


def relative_luminance(hex_colour: str) -> float:
    """WCAG 2.1 relative luminance of an sRGB colour written #rrggbb."""
    value = hex_colour.lstrip("#")
    channels = [int(value[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast_ratio(foreground: str, background: str) -> float:
    lighter, darker = sorted((relative_luminance(foreground), relative_luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def queued(job: Job) -> int:
    """Runs handed to devices and not started yet (pending or paused runs)."""
    ended_or_running = job.running_count + job.completed_count + job.failed_count + job.cancelled_count
    return max(job.assigned_count - ended_or_running, 0)


@dataclasses.dataclass(frozen=True)
class Segment:
    key: str  # completed / running / waiting / failed / cancelled
    count: int
    percent: float  # of the bar's width


def segments(job: Job) -> list[Segment]:
    """The bar: what each part of the target is doing now. 대기 is the rest of the target
    (queued runs and devices still to come); failures and cancelled runs keep their share, so a
    cancelled or failing job does not look finished or empty."""
    counts = {
        "completed": job.completed_count,
        "running": job.running_count,
        "failed": job.failed_count,
        "cancelled": job.cancelled_count,
    }
    whole = max(job.target_count, sum(counts.values()) + queued(job))
    counts["waiting"] = max(whole - sum(counts.values()), 0)
    return [
        Segment(key, counts[key], (counts[key] * 100 / whole) if whole else 0.0) for key in SEGMENT_COLORS
    ]


def started_at(job: Job) -> dt.datetime | None:
    """When the job began taking devices: its start time if it was scheduled, else its creation;
    None while it is still waiting for its start time."""
    if job.status is JobStatus.SCHEDULED:
        return None
    return job.start_at or job.created_at


def duration_s(job: Job, now: dt.datetime) -> float | None:
    """From its start to its end (or to now while it runs)."""
    start = started_at(job)
    if start is None:
        return None
    return max(((job.ended_at or now) - start).total_seconds(), 0.0)


def span(t: Callable[..., str], seconds: float) -> str:
    """"1시간 5분", "4분 2초", "42초" (or "1h 5m", ...): two units at most, enough to compare rows."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return t("span_dh", d=days, h=hours)
    if hours:
        return t("span_hm", h=hours, m=minutes)
    if minutes:
        return t("span_ms", m=minutes, s=secs)
    return t("span_s", s=secs)


def sort_value(key: str, job: Job, now: dt.datetime) -> tuple[int, object]:
    """The value a column sorts by; (1, ...) puts a row without one after the rest."""
    value: object
    if key == "status":
        value = STATUS_ORDER[job.status]
    elif key == "title":
        value = job.title.casefold()
    elif key == "progress":
        value = job.completed_count / job.target_count if job.target_count else 0.0
    elif key == "queued":
        value = queued(job)
    elif key == "priority":
        value = job.priority
    elif key == "started":
        value = started_at(job)
    elif key == "ended":
        value = job.ended_at
    elif key == "duration":
        value = duration_s(job, now)
    else:  # created
        value = job.created_at
    return (0, value) if value is not None else (1, 0)
