"""Login page. Embedded mode: the API token, whose fingerprint the session keeps, or a named
account's token (jobsys accounts add), whose digest it keeps: pages then call as that
account, with its role. Supabase
mode: an operator's email and password, signed in with Supabase Auth; the session keeps
only the id of the server-side operator session (nicegui_app.supabase_auth)."""

from __future__ import annotations

import asyncio

from fastapi import Request
from fastapi.responses import RedirectResponse
from nicegui import app, ui

from jobsys import errors
from jobsys.auth import WrongRole
from jobsys.operator_accounts import is_operator_token
from nicegui_app import auth, services
from nicegui_app.i18n import Translator
from nicegui_app.pages.frame import apply_theme, page_language
from nicegui_app.pages.guard import logged_in, safe_next
from nicegui_app.supabase_auth import SupabaseAuth

FAILED_LOGIN_DELAY_S = 0.3  # slows guessing; a person does not notice


def _token_form(t: Translator, target: str) -> None:
    async def try_login() -> None:
        presented = (token.value or "").strip()
        if auth.token_matches(presented, services.get().token):
            app.storage.user[auth.SESSION_KEY] = auth.fingerprint(presented)
            ui.navigate.to(target)
            return
        if is_operator_token(presented):  # a named account (jobsys accounts add)
            try:
                session = await services.get().jobs.operator_session(auth.fingerprint(presented))
            except errors.Unauthorized:
                pass
            except errors.TransportError:
                error.set_text(t("login_db_unavailable"))
                return
            else:
                app.storage.user[auth.SESSION_KEY] = auth.ACCOUNT_PREFIX + auth.fingerprint(presented)
                app.storage.user[auth.ACCOUNT_LABEL_KEY] = f"{session.name} ({t('role_' + session.role.value)})"
                ui.navigate.to(target)
                return
        await asyncio.sleep(FAILED_LOGIN_DELAY_S)
        error.set_text(t("login_wrong"))

    token = (
        ui.input(t("token"), password=True, password_toggle_button=True)
        .classes("w-full")
        .mark("token")
        .on("keydown.enter", try_login)
    )
    error = ui.label().classes("text-negative text-sm").mark("login-error")
    ui.button(t("login"), on_click=try_login).classes("w-full").mark("login")


def _supabase_form(t: Translator, target: str, supabase: SupabaseAuth) -> None:
    async def try_login() -> None:
        error.set_text("")  # the message shown is always this attempt's
        address, secret = (email.value or "").strip(), password.value or ""
        if not address or not secret:
            error.set_text(t("login_missing"))
            return
        try:
            session_id = await supabase.sign_in(address, secret)
        except WrongRole:
            error.set_text(t("login_not_operator"))
            return
        except errors.TransportError:
            error.set_text(t("login_unavailable"))
            return
        except errors.Forbidden:
            await asyncio.sleep(FAILED_LOGIN_DELAY_S)
            error.set_text(t("login_wrong_password"))
            return
        password.value = ""
        app.storage.user[auth.SESSION_KEY] = session_id  # an id for a session in memory; no token
        ui.navigate.to(target)

    email = ui.input(t("email")).props("type=email autocomplete=username").classes("w-full").mark("email")
    password = (
        ui.input(t("password"), password=True, password_toggle_button=True)
        .props("autocomplete=current-password")
        .classes("w-full")
        .mark("password")
        .on("keydown.enter", try_login)
    )
    error = ui.label().classes("text-negative text-sm").mark("login-error")
    ui.button(t("login"), on_click=try_login).classes("w-full").mark("login")


def create() -> None:
    @ui.page("/login", title="jobsys")
    async def login_page(request: Request, to: str = "/") -> RedirectResponse | None:
        target = safe_next(to)
        if logged_in():
            return RedirectResponse(target, status_code=303)
        t = Translator(page_language(request))
        ui.page_title(t("page_title", page=t("login_title")))
        apply_theme(t.language)
        supabase = services.get().supabase
        with ui.card().classes("absolute-center w-96 max-w-[calc(100vw-2rem)] gap-3"):
            ui.label(t("login_title")).classes("text-xl font-semibold").props('role="heading" aria-level="1"')
            if supabase is None:
                _token_form(t, target)
            else:
                _supabase_form(t, target, supabase)
        return None
