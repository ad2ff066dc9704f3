"""PC page (PC / PCs): the PCs that join this server's hub, each with its own worker token.

Each PC shows when it was last seen, its live sessions (host, version, push state as the
worker reports it, healthy or not) and its devices, with a revoke button behind a
confirmation. "Add a PC" asks for a name, then shows the token once with the one command
to run on that PC; the database keeps only the token's digest, so closing the dialog loses
it for good. Follows device_status (sessions and devices coming and going, revokes) and the
hub's safety resync, which catches what no event announces (a heartbeat's version or push
state, a PC added elsewhere).
"""

from __future__ import annotations

from fastapi import Request
from nicegui import ui

from jobsys.errors import JobsysError
from jobsys.events import EventName
from jobsys.worker_accounts import AccountSession, EnrolledWorker, WorkerAccount, join_command
from nicegui_app.api.worker_accounts import checked_name, server_address
from nicegui_app.pages.dialog import CreateDialog, answer
from nicegui_app.pages.frame import PageContext, frame
from nicegui_app.pages.guard import guarded_page
from nicegui_app.pages.rows import LiveView, when
from nicegui_app.server_errors import error_text

COMMAND_CLASS = "pc-join-command"
# The command wraps instead of scrolling sideways, so all of it shows (and selects) at once.
COMMAND_CSS = f".{COMMAND_CLASS} pre {{ white-space: pre-wrap; word-break: break-all; }}"
PUSH_BADGES = {"connected": ("pc_push_connected", "positive"), "polling": ("pc_push_polling", "grey-7")}


class AddPcDialog(CreateDialog[str, EnrolledWorker]):
    """Asks for the PC's name; the create call's refusal (a taken name) shows inline."""

    def __init__(self, ctx: PageContext) -> None:
        super().__init__(ctx, EnrolledWorker)
        t = ctx.t
        with self._card("pc_add", "w-[30rem]"):
            ui.label(t("pc_add_hint")).classes("text-sm text-gray-600")
            self.name = (
                ui.input(t("pc_name"), validation=self._name_error, on_change=self._changed)
                .props("autofocus")
                .classes("w-full")
                .mark("pc-name")
            )
            self._footer("pc-add-error", "pc-add-cancel", "pc-add-create")
            self.create.set_text(t("pc_add_button"))
        self.create.disable()

    def _name_error(self, value: str) -> str | None:
        return None if not value or self._checked(value) is not None else self.ctx.t("pc_name_invalid")

    @staticmethod
    def _checked(value: object) -> str | None:
        try:
            return checked_name(value)
        except ValueError:  # PydanticCustomError is one
            return None

    def spec(self) -> str | None:
        return self._checked(self.name.value or "")

    def _changed(self) -> None:
        self.error.set_text("")
        self.create.set_enabled(self.spec() is not None)

    async def _create(self, spec: str) -> EnrolledWorker:
        return await self.ctx.services.jobs.add_worker_account(spec)


async def show_token_once(ctx: PageContext, enrolled: EnrolledWorker, server: str) -> None:
    """The token and the command, until the operator closes the dialog; then they are gone."""
    t = ctx.t
    with ui.dialog().props("persistent") as dialog, ui.card().classes("w-[40rem] max-w-full gap-3"):
        ui.label(t("pc_added", name=enrolled.account.name)).classes("text-xl font-semibold")
        ui.label(t("pc_token_once")).classes("text-warning font-medium").mark("pc-token-once")
        ui.label(t("pc_install")).classes("text-sm")
        ui.code(join_command(server, enrolled.token), language="bash").classes(f"w-full {COMMAND_CLASS}").mark(
            "pc-command"
        )
        ui.label(t("pc_server_note", server=server)).classes("text-sm text-gray-600")
        with ui.row().classes("w-full justify-end"):
            ui.button(t("pc_token_done"), on_click=lambda: dialog.submit(None)).mark("pc-token-close")
    await answer(dialog)


class PcsView(LiveView):
    def __init__(self, ctx: PageContext, server: str) -> None:
        super().__init__(ctx)
        self.server = server

    async def build(self) -> None:
        t = self.ctx.t
        with ui.row().classes("w-full items-center gap-4"):
            self.show_revoked = ui.switch(t("pc_show_revoked"), on_change=self._poke).mark("pc-show-revoked")
            ui.space()
            if self.ctx.can_manage:  # PCs are an admin's to add and revoke; the server refuses anyone else
                ui.button(t("pc_add"), icon="add", on_click=self._add).mark("pc-add")
        self.dialogs = ui.element()  # dialogs live here, not in the list that each refresh rebuilds
        self.container = ui.column().classes("w-full gap-4").mark("pc-list")
        await self._follow([EventName.DEVICE_STATUS.value], name="pcs")

    async def refresh(self) -> None:
        revoked_too = bool(self.show_revoked.value)
        listing = await self.ctx.services.jobs.list_worker_accounts(include_revoked=revoked_too)
        self.container.clear()
        with self.container:
            if not listing.accounts:
                ui.label(self.ctx.t("pc_none")).classes("text-gray-500").mark("pc-none")
            for account in listing.accounts:
                self._account_card(account)

    def _account_card(self, account: WorkerAccount) -> None:
        t = self.ctx.t
        with ui.card().classes("w-full gap-1").mark(f"pc-{account.id}"):
            with ui.row().classes("w-full items-center gap-2"):
                ui.label(account.name).classes("text-lg font-medium")
                ui.badge(t("pc_devices", n=account.device_count), color="primary").mark("pc-devices")
                if account.revoked_at is not None:
                    ui.badge(t("pc_revoked", at=when(account.revoked_at)), color="grey").mark("pc-revoked")
                ui.space()
                seen = (t("pc_last_seen", at=when(account.last_seen_at)) if account.last_seen_at
                        else t("pc_never_seen"))
                ui.label(seen).classes("text-sm text-gray-500").mark("pc-last-seen")
                ui.label(t("pc_created", at=when(account.created_at))).classes("text-sm text-gray-500")
                if account.revoked_at is None and self.ctx.can_manage:
                    ui.button(t("pc_revoke"), icon="block", on_click=lambda a=account: self._revoke(a)).props(
                        "flat dense color=negative"
                    ).mark("pc-revoke")
            if account.revoked_at is None and not account.sessions:
                ui.label(t("pc_no_sessions")).classes("text-sm text-gray-500").mark("pc-no-sessions")
            for session in account.sessions:
                self._session_row(session)

    def _session_row(self, session: AccountSession) -> None:
        t = self.ctx.t
        with ui.row().classes("w-full items-center gap-3 text-sm").mark(f"session-{session.worker_id}"):
            ui.label(session.hostname or session.name).classes("font-mono min-w-40")
            if session.version:
                ui.label(t("pc_version", version=session.version)).classes("text-gray-500")
            key, colour = PUSH_BADGES.get(session.push or "", ("pc_push_unknown", "grey"))
            ui.badge(t(key), color=colour).props("outline").mark("session-push")
            healthy = ("pc_healthy", "positive") if session.healthy else ("pc_unhealthy", "negative")
            ui.badge(t(healthy[0]), color=healthy[1]).mark("session-health")
            ui.label(t("pc_devices", n=session.devices)).classes("text-gray-500")
            ui.space()
            ui.label(t("last_heartbeat", at=when(session.last_heartbeat_at))).classes("text-gray-500")

    async def _add(self) -> None:
        with self.dialogs:
            enrolled = await AddPcDialog(self.ctx).run()
        if enrolled is None:
            return
        self._poke()
        with self.dialogs:
            await show_token_once(self.ctx, enrolled, self.server)

    async def _revoke(self, account: WorkerAccount) -> None:
        t = self.ctx.t
        question = (t("pc_confirm_revoke", name=account.name, sessions=len(account.sessions),
                      devices=account.device_count) if account.sessions
                    else t("pc_confirm_revoke_idle", name=account.name))
        with self.dialogs, ui.dialog() as dialog, ui.card():
            ui.label(question).mark("pc-confirm-question")
            with ui.row().classes("w-full justify-end"):
                ui.button(t("cancel"), on_click=lambda: dialog.submit(False)).props("flat").mark(
                    "pc-revoke-cancel"
                )
                ui.button(t("pc_revoke"), on_click=lambda: dialog.submit(True)).props("color=negative").mark(
                    "pc-revoke-confirm"
                )
        if not await answer(dialog):
            return
        try:
            await self.ctx.services.jobs.revoke_worker_account(account.name)
            ui.notify(t("pc_revoked_done", name=account.name), type="positive")
        except JobsysError as exc:  # revoked elsewhere a moment ago: say so, the refresh shows it
            ui.notify(error_text(t, exc), type="warning")
        self._poke()


def create() -> None:
    @guarded_page("/pcs")
    async def pcs_page(request: Request) -> None:
        ui.add_css(COMMAND_CSS)
        async with frame(request, "nav_pcs") as ctx:
            await PcsView(ctx, server_address(str(request.base_url))).build()
