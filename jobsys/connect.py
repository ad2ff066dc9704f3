"""Choose the transport from the environment.

    SUPABASE_URL + SUPABASE_ANON_KEY     -> Supabase transport (PostgREST + Realtime);
        signed in as JOBSYS_EMAIL / JOBSYS_PASSWORD, or presenting JOBSYS_ACCESS_TOKEN
    JOBSYS_DATABASE_URL                  -> Postgres transport (psycopg + LISTEN/NOTIFY)

The embedded default (neither set) is the CLI's business (jobsys.config). The service
role key (SUPABASE_SERVICE_ROLE_KEY) is used only when a caller asks for it
(admin scripts); a worker refuses it.
"""

from __future__ import annotations

import os
from typing import Mapping

from jobsys import errors
from jobsys.auth import Credentials, JobsysRole
from jobsys.config import ENV_DATABASE_URL
from jobsys.system import JobSystem
from jobsys.transport.realtime_watchdog import RealtimeSettings

ENV_SUPABASE_URL = "SUPABASE_URL"
ENV_SUPABASE_ANON_KEY = "SUPABASE_ANON_KEY"
ENV_SUPABASE_KEY = "SUPABASE_KEY"  # accepted as an alias of the anon key
ENV_SERVICE_ROLE_KEY = "SUPABASE_SERVICE_ROLE_KEY"
ENV_EMAIL = "JOBSYS_EMAIL"
ENV_PASSWORD = "JOBSYS_PASSWORD"
ENV_ACCESS_TOKEN = "JOBSYS_ACCESS_TOKEN"


def supabase_configured(env: Mapping[str, str] | None = None) -> bool:
    return bool((env if env is not None else os.environ).get(ENV_SUPABASE_URL, "").strip())


async def connect_supabase(url: str, key: str, *, credentials: Credentials | None = None,
                           access_token: str | None = None, role: JobsysRole | None = None,
                           push: bool = True, realtime: RealtimeSettings | None = None) -> JobSystem:
    """A JobSystem on the Supabase transport. `role` makes sign-in fail early when the
    account lacks that app_metadata.jobsys_role."""
    from jobsys.transport.supabase import SupabaseTransport

    transport = await SupabaseTransport.connect(url, key, credentials=credentials, access_token=access_token,
                                                expected_role=role, push=push, realtime=realtime)
    return JobSystem(transport)


async def connect_from_env(role: JobsysRole | None = None, *, push: bool = True,
                           allow_service_role: bool = False,
                           env: Mapping[str, str] | None = None) -> JobSystem:
    """A JobSystem for this process: Supabase when SUPABASE_URL is set, else Postgres at
    JOBSYS_DATABASE_URL. `role` is what the process is (workers pass WORKER)."""
    env = env if env is not None else os.environ

    def get(name: str) -> str:
        return env.get(name, "").strip()

    if not supabase_configured(env):
        if get(ENV_DATABASE_URL):
            return await JobSystem.connect(get(ENV_DATABASE_URL), push=push)
        raise errors.InvalidInput(
            f"set {ENV_SUPABASE_URL} + {ENV_SUPABASE_ANON_KEY} or {ENV_DATABASE_URL}")

    url = get(ENV_SUPABASE_URL)
    anon_key = get(ENV_SUPABASE_ANON_KEY) or get(ENV_SUPABASE_KEY)
    service_key = get(ENV_SERVICE_ROLE_KEY)
    credentials = (Credentials(get(ENV_EMAIL), get(ENV_PASSWORD))
                   if get(ENV_EMAIL) and get(ENV_PASSWORD) else None)
    access_token = get(ENV_ACCESS_TOKEN) or None
    if role is JobsysRole.WORKER and service_key and not (credentials or access_token):
        raise errors.Forbidden(f"a worker never uses {ENV_SERVICE_ROLE_KEY}: set {ENV_EMAIL} and "
                               f"{ENV_PASSWORD} for this worker's own user (docs/supabase.md)")
    if credentials or access_token:
        if not anon_key:
            raise errors.InvalidInput(f"set {ENV_SUPABASE_ANON_KEY} (Project Settings > API)")
        return await connect_supabase(url, anon_key, credentials=credentials, access_token=access_token,
                                      role=role, push=push)
    if allow_service_role and service_key:
        return await connect_supabase(url, service_key, push=push)
    raise errors.InvalidInput(f"set {ENV_EMAIL} and {ENV_PASSWORD} (a Supabase Auth user with "
                              "app_metadata.jobsys_role; docs/supabase.md)")
