"""Device detail page (/devices/{id}): one device's state and why, its vitals now and a
chart of the last 24 hours of battery and temperature, the worker's and the operator's
labels apart, its history (state changes with their reasons, reboots), its last 50 runs
with their screenshots, and the same actions as the devices page. An unknown id is a 404
page in the UI's language. Follows device_status (and job_progress, which moves its runs
on) through one coalesced re-read, as the devices page does."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi import Request
from nicegui import ui

from jobsys import errors
from jobsys.events import EventName
from jobsys.models import DeviceDetail, DeviceEvent, DeviceRun, DeviceStatus, DeviceVitalsSample
from nicegui_app import screenshots
from nicegui_app.i18n import Translator
from nicegui_app.live import follow
from nicegui_app.pages.devices import (
    STATUS_COLORS,
    DeviceActions,
    label_chips,
    reason_text,
    reason_words,
    state_text,
    status_text,
    vitals_texts,
)
from nicegui_app.pages.device_model import model_text
from nicegui_app.pages.frame import PageContext, frame
from nicegui_app.pages.guard import guarded_page
from nicegui_app.pages.rows import LiveView, when

PATH = "/devices/{device_id}"
RUN_COLORS = {
    "pending": "grey",
    "paused": "orange",
    "running": "primary",
    "completed": "positive",
    "failed": "negative",
    "cancelled": "grey",
}
CHART_HEIGHT = "h-64"
CHART_SPAN = dt.timedelta(hours=24)
CHART_SYMBOLS_MAX = 60  # fewer samples than this: dots, so a lone reading shows at all


def _ms(moment: dt.datetime) -> int:
    """An echarts time axis takes epoch milliseconds and shows them in the browser's zone."""
    return int(moment.timestamp() * 1000)


def vitals_chart_options(t: Translator, history: list[DeviceVitalsSample]) -> dict[str, Any]:
    """Battery (%, left axis) and temperature (°C, right axis) over the last 24 hours."""
    battery, temperature = t("chart_battery"), t("chart_temperature")
    now = dt.datetime.now(dt.UTC)
    dots = len(history) < CHART_SYMBOLS_MAX
    return {
        "animation": False,
        "tooltip": {"trigger": "axis"},
        "legend": {"data": [battery, temperature], "top": 0},
        "grid": {"left": 40, "right": 48, "top": 40, "bottom": 24},
        "xAxis": {"type": "time", "min": _ms(now - CHART_SPAN), "max": _ms(now)},
        "yAxis": [
            {"type": "value", "name": "%", "min": 0, "max": 100},
            {"type": "value", "name": "°C", "scale": True},
        ],
        "series": [
            {
                "name": battery,
                "type": "line",
                "showSymbol": dots,
                "connectNulls": True,
                "data": [[_ms(s.at), s.battery_pct] for s in history if s.battery_pct is not None],
            },
            {
                "name": temperature,
                "type": "line",
                "yAxisIndex": 1,
                "showSymbol": dots,
                "connectNulls": True,
                "data": [[_ms(s.at), s.temperature_c] for s in history if s.temperature_c is not None],
            },
        ],
    }


def event_text(t: Translator, event: DeviceEvent) -> str:
    if event.event == "state":
        return t("event_state", state=state_text(t, event.state))
    return t(f"event_{event.event}")


class DeviceDetailView(LiveView):
    def __init__(self, ctx: PageContext, device_id: uuid.UUID) -> None:
        super().__init__(ctx)
        self.device_id = device_id
        self._shown: DeviceDetail | None = None

    async def build(self, detail: DeviceDetail) -> None:
        self.dialogs = ui.element()  # dialogs live here, not in the sections each refresh rebuilds
        self.actions = DeviceActions(self.ctx, self.dialogs, self._poke)
        self.container = ui.column().classes("w-full gap-4").mark("device-detail")
        self._show(detail)
        self.live = follow(
            self.ctx.services.hub,
            self.ctx.client,
            self.refresh,
            [EventName.DEVICE_STATUS.value, EventName.JOB_PROGRESS.value],
            name="device detail",
        )

    async def refresh(self) -> None:
        try:
            detail = await self.ctx.services.jobs.get_device(self.device_id)
        except errors.NotFound:  # removed while the page was open
            self._shown = None
            self.container.clear()
            with self.container:
                not_found(self.ctx.t)
            return
        self._show(detail)

    def _show(self, device: DeviceDetail) -> None:
        # job_progress of any job wakes this page: rebuild only when this device's read changed
        if device == self._shown:
            return
        self._shown = device
        self.container.clear()
        with self.container:
            self._state(device)
            with ui.row().classes("w-full gap-4 items-stretch"):
                self._vitals(device)
                self._labels(device)
            self._chart(device.vitals_history)
            with ui.row().classes("w-full gap-4 items-start"):
                self._events(device.events)
                self._runs(device.runs)

    def _state(self, device: DeviceDetail) -> None:
        t = self.ctx.t
        with ui.card().classes("w-full gap-2").mark("device-state"):
            with ui.row().classes("w-full items-center gap-3"):
                ui.label(device.serial).classes("text-xl font-mono font-semibold").mark(
                    "device-detail-serial"
                )
                if device.model:
                    ui.label(model_text(t, device.model)).classes("text-gray-500")  # the sim's label translated
                ui.badge(status_text(t, device.status), color=STATUS_COLORS[device.status]).mark(
                    "device-status"
                )
                if device.simulated:
                    ui.badge(t("simulated"), color="purple").props("outline")
                if device.state_changed_at:
                    ui.label(t("state_since", at=when(device.state_changed_at))).classes(
                        "text-sm text-gray-500"
                    )
                ui.space()
                ui.link(t("back_to_devices"), "/devices").classes("text-sm")
            reason = reason_text(t, device)
            if reason:
                ui.label(reason).classes("text-orange-900").mark("device-reason")
            with ui.row().classes("w-full items-center gap-4 text-sm text-gray-600"):
                ui.label(t("worker", name=device.worker_name) if device.worker_name else t("no_worker"))
                if device.current_job_id:
                    ui.label(t("current_job", job=str(device.current_job_id)[:8])).classes("font-mono")
                if device.status is DeviceStatus.QUARANTINED and device.quarantined_until:
                    ui.label(t("quarantined_until", at=when(device.quarantined_until))).mark(
                        "device-quarantined-until"
                    )
                if device.reboot_requested_at:
                    ui.label(t("reboot_requested", at=when(device.reboot_requested_at))).mark(
                        "device-reboot-requested"
                    )
                if device.rebooted_at:
                    ui.label(t("rebooted_at", at=when(device.rebooted_at)))
                ui.label(t("last_heartbeat", at=when(device.last_heartbeat_at)))
            if self.ctx.can_manage:  # devices are an admin's to change; the server refuses anyone else
                self.actions.buttons(device)

    def _vitals(self, device: DeviceDetail) -> None:
        t = self.ctx.t
        vitals = device.vitals
        with ui.card().classes("flex-1 gap-1").mark("device-vitals"):
            ui.label(t("section_vitals")).classes("font-medium")
            shown = vitals_texts(t, vitals)
            if vitals is not None and vitals.screen_on is not None:
                shown.append(t("vital_screen_on" if vitals.screen_on else "vital_screen_off"))
            if vitals is not None and vitals.adb_state:
                shown.append(t("vital_adb", state=vitals.adb_state))
            if not shown:
                ui.label(t("no_vitals")).classes("text-sm text-gray-500")
            with ui.row().classes("gap-3"):
                for text in shown:
                    ui.label(text).mark("device-vital")
            if device.vitals_at:
                ui.label(t("vitals_at", at=when(device.vitals_at))).classes("text-xs text-gray-500")

    def _labels(self, device: DeviceDetail) -> None:
        t = self.ctx.t
        with ui.card().classes("flex-1 gap-2").mark("device-labels"):
            ui.label(t("section_labels")).classes("font-medium")
            label_chips(t, "worker_labels", device.labels, "grey-7", "device-worker-labels")
            label_chips(t, "operator_labels", device.operator_labels, "primary", "device-operator-labels")

    def _chart(self, history: list[DeviceVitalsSample]) -> None:
        t = self.ctx.t
        with ui.card().classes("w-full gap-1").mark("device-chart"):
            ui.label(t("section_chart")).classes("font-medium")
            if not history:
                ui.label(t("no_vitals_history")).classes("text-sm text-gray-500").mark(
                    "device-no-vitals-history"
                )
                return
            ui.echart(vitals_chart_options(t, history)).classes(f"w-full {CHART_HEIGHT}").mark(
                "device-vitals-chart"
            )

    def _events(self, events: list[DeviceEvent]) -> None:
        t = self.ctx.t
        with ui.card().classes("flex-1 min-w-72 gap-1").mark("device-events"):
            ui.label(t("section_events")).classes("font-medium")
            if not events:
                ui.label(t("no_events")).classes("text-sm text-gray-500")
            for event in events:
                with ui.column().classes("gap-0 text-sm").mark(f"device-event-{event.id}"):
                    with ui.row().classes("gap-2"):
                        ui.label(when(event.at)).classes("text-gray-500 font-mono")
                        ui.label(event_text(t, event))
                    if event.detail:
                        ui.label(reason_words(t, event.detail)).classes("text-xs text-gray-600")

    def _runs(self, runs: list[DeviceRun]) -> None:
        t = self.ctx.t
        with ui.card().classes("flex-[2] min-w-80 gap-1").mark("device-runs"):
            ui.label(t("section_runs")).classes("font-medium")
            if not runs:
                ui.label(t("no_runs")).classes("text-sm text-gray-500")
            for run in runs:
                with ui.row().classes("w-full items-center gap-3 text-sm").mark(f"device-run-{run.id}"):
                    ui.label(run.job_title).classes("font-medium")
                    ui.badge(
                        t(f"assignment_{run.status.value}"), color=RUN_COLORS.get(run.status.value, "grey")
                    )
                    ui.label(t("attempt", n=run.attempt)).classes("text-gray-500")
                    if run.started_at:
                        ui.label(t("run_started", at=when(run.started_at))).classes("text-gray-500")
                    if run.finished_at:
                        ui.label(t("run_finished", at=when(run.finished_at))).classes("text-gray-500")
                    url = screenshots.page_url((run.result or {}).get("evidence_path"))
                    if url is not None:
                        self._thumbnail(url, run.id)
                    if run.error:
                        ui.label(run.error).classes("text-negative text-xs")

    def _thumbnail(self, url: str, run_id: int) -> None:
        """A run's screenshot (a hub worker's upload, through the dashboard's own door); a click
        shows it whole, as on the jobs page."""

        def show() -> None:
            with self.dialogs, ui.dialog() as dialog, ui.card().classes("max-w-none"):
                ui.image(url).props("fit=contain").classes("w-[80vw] h-[80vh]").mark("screenshot-full")
                ui.button(self.ctx.t("close"), on_click=dialog.close).props("flat")
            dialog.on("hide", dialog.delete)
            dialog.open()

        (
            ui.image(url)
            .props("fit=cover")
            .classes("w-16 h-10 rounded cursor-pointer")
            .tooltip(self.ctx.t("screenshot"))
            .on("click", show)
            .mark(f"run-screenshot-{run_id}")
        )


def not_found(t: Translator) -> None:
    with ui.column().classes("gap-2").mark("device-not-found"):
        ui.label(t("device_not_found")).classes("text-xl font-medium")
        ui.label(t("device_not_found_hint")).classes("text-gray-600")
        ui.link(t("back_to_devices"), "/devices")


async def _read(ctx: PageContext, raw_id: str) -> DeviceDetail | None:
    try:
        return await ctx.services.jobs.get_device(uuid.UUID(raw_id))
    except (ValueError, errors.NotFound):  # not a UUID, or no such device
        return None


def create() -> None:
    @guarded_page(PATH)
    async def device_page(request: Request) -> None:
        # guarded_page's wrapper takes the request only, so the id comes from the path here
        raw_id = str(request.path_params.get("device_id", ""))
        async with frame(request, "device_detail") as ctx:
            detail = await _read(ctx, raw_id)
            if detail is None:
                ctx.client.status_code = 404  # the page in the UI's language, with the right status
                not_found(ctx.t)
                return
            await DeviceDetailView(ctx, detail.id).build(detail)
