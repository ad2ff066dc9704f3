"""Supabase Auth for jobsys processes: who signs in, and with which role.

Operators, workers and AI batch runners are Supabase Auth users. Their jobsys role is the
JWT claim `app_metadata.jobsys_role` ("operator", "worker" or "runner"; a device worker's
account cannot run batches, nor a runner's devices); app_metadata is writable only with
the service role key, so users cannot grant themselves a role. The SQL functions read
the claim (jobsys.caller_role()), so nothing here is a security boundary: it only signs
in, refreshes, and fails early with a clear message when an account has the wrong role.

The service role key belongs to migrations and admin scripts (`create_user`), never to a
worker or a dashboard.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import enum
import json
import logging
import time
from typing import Any, Awaitable, Callable, TypedDict

import httpx
from supabase_auth.errors import AuthApiError, AuthError, AuthRetryableError
from supabase_auth.types import Session

from jobsys import errors
from supabase import AsyncClient, AsyncClientOptions, acreate_client

log = logging.getLogger(__name__)

ROLE_CLAIM = "jobsys_role"
REFRESH_MARGIN_S = 60.0  # refresh a user's JWT this long before it expires

TokenSource = Callable[[], Awaitable[str]]


class JobsysRole(str, enum.Enum):
    OPERATOR = "operator"
    WORKER = "worker"
    RUNNER = "runner"  # AI batch runners (jobsys.require_runner); embedded, the runner is the service


class Claims(TypedDict, total=False):
    """The JWT claims jobsys reads (Supabase puts more in; they pass through)."""

    sub: str
    role: str  # Postgres role PostgREST switches to: anon / authenticated / service_role
    exp: int
    email: str
    app_metadata: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Credentials:
    email: str
    password: str = dataclasses.field(repr=False)


def unverified_claims(token: str) -> Claims:
    """The claims of a JWT without checking its signature. For messages and routing only:
    PostgREST and Realtime verify every token they are given."""
    try:
        body = token.split(".")[1]
        decoded = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (IndexError, ValueError, binascii.Error):
        raise errors.Forbidden("the access token is not a JWT") from None
    if not isinstance(decoded, dict):
        raise errors.Forbidden("the access token is not a JWT")
    return decoded  # type: ignore[return-value]


def role_of(claims: Claims) -> JobsysRole | None:
    value = (claims.get("app_metadata") or {}).get(ROLE_CLAIM)
    try:
        return JobsysRole(value)
    except ValueError:
        return None


def map_auth_error(exc: Exception, action: str) -> errors.JobsysError:
    """Supabase Auth failures as jobsys errors: network trouble may be retried, a refused
    sign-in may not."""
    if isinstance(exc, (AuthRetryableError, httpx.TransportError)):
        return errors.TransportError(f"{action}: Supabase Auth unreachable ({exc})")
    if isinstance(exc, AuthApiError) and exc.status >= 500:
        return errors.TransportError(f"{action}: Supabase Auth failed ({exc.message})")
    message = exc.message if isinstance(exc, AuthError) else str(exc)
    return errors.Forbidden(f"{action}: {message}")


class WrongRole(errors.Forbidden):
    """The account signed in, but its app_metadata.jobsys_role is not the one needed (a
    dashboard tells this apart from a wrong password)."""


def check_role(session: Session, expected: JobsysRole | None) -> None:
    if expected is None:
        return
    actual = role_of(unverified_claims(session.access_token))
    if actual is not expected:
        raise WrongRole(
            f"{session.user.email or session.user.id} has jobsys_role {actual.value if actual else 'none'}, "
            f"this process needs {expected.value}; set app_metadata.jobsys_role (docs/supabase.md)",
            {"expected": expected.value, "actual": actual.value if actual else None})


async def sign_in(client: AsyncClient, credentials: Credentials,
                  expected_role: JobsysRole | None = None) -> Session:
    """Password sign-in; the client then sends this user's JWT and refreshes it."""
    try:
        response = await client.auth.sign_in_with_password(
            {"email": credentials.email, "password": credentials.password})
    except (AuthError, httpx.TransportError) as exc:
        raise map_auth_error(exc, f"sign-in as {credentials.email}") from exc
    if response.session is None:
        raise errors.Forbidden(f"sign-in as {credentials.email} returned no session (email not confirmed?)")
    check_role(response.session, expected_role)
    return response.session


async def verify_access_token(client: AsyncClient, token: str) -> Claims:
    """Claims of a user's JWT after Supabase Auth vouched for it (JWKS signature check, or
    a /user round trip for HS256 projects). For an API that accepts Supabase JWTs."""
    try:
        response = await client.auth.get_claims(jwt=token)
    except (AuthError, httpx.TransportError) as exc:
        raise map_auth_error(exc, "token check") from exc
    if response is None:
        raise errors.Forbidden("token check: no claims")
    return response["claims"]  # type: ignore[return-value]


async def create_user(url: str, service_role_key: str, email: str, password: str,
                      role: JobsysRole) -> str:
    """Admin scripts only: create a confirmed user with a jobsys role, or give an existing
    user that role. Returns the user id."""
    admin_client = await acreate_client(url, service_role_key, options=AsyncClientOptions(
        auto_refresh_token=False, persist_session=False))
    admin = admin_client.auth.admin
    app_metadata = {ROLE_CLAIM: role.value}
    try:
        try:
            created = await admin.create_user({"email": email, "password": password, "email_confirm": True,
                                               "app_metadata": app_metadata})
            return created.user.id
        except AuthApiError as exc:
            if exc.code != "email_exists":
                raise
        page = 1
        while True:  # the admin API has no lookup by email: scan pages
            users = await admin.list_users(page=page, per_page=1000)
            match = next((u for u in users if (u.email or "").lower() == email.lower()), None)
            if match is not None:
                await admin.update_user_by_id(match.id, {"password": password, "app_metadata": app_metadata})
                return match.id
            if len(users) < 1000:
                raise errors.NotFound(f"{email} exists but was not found in the user list")
            page += 1
    except (AuthError, httpx.TransportError) as exc:
        raise map_auth_error(exc, f"create user {email}") from exc


class TokenKeeper:
    """The bearer token a process presents: a fixed token (the anon key, an admin script's
    service role key, a user's JWT handed in by an API request), or a signed-in user's JWT
    refreshed before it expires.

    With `credentials` it signs in by itself, and again if the refresh token was revoked.
    With a `session` alone (a dashboard operator: the password is not kept) a refused
    refresh ends the session, and every later call fails as Forbidden until the user
    signs in again; so do `end()` and `sign_out()` (log out).

    Refreshing on demand replaces supabase-auth's background timer, which gives up after
    a few network errors; a worker that was offline for an hour must still come back.
    """

    def __init__(self, client: AsyncClient, *, fixed_token: str | None = None,
                 credentials: Credentials | None = None, session: Session | None = None,
                 expected_role: JobsysRole | None = None) -> None:
        if fixed_token is not None and (credentials is not None or session is not None):
            raise ValueError("give a fixed token, or credentials and/or a session")
        if fixed_token is None and credentials is None and session is None:
            raise ValueError("give a fixed token, credentials or a session")
        self._client = client
        self._fixed = fixed_token
        self._credentials = credentials
        self._expected_role = expected_role
        self._session = session
        self._lock = asyncio.Lock()
        self.ended = False

    @property
    def signed_in(self) -> bool:
        """A user's own session, not a fixed token."""
        return self._fixed is None

    def end(self) -> None:
        """Forget the session: later calls fail as Forbidden, never reuse it."""
        self.ended = True
        self._session = None

    async def sign_out(self) -> None:
        """Log out: end the session here and revoke its refresh token at Supabase Auth
        (scope local: the user's other sessions stay). Best effort: an unreachable Auth
        server cannot keep a user signed in here."""
        session, self._session = self._session, None
        self.end()
        if session is None:
            return
        try:
            await self._client.auth.admin.sign_out(session.access_token, "local")
        except (AuthError, httpx.TransportError) as exc:
            log.warning("sign-out: Supabase Auth did not confirm (%s)", type(exc).__name__)

    async def token(self) -> str:
        if self._fixed is not None:
            return self._fixed
        async with self._lock:  # one refresh however many calls are waiting
            if self.ended:
                raise errors.Forbidden("signed out: sign in again")
            session = self._session
            if session is None:
                assert self._credentials is not None
                session = await sign_in(self._client, self._credentials, self._expected_role)
            elif (session.expires_at or 0) - time.time() < REFRESH_MARGIN_S:
                session = await self._refresh(session)
            self._session = session
            return session.access_token

    async def _refresh(self, session: Session) -> Session:
        try:
            refreshed = (await self._client.auth.refresh_session(session.refresh_token)).session
        except AuthApiError as exc:
            if exc.status >= 500:
                raise map_auth_error(exc, "token refresh") from exc
            refreshed = None  # refresh token revoked or expired
        except (AuthError, httpx.TransportError) as exc:
            raise map_auth_error(exc, "token refresh") from exc
        if refreshed is not None:
            return refreshed
        if self._credentials is None:
            self.end()
            raise errors.Forbidden("the session ended (refresh token revoked or expired): sign in again")
        return await sign_in(self._client, self._credentials, self._expected_role)
