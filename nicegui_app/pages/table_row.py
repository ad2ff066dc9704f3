"""What a line of the dense job tables does whatever it shows (job_row.py: device jobs,
batch_row.py: AI batches): its select box, a captioned value cell, the segmented bar, the
icon buttons and badges, the side panel it opens.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Protocol

from nicegui import ui

from nicegui_app.pages import job_progress
from nicegui_app.pages.job_progress import BADGE_TEXT, SEGMENT_COLORS, Segment
from nicegui_app.pages.rows import ItemRow, ItemT, when

TITLE_WIDTH = "max-w-[18rem]"  # long titles and URLs are cut here; the tooltip has them whole


def badge_style(background: str) -> str:
    """Inline colours for a badge made with color=None: Quasar's bg-* classes are !important."""
    return f"background-color: {background}; color: {BADGE_TEXT}"


def set_prop(element: ui.element, key: str, value: str) -> None:
    """Set a prop from text (a title may hold quotes, which a props string would misread);
    only a change goes to the browser."""
    if element.props.get(key) != value:
        element.props[key] = value


def icon_button(label: str, icon: str, on_click: Callable[..., object], mark: str,
                negative: bool = False) -> ui.button:
    """A dense icon button that still has a name: aria-label for screen readers, the browser's
    own tooltip (title) for the eye; no ui.tooltip, which would add an element per button per row."""
    button = ui.button(icon=icon, on_click=on_click).props(
        "flat round dense size=sm" + (" color=negative" if negative else ""))
    set_prop(button, "aria-label", label)
    set_prop(button, "title", label)
    return button.mark(mark)


def ended_or_age(t: Callable[..., str], ended_at: dt.datetime | None, created_at: dt.datetime,
                 now: dt.datetime) -> str:
    """When it ended, or how long ago it was created while it has not."""
    if ended_at is not None:
        return when(ended_at)
    return t("age", span=job_progress.span(t, (now - created_at).total_seconds()))


class SegmentBar:
    """The segmented bar: 완료 green, 실행 중 blue, 대기 grey, 실패 red, 취소 dark grey.
    `labels` prefixes the i18n key that names a segment ("segment_" + "completed")."""

    def __init__(self, t: Callable[..., str], mark: str, labels: str) -> None:
        self.t = t
        self._labels = labels
        self.element = (
            ui.element("div").classes("flex no-wrap h-2.5 w-40 rounded overflow-hidden bg-gray-200")
            .props('role="progressbar" aria-valuemin="0"').mark(mark)
        )
        self.parts: dict[str, ui.element] = {}
        with self.element:
            for key in SEGMENT_COLORS:
                self.parts[key] = ui.element("div").classes("h-full").mark(f"bar-{key}")

    def show(self, segments: list[Segment], done: int, whole: int) -> None:
        described = []
        for segment in segments:
            part = self.parts[segment.key]
            part.style(replace=f"width: {segment.percent:.2f}%; background-color: {SEGMENT_COLORS[segment.key]}")
            label = self.t(f"{self._labels}{segment.key}", n=segment.count)
            set_prop(part, "title", label)
            described.append(label)
        # A progress bar to assistive technology: completed of the whole, and every segment in words.
        set_prop(self.element, "aria-valuemax", str(whole))
        set_prop(self.element, "aria-valuenow", str(done))
        set_prop(self.element, "aria-valuetext", ", ".join(described))


class Panel(Protocol):
    async def open(self) -> None: ...

    async def refresh(self, force: bool = False) -> None: ...


class TableRow(ItemRow[ItemT]):
    """A line of a selectable table (selectable_table.py): a tbody holding the row and its panel."""

    panel: Panel
    select: ui.checkbox

    def _select_box(self, on_select: Callable[[ItemT, bool], None], mark: str) -> None:
        """The first cell: the box that selects the line for bulk actions (writers only)."""
        with ui.element("td"):
            self.select = ui.checkbox(on_change=lambda e: on_select(self.job, bool(e.value))).props(
                "dense").mark(mark)
            self.select.set_visibility(self.ctx.can_write)

    @staticmethod
    def _cell(column: str, classes: str, mark: str) -> ui.label:
        """A cell of one value; `data-label` names it on a phone, where the table is a card per line."""
        with ui.element("td") as cell:
            cell.props["data-label"] = column
            return ui.label().classes(classes).mark(mark)

    @property
    def selected(self) -> bool:
        return bool(self.select.value)

    def set_selected(self, value: bool) -> None:
        self.select.set_value(value)

    async def open_panel(self) -> None:
        await self.panel.open()

    async def refresh_detail(self, force: bool = False) -> None:
        await self.panel.refresh(force)
