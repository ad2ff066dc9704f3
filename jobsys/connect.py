"""Choose the transport from the environment.

    SUPABASE_URL + SUPABASE_ANON_KEY     -> Supabase transport (PostgREST + Realtime);
        signed in as JOBSYS_EMAIL / JOBSYS_PASSWORD, or presenting JOBSYS_ACCESS_TOKEN
    JOBSYS_DATABASE_URL                  -> Postgres transport (psycopg + LISTEN/NOTIFY)
    JOBSYS_SERVER + JOBSYS_WORKER_TOKEN  -> hub transport (a worker PC joining `jobsys up`;
        `jobsys worker --server ... --token ...` says the same), connect_hub

The embedded default (neither set) is the CLI's business (jobsys.config). The service
role key (SUPABASE_SERVICE_ROLE_KEY) is used only when a caller asks for it
(admin scripts); a worker refuses it, and the dashboard never asks.
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import TYPE_CHECKING, Mapping

from jobsys import errors
from jobsys.auth import Credentials, JobsysRole
from jobsys.config import ENV_DATABASE_URL, ENV_WORKER_TOKEN
from jobsys.system import JobSystem
from jobsys.transport.realtime_watchdog import RealtimeSettings

if TYPE_CHECKING:
    from jobsys.transport.hub import PushSettings

ENV_SUPABASE_URL = "SUPABASE_URL"
ENV_SUPABASE_ANON_KEY = "SUPABASE_ANON_KEY"
ENV_SUPABASE_KEY = "SUPABASE_KEY"  # accepted as an alias of the anon key
ENV_SERVICE_ROLE_KEY = "SUPABASE_SERVICE_ROLE_KEY"
ENV_EMAIL = "JOBSYS_EMAIL"
ENV_PASSWORD = "JOBSYS_PASSWORD"
ENV_ACCESS_TOKEN = "JOBSYS_ACCESS_TOKEN"

log = logging.getLogger(__name__)


def _get(env: Mapping[str, str] | None, name: str) -> str:
    return (env if env is not None else os.environ).get(name, "").strip()


def supabase_configured(env: Mapping[str, str] | None = None) -> bool:
    return bool(_get(env, ENV_SUPABASE_URL))


def supabase_project(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """SUPABASE_URL and the anon key, or InvalidInput saying which is missing."""
    url = _get(env, ENV_SUPABASE_URL)
    anon_key = _get(env, ENV_SUPABASE_ANON_KEY) or _get(env, ENV_SUPABASE_KEY)
    if not url or not anon_key:
        raise errors.InvalidInput(
            f"set {ENV_SUPABASE_URL} and {ENV_SUPABASE_ANON_KEY} (Project Settings > API)")
    return url, anon_key


async def connect_supabase(url: str, key: str, *, credentials: Credentials | None = None,
                           access_token: str | None = None, role: JobsysRole | None = None,
                           push: bool = True, realtime: RealtimeSettings | None = None) -> JobSystem:
    """A JobSystem on the Supabase transport. `role` makes sign-in fail early when the
    account lacks that app_metadata.jobsys_role."""
    from jobsys.transport.supabase import SupabaseTransport

    transport = await SupabaseTransport.connect(url, key, credentials=credentials, access_token=access_token,
                                                expected_role=role, push=push, realtime=realtime)
    return JobSystem(transport)


async def connect_hub(server: str, token: str, *, push: bool = True,
                      push_settings: PushSettings | None = None,
                      evidence_dir: pathlib.Path | None = None, ca_cert: pathlib.Path | None = None) -> JobSystem:
    """A JobSystem for a worker PC joining the hub at `server` with its worker token.
    `evidence_dir`: the worker's, where screenshots wait while the hub is away; `ca_cert`:
    certificates to trust for an https:// hub (a self-signed one)."""
    from jobsys.transport.hub import HubTransport

    if not token.strip():
        raise errors.InvalidInput(f"give this PC's worker token (--token or {ENV_WORKER_TOKEN}); "
                                  "an operator makes one with: jobsys workers add NAME")
    return JobSystem(HubTransport(server, token.strip(), push=push, push_settings=push_settings,
                                  evidence_dir=evidence_dir, ca_cert=ca_cert))


async def connect_from_env(role: JobsysRole | None = None, *, push: bool = True,
                           allow_service_role: bool = False,
                           env: Mapping[str, str] | None = None) -> JobSystem:
    """A JobSystem for this process: Supabase when SUPABASE_URL is set, else Postgres at
    JOBSYS_DATABASE_URL. `role` is what the process is (workers pass WORKER)."""
    def get(name: str) -> str:
        return _get(env, name)

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


async def connect_dashboard_from_env(env: Mapping[str, str] | None = None) -> JobSystem:
    """The Supabase-mode dashboard's own JobSystem, which only holds the push subscription
    (pages and API requests call as their signed-in operator). With JOBSYS_EMAIL /
    JOBSYS_PASSWORD of an operator it joins the private dashboard topic; without them it
    has the anon key alone and no push, and pages re-read every 3 s (the header says
    "polling")."""
    url, anon_key = supabase_project(env)
    if (_get(env, ENV_EMAIL) and _get(env, ENV_PASSWORD)) or _get(env, ENV_ACCESS_TOKEN):
        return await connect_from_env(JobsysRole.OPERATOR, env=env)
    log.warning("dashboard: no %s / %s of an operator account for Realtime; pages poll every 3 s",
                ENV_EMAIL, ENV_PASSWORD)
    return await connect_supabase(url, anon_key, push=False)
