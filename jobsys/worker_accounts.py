"""Worker accounts: one per PC that joins the hub with its own token.

The token is made here, shown once and never stored: the database keeps its SHA-256
digest (`token_digest`), which is also what the hub looks a presented token up by.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import shlex
import uuid

import pydantic

TOKEN_PREFIX = "jsw_"  # recognisable in a leaked-secrets scan; says "jobsys worker"
TOKEN_BYTES = 32
NAME_MAX = 64


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str) -> str:
    """The SHA-256 hex digest the database stores and the hub looks a token up by. A token
    is 256 random bits, so a plain hash is enough (no salt or slow hash: nothing to guess)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def join_command(server: str, token: str) -> str:
    """The one command a PC runs to join the hub at `server` with its token (what `jobsys
    workers add`, the API and the dashboard's PC page print)."""
    return f"jobsys worker --server {shlex.quote(server)} --token {shlex.quote(token)}"


class WorkerAccountName(pydantic.BaseModel):
    name: str = pydantic.Field(min_length=1, max_length=NAME_MAX, pattern=r"^[^\x00-\x1f\x7f]+$",
                               description="the PC's name, 1-64 printable characters")

    @pydantic.field_validator("name")
    @classmethod
    def _stripped(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be blank")
        return value


class AccountSession(pydantic.BaseModel):
    """A live worker process signed in with the account."""

    worker_id: uuid.UUID
    name: str
    hostname: str
    status: str
    started_at: dt.datetime
    last_heartbeat_at: dt.datetime
    healthy: bool
    version: str | None = None
    push: str | None = None  # "connected" or "polling", as the worker reports it
    devices: int


class WorkerAccount(pydantic.BaseModel):
    id: uuid.UUID
    name: str
    created_at: dt.datetime
    last_seen_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    sessions: list[AccountSession] = []
    device_count: int = 0


class WorkerAccountList(pydantic.BaseModel):
    accounts: list[WorkerAccount]


class EnrolledWorker(pydantic.BaseModel):
    """A new account and its token, which is shown this once and cannot be read again."""

    account: WorkerAccount
    token: str = pydantic.Field(repr=False)
