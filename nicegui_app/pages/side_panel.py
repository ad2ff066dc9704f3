"""The side panel a table line opens (job_panel.py, batch_panel.py): a sheet fixed to the right
edge over a dimmed page, built inside its row (so the row's element holds it and a test or
update finds it by the job's id), re-read only when the job changed since the last read.

Not a ui.dialog: NiceGUI puts dialogs at the page's root, away from their row. The sheet is
hidden with CSS while closed.
"""

from __future__ import annotations

from nicegui import ui

from nicegui_app.pages.frame import PageContext
from nicegui_app.pages.table_row import badge_style

SHEET_CLASSES = ("hidden fixed top-0 right-0 h-full w-[760px] max-w-full bg-white shadow-2xl z-[5001] "
                 "overflow-y-auto p-4 text-left whitespace-normal")  # not the table cell's nowrap


class SidePanel:
    """The sheet and its backdrop; a subclass fills `self.sheet` and says how `close` empties it."""

    def __init__(self, ctx: PageContext, mark: str, prefix: str) -> None:
        """`mark` names the sheet; `prefix` its parts (backdrop, title, status, close)."""
        self.ctx = ctx
        self._prefix = prefix
        self.t = ctx.t
        self.is_open = False
        self._read_version: object = None  # the job's updated_at at the last read
        self.backdrop = (
            ui.element("div").classes("hidden fixed inset-0 bg-black/40 z-[5000]")
            .on("click", self.close).mark(f"{prefix}-backdrop")
        )
        self.sheet = ui.element("div").classes(SHEET_CLASSES).props('role="dialog" aria-modal="true"').mark(mark)
        self.sheet.on("keydown.esc", self.close)

    def close(self) -> None:
        raise NotImplementedError

    def _show(self, shown: bool) -> None:
        self.is_open = shown
        for element in (self.backdrop, self.sheet):
            if shown:
                element.classes(remove="hidden")
            else:
                element.classes(add="hidden")

    def _due(self, version: object, force: bool) -> bool:
        """Whether to re-read: open, and the job changed since the last read (or `force`).
        A True answer counts as that read."""
        if not self.is_open or (not force and self._read_version == version):
            return False
        self._read_version = version
        return True

    def _header(self, title: str, status: str, background: str) -> None:
        """Title, status badge and the close button, on one line."""
        with ui.row().classes("w-full items-center no-wrap gap-2"):
            # Korean breaks between words (keep-all); a long run without spaces still wraps.
            ui.label(title).classes(
                "text-xl font-semibold grow min-w-0 break-keep [overflow-wrap:anywhere]").mark(f"{self._prefix}-title")
            ui.badge(status, color=None).style(badge_style(background)).mark(f"{self._prefix}-status")
            ui.button(icon="close", on_click=self.close).props(
                f'flat round dense aria-label="{self.t("close")}"').mark(f"{self._prefix}-close")
