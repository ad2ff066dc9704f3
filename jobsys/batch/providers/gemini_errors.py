"""Turn google-genai failures into the engine's four kinds, with the server's retry delay.

Gemini answers a rate limit with 429 RESOURCE_EXHAUSTED and, usually without a
Retry-After header, a `google.rpc.RetryInfo` detail whose `retryDelay` is a protobuf
duration ("37s", "0.5s"). A `QuotaFailure` naming a per-day quota will not reset for hours:
that is fatal for the job rather than something to wait out.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from typing import Any

from google.genai import errors as genai_errors

from jobsys.batch.providers.base import CallFailure, FailureKind

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
_RATE_LIMIT_CODES = {429, 503}
_TRANSIENT_CODES = {408, 500, 502, 504}
_FATAL_CODES = {401, 403, 404}  # bad key / no permission / unknown model: true for every item
_FATAL_REASONS = {"API_KEY_INVALID", "API_KEY_EXPIRED", "CONSUMER_SUSPENDED", "SERVICE_DISABLED"}
REASON_MAX_CHARS = 300


def _error_body(exc: genai_errors.APIError) -> dict[str, Any]:
    details = exc.details
    if isinstance(details, list) and details:
        details = details[0]
    if isinstance(details, dict):
        inner = details.get("error", details)
        return inner if isinstance(inner, dict) else {}
    return {}


def _detail_entries(body: dict[str, Any]) -> list[dict[str, Any]]:
    entries = body.get("details")
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def retry_info_delay_s(body: dict[str, Any]) -> float | None:
    for entry in _detail_entries(body):
        if str(entry.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION_RE.match(str(entry.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def retry_after_header_s(value: str | None, now_s: float | None = None) -> float | None:
    """Retry-After as seconds or as an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now_s is None else now_s))


def _header(exc: genai_errors.APIError, name: str) -> str | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get(name)
    except Exception:  # noqa: BLE001 - an unexpected response type must not hide the real error
        return None
    return str(value) if value is not None else None


def _daily_quota(body: dict[str, Any]) -> bool:
    for entry in _detail_entries(body):
        if str(entry.get("@type", "")).endswith("google.rpc.QuotaFailure"):
            for violation in entry.get("violations") or []:
                quota = f"{violation.get('quotaId', '')} {violation.get('quotaMetric', '')}" if isinstance(
                    violation, dict) else ""
                if "PerDay" in quota or "per_day" in quota.lower():
                    return True
    return False


def _fatal_reason(body: dict[str, Any]) -> str | None:
    for entry in _detail_entries(body):
        if str(entry.get("@type", "")).endswith("google.rpc.ErrorInfo") and entry.get("reason") in _FATAL_REASONS:
            return str(entry["reason"])
    return None


def describe(exc: genai_errors.APIError) -> str:
    message = " ".join(str(exc.message or "").split())
    text = f"{exc.code} {exc.status or ''}".strip() + (f": {message}" if message else "")
    return text[:REASON_MAX_CHARS]


def classify_api_error(exc: genai_errors.APIError) -> CallFailure:
    body = _error_body(exc)
    reason = describe(exc)
    code = int(exc.code or 0)
    if code in _RATE_LIMIT_CODES:
        if code == 429 and _daily_quota(body):
            return CallFailure(FailureKind.FATAL, f"daily quota exhausted ({reason})")
        delay = retry_info_delay_s(body)
        if delay is None:
            delay = retry_after_header_s(_header(exc, "Retry-After"))
        return CallFailure(FailureKind.RATE_LIMITED, reason, retry_after_s=delay)
    if code in _TRANSIENT_CODES or code >= 500:
        return CallFailure(FailureKind.TRANSIENT, reason)
    fatal = _fatal_reason(body)
    if code in _FATAL_CODES or fatal:
        return CallFailure(FailureKind.FATAL, reason + (f" [{fatal}]" if fatal and fatal not in reason else ""))
    return CallFailure(FailureKind.PERMANENT, reason)


def classify_other(exc: BaseException) -> CallFailure:
    """Anything but an API error: a malformed body, a dropped connection, a client timeout."""
    if isinstance(exc, ValueError):  # UnknownApiResponseError, JSONDecodeError (aiohttp path), schema errors
        return CallFailure(FailureKind.TRANSIENT, f"malformed response ({type(exc).__name__}: {str(exc)[:160]})")
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return CallFailure(FailureKind.TRANSIENT, "timed out")
    return CallFailure(FailureKind.TRANSIENT, f"{type(exc).__name__}: {str(exc)[:200]}")
