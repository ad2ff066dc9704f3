"""The shared frame of every page: header (navigation, live device count, push state,
language switch, log out) and the content column. One context manager, used by all pages."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import AsyncIterator

from fastapi import Request
from nicegui import Client, app, binding, ui

from jobsys.events import EventName
from nicegui_app import auth, services
from nicegui_app.i18n import LANGUAGES, Translator, from_accept_language
from nicegui_app.live import follow

LANGUAGE_KEY = "lang"  # app.storage.user key: the operator's explicit choice


class DeviceCount:
    """Connected healthy devices, bindable: the header and the new-job dialog follow it."""

    connected = binding.BindableProperty()

    def __init__(self) -> None:
        self.connected = 0


@dataclasses.dataclass
class PageContext:
    t: Translator
    services: services.Services
    client: Client
    devices: DeviceCount


def page_language(request: Request) -> str:
    chosen = app.storage.user.get(LANGUAGE_KEY)
    return chosen if chosen in LANGUAGES else from_accept_language(request.headers.get("accept-language"))


def _switch_language(language: str) -> None:
    app.storage.user[LANGUAGE_KEY] = language
    ui.navigate.reload()


def _logout() -> None:
    app.storage.user.pop(auth.SESSION_KEY, None)
    ui.navigate.to("/login")


@contextlib.asynccontextmanager
async def frame(request: Request, heading_key: str) -> AsyncIterator[PageContext]:
    t = Translator(page_language(request))
    ctx = PageContext(t=t, services=services.get(), client=ui.context.client, devices=DeviceCount())
    hub = ctx.services.hub

    with ui.header().classes("items-center gap-4 px-4"):
        ui.label(t("app_title")).classes("text-lg font-bold")
        ui.link(t("nav_jobs"), "/").classes("text-white no-underline").mark("nav-jobs")
        ui.link(t("nav_devices"), "/devices").classes("text-white no-underline").mark("nav-devices")
        ui.link(t("nav_background"), "/background-jobs").classes("text-white no-underline").mark(
            "nav-background"
        )
        ui.space()
        ui.label().mark("connected-count").bind_text_from(
            ctx.devices, "connected", backward=lambda n: t("connected", n=n)
        )
        ui.badge(t("live"), color="positive").bind_visibility_from(hub, "live").mark("live")
        ui.badge(t("live_down"), color="orange").bind_visibility_from(
            hub, "live", backward=lambda live: not live
        ).mark("live-down")
        ui.toggle(LANGUAGES, value=t.language, on_change=lambda e: _switch_language(e.value)).props(
            "dense unelevated no-caps color=primary text-color=white toggle-color=white "
            "toggle-text-color=primary"
        ).mark("language")
        ui.button(t("logout"), on_click=_logout).props("flat color=white dense").mark("logout")

    async def refresh_devices() -> None:
        ctx.devices.connected = (await ctx.services.jobs.list_devices()).summary.connected

    await refresh_devices()
    follow(hub, ctx.client, refresh_devices, [EventName.DEVICE_STATUS.value], name="header device count")

    with ui.column().classes("w-full max-w-6xl mx-auto p-4 gap-4"):
        ui.label(t(heading_key)).classes("text-2xl font-semibold")
        yield ctx
