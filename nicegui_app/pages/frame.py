"""The shared frame of every page: header (navigation, live device count, push state,
language switch, log out) and the content column. One context manager, used by all pages."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import AsyncIterator

from fastapi import Request
from nicegui import Client, app, binding, ui

from jobsys.auth import JobsysRole
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
# Quasar palette names pages give badges, buttons and labels (color="orange", text-warning), remapped
# to shades that keep 4.5:1 with white text on them and as text on white; Quasar's own are
# 2.16:1 (orange), 2.3:1 (amber-9), 3.0:1 (deep-orange), 2.7:1 (grey), 3.7:1 (teal), 1.6:1 (warning).
# `warning` is remapped as text only: Quasar's warning notifications put dark text on its yellow.
PALETTE = {"orange": "#b45309", "deep-orange": "#c2410c", "amber-9": "#92400e", "grey": "#6b7280",
           "teal": "#0f766e"}
# Tailwind's gray-400 (2.54:1 on white) reads as gray-500 (4.83:1) wherever a page uses it for text.
TEXT_ONLY = {"warning": "#b45309", "gray-400": "#6b7280"}
LINK = "#1d4ed8"  # NiceGUI's link blue #3b82f6 is 3.68:1 on white
FOCUS_RING = "#1d4ed8"  # 6.70:1 on white; white on the blue header
PHONE_MAX_PX = 599.98  # Quasar's xs breakpoint: its lt-sm / gt-xs classes switch here too
NAV: tuple[tuple[str, str, str], ...] = (  # label key, path, marker
    ("nav_jobs", "/", "nav-jobs"),
    ("nav_devices", "/devices", "nav-devices"),
    ("nav_background", "/background-jobs", "nav-background"),
    ("nav_pcs", "/pcs", "nav-pcs"),
    ("nav_audit", "/audit", "nav-audit"),
)


# Tables marked `stack-on-phone` become a card per row under 600 px: each cell on its own line or
# side by side, named by its column (`data-label`) since the column headers are gone; a table
# also marked `keep-head` keeps its header row (the jobs table: select all, sort buttons) wrapped.
PHONE_TABLES = (
    f"@media (max-width: {PHONE_MAX_PX}px) {{",
    ".stack-on-phone table, .stack-on-phone thead, .stack-on-phone tbody { display: block; width: 100%; }",
    ".stack-on-phone:not(.keep-head) thead, .stack-on-phone .phone-hide { display: none; }",
    ".stack-on-phone { overflow: visible; }",
    ".stack-on-phone tr { display: flex; flex-wrap: wrap; align-items: center; column-gap: 8px; height: auto; }",
    ".stack-on-phone th, .stack-on-phone td { display: block; height: auto; padding: 4px 8px; "
    "white-space: normal; border: 0; min-width: 0; }",
    ".stack-on-phone tbody tr { border: 1px solid #d1d5db; border-radius: 8px; margin-top: 8px; }",
    ".stack-on-phone .phone-full { flex: 1 0 100%; }",
    ".stack-on-phone .phone-full .truncate { max-width: 100%; }",
    # Quasar draws row highlights with an absolutely placed td::before; here it holds the column's name.
    ".stack-on-phone td[data-label] { white-space: nowrap; }",
    ".stack-on-phone td[data-label]::before { content: attr(data-label) ': '; position: static; "
    "background: none; color: #4b5563; font-size: 0.75rem; }",
    ".stack-on-phone td[data-label] > * { display: inline; }",
    "}",
)


def theme_css() -> str:
    """Page-wide CSS: the AA palette, a visible focus ring, the current menu entry."""
    rules = []
    for name, colour in PALETTE.items():
        rules.append(f".bg-{name} {{ background-color: {colour} !important; }}")
        rules.append(f".text-{name} {{ color: {colour} !important; }}")
    for name, colour in TEXT_ONLY.items():
        rules.append(f".text-{name} {{ color: {colour} !important; }}")
    rules += [
        # Quasar turns outlines off on buttons and fields; keyboard users need to see where they are.
        f":focus-visible {{ outline: 3px solid {FOCUS_RING} !important; outline-offset: 2px; }}",
        ".q-header :focus-visible, .bg-primary :focus-visible { outline-color: #ffffff !important; }",
        ".nav-current { text-decoration: underline; text-underline-offset: 6px; "
        "text-decoration-thickness: 2px; font-weight: 600; }",
        *PHONE_TABLES,
    ]
    # NiceGUI puts Quasar's !important rules in the last cascade layer; an !important rule of an
    # earlier layer (NiceGUI's `overrides`) beats them, an unlayered one would not.
    # NiceGUI's link colour sits in its `nicegui` layer: `components` outranks it, and a page's own
    # text-* utility (the header's white links) still outranks this.
    # NiceGUI also fades a hovered link to 80 % (3.9:1 under the pointer): underline it instead.
    return ("@layer overrides {\n" + "\n".join(rules) + "\n}\n"
            f"@layer components {{ .nicegui-link {{ color: {LINK}; }}\n"
            ".nicegui-link:hover, .nicegui-link:active { opacity: 1; text-decoration-line: underline; } }")


def apply_theme(language: str) -> None:
    """The AA colours and focus ring, on every page (the login and error pages too), and the
    page's language for screen readers (NiceGUI leaves <html lang> unset)."""
    ui.colors(**THEME)
    ui.add_css(theme_css())
    ui.add_body_html(f"<script>document.documentElement.lang = {language!r};</script>")


def is_current(path: str, href: str) -> bool:
    """The menu entry of the page at `path` (a device's page is under 기기)."""
    return path == href or (href != "/" and path.startswith(href + "/"))


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
    role: JobsysRole | None = None  # None: not known, shown read-only (the SQL decides anyway)

    @property
    def can_write(self) -> bool:
        """May run jobs and AI batches (operator, admin): otherwise their buttons are hidden."""
        return self.role in guard.WRITERS

    @property
    def can_manage(self) -> bool:
        """May manage devices and PCs (admin)."""
        return self.role is JobsysRole.ADMIN


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
        badge = ui.badge(t(key), color=colour).classes("truncate max-w-[8rem] sm:max-w-none shrink-0")
        badge.props["title"] = t(key)  # cut short on a phone: whole on hover
        badge.bind_visibility_from(
            hub, "status", backward=lambda current, shown=status: current is shown
        ).mark(markers)


def _nav_links(t: Translator, path: str, prefix: str, classes: str) -> None:
    """The pages, the current one underlined and marked aria-current="page"."""
    for key, href, mark in NAV:
        link = ui.link(t(key), href).classes(classes).mark(prefix + mark)
        if is_current(path, href):
            link.classes("nav-current")
            link.props['aria-current'] = "page"


def _language_toggle(t: Translator, mark: str) -> None:
    toggle = ui.toggle(LANGUAGES, value=t.language, on_change=lambda e: _switch_language(e.value)).props(
        "dense unelevated no-caps color=primary text-color=white toggle-color=white toggle-text-color=primary"
    ).mark(mark)
    toggle.props["aria-label"] = t("language_choice")


def _menu(t: Translator, path: str, hub: EventHub, ctx: PageContext, email: str | None) -> None:
    """The header on one line; under 600 px (Quasar's lt-sm / gt-xs) the pages, language and log
    out move into a drawer behind a menu button."""
    with ui.left_drawer(value=False).props("overlay behavior=mobile bordered").classes(
            "bg-white p-4").mark("menu-drawer") as drawer:
        drawer.props["aria-label"] = t("menu")
        with ui.element("nav").classes("column gap-3 w-full"):
            _nav_links(t, path, "menu-", "text-base py-1 no-underline")
        ui.separator().classes("my-3")
        with ui.column().classes("gap-3 w-full bg-primary rounded p-2"):
            _language_toggle(t, "menu-language")
            if email:
                ui.label(email).classes("text-sm text-white break-all").mark("menu-operator")
            ui.button(t("logout"), on_click=_logout).props("flat color=white dense no-caps").mark("menu-logout")
    with ui.header().classes("items-center no-wrap gap-2 sm:gap-4 px-2 sm:px-4"):
        menu_button = ui.button(icon="menu", on_click=drawer.toggle).props("flat round dense color=white").classes(
            "lt-sm").mark("menu-button")
        menu_button.props["aria-label"] = menu_button.props["title"] = t("menu")
        ui.label(t("app_title")).classes("text-lg font-bold shrink-0")
        with ui.element("nav").classes("gt-xs row items-center no-wrap gap-4"):
            _nav_links(t, path, "", "text-white no-underline whitespace-nowrap")
        ui.space()
        ui.label().classes("truncate min-w-0").mark("connected-count").bind_text_from(
            ctx.devices, "connected", backward=lambda n: t("connected", n=n))
        _push_badges(t, hub)
        with ui.row().classes("gt-xs items-center no-wrap gap-4"):
            _language_toggle(t, "language")
            if email:
                operator = ui.label(email).classes("text-sm truncate max-w-[14rem]").mark("operator")
                operator.props["title"] = email  # a long address is cut: whole on hover
            ui.button(t("logout"), on_click=_logout).props("flat color=white dense").mark("logout")


@contextlib.asynccontextmanager
async def frame(request: Request, heading_key: str, wide: bool = False) -> AsyncIterator[PageContext]:
    """`wide`: a page of wide tables (the jobs table) takes the screen's width."""
    t = Translator(page_language(request))
    jobs = guard.page_jobs()
    if jobs is None:  # guarded_page checked the login just before, with no await in between
        raise RuntimeError("frame() on a page without a login")
    # Pages call through `ctx.services.jobs`: in Supabase mode that is the operator's own session.
    page_services = dataclasses.replace(services.get(), jobs=jobs)
    ctx = PageContext(t=t, services=page_services, client=ui.context.client, devices=DeviceCount(),
                      role=guard.page_role())
    hub = ctx.services.hub
    email = guard.operator_email()

    apply_theme(t.language)
    _menu(t, request.url.path, hub, ctx, email)

    async def refresh_devices() -> None:
        # counts only (device_groups): list_devices would ship every device for one number
        ctx.devices.connected = (await ctx.services.jobs.device_groups()).summary.connected

    await refresh_devices()
    follow(hub, ctx.client, refresh_devices, [EventName.DEVICE_STATUS.value], name="header device count")

    ui.page_title(t("page_title", page=t(heading_key)))  # "작업 관리 – jobsys": tabs and history tell pages apart
    width = "max-w-screen-2xl" if wide else "max-w-6xl"
    with ui.column().classes(f"w-full {width} mx-auto p-4 gap-4"):
        ui.label(t(heading_key)).classes("text-2xl font-semibold break-words max-w-full").props(
            'role="heading" aria-level="1"')
        if ctx.role is JobsysRole.VIEWER:  # its write buttons are hidden: say why
            ui.label(t("read_only")).classes("text-sm text-[#4b5563]").mark("read-only")
        yield ctx
