"""The shared frame of every page: header (navigation, live device count, push state,
language switch, log out) and the content column. One context manager, used by all pages."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import AsyncIterator

from fastapi import Request
from nicegui import Client, app, binding, ui

from jobsys.events import EventName
from nicegui_app import services
from nicegui_app.hub import EventHub, PushStatus
from nicegui_app.i18n import LANGUAGES, Translator, from_accept_language
from nicegui_app.live import follow
from nicegui_app.pages import guard

LANGUAGE_KEY = "lang"  # app.storage.user key: the operator's explicit choice
# Quasar's brand colours, darkened so white text on them meets WCAG AA (4.5:1): the header and
# buttons (primary, 6.70:1; Quasar's #5898d4 was 3.06:1), positive badges (5.02:1; was 2.57:1),
# negative (6.47:1).
THEME = {"primary": "#1d4ed8", "positive": "#15803d", "negative": "#b91c1c"}


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


async def _logout() -> None:
    await guard.log_out()
    ui.navigate.to("/login")


PUSH_BADGES: dict[PushStatus, tuple[str, str, str]] = {  # status -> label key, colour, markers
    PushStatus.CONNECTED: ("push_connected", "positive", "push-connected live"),
    PushStatus.RECONNECTING: ("push_reconnecting", "orange", "push-reconnecting live-down"),
    PushStatus.POLLING: ("push_polling", "grey-7", "push-polling live-down"),
}


def _push_badges(t: Translator, hub: EventHub) -> None:
    """The push channel's state, following the hub (markers `live` / `live-down` kept for old tests)."""
    for status, (key, colour, markers) in PUSH_BADGES.items():
        ui.badge(t(key), color=colour).bind_visibility_from(
            hub, "status", backward=lambda current, shown=status: current is shown
        ).mark(markers)


@contextlib.asynccontextmanager
async def frame(request: Request, heading_key: str, wide: bool = False) -> AsyncIterator[PageContext]:
    """`wide`: a page of wide tables (the jobs table) takes the screen's width."""
    t = Translator(page_language(request))
    jobs = guard.page_jobs()
    if jobs is None:  # guarded_page checked the login just before, with no await in between
        raise RuntimeError("frame() on a page without a login")
    # Pages call through `ctx.services.jobs`: in Supabase mode that is the operator's own session.
    page_services = dataclasses.replace(services.get(), jobs=jobs)
    ctx = PageContext(t=t, services=page_services, client=ui.context.client, devices=DeviceCount())
    hub = ctx.services.hub
    email = guard.operator_email()

    ui.colors(**THEME)
    with ui.header().classes("items-center gap-4 px-4"):
        ui.label(t("app_title")).classes("text-lg font-bold")
        ui.link(t("nav_jobs"), "/").classes("text-white no-underline").mark("nav-jobs")
        ui.link(t("nav_devices"), "/devices").classes("text-white no-underline").mark("nav-devices")
        ui.link(t("nav_background"), "/background-jobs").classes("text-white no-underline").mark(
            "nav-background"
        )
        ui.link(t("nav_pcs"), "/pcs").classes("text-white no-underline").mark("nav-pcs")
        ui.link(t("nav_audit"), "/audit").classes("text-white no-underline").mark("nav-audit")
        ui.space()
        ui.label().mark("connected-count").bind_text_from(
            ctx.devices, "connected", backward=lambda n: t("connected", n=n)
        )
        _push_badges(t, hub)
        ui.toggle(LANGUAGES, value=t.language, on_change=lambda e: _switch_language(e.value)).props(
            "dense unelevated no-caps color=primary text-color=white toggle-color=white "
            "toggle-text-color=primary"
        ).mark("language")
        if email:
            ui.label(email).classes("text-sm").mark("operator")
        ui.button(t("logout"), on_click=_logout).props("flat color=white dense").mark("logout")

    async def refresh_devices() -> None:
        # counts only (device_groups): list_devices would ship every device for one number
        ctx.devices.connected = (await ctx.services.jobs.device_groups()).summary.connected

    await refresh_devices()
    follow(hub, ctx.client, refresh_devices, [EventName.DEVICE_STATUS.value], name="header device count")

    ui.page_title(t("page_title", page=t(heading_key)))  # "작업 관리 – jobsys": tabs and history tell pages apart
    width = "max-w-screen-2xl" if wide else "max-w-6xl"
    with ui.column().classes(f"w-full {width} mx-auto p-4 gap-4"):
        ui.label(t(heading_key)).classes("text-2xl font-semibold")
        yield ctx
