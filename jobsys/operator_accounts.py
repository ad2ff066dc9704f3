"""Operator accounts of embedded mode: a name, a role (viewer reads; operator runs jobs and
AI batches; admin also manages devices, PCs, accounts and reads the audit log) and a token
that is made here, shown once and never stored (the database keeps its SHA-256 digest, as
for worker tokens). The dashboard and the API take the token as the bearer (or at the login
page) and run that caller's calls with the account's claims (jobsys.operator_claims), so
every role check is the SQL's own. Supabase mode takes the same roles from
`app_metadata.jobsys_role`."""

from __future__ import annotations

import datetime as dt
import enum
import secrets
import uuid

import pydantic

from jobsys.worker_accounts import TOKEN_BYTES, WorkerAccountName, token_digest

__all__ = ["EnrolledOperator", "OperatorAccount", "OperatorAccountList", "OperatorAccountName", "StaffRole",
           "is_operator_token", "new_operator_token", "token_digest"]

TOKEN_PREFIX = "jso_"  # recognisable in a leaked-secrets scan; says "jobsys operator"


class StaffRole(str, enum.Enum):
    VIEWER = "viewer"  # reads everything
    OPERATOR = "operator"  # and runs jobs and AI batches
    ADMIN = "admin"  # and manages devices, PCs, accounts; reads the audit log


def new_operator_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def is_operator_token(token: str | None) -> bool:
    return bool(token) and token.startswith(TOKEN_PREFIX) and len(token) < 200  # type: ignore[union-attr]


class OperatorAccountName(WorkerAccountName):
    """The same rule as a PC's name: 1-64 printable characters."""


class OperatorAccount(pydantic.BaseModel):
    id: uuid.UUID
    name: str
    role: StaffRole
    created_at: dt.datetime
    last_seen_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None


class OperatorAccountList(pydantic.BaseModel):
    accounts: list[OperatorAccount]


class EnrolledOperator(pydantic.BaseModel):
    """A new account and its token, shown this once."""

    account: OperatorAccount
    token: str
