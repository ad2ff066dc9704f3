"""A server error in the reader's language. The SQL functions raise a stable code (JS400 ->
invalid_input, JS404 -> not_found, JS409 -> conflict, ...) with details (the field, the job's
status, the refused transition); those map to translated sentences. What has no translation
falls back to the server's own (English) text, so nothing is hidden.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jobsys.errors import JobsysError

# Fields whose JS400 / 422 has a sentence of its own (error_field_<name>).
KNOWN_FIELDS = frozenset({
    "title", "target_url", "duration_sec", "target_value", "target_type", "priority", "start_at",
    "timeout_sec", "device_labels", "template", "items", "model", "concurrency", "max_retries",
    "temperature", "max_output_tokens", "provider", "mode", "response_schema", "system_instruction",
})
TRANSITIONS = frozenset({"pause", "resume", "cancel", "retry", "delete", "clone", "rename"})
JOB_STATUSES = frozenset({"scheduled", "active", "paused", "completed", "incomplete", "cancelled"})
BATCH_STATUSES = frozenset({"pending", "running", "completed", "failed", "cancelled"})


def _background(message: str, details: dict[str, Any]) -> bool:
    return "background job" in message or "failed_items" in details


def _status_word(t: Callable[..., str], status: str, background: bool) -> str | None:
    if background and status in BATCH_STATUSES:
        return t(f"batch_status_{status}")
    if not background and status in JOB_STATUSES:
        return t(f"job_status_{status}")
    return None


def _conflict(t: Callable[..., str], message: str, details: dict[str, Any]) -> str | None:
    background = _background(message, details)
    transition, status = details.get("transition"), details.get("status")
    reason = details.get("reason")
    if transition == "retry" and (details.get("failed_items") == 0 or reason == "nothing_failed"):
        return t("error_nothing_to_retry_runs" if reason == "nothing_failed" else "error_nothing_to_retry")
    if transition == "retry" and reason == "timed_out":
        return t("error_retry_timed_out")
    if reason == "no_devices" and details.get("device_labels"):
        return t("error_device_no_labelled_devices")
    if reason in ("no_devices", "busy", "offline"):
        return t(f"error_device_{reason}")
    if isinstance(transition, str) and transition in TRANSITIONS and isinstance(status, str):
        word = _status_word(t, status, background)
        if word is not None:
            return t("error_transition", action=t(f"error_action_{transition}"), status=word)
    return None


def _invalid(t: Callable[..., str], message: str, details: dict[str, Any]) -> str:
    field = details.get("field")
    if isinstance(field, str) and field in KNOWN_FIELDS:
        return t("error_invalid_field", field=t(f"error_field_{field}"), message=message)
    return t("error_invalid", message=message)


def describe(t: Callable[..., str], code: str, message: str, details: dict[str, Any] | None = None) -> str:
    """The sentence for an error with this code, message and details."""
    details = details or {}
    if code == "not_found":
        if _background(message, details):
            return t("error_not_found_batch")
        if "device" in message:
            return t("error_not_found_device")
        if "job" in message:
            return t("error_not_found_job")
        return t("error_not_found")
    if code == "conflict":
        return _conflict(t, message, details) or t("error_conflict", message=message)
    if code in ("invalid_input", "malformed_json"):
        return _invalid(t, message, details)
    if code == "forbidden":
        if "admin" in message:
            return t("error_forbidden_admin")
        if "operator" in message:
            return t("error_forbidden_operator")
        return t("error_forbidden")
    if code == "unauthorized":
        return t("error_unauthorized")
    if code == "statement_timeout":
        return t("error_timeout")
    if code == "unavailable":
        return t("error_unavailable")
    return message


def error_text(t: Callable[..., str], exc: JobsysError) -> str:
    """What the dashboard shows for a library error."""
    return describe(t, exc.code, exc.message, exc.details)
