"""The REST API for devices: the fleet list, one device with its history, what operators
decide about a device (labels, disable / enable / drain), reboots, and the label choices of
the new-job dialog. Operators only, with the same bearer token as every /api route. A
refused change (a bad label, a key the device's worker reports, a reboot of a busy phone)
stores nothing."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import StringConstraints

from jobsys.models import Device, DeviceDetail, DeviceList, DeviceUpdate, FleetLabels
from jobsys.system import JobSystem
from nicegui_app.api.errors import ERROR_RESPONSES, ApiError
from nicegui_app.api.routes import require_token

TAG = "devices"
LABEL_FILTERS_MAX = 32  # as many pairs as a device may carry
LabelFilter = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:/-]{1,64}=.{0,256}$")]

Jobs = Annotated[JobSystem, Depends(require_token)]

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


@router.get("/devices", response_model=DeviceList)
async def list_devices(jobs: Jobs) -> DeviceList:
    """Every device with its worker, status (and why it takes no work), labels, vitals and
    current job, plus counts per status."""
    return await jobs.list_devices()


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
