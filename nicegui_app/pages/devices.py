"""Devices page (기기): a count per status, then the devices grouped by worker. Each device
shows its status and why it takes no work (in the page's language where the reason is one
the database writes), battery / charging / temperature when its worker reports them, the
worker's labels apart from the operator's, and the operator's actions: disable and reboot
(after a confirmation: disabling stops a running run), enable, drain, and editing its
labels. Each device links to its detail page (device_detail.py), which shares the status
texts and the actions defined here. Follows device_status (and job_progress, which moves
devices between idle and busy)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any, Literal

from fastapi import Request
from nicegui import ui

from jobsys.errors import JobsysError
from jobsys.events import EventName
from jobsys.models import Device, DeviceList, DeviceStatus, DeviceVitals
from nicegui_app.i18n import Translator
from nicegui_app.pages.dialog import CreateDialog, answer
from nicegui_app.pages.frame import PageContext, frame
from nicegui_app.pages.guard import guarded_page
from nicegui_app.pages.rows import LiveView, when

STATUS_COLORS = {
    DeviceStatus.IDLE: "positive",
    DeviceStatus.BUSY: "primary",
    DeviceStatus.OFFLINE: "grey",
    DeviceStatus.ERROR: "negative",
    DeviceStatus.UNAUTHORIZED: "negative",
    DeviceStatus.DISABLED: "grey-7",
    DeviceStatus.DRAINING: "orange",
    DeviceStatus.QUARANTINED: "deep-orange",
    DeviceStatus.LOW_BATTERY: "amber-9",
    DeviceStatus.OVERHEATED: "red-9",
}
SUMMARY_KEYS = ("total", *(s.value for s in DeviceStatus))
# What an operator's "enable" ends; everything else is the worker's or the vitals' to end.
ENABLE_FROM = (DeviceStatus.DISABLED, DeviceStatus.DRAINING, DeviceStatus.QUARANTINED)
NO_DISABLE = (DeviceStatus.DISABLED,)
NO_DRAIN = (DeviceStatus.DISABLED, DeviceStatus.DRAINING)
# No worker to ask, or adb may not talk to the phone; busy is refused with the reason why.
NO_REBOOT = (DeviceStatus.OFFLINE, DeviceStatus.UNAUTHORIZED)

# The reasons the SQL writes (supabase/schemas/33_fleet.sql, 35_device_runs.sql), in words of
# the page's language; any other reason (a worker's error text) is shown as it is.
_REASONS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^disabled by an operator$"), "reason_disabled"),
    (re.compile(r"^drained: disabled by an operator$"), "reason_drained"),
    (re.compile(r"^draining: "), "reason_draining"),
    (re.compile(r"^battery (?P<pct>\d+) % \(below (?P<min>\d+) %\)$"), "reason_low_battery"),
    (re.compile(r"^battery (?P<c>[\d.]+) °C \(above (?P<max>[\d.]+) °C\)$"), "reason_overheated"),
    (
        re.compile(r"^(?P<n>\d+) runs failed in a row \(last: (?P<error>.*)\)$", re.DOTALL),
        "reason_quarantined",
    ),
    (re.compile(r"^adb: unauthorized"), "reason_unauthorized"),
    (re.compile(r"^adb: no permissions"), "reason_no_permissions"),
    (re.compile(r"^the worker reports an error$"), "reason_worker_error"),
]
_NUMBERS = ("pct", "min", "c", "max", "n")
# Label refusals (SQL's rule, or check_labels' words in the library's InvalidInput) in words.
_LABEL_RULES = {
    "label_key": "labels_bad_key",
    "label_value": "labels_bad_value",
    "labels_count": "labels_too_many",
    "labels_size": "labels_too_large",
}
_LABEL_MESSAGES = {
    "label keys must be": "labels_bad_key",
    "label values must be": "labels_bad_value",
    "at most 32 labels": "labels_too_many",
    "bytes as JSON": "labels_too_large",
}


def status_text(t: Translator, status: DeviceStatus) -> str:
    return t(f"device_{status.value}")


def state_text(t: Translator, state: str) -> str:
    """A device state as its history logs it (`online` included), in words."""
    key = f"device_{state}"
    try:
        return t(key)
    except KeyError:  # a state a newer schema added: its own word beats nothing
        return state


def reason_words(t: Translator, reason: str) -> str:
    """A reason the database wrote, in the page's language; any other text as it is."""
    for pattern, key in _REASONS:
        match = pattern.search(reason)
        if match:
            values = match.groupdict()
            return t(key, **{k: _number(v) if k in _NUMBERS else v for k, v in values.items()})
    return reason


def _number(text: str) -> str:
    """50.0 (a float's JSON) reads as 50; anything that is no number stays as it is."""
    try:
        return f"{float(text):g}"
    except ValueError:
        return text


def reason_text(t: Translator, device: Device) -> str | None:
    """Why the device takes no work, or None."""
    if device.state_reason:
        return reason_words(t, device.state_reason)
    # adb's "unauthorized" always has the same remedy, even before a reason is stored
    return t("reason_unauthorized") if device.status is DeviceStatus.UNAUTHORIZED else None


def vitals_texts(t: Translator, vitals: DeviceVitals | None) -> list[str]:
    """What the worker read from the phone, only what it reported."""
    if vitals is None:
        return []
    shown = []
    if vitals.battery_pct is not None:
        shown.append(t("vital_battery", pct=vitals.battery_pct))
    if vitals.charging is not None:
        shown.append(t("vital_charging" if vitals.charging else "vital_not_charging"))
    if vitals.temperature_c is not None:
        shown.append(t("vital_temperature", c=f"{vitals.temperature_c:g}"))
    return shown


def label_chips(t: Translator, title_key: str, labels: dict[str, Any], colour: str, mark: str) -> None:
    """One source's labels as key=value chips after its title ("없음" when it has none)."""
    with ui.row().classes("items-center gap-1").mark(mark):
        ui.label(t(title_key)).classes("text-xs text-gray-500")
        if not labels:
            ui.label(t("no_labels")).classes("text-xs text-gray-400")
        for key, value in sorted(labels.items()):
            ui.badge(f"{key}={value}", color=colour).props("outline").classes("font-mono")


def label_error(t: Translator, exc: JobsysError) -> str:
    """A label refusal in the page's language, else the library's own words."""
    if exc.details.get("rule") == "worker_label":
        return t("labels_worker_key", name=exc.details.get("key", ""))
    key = _LABEL_RULES.get(str(exc.details.get("rule")))
    if key is None:
        key = next((k for text, k in _LABEL_MESSAGES.items() if text in exc.message), None)
    return t(key) if key is not None else exc.message


def parse_labels(text: str) -> tuple[dict[str, str], tuple[str, dict[str, Any]] | None]:
    """key=value lines (blank ones skipped) as a dict, or what is wrong with them (an i18n key
    and its values). Keys and values are checked by the library when saved."""
    labels: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            return {}, ("labels_line_invalid", {"line": number})
        if key in labels:
            return {}, ("labels_duplicate", {"line": number, "name": key})
        labels[key] = value
    return labels, None


class LabelsDialog(CreateDialog[dict[str, str], Device]):
    """Edits a device's operator labels as key=value lines; the worker's are shown for
    reference. A refusal (a bad key, a key the worker reports) shows inline and stores nothing."""

    def __init__(self, ctx: PageContext, device: Device) -> None:
        super().__init__(ctx, Device)
        self.device = device
        t = ctx.t
        with ui.dialog() as self.dialog, ui.card().classes("w-[30rem] max-w-full gap-3"):
            ui.label(t("labels_title", serial=device.serial)).classes("text-xl font-semibold")
            ui.label(t("labels_hint")).classes("text-sm text-gray-600")
            label_chips(t, "worker_labels", device.labels, "grey-7", "labels-dialog-worker")
            current = "\n".join(f"{k}={v}" for k, v in sorted(device.operator_labels.items()))
            self.text = (
                ui.textarea(t("labels_input"), value=current, on_change=self._changed)
                .props("autogrow autofocus")
                .classes("w-full font-mono")
                .mark("labels-input")
            )
            self._footer("labels-error", "labels-cancel", "labels-save")
            self.create.set_text(t("labels_save"))

    def spec(self) -> dict[str, str] | None:
        labels, problem = parse_labels(self.text.value or "")
        return None if problem else labels

    def _changed(self) -> None:
        _, problem = parse_labels(self.text.value or "")
        self.error.set_text(self.ctx.t(problem[0], **problem[1]) if problem else "")
        self.create.set_enabled(problem is None)

    async def _create(self, spec: dict[str, str]) -> Device:
        try:
            return await self.ctx.services.jobs.set_device_labels(self.device.id, spec)
        except JobsysError as exc:  # shown inline by the frame, in the page's language
            raise JobsysError(label_error(self.ctx.t, exc), exc.details) from exc


class DeviceActions:
    """The operator's buttons for one device, on the list and the detail page. Dialogs go in
    `dialogs`, which the page's refreshes leave alone; `on_change` asks for a re-read."""

    def __init__(self, ctx: PageContext, dialogs: ui.element, on_change: Callable[[], None]) -> None:
        self.ctx = ctx
        self.dialogs = dialogs
        self.on_change = on_change

    def buttons(self, device: Device) -> None:
        """The actions this device's status allows, built where this is called."""
        t = self.ctx.t
        status = device.status

        def button(
            key: str, icon: str, mark: str, action: Callable[[], Any], colour: str = "primary"
        ) -> None:
            ui.button(t(key), icon=icon, on_click=action).props(f"flat dense no-caps color={colour}").mark(
                mark
            )

        with ui.row().classes("items-center gap-1").mark("device-actions"):
            if status in ENABLE_FROM:
                button(
                    "action_enable", "play_arrow", "device-enable", lambda: self.enable(device), "positive"
                )
            if status not in NO_DRAIN:
                button(
                    "action_drain", "hourglass_bottom", "device-drain", lambda: self.drain(device), "orange"
                )
            if status not in NO_DISABLE:
                button("action_disable", "block", "device-disable", lambda: self.disable(device), "negative")
            if status not in NO_REBOOT:
                button(
                    "action_reboot", "restart_alt", "device-reboot", lambda: self.reboot(device), "negative"
                )
            button("action_labels", "sell", "device-edit-labels", lambda: self.edit_labels(device))

    async def _confirm(self, question: str, ok_key: str) -> bool:
        t = self.ctx.t
        with self.dialogs, ui.dialog() as dialog, ui.card():
            ui.label(question).mark("device-confirm-question")
            with ui.row().classes("w-full justify-end"):
                ui.button(t("cancel"), on_click=lambda: dialog.submit(False)).props("flat").mark(
                    "device-confirm-cancel"
                )
                ui.button(t(ok_key), on_click=lambda: dialog.submit(True)).props("color=negative").mark(
                    "device-confirm-ok"
                )
        return bool(await answer(dialog))

    async def _move(
        self, device: Device, state: Literal["disabled", "enabled", "draining"], done_key: str
    ) -> None:
        try:
            moved = await self.ctx.services.jobs.set_device_state(device.id, state)
            if state == "draining" and moved.status is not DeviceStatus.DRAINING:
                done_key = "disabled_done"  # it ran nothing, so it is disabled at once
            ui.notify(self.ctx.t(done_key, serial=device.serial), type="positive")
        except JobsysError as exc:  # e.g. removed a moment ago: say so, the refresh shows it
            ui.notify(exc.message, type="warning")
        self.on_change()

    async def disable(self, device: Device) -> None:
        if await self._confirm(self.ctx.t("confirm_disable", serial=device.serial), "action_disable"):
            await self._move(device, "disabled", "disabled_done")

    async def enable(self, device: Device) -> None:
        await self._move(device, "enabled", "enabled_done")

    async def drain(self, device: Device) -> None:
        await self._move(device, "draining", "drain_done")

    async def reboot(self, device: Device) -> None:
        t = self.ctx.t
        if not await self._confirm(t("confirm_reboot", serial=device.serial), "action_reboot"):
            return
        try:
            await self.ctx.services.jobs.request_device_reboot(device.id)
            ui.notify(t("reboot_done", serial=device.serial), type="positive")
        except JobsysError as exc:  # busy (drain first) or no worker holds it
            reason = exc.details.get("reason")
            ui.notify(t(f"reboot_{reason}") if reason in ("busy", "offline") else exc.message, type="warning")
        self.on_change()

    async def edit_labels(self, device: Device) -> None:
        with self.dialogs:
            saved = await LabelsDialog(self.ctx, device).run()
        if saved is not None:
            ui.notify(self.ctx.t("labels_done", serial=device.serial), type="positive")
            self.on_change()


def _worker_key(device: Device) -> tuple[str, str]:
    return device.worker_name or "", str(device.worker_id or "")


class DevicesView(LiveView):
    async def build(self) -> None:
        with ui.row().classes("w-full gap-2").mark("device-summary"):
            self.cards = {key: self._summary_card(key) for key in SUMMARY_KEYS}
        self.dialogs = ui.element()  # dialogs live here, not in the list that each refresh rebuilds
        self.actions = DeviceActions(self.ctx, self.dialogs, self._poke)
        self.container = ui.column().classes("w-full gap-4").mark("device-groups")
        self._shown: DeviceList | None = None
        await self._follow([EventName.DEVICE_STATUS.value, EventName.JOB_PROGRESS.value], name="devices")

    def _summary_card(self, key: str) -> ui.label:
        title = self.ctx.t("device_summary_total" if key == "total" else f"device_{key}")
        with ui.card().classes("min-w-20 gap-0 px-3 py-1").mark(f"device-summary-{key}"):
            ui.label(title).classes("text-xs text-gray-600")
            return ui.label("0").classes("text-xl font-bold").mark(f"device-summary-{key}-value")

    async def refresh(self) -> None:
        listing = await self.ctx.services.jobs.list_devices()
        if listing == self._shown:  # job_progress wakes the page often; most of the time nothing moved
            return
        self._shown = listing
        t = self.ctx.t
        for key, label in self.cards.items():
            label.set_text(str(getattr(listing.summary, key)))
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
                ui.separator()
                self._device_row(device)

    def _device_row(self, device: Device) -> None:
        t = self.ctx.t
        with ui.column().classes("w-full gap-1 text-sm").mark(f"device-{device.serial}"):
            with ui.row().classes("w-full items-center gap-3"):
                ui.link(device.serial, f"/devices/{device.id}").classes("font-mono min-w-40").mark(
                    "device-link"
                )
                if device.model:
                    ui.label(device.model).classes("text-gray-500")
                ui.badge(status_text(t, device.status), color=STATUS_COLORS[device.status]).mark(
                    "device-status"
                )
                if device.simulated:
                    ui.badge(t("simulated"), color="purple").props("outline").mark("simulated")
                for text in vitals_texts(t, device.vitals):
                    ui.label(text).classes("text-gray-700").mark("device-vital")
                if device.current_job_id:
                    ui.label(t("current_job", job=str(device.current_job_id)[:8])).classes("font-mono")
                ui.space()
                ui.label(t("last_heartbeat", at=when(device.last_heartbeat_at))).classes("text-gray-500")
            reason = reason_text(t, device)
            if reason or device.quarantined_until or device.reboot_requested_at:
                with ui.row().classes("w-full items-center gap-3"):
                    if reason:
                        ui.label(reason).classes("text-orange-900").mark("device-reason")
                    if device.status is DeviceStatus.QUARANTINED and device.quarantined_until:
                        ui.label(t("quarantined_until", at=when(device.quarantined_until))).classes(
                            "text-gray-600"
                        ).mark("device-quarantined-until")
                    if device.reboot_requested_at:
                        ui.badge(
                            t("reboot_requested", at=when(device.reboot_requested_at)), color="orange"
                        ).props("outline").mark("device-reboot-requested")
            with ui.row().classes("w-full items-center gap-4"):
                label_chips(t, "worker_labels", device.labels, "grey-7", "device-worker-labels")
                label_chips(t, "operator_labels", device.operator_labels, "primary", "device-operator-labels")
                ui.space()
                self.actions.buttons(device)


def create() -> None:
    @guarded_page("/devices")
    async def devices_page(request: Request) -> None:
        async with frame(request, "nav_devices") as ctx:
            await DevicesView(ctx).build()
