"""Typed errors. The SQL functions raise stable SQLSTATEs; every transport maps them here,
so callers cannot tell the transports apart."""

from __future__ import annotations

import json
from typing import Any


class JobsysError(Exception):
    """Base of every error jobsys raises on purpose. `code` is stable and machine-readable."""

    code = "error"
    http_status = 500

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidInput(JobsysError):
    code = "invalid_input"
    http_status = 422


class Unauthorized(JobsysError):
    """No valid credentials: a hub worker token that is unknown, wrong or revoked. Not worth
    retrying: the worker stops and says so."""

    code = "unauthorized"
    http_status = 401


class Forbidden(JobsysError):
    code = "forbidden"
    http_status = 403


class NotFound(JobsysError):
    code = "not_found"
    http_status = 404


class IllegalTransition(JobsysError):
    """The move is not allowed from the current state (e.g. pausing a completed job)."""

    code = "conflict"
    http_status = 409


class StaleRun(JobsysError):
    """The run a worker reports on has moved on (lease lost, job cancelled or deleted)."""

    code = "stale_run"
    http_status = 409


class DeviceHeld(JobsysError):
    """A serial held by a live session of another worker account (SQLSTATE JS423). Not raised by
    a call: register_worker and heartbeat report such serials in `refused`, with this code, and
    register the others (one disputed phone must not cost a PC its other phones)."""

    code = "device_held"
    http_status = 423


DEVICE_HELD = "JS423"  # the code of a RefusedDevice


class TransportError(JobsysError):
    """The database or API could not be reached; the call may be retried."""

    code = "unavailable"
    http_status = 503


SQLSTATE_ERRORS: dict[str, type[JobsysError]] = {
    "JS400": InvalidInput,
    "JS401": Unauthorized,
    "JS403": Forbidden,
    "JS404": NotFound,
    "JS409": IllegalTransition,
    "JS410": StaleRun,
    DEVICE_HELD: DeviceHeld,
    "22P02": InvalidInput,  # invalid text representation, e.g. a malformed uuid
    "22003": InvalidInput,  # numeric value out of range
    "22P05": InvalidInput,  # untranslatable character: jsonb refuses \u0000
    "22021": InvalidInput,  # character not in repertoire: a NUL byte in text
    "22001": InvalidInput,  # string too long
    "23514": InvalidInput,  # check constraint
    "42501": Forbidden,  # insufficient privilege
}


def from_sqlstate(sqlstate: str | None, message: str, detail: str | None) -> JobsysError | None:
    """The typed error for a database error, or None when it is not one of ours."""
    error_type = SQLSTATE_ERRORS.get(sqlstate or "")
    if error_type is None:
        return None
    details: dict[str, Any] = {}
    if detail:
        try:
            parsed = json.loads(detail)
            details = parsed if isinstance(parsed, dict) else {"detail": parsed}
        except ValueError:
            details = {"detail": detail}
    return error_type(message, details)


class StatementTimeout(TransportError):
    """The database cancelled the call for running past its statement_timeout (SQLSTATE
    57014; Supabase gives `authenticated` about 8 s). The transaction rolled back, so the
    call may be retried, preferably after a pause: the database is slow or overloaded."""

    code = "statement_timeout"
    http_status = 503
