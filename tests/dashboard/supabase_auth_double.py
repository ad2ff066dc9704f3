"""Our double of Supabase Auth (GoTrue), not GoTrue: respx routes answering the endpoints
jobsys uses, with the bodies GoTrue returns (supabase_auth parses them as it would the
real ones):

- POST /auth/v1/token?grant_type=password {email, password} -> a session; 400
  invalid_credentials otherwise;
- POST /auth/v1/token?grant_type=refresh_token {refresh_token} -> a new session (a refresh
  token is spent once used); a spent one used again within `reuse_interval_s` gets a fresh
  session, later it is 400 refresh_token_already_used ("Invalid Refresh Token: Already
  Used") and the whole session is revoked, as GoTrue's reuse detection does; 400
  refresh_token_not_found otherwise;
- either grant, and /user, answer 429 over_request_rate_limit with a Retry-After header
  while in `rate_limited` ("password", "refresh_token", "user": GoTrue's per-IP limits);
- GET /auth/v1/user with the access token -> the user; 403 session_not_found once that
  session was signed out or revoked;
- POST /auth/v1/logout?scope=local with the access token -> 204, ending that session.

Access tokens are the unsigned JWTs of tests/transport/tokens.py (HS256 header, so
supabase_auth checks them with /user) carrying a session_id claim; the PostgREST and
Realtime doubles read the same identity from them.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
import uuid
from typing import Any

import httpx
import respx

from jobsys.auth import unverified_claims
from jobsys.errors import Forbidden
from tests.transport.tokens import make_token


@dataclasses.dataclass(frozen=True)
class Account:
    email: str
    password: str
    jobsys_role: str | None
    user_id: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))

    def user(self) -> dict[str, Any]:
        return {"id": self.user_id, "aud": "authenticated", "role": "authenticated", "email": self.email,
                "app_metadata": self.app_metadata(), "user_metadata": {}, "created_at": "2026-01-01T00:00:00Z"}

    def app_metadata(self) -> dict[str, Any]:
        return {"provider": "email"} | ({"jobsys_role": self.jobsys_role} if self.jobsys_role else {})


def gotrue_error(status: int, error_code: str, msg: str) -> httpx.Response:
    return httpx.Response(status, json={"code": status, "error_code": error_code, "msg": msg})


class AuthDouble:
    def __init__(self, router: respx.MockRouter, *, expires_in_s: int = 3600) -> None:
        self.expires_in_s = expires_in_s  # of access tokens issued from now on
        self.accounts: dict[str, Account] = {}
        self.sessions: dict[str, Account] = {}  # live session id -> its account
        self.refresh_tokens: dict[str, str] = {}  # unspent refresh token -> session id
        self.issued: list[str] = []  # access tokens, oldest first
        self.spent: dict[str, tuple[str, float]] = {}  # used refresh token -> session id, when (wall clock)
        self.reuse_interval_s = 10.0  # GoTrue's GOTRUE_SECURITY_REFRESH_TOKEN_REUSE_INTERVAL
        self.rate_limited: set[str] = set()  # answered with 429: "password", "refresh_token", "user"
        self.retry_after_s: int | None = 60  # the 429's Retry-After header; None: no header
        self.sign_in_route = router.post("/auth/v1/token", params={"grant_type": "password"}).mock(
            side_effect=self._password)
        self.refresh_route = router.post("/auth/v1/token", params={"grant_type": "refresh_token"}).mock(
            side_effect=self._refresh)
        self.user_route = router.get("/auth/v1/user").mock(side_effect=self._user)
        self.logout_route = router.post("/auth/v1/logout").mock(side_effect=self._logout)

    def add(self, email: str, password: str, jobsys_role: str | None) -> Account:
        account = Account(email, password, jobsys_role)
        self.accounts[email] = account
        return account

    def access_token(self, email: str, *, expires_in_s: int | None = None) -> str:
        """A session's access token, as an API client would hold after signing in."""
        return self._session(self.accounts[email], expires_in_s)["access_token"]

    def revoke(self, token: str) -> None:
        """End the session of this access token (an admin signed the user out)."""
        session_id = _claims(token)["session_id"]
        self.sessions.pop(session_id, None)
        for refresh, owner in list(self.refresh_tokens.items()):
            if owner == session_id:
                del self.refresh_tokens[refresh]

    def _session(self, account: Account, expires_in_s: int | None = None,
                 session_id: str | None = None) -> dict[str, Any]:
        session_id = session_id or str(uuid.uuid4())
        expires_in = self.expires_in_s if expires_in_s is None else expires_in_s
        now = int(time.time())
        claims = {"iss": "supabase-auth-double", "sub": account.user_id, "aud": "authenticated",
                  "role": "authenticated", "email": account.email, "iat": now, "exp": now + expires_in,
                  "session_id": session_id, "app_metadata": account.app_metadata(),
                  "jti": str(uuid.uuid4())}  # tokens issued within one second still differ
        access_token = make_token(claims)
        refresh_token = secrets.token_urlsafe(12)
        self.sessions[session_id] = account
        self.refresh_tokens[refresh_token] = session_id
        self.issued.append(access_token)
        return {"access_token": access_token, "token_type": "bearer", "expires_in": expires_in,
                "expires_at": now + expires_in, "refresh_token": refresh_token, "user": account.user()}

    def _limited(self, grant: str) -> httpx.Response | None:
        if grant not in self.rate_limited:
            return None
        response = gotrue_error(429, "over_request_rate_limit", "Request rate limit reached")
        if self.retry_after_s is not None:
            response.headers["retry-after"] = str(self.retry_after_s)
        return response

    def _password(self, request: httpx.Request) -> httpx.Response:
        limited = self._limited("password")
        if limited is not None:
            return limited
        body = json.loads(request.content)
        account = self.accounts.get(body.get("email", ""))
        if account is None or account.password != body.get("password"):
            return gotrue_error(400, "invalid_credentials", "Invalid login credentials")
        return httpx.Response(200, json=self._session(account))

    def _refresh(self, request: httpx.Request) -> httpx.Response:
        limited = self._limited("refresh_token")
        if limited is not None:
            return limited
        presented = json.loads(request.content).get("refresh_token", "")
        session_id = self.refresh_tokens.pop(presented, None)
        if session_id is None and presented in self.spent:
            session_id, spent_at = self.spent[presented]
            if time.time() - spent_at > self.reuse_interval_s:  # reuse detection: the family is revoked
                self.sessions.pop(session_id, None)
                for token, owner in list(self.refresh_tokens.items()):
                    if owner == session_id:
                        del self.refresh_tokens[token]
                return gotrue_error(400, "refresh_token_already_used", "Invalid Refresh Token: Already Used")
        if session_id is not None:
            self.spent.setdefault(presented, (session_id, time.time()))  # the first use starts the interval
        if session_id is None or session_id not in self.sessions:
            return gotrue_error(400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found")
        return httpx.Response(200, json=self._session(self.sessions[session_id], session_id=session_id))

    def _user(self, request: httpx.Request) -> httpx.Response:
        limited = self._limited("user")
        if limited is not None:
            return limited
        account = self.sessions.get(_claims(_bearer(request)).get("session_id", ""))
        if account is None:
            return gotrue_error(403, "session_not_found", "Session from session_id claim in JWT does not exist")
        return httpx.Response(200, json=account.user())

    def _logout(self, request: httpx.Request) -> httpx.Response:
        self.revoke(_bearer(request))
        return httpx.Response(204)


def _bearer(request: httpx.Request) -> str:
    return request.headers.get("authorization", "").removeprefix("Bearer ").strip()


def _claims(token: str) -> dict[str, Any]:
    try:
        return dict(unverified_claims(token))
    except Forbidden:  # not a JWT: GoTrue finds no session either
        return {}
