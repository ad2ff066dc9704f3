"""A Supabase project seen with its anon key alone: what a process that serves other
users (the dashboard) needs from Supabase Auth, without touching a transport itself.

It checks users' access tokens, signs users in, and opens JobSystems that act as one
user, so RLS and the SQL functions' claim checks apply to that person.
"""

from __future__ import annotations

from jobsys.auth import Claims, Credentials, JobsysRole, TokenKeeper, sign_in, verify_access_token
from jobsys.system import JobSystem
from jobsys.transport.supabase import SupabaseTransport


class SupabaseProject:
    def __init__(self, keyed: SupabaseTransport) -> None:
        self._keyed = keyed  # the anon key alone, no push: checks tokens, shares its HTTP client

    @classmethod
    async def connect(cls, url: str, anon_key: str) -> SupabaseProject:
        return cls(await SupabaseTransport.connect(url, anon_key, push=False))

    async def close(self) -> None:
        await self._keyed.close()

    async def verify(self, token: str) -> Claims:
        """The token's claims once Supabase Auth vouched for it (see auth.verify_access_token)."""
        return await verify_access_token(self._keyed.client, token)

    def acting_as(self, token: str) -> JobSystem:
        """A JobSystem calling PostgREST with this (already verified) access token, on this
        project's HTTP client; no push. Nothing to close."""
        keyed = self._keyed
        return JobSystem(SupabaseTransport(keyed.client, keyed.settings,
                                           TokenKeeper(keyed.client, fixed_token=token), push=False))

    async def sign_in(self, credentials: Credentials,
                      role: JobsysRole | frozenset[JobsysRole]) -> tuple[JobSystem, TokenKeeper]:
        """A JobSystem signed in as this user (WrongRole without `role`), on a client of its
        own that refreshes the session; the password is not kept. The TokenKeeper ends or
        signs out the session; the caller closes the JobSystem."""
        settings = self._keyed.settings
        transport = await SupabaseTransport.connect(settings.url, settings.key, push=False)
        try:
            session = await sign_in(transport.client, credentials, role)
        except BaseException:
            await transport.close()
            raise
        tokens = TokenKeeper(transport.client, session=session, expected_role=role)
        transport.tokens = tokens
        return JobSystem(transport), tokens
