"""The new-job dialog (새 작업 생성).

The form is checked with the library's own JobCreate on every change, so the create
button is enabled exactly when the API would accept the body (the frame: dialog.py).
Target hints follow the live connected-device count, and a warning says what happens when
a device count exceeds the connected devices or none is connected; errors from the create
call are shown inline. A device-label filter (several pairs: a device must carry all of
them) offers the fleet's label pairs with live counts of the healthy devices that would
match ("rack=A: 12대"); with a filter the hints and warnings count the matching healthy
devices instead of all the connected ones. Under "more options": a time limit, the top-up
grace, and a start time (RFC 3339 with its zone; the placeholder shows one in the server's
zone).
"""

from __future__ import annotations

import datetime as dt

import pydantic
from nicegui import ui

from jobsys.events import Event, EventName
from jobsys.models import (
    DEVICE_COUNT_MAX,
    DURATION_MAX_SEC,
    PRIORITY_MAX,
    PRIORITY_MIN,
    TIMEOUT_MAX_SEC,
    TOPUP_GRACE_MAX_SEC,
    CreatedJob,
    FleetLabels,
    JobCreate,
    TargetType,
    check_url,
    title_from_url,
)
from nicegui_app.hub import RESYNC
from nicegui_app.live import Coalescer
from nicegui_app.pages.dialog import CreateDialog, whole, whole_number
from nicegui_app.pages.frame import PageContext

DEFAULT_DURATION_SEC = 30
DEFAULT_PERCENTAGE = 50
DEFAULT_DEVICE_COUNT = 1


def _start_at_example() -> str:
    """An RFC 3339 time in this server's zone, an hour from now, as the field's placeholder."""
    soon = (dt.datetime.now().astimezone() + dt.timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    return soon.isoformat(timespec="minutes")


def label_pairs(chosen: list[str]) -> dict[str, str]:
    """The chosen "key=value" choices as device_labels; a later pair of the same key wins
    (a device carries one value per key, so two would match nothing)."""
    pairs: dict[str, str] = {}
    for choice in chosen:
        key, _, value = choice.partition("=")  # keys hold no "=" (check_labels), values may
        pairs.pop(key, None)
        pairs[key] = value
    return pairs


def expected_devices(connected: int, percentage: int) -> int:
    """What the database will resolve a percentage target to: ceil(N*p/100), at least 1."""
    if connected <= 0 or percentage <= 0:
        return 0
    return max(1, -(-connected * percentage // 100))


class NewJobDialog(CreateDialog[JobCreate, CreatedJob]):
    def __init__(self, ctx: PageContext) -> None:
        super().__init__(ctx, CreatedJob)
        self._auto_title = ""
        # The fleet's label pairs among the devices matching the filter it was read for.
        self._fleet: FleetLabels | None = None
        self._fleet_filter: dict[str, str] | None = None
        self._fleet_reader = Coalescer(self._read_fleet, name="new job labels")
        t = ctx.t
        with self._card("new_job", "w-[34rem]"):
            self.url = (
                ui.input(
                    t("url"), placeholder="https://", validation=self._url_error, on_change=self._url_changed
                )
                .classes("w-full")
                .mark("new-job-url")
            )
            self.title = ui.input(t("title"), on_change=self._changed).classes("w-full").mark("new-job-title")
            self.duration = (
                whole_number(t("duration"), DEFAULT_DURATION_SEC, DURATION_MAX_SEC, self._changed)
                .classes("w-full")
                .mark("new-job-duration")
            )
            ui.label(t("target")).classes("text-sm text-gray-600")
            self.target = (
                ui.radio(
                    {
                        TargetType.ALL_DEVICES.value: t("target_all_devices"),
                        TargetType.PERCENTAGE.value: t("target_percentage"),
                        TargetType.DEVICE_COUNT.value: t("target_device_count"),
                    },
                    value=TargetType.ALL_DEVICES.value,
                    on_change=self._changed,
                )
                .props('inline role="radiogroup"')
                .mark("new-job-target")
            )
            self.target.props["aria-label"] = t("target")  # the group's name, read before each option
            self.percentage = (
                whole_number(t("percentage_value"), DEFAULT_PERCENTAGE, 100, self._changed)
                .classes("w-full")
                .mark("new-job-percentage")
            )
            self.device_count = (
                whole_number(t("count_value"), DEFAULT_DEVICE_COUNT, DEVICE_COUNT_MAX, self._changed)
                .classes("w-full")
                .mark("new-job-count")
            )
            self.labels = (
                ui.select({}, value=[], multiple=True, label=t("device_labels"),
                          on_change=self._labels_changed)
                .props("use-chips clearable")
                .classes("w-full")
                .mark("new-job-labels")
            )
            # The hint follows the header's live device count as well as the form.
            self.hint = (
                ui.label()
                .classes("text-sm")
                .mark("new-job-hint")
                .bind_text_from(ctx.devices, "connected", backward=lambda _: self._hint())
            )
            self.warning = (
                ui.label()
                .classes("text-sm text-orange-800")
                .mark("new-job-warning")
                .bind_text_from(ctx.devices, "connected", backward=lambda _: self._warning())
                .bind_visibility_from(ctx.devices, "connected", backward=lambda _: bool(self._warning()))
            )
            # Optional limits and schedule; empty means none (the grace: the setting's default).
            with ui.expansion(t("more_options")).classes("w-full").mark("new-job-more"):
                self.timeout = (
                    ui.number(t("timeout"), min=1, max=TIMEOUT_MAX_SEC, step=1, precision=0,
                              on_change=self._changed)
                    .classes("w-full").mark("new-job-timeout")
                )
                self.grace = (
                    ui.number(t("topup_grace"), min=0, max=TOPUP_GRACE_MAX_SEC, step=1, precision=0,
                              on_change=self._changed)
                    .classes("w-full").mark("new-job-grace")
                )
                self.start_at = (
                    ui.input(t("start_at"), placeholder=_start_at_example(), validation=self._start_at_error,
                             on_change=self._changed)
                    .classes("w-full").mark("new-job-start-at")
                )
                self.priority = (
                    ui.number(t("priority_field"), value=0, min=PRIORITY_MIN, max=PRIORITY_MAX, step=1, precision=0,
                              on_change=self._changed)
                    .classes("w-full").mark("new-job-priority")
                )
            self._footer("new-job-error", "new-job-cancel", "new-job-create")
        self._changed()

    # Form state ---------------------------------------------------------------------------
    def spec(self) -> JobCreate | None:
        """The job the form describes, or None while it is not valid."""
        target = TargetType(self.target.value)
        value = {
            TargetType.ALL_DEVICES: None,
            TargetType.PERCENTAGE: self.percentage.value,
            TargetType.DEVICE_COUNT: self.device_count.value,
        }[target]
        try:
            return JobCreate(
                target_url=(self.url.value or "").strip(),
                duration_sec=whole(self.duration.value),
                target_type=target,
                target_value=whole(value),
                device_labels=self._filter(),
                title=self.title.value or None,
                timeout_sec=whole(self.timeout.value),
                topup_grace_sec=whole(self.grace.value),
                start_at=(self.start_at.value or "").strip() or None,
                priority=whole(self.priority.value) or 0,
            )
        except (pydantic.ValidationError, ValueError, TypeError):
            return None

    def _start_at_error(self, value: str | None) -> str | None:
        if not (value or "").strip():
            return None
        try:
            JobCreate(target_url="https://example.com", duration_sec=1, start_at=value.strip())  # type: ignore[arg-type, union-attr]
        except pydantic.ValidationError:
            return self.ctx.t("start_at_invalid")
        return None

    def _url_error(self, value: str | None) -> str | None:
        if not value:
            return None  # empty: nothing to complain about yet, but the button stays disabled
        try:
            check_url(value.strip())
        except ValueError:
            return self.ctx.t("url_invalid")
        return None

    def _url_changed(self) -> None:
        url = (self.url.value or "").strip()
        auto = title_from_url(url) if self._url_error(url) is None and url else ""
        if (self.title.value or "") in ("", self._auto_title):  # the operator has not typed a title
            self.title.value = auto
        self._auto_title = auto
        self._changed()

    # Label filter -------------------------------------------------------------------------
    def _filter(self) -> dict[str, str]:
        return label_pairs(list(self.labels.value or []))

    def _healthy(self) -> int | None:
        """The healthy devices the job can reach: all connected ones without a filter, the
        matching ones with it (None until they are read for this filter)."""
        chosen = self._filter()
        if not chosen:
            return self.ctx.devices.connected
        if self._fleet is None or self._fleet_filter != chosen:
            return None
        return self._fleet.healthy

    async def _read_fleet(self) -> None:
        chosen = self._filter()
        fleet = await self.ctx.services.jobs.fleet_labels(chosen)
        if chosen != self._filter():  # changed while reading: the next read (already poked) shows it
            return
        self._fleet, self._fleet_filter = fleet, chosen
        t = self.ctx.t
        options: dict[str, str] = {}
        for label in fleet.labels:  # the healthy count is what a job reaches; the rest are said apart
            pair = f"{label.key}={label.value}"
            key = "label_choice" if label.total == label.healthy else "label_choice_total"
            options[pair] = t(key, pair=pair, n=label.healthy, total=label.total)
        for key, value in chosen.items():  # a chosen pair stays offered, even once no device carries it
            options.setdefault(f"{key}={value}", t("label_choice", pair=f"{key}={value}", n=fleet.healthy))
        self.labels.set_options(options)
        self._changed()

    def _labels_changed(self) -> None:
        chosen = [f"{key}={value}" for key, value in self._filter().items()]
        if chosen != list(self.labels.value or []):
            self.labels.value = chosen  # drop an earlier value of a key chosen again (calls back here)
            return
        self._fleet_reader.poke()
        self._changed()

    def _on_event(self, event: Event) -> None:
        """Devices coming, going or changing labels move the counts: read them again."""
        if event.event in (EventName.DEVICE_STATUS.value, RESYNC):
            self._fleet_reader.poke()

    async def run(self) -> CreatedJob | None:
        hub = self.ctx.services.hub
        hub.add_listener(self._on_event)
        self._fleet_reader.poke()
        try:
            return await super().run()
        finally:  # the dialog is gone (or the page): no more reads for it
            hub.remove_listener(self._on_event)
            self._fleet_reader.close()

    # Hints --------------------------------------------------------------------------------
    def _hint(self) -> str:
        t, connected = self.ctx.t, self._healthy()
        if connected is None:
            return ""
        suffix = "_labels" if self._filter() else ""
        target = TargetType(self.target.value)
        if target is TargetType.ALL_DEVICES:
            return t(f"hint_all{suffix}", n=connected)
        if target is TargetType.PERCENTAGE:
            percentage = whole(self.percentage.value)
            if not isinstance(percentage, int) or not 1 <= percentage <= 100:
                return ""
            return t(f"hint_percentage{suffix}", n=expected_devices(connected, percentage), total=connected)
        count = whole(self.device_count.value)
        return t(f"hint_device_count{suffix}", n=count, total=connected) if isinstance(count, int) else ""

    def _warning(self) -> str:
        """Why the job may not reach its target (or cannot be created) with the devices
        connected now (matching the labels, with a filter): a device count waits for the rest
        and ends incomplete after the grace; all devices / a percentage of none is refused."""
        t, connected = self.ctx.t, self._healthy()
        if connected is None:
            return ""
        filtered = bool(self._filter())
        target = TargetType(self.target.value)
        if target is not TargetType.DEVICE_COUNT:
            if connected > 0:
                return ""
            return t("warn_no_matching_refused" if filtered else "warn_no_devices_refused")
        count = whole(self.device_count.value)
        if not isinstance(count, int) or not 1 <= count <= DEVICE_COUNT_MAX:
            return ""
        if connected <= 0:
            return t("warn_no_matching" if filtered else "warn_no_devices")
        if count > connected:
            key = "warn_count_exceeds_labels" if filtered else "warn_count_exceeds"
            return t(key, total=connected, rest=count - connected)
        return ""

    def _changed(self) -> None:
        target = TargetType(self.target.value)
        self.percentage.set_visibility(target is TargetType.PERCENTAGE)
        self.device_count.set_visibility(target is TargetType.DEVICE_COUNT)
        self.hint.set_text(self._hint())
        warning = self._warning()
        self.warning.set_text(warning)
        self.warning.set_visibility(bool(warning))
        self.error.set_text("")
        self.create.set_enabled(self.spec() is not None)

    async def _create(self, spec: JobCreate) -> CreatedJob:
        return await self.ctx.services.jobs.create_job(spec)
