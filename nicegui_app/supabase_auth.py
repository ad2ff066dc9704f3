"""Supabase mode of the dashboard: operators sign in with their own Supabase Auth
accounts, and the REST API takes their Supabase access tokens.

Pages: the login page signs in with email and password. The session (access and refresh
token) stays in this process's memory under a random id; the browser's NiceGUI storage
holds only that id, so no token reaches a storage file or a log, and a restart signs
everyone out. The password is not kept: when Supabase refuses the refresh token, the
operator signs in again. Each session calls PostgREST with its operator's JWT, refreshed
before it expires, so RLS and the SQL functions' claim checks apply to that person.

API: `Authorization: Bearer <Supabase access token>`. Supabase Auth vouches for the token
(GoTrue /auth/v1/user for HS256 projects, the project's JWKS for asymmetric keys, so this
process needs no JWT secret); the answer is cached briefly, and the request then calls
PostgREST with that same token.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import secrets
import time
from typing import Callable

from jobsys.auth import STAFF, Claims, Credentials, TokenKeeper, WrongRole, role_of
from jobsys.supabase_project import SupabaseProject
from jobsys.system import JobSystem

log = logging.getLogger(__name__)

VERIFIED_CACHE_S = 30.0  # a checked token is trusted this long (at most until it expires)
VERIFIED_CACHE_MAX = 1024  # tokens remembered; the oldest go first
SESSION_IDLE_S = 12 * 3600.0  # an unused page session is closed after this (browser left without logging out)
SESSION_ID_BYTES = 32

Clock = Callable[[], float]


@dataclasses.dataclass
class OperatorSession:
    email: str
    jobs: JobSystem  # calls as this operator
    tokens: TokenKeeper
    last_used: float

    @property
    def alive(self) -> bool:
        return not self.tokens.ended


def _cache_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()  # the token itself is not kept as a key


class SupabaseAuth:
    """One per dashboard process. `project` has the anon key alone: it checks tokens, and
    API requests share its HTTP client with their caller's JWT."""

    def __init__(self, project: SupabaseProject, *, clock: Clock = time.monotonic) -> None:
        self._project = project
        self._clock = clock
        self._sessions: dict[str, OperatorSession] = {}
        self._verified: dict[str, tuple[float, Claims]] = {}

    @classmethod
    async def connect(cls, url: str, anon_key: str, *, clock: Clock = time.monotonic) -> SupabaseAuth:
        return cls(await SupabaseProject.connect(url, anon_key), clock=clock)

    async def close(self) -> None:
        """Process shutdown: close sessions without revoking them (they die with the process)."""
        for session in self._sessions.values():
            await self._close_session(session)
        self._sessions.clear()
        await self._project.close()

    # Pages -----------------------------------------------------------------------------
    async def sign_in(self, email: str, password: str) -> str:
        """A new operator session; returns its id for the browser's storage. Raises
        WrongRole for an account that is not an operator, Forbidden for refused
        credentials, TransportError when Supabase Auth cannot be reached."""
        await self._sweep()
        # The session's own client refreshes it; the password is dropped here.
        jobs, tokens = await self._project.sign_in(Credentials(email, password), STAFF)
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        self._sessions[session_id] = OperatorSession(email, jobs, tokens, self._clock())
        log.info("operator signed in: %s", email)
        return session_id

    def session(self, session_id: object) -> OperatorSession | None:
        """The live session for this id (from the browser's storage), or None."""
        found = self._sessions.get(session_id) if isinstance(session_id, str) else None
        if found is None or not found.alive:
            return None
        found.last_used = self._clock()
        return found

    async def sign_out(self, session_id: object) -> None:
        found = self._sessions.pop(session_id, None) if isinstance(session_id, str) else None
        if found is not None:
            await found.tokens.sign_out()
            await found.jobs.close()

    async def _sweep(self) -> None:
        """Close sessions that ended (refresh refused) or sat idle."""
        cutoff = self._clock() - SESSION_IDLE_S
        for session_id, session in list(self._sessions.items()):
            if not session.alive or session.last_used < cutoff:
                del self._sessions[session_id]
                await self._close_session(session)

    @staticmethod
    async def _close_session(session: OperatorSession) -> None:
        session.tokens.end()  # pages still open fail as Forbidden, not on a closed client
        await session.jobs.close()

    # REST API --------------------------------------------------------------------------
    async def caller(self, token: str) -> JobSystem:
        """A JobSystem acting as the holder of this access token. Raises Forbidden for a
        token Supabase Auth does not vouch for (missing, malformed, expired, revoked),
        WrongRole for a valid token of a non-operator, TransportError when Auth is down."""
        claims = await self._verify(token)
        if role_of(claims) not in STAFF:
            raise WrongRole(f"{claims.get('email') or claims.get('sub') or 'this token'} is not staff "
                            "(app_metadata.jobsys_role must be viewer, operator or admin)")
        return self._project.acting_as(token)

    async def _verify(self, token: str) -> Claims:
        key = _cache_key(token)
        now = self._clock()
        cached = self._verified.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        self._verified.pop(key, None)
        claims = await self._project.verify(token)
        ttl_s = min(VERIFIED_CACHE_S, float(claims.get("exp", 0)) - time.time())
        if ttl_s > 0:
            while len(self._verified) >= VERIFIED_CACHE_MAX:
                del self._verified[next(iter(self._verified))]
            self._verified[key] = (now + ttl_s, claims)
        return claims

