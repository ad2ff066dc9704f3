"""Devices page: devices grouped by worker with state, current job, last heartbeat and a
"simulated" badge. Follows device_status (and job_progress, which moves devices between
idle and busy)."""

from __future__ import annotations

import itertools

from fastapi import Request
from nicegui import ui

from jobsys.events import EventName
from jobsys.models import Device, DeviceStatus
from nicegui_app.pages.frame import frame
from nicegui_app.pages.guard import guarded_page
from nicegui_app.pages.rows import LiveView, when

STATUS_COLORS = {
    DeviceStatus.IDLE: "positive",
    DeviceStatus.BUSY: "primary",
    DeviceStatus.OFFLINE: "grey",
    DeviceStatus.ERROR: "negative",
    DeviceStatus.DISABLED: "grey",
}


def _worker_key(device: Device) -> tuple[str, str]:
    return device.worker_name or "", str(device.worker_id or "")


class DevicesView(LiveView):
    async def build(self) -> None:
        self.container = ui.column().classes("w-full gap-4").mark("device-groups")
        await self._follow([EventName.DEVICE_STATUS.value, EventName.JOB_PROGRESS.value], name="devices")

    async def refresh(self) -> None:
        listing = await self.ctx.services.jobs.list_devices()
        t = self.ctx.t
        self.container.clear()
        with self.container:
            if not listing.devices:
                ui.label(t("no_devices")).classes("text-gray-500")
            devices = sorted(listing.devices, key=lambda d: (*_worker_key(d), d.serial))
            for (name, worker_id), group in itertools.groupby(devices, key=_worker_key):
                self._worker_card(name, worker_id, list(group))

    def _worker_card(self, name: str, worker_id: str, devices: list[Device]) -> None:
        t = self.ctx.t
        connected = sum(d.status in (DeviceStatus.IDLE, DeviceStatus.BUSY) for d in devices)
        with ui.card().classes("w-full gap-1").mark(f"worker-{worker_id or 'none'}"):
            with ui.row().classes("items-center gap-2"):
                ui.label(t("worker", name=name) if worker_id else t("no_worker")).classes(
                    "text-lg font-medium"
                )
                ui.badge(f"{connected}/{len(devices)}", color="primary")
            for device in devices:
                self._device_row(device)

    def _device_row(self, device: Device) -> None:
        t = self.ctx.t
        with ui.row().classes("w-full items-center gap-3 text-sm").mark(f"device-{device.serial}"):
            ui.label(device.serial).classes("font-mono min-w-40")
            if device.model:
                ui.label(device.model).classes("text-gray-500")
            ui.badge(t(f"device_{device.status.value}"), color=STATUS_COLORS[device.status]).mark(
                "device-status"
            )
            if device.simulated:
                ui.badge(t("simulated"), color="purple").props("outline").mark("simulated")
            if device.current_job_id:
                ui.label(t("current_job", job=str(device.current_job_id)[:8])).classes("font-mono")
            ui.space()
            ui.label(t("last_heartbeat", at=when(device.last_heartbeat_at))).classes("text-gray-500")


def create() -> None:
    @guarded_page("/devices")
    async def devices_page(request: Request) -> None:
        async with frame(request, "nav_devices") as ctx:
            await DevicesView(ctx).build()
