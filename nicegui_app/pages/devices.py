"""Devices page (기기): a count per status, filters (state, PC, labels, serial search) kept in
the address so they survive a reload, then one card per PC (worker) with its counts per
status. The counts come from one aggregate (device_groups), never from reading every device;
a PC's devices are read a page at a time when it is opened (every PC opens at once when the
fleet or the filter's match is small), so 10,000 devices render as fast as 10. Each device
shows its status and why it takes no work (in the page's language where the reason is one
the database writes), battery / charging / temperature when its worker reports them, the
worker's labels apart from the operator's, and the operator's actions: disable and reboot
(after a confirmation: disabling stops a running run), enable, drain, and editing its
labels. Each device links to its detail page (device_detail.py), which shares the status
texts and the actions defined here. Follows device_status and job_progress (which moves
devices between idle and busy), at most once a second, re-reading only the open PCs' rows."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import Request
from nicegui import ui

from jobsys.errors import JobsysError
from jobsys.events import Event, EventName
from jobsys.models import (
    NO_WORKER, Device, DeviceFilter, DeviceFilterState, DeviceGroup, DevicePage, DeviceStatus, DeviceVitals,
    check_labels,
)
from nicegui_app.hub import RESYNC
from nicegui_app.i18n import Translator
from nicegui_app.pages.device_model import model_text
from nicegui_app.pages.dialog import CreateDialog, answer
from nicegui_app.pages.frame import PageContext, frame
from nicegui_app.pages.guard import guarded_page
from nicegui_app.live import Coalescer
from nicegui_app.pages.rows import LIMIT_MAX, LiveView, status_filter, when

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
PAGE_SIZE = 50  # rows an opened PC shows at first; "더 보기" adds as many
AUTO_OPEN_MAX = 100  # a fleet (or a filter's match) this small opens every PC at once
REFRESH_INTERVAL_S = 1.0  # at most one counts read per second per open page, however busy the fleet
FILTER_STATES = frozenset(s.value for s in DeviceFilterState)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
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


class DeviceRow:
    """One device on the list, rebuilt in place only when the device changed."""

    def __init__(self, view: DevicesView, device: Device) -> None:
        self.view = view
        self.device = device
        self.separator = ui.separator()
        self.column = ui.column().classes("w-full gap-1 text-sm").mark(f"device-{device.serial}")
        self._fill()

    def update(self, device: Device) -> None:
        if device == self.device:
            return
        self.device = device
        self.column.clear()
        self._fill()

    def delete(self) -> None:
        self.separator.delete()
        self.column.delete()

    def _fill(self) -> None:
        t = self.view.ctx.t
        device = self.device
        with self.column:
            with ui.row().classes("w-full items-center gap-3"):
                ui.link(device.serial, f"/devices/{device.id}").classes("font-mono min-w-40").mark(
                    "device-link"
                )
                if device.model:
                    ui.label(model_text(t, device.model)).classes("text-gray-500")  # the sim's label translated
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
                self.view.actions.buttons(device)


class GroupCard:
    """One PC: its name and counts per status in the header (from device_groups, no device
    rows), and, once expanded, its devices a page at a time. Rows are read only while open."""

    def __init__(self, view: DevicesView, group: DeviceGroup, opened: bool) -> None:
        self.view = view
        self.group = group
        self.rows: dict[uuid.UUID, DeviceRow] = {}
        self.cursor: str | None = None  # where "더 보기" continues; None: every matching device shown
        self._counts_shown: list[tuple[DeviceStatus, int]] | None = None
        t = view.ctx.t
        with ui.card().classes("w-full gap-1 p-2").mark(f"worker-{self.key}") as self.card:
            self.expansion = ui.expansion(value=opened, on_value_change=self._toggled).classes("w-full").mark(
                "group-expansion"
            )
            with self.expansion.add_slot("header"), ui.row().classes("w-full items-center gap-2"):
                ui.label(t("worker", name=group.worker_name) if group.worker_id else t("no_worker")).classes(
                    "text-lg font-medium"
                )
                self.badge = ui.badge(color="primary").mark("group-connected")
                self.counts = ui.row().classes("items-center gap-1").mark("group-counts")
            with self.expansion:
                self.column = ui.column().classes("w-full gap-1").mark("group-devices")
                self.more = ui.button(on_click=self._more).props("flat no-caps").mark("group-more")
        self.update(group)

    @property
    def key(self) -> str:
        return str(self.group.worker_id) if self.group.worker_id else "none"

    def update(self, group: DeviceGroup) -> None:
        """The header's counts: connected/total, then each status the PC has."""
        self.group = group
        t = self.view.ctx.t
        self.badge.set_text(f"{group.summary.connected}/{group.total}")
        counts = [(s, getattr(group.summary, s.value)) for s in DeviceStatus]
        shown = [(s, n) for s, n in counts if n]
        if shown != self._counts_shown:
            self._counts_shown = shown
            self.counts.clear()
            with self.counts:
                for status, n in shown:
                    ui.badge(t("devices_group_status", status=status_text(t, status), n=n),
                             color=STATUS_COLORS[status]).props("outline").mark(f"group-count-{status.value}")
        self._show_more()

    def _show_more(self) -> None:
        shown, total = len(self.rows), self.group.matching
        self.more.set_text(self.view.ctx.t("devices_more", shown=shown, total=total))
        self.more.set_visibility(self.cursor is not None and shown < LIMIT_MAX)

    async def _toggled(self) -> None:
        async with self.view.lock:  # not in the middle of a refresh's re-read of this card
            if self.expansion.value:
                await self.reread()
            else:  # closed: its rows leave the page (and its refreshes)
                self.show([], None)

    async def _more(self) -> None:
        async with self.view.lock:
            if self.cursor is not None and not self.card.is_deleted:
                page = await self._page(self.cursor, PAGE_SIZE)
                self.show([*(row.device for row in self.rows.values()), *page.devices], page.next_cursor)

    async def reread(self) -> None:
        """The rows already shown (at least a page), read again from the start."""
        if self.expansion.value and not self.card.is_deleted:
            page = await self._page(None, min(max(len(self.rows), PAGE_SIZE), LIMIT_MAX))
            if not self.card.is_deleted:  # a filter change may have removed it meanwhile
                self.show(page.devices, page.next_cursor)

    async def _page(self, after: str | None, limit: int) -> DevicePage:
        return await self.view.ctx.services.jobs.list_devices_page(
            self.view.filters.device_filter(), worker_id=self.group.worker_id or NO_WORKER,
            after=after, limit=limit, with_counts=False)

    def show(self, devices: list[Device], cursor: str | None) -> None:
        """Update rows in place: new ones appear, gone ones go, order by serial."""
        self.cursor = cursor
        wanted = {d.id for d in devices}
        for device_id in [i for i in self.rows if i not in wanted]:
            self.rows.pop(device_id).delete()
        for device in devices:
            row = self.rows.get(device.id)
            if row is None:
                with self.column:
                    self.rows[device.id] = DeviceRow(self.view, device)
            else:
                row.update(device)
        order = [self.rows[d.id] for d in devices]
        if [row.column for row in order] != [c for c in self.column.default_slot.children if isinstance(c, ui.column)]:
            for index, row in enumerate(order):
                row.separator.move(self.column, target_index=2 * index)
                row.column.move(self.column, target_index=2 * index + 1)
        self.rows = {d.id: self.rows[d.id] for d in devices}
        self._show_more()


@dataclasses.dataclass
class Filters:
    """The page's filters, kept in its address (/devices?state=idle&pc=rack-1&label=k=v&q=A1)."""

    state: str | None = None
    pc: str | None = None
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    q: str | None = None

    @classmethod
    def from_query(cls, params: Any) -> Filters:
        state = params.get("state")
        labels, _ = parse_label_filter(",".join(params.getlist("label")))
        return cls(state=state if state in FILTER_STATES else None, pc=(params.get("pc") or "")[:200] or None,
                   labels=labels or {}, q=clean_text(params.get("q")))

    @property
    def active(self) -> bool:
        return bool(self.state or self.labels or self.q)

    def device_filter(self) -> DeviceFilter:
        return DeviceFilter(state=self.state, labels=self.labels, q=self.q)  # type: ignore[arg-type]

    def address(self) -> str:
        params: list[tuple[str, str]] = [(k, v) for k, v in (("state", self.state), ("pc", self.pc)) if v]
        params += [("label", f"{k}={v}") for k, v in self.labels.items()]
        params += [("q", self.q)] if self.q else []
        return "/devices?" + urllib.parse.urlencode(params) if params else "/devices"


def clean_text(text: str | None) -> str | None:
    cleaned = _CONTROL_RE.sub("", text or "").strip()[:200]
    return cleaned or None


def parse_label_filter(text: str) -> tuple[dict[str, str] | None, bool]:
    """"k=v, k2=v2" as pairs, and whether it was well formed and within the label bounds the
    server checks (None when not: a link with a bad filter then shows the fleet unfiltered)."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            return None, False
        pairs[key.strip()] = value.strip()
    try:
        return check_labels(pairs), True
    except ValueError:
        return None, False


def set_address(url: str) -> None:
    """Show the view's address in the browser without reloading (tests replace this)."""
    ui.navigate.history.replace(url)


class DevicesView(LiveView):
    """Counts for the fleet and per PC from one aggregate on every (coalesced) event; device
    rows only for the PCs an operator opened, re-read a page at a time: the work per event
    does not grow with the fleet's rows on the page."""

    def __init__(self, ctx: PageContext, request: Request) -> None:
        super().__init__(ctx)
        self.filters = Filters.from_query(request.query_params)
        self.groups: dict[str, GroupCard] = {}
        self._pc_names: list[str] | None = None
        self.lock = asyncio.Lock()

    async def build(self) -> None:
        t = self.ctx.t
        with ui.row().classes("w-full gap-2").mark("device-summary"):
            self.cards = {key: self._summary_card(key) for key in SUMMARY_KEYS}
        with ui.row().classes("w-full items-start gap-4"):
            states = {"connected": t("devices_state_connected"),
                      **{s.value: status_text(t, s) for s in DeviceStatus}}
            self.state = status_filter(t, states, self._filters_changed, "devices-state",
                                       value=self.filters.state or "")
            self.pc = ui.select({"": t("filter_all")}, value="", label=t("devices_filter_pc"),
                                on_change=self._filters_changed).classes("w-48").mark("devices-pc")
            labels = ", ".join(f"{k}={v}" for k, v in self.filters.labels.items())
            self.labels = ui.input(t("devices_filter_labels"), value=labels, on_change=self._filters_changed,
                                   validation=self._label_problem).props("clearable").classes("w-72").mark(
                "devices-labels")
            self.search = ui.input(t("devices_search"), value=self.filters.q or "",
                                   on_change=self._filters_changed).props("clearable").classes("w-56").mark(
                "devices-search")
        self.matching = ui.label().classes("text-sm text-gray-600").mark("devices-matching")
        self.dialogs = ui.element()  # dialogs live here, not in the rows that refreshes rebuild
        self.actions = DeviceActions(self.ctx, self.dialogs, self._poke)
        self.empty = ui.label().classes("text-gray-500").mark("devices-empty")
        self.container = ui.column().classes("w-full gap-2").mark("device-groups")
        await self.refresh()
        self.live = follow_slowly(self.ctx, self.refresh, [EventName.DEVICE_STATUS.value,
                                                           EventName.JOB_PROGRESS.value])

    def _summary_card(self, key: str) -> ui.label:
        title = self.ctx.t("device_summary_total" if key == "total" else f"device_{key}")
        with ui.card().classes("min-w-20 gap-0 px-3 py-1").mark(f"device-summary-{key}"):
            ui.label(title).classes("text-xs text-gray-600")
            return ui.label("0").classes("text-xl font-bold").mark(f"device-summary-{key}-value")

    def _label_problem(self, text: str | None) -> str | None:
        _, ok = parse_label_filter(text or "")
        return None if ok else self.ctx.t("devices_filter_labels_invalid")

    async def _filters_changed(self) -> None:
        labels, ok = parse_label_filter(self.labels.value or "")
        if not ok:
            return  # the field says what is wrong; the list keeps the last good filter
        self.filters = Filters(state=self.state.value or None, pc=self.pc.value or None, labels=labels or {},
                               q=clean_text(self.search.value))
        set_address(self.filters.address())
        await self.refresh(regroup=True)  # the operator's own change: at once, not at the events' pace

    async def refresh(self, regroup: bool = False) -> None:
        async with self.lock:  # an event's refresh and a filter change's never interleave
            if regroup:  # a new filter: PCs open afresh by the new match count
                for card in self.groups.values():
                    card.card.delete()
                self.groups.clear()
            await self._refresh()

    async def _refresh(self) -> None:
        t = self.ctx.t
        counted = await self.ctx.services.jobs.device_groups(self.filters.device_filter())
        for key, label in self.cards.items():
            label.set_text(str(getattr(counted.summary, key)))
        names = sorted({g.worker_name for g in counted.groups if g.worker_name} | (
            {self.filters.pc} if self.filters.pc else set()))
        if names != self._pc_names:
            self._pc_names = names
            self.pc.set_options({"": t("filter_all"), **{n: n for n in names}}, value=self.filters.pc or "")
        groups = [g for g in counted.groups if (g.matching or not self.filters.active)
                  and (self.filters.pc is None or g.worker_name == self.filters.pc)]
        matching = sum(g.matching for g in groups)
        self.matching.set_text(t("devices_matching", n=matching) if self.filters.active or self.filters.pc else "")
        self.empty.set_text(t("devices_no_match") if self.filters.active or self.filters.pc else t("no_devices"))
        self.empty.set_visibility(not groups)
        opened = matching <= AUTO_OPEN_MAX  # a small fleet or match: every PC open at once
        wanted = {str(g.worker_id) if g.worker_id else "none": g for g in groups}
        for key in [k for k in self.groups if k not in wanted]:
            self.groups.pop(key).card.delete()
        for key, group in wanted.items():
            card = self.groups.get(key)
            if card is None:
                with self.container:
                    self.groups[key] = card = GroupCard(self, group, opened)
            else:
                card.update(group)
        order = [self.groups[key].card for key in wanted]
        if list(self.container.default_slot.children) != order:
            for index, element in enumerate(order):
                element.move(self.container, target_index=index)
        self.groups = {key: self.groups[key] for key in wanted}
        for card in list(self.groups.values()):  # only the open PCs' rows: what the operator sees
            await card.reread()


def follow_slowly(ctx: PageContext, refresh: Callable[[], Awaitable[None]], events: list[str]) -> Coalescer:
    """Like live.follow, at most one refresh per REFRESH_INTERVAL_S: a fleet's events (every
    run start and end moves a device) cost one counts read per second, not one per event."""
    wanted = frozenset(events) | {RESYNC}
    coalescer = Coalescer(refresh, min_interval_s=REFRESH_INTERVAL_S, name="devices")

    def on_event(event: Event) -> None:
        if event.event in wanted:
            coalescer.poke()

    def stop() -> None:
        ctx.services.hub.remove_listener(on_event)
        coalescer.close()

    ctx.services.hub.add_listener(on_event)
    ctx.client.on_delete(stop)
    return coalescer


def create() -> None:
    @guarded_page("/devices")
    async def devices_page(request: Request) -> None:
        async with frame(request, "nav_devices") as ctx:
            await DevicesView(ctx, request).build()
