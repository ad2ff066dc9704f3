"""Our double of Supabase Auth (GoTrue), not GoTrue: respx routes answering the endpoints
jobsys uses, with the bodies GoTrue returns (supabase_auth parses them as it would the
real ones):

- POST /auth/v1/token?grant_type=password {email, password} -> a session; 400
  invalid_credentials otherwise;
- POST /auth/v1/token?grant_type=refresh_token {refresh_token} -> a new session (a refresh
  token is spent once used); 400 refresh_token_not_found otherwise;
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

    def _password(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        account = self.accounts.get(body.get("email", ""))
        if account is None or account.password != body.get("password"):
            return gotrue_error(400, "invalid_credentials", "Invalid login credentials")
        return httpx.Response(200, json=self._session(account))

    def _refresh(self, request: httpx.Request) -> httpx.Response:
        session_id = self.refresh_tokens.pop(json.loads(request.content).get("refresh_token", ""), None)
        if session_id is None or session_id not in self.sessions:
            return gotrue_error(400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found")
        return httpx.Response(200, json=self._session(self.sessions[session_id], session_id=session_id))

    def _user(self, request: httpx.Request) -> httpx.Response:
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
