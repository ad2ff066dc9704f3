"""What the list pages share: the view that re-reads on push events, the list of rows
(one card per job, updated in place, paged with "show more"), what every row does (open a
section that is read only while it is open, run an action and say why it failed), the
status filter and how a time is shown.

Rows are updated in place, never rebuilt, so an open section stays open and the browser
receives only the changed properties.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Awaitable, Callable, Generic, Protocol, TypeVar

from nicegui import ui

from jobsys.errors import JobsysError
from nicegui_app.live import Coalescer, follow
from nicegui_app.pages.frame import PageContext
from nicegui_app.server_errors import error_text

LIMIT_MAX = 1000  # list_jobs refuses more


class Listed(Protocol):
    """A job as the list pages show it (device job or AI batch)."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def updated_at(self) -> dt.datetime: ...


ItemT = TypeVar("ItemT", bound=Listed)


def when(moment: dt.datetime | None) -> str:
    """Local time of day, with the date when it is not today; "–" for none."""
    if moment is None:
        return "–"
    local = moment.astimezone()
    same_day = local.date() == dt.datetime.now().astimezone().date()
    return local.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S")


def status_filter(
    t: Callable[..., str], statuses: dict[str, str], on_change: Callable[[], object], mark: str,
    value: str = "",
) -> ui.select:
    """A select of statuses (value: label) with "all" (the empty value) first; `value` chosen."""
    return (
        ui.select(
            {"": t("filter_all"), **statuses},
            value=value,
            label=t("filter_status"),
            on_change=on_change,
        )
        .classes("w-40")
        .mark(mark)
    )


class ItemRow(Generic[ItemT]):
    """One job on a list page: its card, built by the subclass, which also says how `update`
    shows a newer version of the job."""

    card: ui.card

    def __init__(self, ctx: PageContext, job: ItemT, on_change: Callable[[], None]) -> None:
        self.ctx = ctx
        self.t = ctx.t
        self.job = job
        self._on_change = on_change  # the list re-reads: what an action did shows there
        self._read_version: object = None  # the job's updated_at when the open section was read

    @property
    def id(self) -> uuid.UUID:
        return self.job.id

    def delete(self) -> None:
        self.card.delete()

    def update(self, job: ItemT) -> None:
        raise NotImplementedError

    def _due(self, section: ui.expansion, force: bool) -> bool:
        """Whether to re-read what the section shows: it is open, and the job changed since
        the last read (or `force`). A True answer counts as that read."""
        if not section.value or (not force and self._read_version == self.job.updated_at):
            return False
        self._read_version = self.job.updated_at
        return True

    async def _act(
        self, action: Callable[[uuid.UUID], Awaitable[object]], done_key: str | None = None
    ) -> None:
        """Run `action` on the job, say so (when `done_key` names the message), then let the
        list re-read."""
        try:
            await action(self.job.id)
            if done_key is not None:
                ui.notify(self.t(done_key), type="positive")
        except JobsysError as exc:  # e.g. it finished a moment ago: say so, the refresh shows it
            ui.notify(error_text(self.t, exc), type="warning")  # in the page language
        self._on_change()


class LiveView:
    """A page region that re-reads when these dashboard events arrive (coalesced) and when
    `_poke()` says something changed; the browser never polls."""

    def __init__(self, ctx: PageContext) -> None:
        self.ctx = ctx
        self.live: Coalescer | None = None

    async def refresh(self) -> None:
        raise NotImplementedError

    async def _follow(self, events: list[str], name: str) -> None:
        """The first read now, then one on every event."""
        await self.refresh()
        self.live = follow(self.ctx.services.hub, self.ctx.client, self.refresh, events, name=name)

    def _poke(self) -> None:
        if self.live is not None:
            self.live.poke()
