"""Audit page (감사 로그 / Audit log): who did what, newest first, from jobsys.list_audit.
Admins only: the SQL refuses anyone else, and the page says so instead of a table. Filters
by object kind and actor; "더 보기" loads older entries (paged by the last entry's id)."""

from __future__ import annotations

import json

from fastapi import Request
from nicegui import ui

from jobsys import errors
from jobsys.models import AuditEntry
from nicegui_app.pages.frame import PageContext, frame
from nicegui_app.pages.guard import guarded_page
from nicegui_app.pages.rows import when

PAGE_SIZE = 50
OBJECT_TYPES = ("job", "device", "worker_account", "operator_account", "background_job", "system")


class AuditView:
    def __init__(self, ctx: PageContext) -> None:
        self.ctx = ctx
        t = ctx.t
        with ui.row().classes("items-end gap-4"):
            self.kind = ui.select({"": t("audit_all"), **{k: t(f"audit_object_{k}") for k in OBJECT_TYPES}},
                                  value="", label=t("audit_object"), on_change=self.reload).classes("w-48").mark(
                "audit-object")
            self.actor = ui.input(t("audit_actor")).classes("w-64").mark("audit-actor").on(
                "keydown.enter", self.reload)
        self.refused = ui.label().classes("text-[#b91c1c]").mark("audit-refused")
        self.table = ui.column().classes("w-full gap-0").mark("audit-entries")
        self.more = ui.button(t("audit_more"), on_click=self.load_more).props("flat").mark("audit-more")
        self._before: int | None = None

    async def reload(self) -> None:
        self.table.clear()
        self._before = None
        await self.load_more()

    async def load_more(self) -> None:
        t = self.ctx.t
        try:
            page = await self.ctx.services.jobs.list_audit(
                actor=(self.actor.value or "").strip() or None, object_type=self.kind.value or None,
                limit=PAGE_SIZE, before_id=self._before)
        except errors.Forbidden:
            self.refused.set_text(t("audit_admins_only"))
            self.more.set_visibility(False)
            return
        self.refused.set_text("")
        with self.table:
            if not page.entries and self._before is None:
                ui.label(t("audit_empty")).classes("text-[#4b5563]")
            for entry in page.entries:
                self._row(entry)
        self._before = page.next_before_id
        self.more.set_visibility(len(page.entries) == PAGE_SIZE)

    def _row(self, entry: AuditEntry) -> None:
        t = self.ctx.t
        who = entry.actor_name or (t(f"audit_role_{entry.actor_role}") if t.has(f"audit_role_{entry.actor_role}")
                                   else entry.actor_role)
        detail = json.dumps(entry.detail, ensure_ascii=False)
        with ui.row().classes("w-full items-baseline gap-3 py-1 border-b border-gray-200 text-sm").mark(
                f"audit-{entry.id}"):
            ui.label(when(entry.at)).classes("w-40 text-[#4b5563]")
            ui.label(who).classes("w-48 font-medium truncate")
            ui.label(t(f"audit_action_{entry.action}") if t.has(f"audit_action_{entry.action}")
                     else entry.action).classes("w-32")
            ui.label(t(f"audit_object_{entry.object_type}")).classes("w-28 text-[#4b5563]")
            ui.label(detail[:300]).classes("flex-1 font-mono text-xs text-[#4b5563] truncate").tooltip(detail[:2000])


def create() -> None:
    @guarded_page("/audit")
    async def audit_page(request: Request) -> None:
        async with frame(request, "nav_audit") as ctx:
            view = AuditView(ctx)
            await view.load_more()
