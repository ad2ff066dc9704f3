"""Login page: takes the API token and keeps its fingerprint in the user's session."""

from __future__ import annotations

import asyncio

from fastapi import Request
from fastapi.responses import RedirectResponse
from nicegui import app, ui

from nicegui_app import auth, services
from nicegui_app.i18n import Translator
from nicegui_app.pages.frame import page_language
from nicegui_app.pages.guard import logged_in, safe_next

FAILED_LOGIN_DELAY_S = 0.3  # slows guessing; a person does not notice


def create() -> None:
    @ui.page("/login", title="jobsys")
    async def login_page(request: Request, to: str = "/") -> RedirectResponse | None:
        target = safe_next(to)
        if logged_in():
            return RedirectResponse(target, status_code=303)
        t = Translator(page_language(request))

        async def try_login() -> None:
            presented = (token.value or "").strip()
            if auth.token_matches(presented, services.get().token):
                app.storage.user[auth.SESSION_KEY] = auth.fingerprint(presented)
                ui.navigate.to(target)
                return
            await asyncio.sleep(FAILED_LOGIN_DELAY_S)
            error.set_text(t("login_wrong"))

        with ui.card().classes("absolute-center w-96 gap-3"):
            ui.label(t("login_title")).classes("text-xl font-semibold")
            token = (
                ui.input(t("token"), password=True, password_toggle_button=True)
                .classes("w-full")
                .mark("token")
                .on("keydown.enter", try_login)
            )
            error = ui.label().classes("text-negative text-sm").mark("login-error")
            ui.button(t("login"), on_click=try_login).classes("w-full").mark("login")
        return None
