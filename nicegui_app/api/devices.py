"""The REST API for devices: the fleet a page at a time (an opaque cursor, filters by state,
PC, labels and serial), one device with its history, what operators decide about a device
(labels, disable / enable / drain), reboots, and the label choices of the new-job dialog. Operators only, with the same bearer token as every /api route. A
refused change (a bad label, a key the device's worker reports, a reboot of a busy phone)
stores nothing."""

from __future__ import annotations

import base64
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import StringConstraints

from jobsys.models import (
    Device, DeviceDetail, DeviceFilter, DeviceFilterState, DeviceList, DeviceSummary, DeviceUpdate, FleetLabels,
)
from jobsys.system import JobSystem
from nicegui_app.api.errors import ERROR_RESPONSES, ApiError
from nicegui_app.api.routes import PRINTABLE, require_token

TAG = "devices"
LABEL_FILTERS_MAX = 32  # as many pairs as a device may carry
LIMIT_DEFAULT, LIMIT_MAX = 100, 1000  # list_devices_page refuses more
LabelFilter = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:/-]{1,64}=.{0,256}$")]

Jobs = Annotated[JobSystem, Depends(require_token)]


class DeviceListPage(DeviceList):
    """The old shape (devices, summary: the fleet's counts per status) plus the page's walk."""

    summary: DeviceSummary
    next_cursor: str | None = None
    total: int

router = APIRouter(
    prefix="/api",
    tags=[TAG],
    dependencies=[Depends(require_token)],
    responses={401: ERROR_RESPONSES[401], 403: ERROR_RESPONSES[403]},
)


def parse_device_id(device_id: Annotated[str, Path(json_schema_extra={"format": "uuid"})]) -> uuid.UUID:
    """Documented as a UUID; anything else is our 400 (invalid_id), not FastAPI's 422."""
    try:
        return uuid.UUID(device_id)
    except ValueError:
        raise ApiError(400, "invalid_id", "device id is not a valid UUID", {"device_id": device_id[:100]}) from None


DeviceId = Annotated[uuid.UUID, Depends(parse_device_id)]


def encode_cursor(serial: str | None) -> str | None:
    """The walk's position (a serial) as an opaque token: clients pass it back, never build it."""
    return None if serial is None else base64.urlsafe_b64encode(serial.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        serial = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        serial = ""
    if not 1 <= len(serial) <= 200 or not cursor.isascii():
        raise ApiError(400, "invalid_cursor", "cursor is not one this list gave; start again without it",
                       {"field": "cursor"})
    return serial


def _as_worker_id(pc: str | None) -> uuid.UUID | None:
    """`pc` as a worker id when it is one; otherwise it names the PC."""
    try:
        return uuid.UUID(pc) if pc else None
    except ValueError:
        return None


def parse_label_filter(
    label: Annotated[list[LabelFilter] | None,
                     Query(description="key=value; repeat for more (a device must carry all)",
                           max_length=LABEL_FILTERS_MAX)] = None,
) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in label or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ApiError(422, "invalid_input", "each label filter must be key=value", {"field": "label"})
        pairs[key] = value
    return pairs


@router.get("/devices", response_model=DeviceListPage, responses={400: ERROR_RESPONSES[400], 422: ERROR_RESPONSES[422]})
async def list_devices(
    jobs: Jobs,
    labels: Annotated[dict[str, str], Depends(parse_label_filter)],
    state: Annotated[DeviceFilterState | None, Query(description="a status, or connected (idle or busy)")] = None,
    pc: Annotated[str | None, Query(min_length=1, max_length=200,
                                    description="a PC: its worker id, or its name")] = None,
    q: Annotated[str | None, Query(max_length=200, pattern=PRINTABLE, description="part of the serial")] = None,
    limit: Annotated[int, Query(ge=1, le=LIMIT_MAX)] = LIMIT_DEFAULT,
    cursor: Annotated[str | None, Query(max_length=400, description="next_cursor of the page before")] = None,
) -> DeviceListPage:
    """A page of devices by serial, each with its worker, status (and why it takes no work),
    labels, vitals and current job; `next_cursor` continues the walk (null on the last page;
    every device is met once). Filters: `state`, `pc`, `label` k=v (repeat: all must match),
    `q`. `total` counts the matching devices, `summary` the whole fleet per status."""
    worker_id = _as_worker_id(pc)
    page = await jobs.list_devices_page(
        DeviceFilter(state=state, labels=labels, q=q or None), worker_id=worker_id,
        pc=pc if worker_id is None else None, after=decode_cursor(cursor), limit=limit)
    assert page.total is not None and page.summary is not None  # asked with counts
    return DeviceListPage(devices=page.devices, summary=page.summary, next_cursor=encode_cursor(page.next_cursor),
                          total=page.total)


@router.get("/devices/{device_id}", response_model=DeviceDetail,
            responses={400: ERROR_RESPONSES[400], 404: ERROR_RESPONSES[404]})
async def get_device(device_id: DeviceId, jobs: Jobs) -> DeviceDetail:
    """One device with its last 24 hours of battery and temperature, its last 100 events
    (state changes with their reasons, reboots) and its last 50 runs."""
    return await jobs.get_device(device_id)


@router.patch("/devices/{device_id}", response_model=Device,
              responses={400: ERROR_RESPONSES[400], 404: ERROR_RESPONSES[404], 422: ERROR_RESPONSES[422]})
async def update_device(device_id: DeviceId, update: DeviceUpdate, jobs: Jobs) -> Device:
    """`{"labels": {...}}` replaces the operator's labels (a key the device's worker reports
    is refused); `{"state": "disabled"}` takes it out of work now (its running run goes back
    to the queue), `{"drain": true}` lets its running run finish first, `{"state":
    "enabled"}` puts it back (and ends a quarantine). Labels and a state in one body: both
    or, when the state is refused, the labels only."""
    return await jobs.update_device(device_id, update)


@router.post("/devices/{device_id}/reboot", response_model=Device, status_code=202,
             responses={400: ERROR_RESPONSES[400], 404: ERROR_RESPONSES[404], 409: ERROR_RESPONSES[409]})
async def reboot_device(device_id: DeviceId, jobs: Jobs) -> Device:
    """Ask the device's worker to reboot the phone (202: asked; its page shows when it is
    back). 409 while it runs a run (drain it first) or when no worker holds it."""
    return await jobs.request_device_reboot(device_id)


@router.get("/device-labels", response_model=FleetLabels, responses={422: ERROR_RESPONSES[422]})
async def fleet_labels(jobs: Jobs, labels: Annotated[dict[str, str], Depends(parse_label_filter)]) -> FleetLabels:
    """The label pairs of the devices carrying every `label` filter, each with how many
    devices carry it (`total`) and how many may take a run now (`healthy`); `healthy` at the
    top: how many devices a job on all matching devices would reach now."""
    return await jobs.fleet_labels(labels)
