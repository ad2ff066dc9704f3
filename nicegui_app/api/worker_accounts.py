"""The REST API for the PCs that join the hub (worker accounts): list, add, revoke.

Operators only, with the same bearer token as every /api route; a worker token (what `add`
returns) is not an API token and gets 401 here like anywhere under /api. `add` answers with
the PC's token, shown this once (the database keeps its SHA-256 digest), and the one command
to run on that PC. A bad name is a 422 and a taken one a 409, and nothing is stored.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Annotated

import pydantic
import pydantic_core
from fastapi import APIRouter, Depends, Request, Response

from jobsys import errors
from jobsys.system import JobSystem
from jobsys.worker_accounts import NAME_MAX, WorkerAccount, WorkerAccountList, WorkerAccountName, join_command
from nicegui_app.api.errors import ERROR_RESPONSES
from nicegui_app.api.routes import require_token

TAG = "PCs (worker accounts)"
NAME_RULE = f"PC name must be 1-{NAME_MAX} printable characters (no control characters)"
LOOPBACK_NAMES = ("localhost", "localhost.localdomain")

Jobs = Annotated[JobSystem, Depends(require_token)]

router = APIRouter(
    prefix="/api/worker-accounts",
    tags=[TAG],
    dependencies=[Depends(require_token)],
    responses={401: ERROR_RESPONSES[401], 403: ERROR_RESPONSES[403]},
)


def checked_name(value: object) -> str:
    """The PC name as the library stores it (stripped); NAME_RULE when it is not one."""
    try:
        return WorkerAccountName.model_validate({"name": value}).name
    except pydantic.ValidationError:
        raise pydantic_core.PydanticCustomError("invalid_name", NAME_RULE) from None


class NewWorkerAccount(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    name: str = pydantic.Field(description=f"the PC's name, 1-{NAME_MAX} printable characters, unique among "
                                           "active PCs", examples=["lab-pc-2"])

    @pydantic.field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        return checked_name(value)


class EnrolledPc(pydantic.BaseModel):
    """A new PC: its account, its token (shown this once; it cannot be read again) and what to
    run on it."""

    account: WorkerAccount
    token: str = pydantic.Field(description="the PC's worker token; shown this once, only its SHA-256 digest "
                                            "is stored")
    server: str = pydantic.Field(description="the address the command gives the PC: how this request reached "
                                             "the server, a loopback name replaced by this machine's name")
    command: str = pydantic.Field(description="the one command to run on that PC (jobsys installed)",
                                  examples=["jobsys worker --server http://hub-pc:8080 --token jsw_..."])


def server_address(base_url: str) -> str:
    """How other PCs reach this server, from the address a request or page came in on: a
    loopback host (127.0.0.1, ::1, localhost) becomes this machine's name, as `jobsys up`
    prints it for --host 0.0.0.0."""
    url = pydantic_core.Url(base_url)
    host = url.host or ""
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host.lower() in LOOPBACK_NAMES
    if loopback:
        host = socket.gethostname()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    default_port = {"http": 80, "https": 443}.get(url.scheme)
    port = "" if url.port in (None, default_port) else f":{url.port}"
    return f"{url.scheme}://{host}{port}"


@router.get("", response_model=WorkerAccountList)
async def list_worker_accounts(jobs: Jobs, include_revoked: bool = False) -> WorkerAccountList:
    """The PCs, active first by name: last seen, live sessions (host, version, push state,
    healthy) and their devices. `include_revoked=true` lists revoked ones too."""
    return await jobs.list_worker_accounts(include_revoked=include_revoked)


@router.post(
    "",
    status_code=201,
    response_model=EnrolledPc,
    responses={400: ERROR_RESPONSES[400], 409: ERROR_RESPONSES[409], 422: ERROR_RESPONSES[422]},
)
async def add_worker_account(body: NewWorkerAccount, jobs: Jobs, request: Request,
                             response: Response) -> EnrolledPc:
    """Add a PC: its token, shown this once, and the command to run on it. 409 when an
    active PC has that name (revoke it first, or choose another)."""
    enrolled = await jobs.add_worker_account(body.name)
    server = server_address(str(request.base_url))
    response.headers["Cache-Control"] = "no-store"  # the body holds a secret
    return EnrolledPc(account=enrolled.account, token=enrolled.token, server=server,
                      command=join_command(server, enrolled.token))


@router.post(
    "/{name:path}/revoke",
    response_model=WorkerAccount,
    responses={404: ERROR_RESPONSES[404]},
)
async def revoke_worker_account(name: str, jobs: Jobs) -> WorkerAccount:
    """Refuse the PC's token from now on: its sessions end, its devices go offline and their
    runs move to other PCs. 404 when no active PC has that name (nor can have it)."""
    try:
        name = checked_name(name)
    except pydantic_core.PydanticCustomError:  # not a name any PC can have: none has it
        raise errors.NotFound("no active PC by that name", {"name": name[:NAME_MAX]}) from None
    return await jobs.revoke_worker_account(name)
