"""The one place that names push topics and events (emitted by jobsys.emit in SQL)."""

from __future__ import annotations

import enum
import uuid
from typing import Any

import pydantic

DASHBOARD_TOPIC = "jobsys:dashboard"
RUNNERS_TOPIC = "jobsys:runners"  # batch runners: new / re-queued / cancelled background jobs


def worker_topic(worker_id: uuid.UUID | str) -> str:
    return f"jobsys:worker:{worker_id}"


class EventName(str, enum.Enum):
    # worker topics
    ASSIGNMENT = "assignment"  # new or re-queued work for this worker's devices: claim now
    JOB_PAUSED = "job_paused"
    JOB_RESUMED = "job_resumed"
    JOB_CANCELLED = "job_cancelled"  # payload.reason: cancelled | deleted
    DEVICE_REBOOT = "device_reboot"  # payload: device_id, serial; an operator asked to reboot the phone
    RUN_STOPPED = "run_stopped"  # payload: assignment_id, job_id, reason; e.g. its device was disabled
    # dashboard topic
    JOB_PROGRESS = "job_progress"
    JOB_DELETED = "job_deleted"
    DEVICE_STATUS = "device_status"
    BACKGROUND_JOB_PROGRESS = "background_job_progress"  # throttled per job; the final one always sent
    # runners topic
    BACKGROUND_JOB_QUEUED = "background_job_queued"  # created, retried or released: claim now
    BACKGROUND_JOB_CANCELLED = "background_job_cancelled"  # stop scheduling and cancel in-flight calls


class Event(pydantic.BaseModel):
    topic: str
    event: str
    payload: dict[str, Any] = {}


class ChannelState(str, enum.Enum):
    """Push channel state as a subscriber sees it (Realtime's names where they exist)."""

    SUBSCRIBED = "SUBSCRIBED"  # push works: resync once, then rely on it
    DISCONNECTED = "DISCONNECTED"  # push is down: poll
