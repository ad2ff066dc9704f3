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
import email.utils
import enum
import json
import logging
import random
import time
from typing import Any, Awaitable, Callable, TypedDict

import httpx
from supabase_auth.errors import AuthApiError, AuthError, AuthRetryableError, AuthUnknownError
from supabase_auth.types import Session

from jobsys import errors
from supabase import AsyncClient, AsyncClientOptions, acreate_client

log = logging.getLogger(__name__)

ROLE_CLAIM = "jobsys_role"
REFRESH_MARGIN_S = 60.0  # refresh a user's JWT this long before it expires
# After a transient Auth failure (429, 408, 5xx, unreachable) with no Retry-After: doubling
# from the first to the cap, with jitter so a fleet does not come back in step.
AUTH_RETRY_FIRST_S = 1.0
AUTH_RETRY_MAX_S = 60.0
# After a refused password sign-in (rate limited, or the credentials no longer work): minutes,
# jittered. Supabase limits sign-ins per IP (a fleet behind one NAT shares that budget).
SIGN_IN_RETRY_MIN_S = 120.0
SIGN_IN_RETRY_MAX_S = 300.0
RETRY_AFTER_MAX_S = 3600.0  # a Retry-After beyond this is treated as this
# GoTrue's error codes that mean the refresh token (or its session, or its user) is gone for
# good; any other refusal of a refresh (429, 408, an unknown 4xx) is not a revocation.
REVOKED_CODES = frozenset({"refresh_token_not_found", "refresh_token_already_used", "session_not_found",
                           "session_expired", "user_not_found", "user_banned"})
TRANSIENT_STATUSES = frozenset({408, 429})

TokenSource = Callable[[], Awaitable[str]]
Clock = Callable[[], float]


class JobsysRole(str, enum.Enum):
    VIEWER = "viewer"  # staff: reads everything
    OPERATOR = "operator"  # staff: also runs jobs and AI batches
    ADMIN = "admin"  # staff: also manages devices, PCs, accounts; reads the audit log
    WORKER = "worker"
    RUNNER = "runner"  # AI batch runners (jobsys.require_runner); embedded, the runner is the service


STAFF = frozenset({JobsysRole.VIEWER, JobsysRole.OPERATOR, JobsysRole.ADMIN})  # who may use the dashboard


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


class AuthUnavailable(errors.TransportError):
    """Supabase Auth cannot give a token now: unreachable, rate limiting (429), timed out
    (408), failing (5xx), or this process is waiting out a refused sign-in. Retryable;
    `retry_after_s` says when it is worth asking again."""

    def __init__(self, message: str, details: dict[str, Any] | None = None, *,
                 retry_after_s: float | None = None, login_refused: bool = False) -> None:
        super().__init__(message, details)
        self.retry_after_s = retry_after_s
        self.login_refused = login_refused  # a password sign-in was refused: wait minutes


def retry_after_s(exc: BaseException) -> float | None:
    """The Retry-After of the HTTP answer behind a supabase_auth error (seconds or an HTTP
    date), or None. supabase_auth raises its errors `from` the httpx error."""
    cause = exc.__cause__
    response = getattr(cause, "response", None)
    if not isinstance(response, httpx.Response):
        return None
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


def _status(exc: Exception) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) and status > 0 else None


def is_transient(exc: Exception) -> bool:
    """Network trouble, or an Auth answer that says "later" rather than "no"."""
    if isinstance(exc, (AuthRetryableError, AuthUnknownError, httpx.TransportError)):
        return True  # AuthUnknownError: an unreadable body, e.g. a proxy's HTML 429 page
    status = _status(exc)
    return status is not None and (status in TRANSIENT_STATUSES or status >= 500)


def is_revocation(exc: Exception) -> bool:
    """A refresh refused because the refresh token is gone for good (revoked, reused
    outside GoTrue's reuse interval, user deleted): sign in again or end the session.
    Anything else (rate limits, timeouts, unknown 4xx) keeps the session and retries."""
    if not isinstance(exc, AuthApiError) or is_transient(exc):
        return False
    if exc.code in REVOKED_CODES:
        return True
    # GoTrue before error codes: 400 "Invalid Refresh Token: ..."
    return exc.code is None and "refresh token" in (exc.message or "").lower()


def map_auth_error(exc: Exception, action: str) -> errors.JobsysError:
    """Supabase Auth failures as jobsys errors: network trouble, rate limits (429) and
    timeouts (408) may be retried (AuthUnavailable, a TransportError, with the server's
    Retry-After), a refused sign-in may not (Forbidden)."""
    if is_transient(exc):
        status = _status(exc)
        if status == 429:
            why = "rate limited by Supabase Auth"
        elif status == 408:
            why = "Supabase Auth timed out"
        elif status is not None and status >= 500:
            why = f"Supabase Auth failed ({getattr(exc, 'message', exc)})"
        else:
            why = f"Supabase Auth unreachable ({exc})"
        retry_s = retry_after_s(exc)
        return AuthUnavailable(f"{action}: {why}" + (f"; retry after {retry_s:.0f} s" if retry_s else ""),
                               {"status": status}, retry_after_s=retry_s)
    message = exc.message if isinstance(exc, AuthError) else str(exc)
    return errors.Forbidden(f"{action}: {message}")


class WrongRole(errors.Forbidden):
    """The account signed in, but its app_metadata.jobsys_role is not the one needed (a
    dashboard tells this apart from a wrong password)."""


def check_role(session: Session, expected: JobsysRole | frozenset[JobsysRole] | None) -> None:
    if expected is None:
        return
    allowed = expected if isinstance(expected, frozenset) else frozenset({expected})
    actual = role_of(unverified_claims(session.access_token))
    if actual not in allowed:
        needed = " or ".join(sorted(r.value for r in allowed))
        raise WrongRole(
            f"{session.user.email or session.user.id} has jobsys_role {actual.value if actual else 'none'}, "
            f"this process needs {needed}; set app_metadata.jobsys_role (docs/supabase.md)",
            {"expected": needed, "actual": actual.value if actual else None})


async def sign_in(client: AsyncClient, credentials: Credentials,
                  expected_role: JobsysRole | frozenset[JobsysRole] | None = None) -> Session:
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


class AuthState(str, enum.Enum):
    """How a signed-in process stands with Supabase Auth (logs; a health view may show it)."""

    SIGNED_IN = "signed_in"
    RETRYING = "retrying"  # Auth unreachable, timing out or rate limiting: the current token serves meanwhile
    LOGIN_REFUSED = "login_refused"  # password sign-in refused (rate limit or credentials): minutes between tries
    ENDED = "ended"  # signed out, or the session ended and there is no password to sign in again


class TokenKeeper:
    """The bearer token a process presents: a fixed token (the anon key, an admin script's
    service role key, a user's JWT handed in by an API request), or a signed-in user's JWT
    refreshed before it expires.

    With `credentials` it signs in by itself, and again if the refresh token was revoked.
    With a `session` alone (a dashboard operator: the password is not kept) a revoked
    refresh token ends the session, and every later call fails as Forbidden until the user
    signs in again; so do `end()` and `sign_out()` (log out).

    Auth saying "later" is not a revocation: a 429 (rate limit), 408, 5xx or an unreachable
    server keeps the session, waits (the server's Retry-After, else doubling backoff with
    jitter) and meanwhile serves the current token while it is valid, failing fast with
    AuthUnavailable (a TransportError) once it is not. A password sign-in refused after the
    first one (rate limited, or the password was changed) waits minutes before the next try,
    so a fleet restarting behind one NAT does not keep the per-IP limit exhausted; the
    process keeps running (calls fail as AuthUnavailable, which workers retry) and says so
    in its log and in `state` / `problem`.

    Refreshing on demand replaces supabase-auth's background timer, which gives up after
    a few network errors; a worker that was offline for an hour must still come back.
    """

    def __init__(self, client: AsyncClient, *, fixed_token: str | None = None,
                 credentials: Credentials | None = None, session: Session | None = None,
                 expected_role: JobsysRole | frozenset[JobsysRole] | None = None, clock: Clock = time.monotonic) -> None:
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
        self._clock = clock  # monotonic: when the next Auth request may go out
        self._not_before = 0.0
        self._failures = 0  # transient failures in a row (backoff)
        self._signed_in_once = session is not None
        self.ended = False
        self.state = AuthState.SIGNED_IN
        self.problem: str | None = None  # why the last Auth request failed, while it matters

    @property
    def signed_in(self) -> bool:
        """A user's own session, not a fixed token."""
        return self._fixed is None

    def end(self) -> None:
        """Forget the session: later calls fail as Forbidden, never reuse it."""
        self.ended = True
        self._session = None
        self.state = AuthState.ENDED

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
            if session is not None and (session.expires_at or 0) - time.time() >= REFRESH_MARGIN_S:
                return session.access_token
            wait_s = self._not_before - self._clock()
            if wait_s > 0:  # backing off: no request to Auth before then
                return self._meanwhile(session, wait_s)
            try:
                session = await (self._refresh(session) if session is not None else self._sign_in())
            except AuthUnavailable as exc:
                return self._meanwhile(self._session, self._back_off(exc))
            self._session = session
            self._recovered()
            return session.access_token

    def _meanwhile(self, session: Session | None, wait_s: float) -> str:
        """While Auth is not asked: the current token if it is still valid, else a fast
        retryable failure saying why and for how long."""
        if session is not None and (session.expires_at or 0) > time.time():
            return session.access_token
        raise AuthUnavailable(f"{self.problem or 'Supabase Auth unavailable'}; next attempt in {wait_s:.0f} s",
                              {"auth_state": self.state.value}, retry_after_s=wait_s)

    def _back_off(self, exc: AuthUnavailable) -> float:
        """When the next Auth request may go out, after this failure; logs a change of state."""
        if exc.login_refused:  # minutes, at least what the server asked for
            wait_s = max(exc.retry_after_s or 0.0, random.uniform(SIGN_IN_RETRY_MIN_S, SIGN_IN_RETRY_MAX_S))
        else:
            self._failures += 1
            backoff_s = min(AUTH_RETRY_MAX_S, AUTH_RETRY_FIRST_S * 2 ** min(self._failures - 1, 16))
            wait_s = exc.retry_after_s if exc.retry_after_s is not None else random.uniform(0.5, 1.0) * backoff_s
            self._set_state(AuthState.RETRYING, exc.message)
        self._not_before = self._clock() + wait_s
        return wait_s

    def _set_state(self, state: AuthState, problem: str) -> None:
        if state is not self.state or problem != self.problem:
            log.warning("supabase auth %s: %s", state.value.replace("_", " "), problem)
        self.state, self.problem = state, problem

    def _recovered(self) -> None:
        if self.state is not AuthState.SIGNED_IN:
            log.info("supabase auth signed in again")
        self.state, self.problem, self._failures, self._not_before = AuthState.SIGNED_IN, None, 0, 0.0

    async def _sign_in(self) -> Session:
        assert self._credentials is not None
        try:
            session = await sign_in(self._client, self._credentials, self._expected_role)
        except WrongRole:
            raise  # the account is wrong for this process: waiting will not help
        except AuthUnavailable as exc:
            if exc.details.get("status") == 429:  # the sign-in limit: minutes, not seconds
                exc.login_refused = True
                self._set_state(AuthState.LOGIN_REFUSED, exc.message)
            raise
        except errors.Forbidden as exc:
            if not self._signed_in_once:
                raise  # at start: wrong credentials fail at once, with the reason
            # Later (the password was changed, the user disabled): keep running, try again in minutes.
            self._set_state(AuthState.LOGIN_REFUSED, f"login refused ({exc.message})")
            raise AuthUnavailable(self.problem or exc.message, exc.details, login_refused=True) from exc
        self._signed_in_once = True
        return session

    async def _refresh(self, session: Session) -> Session:
        try:
            refreshed = (await self._client.auth.refresh_session(session.refresh_token)).session
        except (AuthError, httpx.TransportError) as exc:
            if not is_revocation(exc):  # 429, 408, 5xx, unreachable, an unknown 4xx: keep the session
                mapped = map_auth_error(exc, "token refresh")
                if isinstance(mapped, AuthUnavailable):
                    raise mapped from exc
                raise AuthUnavailable(mapped.message, {"status": _status(exc)}) from exc
            refreshed = None  # refresh token revoked, expired or reused
        if refreshed is not None:
            return refreshed
        self._session = None
        if self._credentials is None:
            self.end()
            raise errors.Forbidden("the session ended (refresh token revoked or expired): sign in again")
        return await self._sign_in()
