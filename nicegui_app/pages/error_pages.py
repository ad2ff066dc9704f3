"""The 404 and 500 pages in the reader's language, each with a way home, in place of
NiceGUI's English ones ("HTTPException: 404: Not Found"). API paths and other non-page
endpoints keep their JSON answers (NiceGUI's own handler decides that, as before)."""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

import nicegui
from fastapi import Request
from fastapi.responses import Response
from nicegui import ui
from nicegui.client import Client
from nicegui.page import page
from starlette.exceptions import HTTPException as StarletteHTTPException

from nicegui_app.i18n import LANGUAGES, Translator, from_accept_language
from nicegui_app.pages.frame import apply_theme

log = logging.getLogger("jobsys.dashboard")
Handler = Callable[[Request, Exception], Awaitable[Response]]


def _language(request: Request) -> str:
    try:
        chosen = nicegui.app.storage.user.get("lang")  # frame.LANGUAGE_KEY, when the session chose one
    except (AssertionError, RuntimeError, KeyError):
        chosen = None
    return chosen if chosen in LANGUAGES else from_accept_language(request.headers.get("accept-language"))


def _is_page(request: Request, exception: Exception) -> bool:
    """NiceGUI's own test: a non-page endpoint raising an HTTP error answers JSON."""
    endpoint: Any = request.scope.get("endpoint")
    return not (endpoint is not None and endpoint is not nicegui.app and not request.scope.get("nicegui_page_path")
                and isinstance(exception, StarletteHTTPException))


def _error_page(request: Request, status: int) -> Response:
    t = Translator(_language(request))
    title = t("page_title", page=t(f"error_{status}_title"))
    with Client(page("", title=title), request=request) as client:
        apply_theme(t.language)
        with ui.column().classes("w-full items-center gap-3 py-20").mark(f"error-{status}"):
            ui.label(str(status)).classes("text-6xl font-light text-[#4b5563]")
            ui.label(t(f"error_{status}_title")).classes("text-xl font-medium").props(
                'role="heading" aria-level="1"')
            ui.label(t(f"error_{status}_hint")).classes("text-[#4b5563]")
            ui.link(t("error_home"), "/").mark("error-home")
    return client.build_response(request, status)


def install() -> None:
    """Replace NiceGUI's 404 and 500 pages (after ui.run_with)."""
    nicegui_404: Handler = nicegui.app.exception_handlers[404]

    async def not_found(request: Request, exception: Exception) -> Response:
        if not _is_page(request, exception):
            return await nicegui_404(request, exception)
        return _error_page(request, 404)

    async def server_error(request: Request, exception: Exception) -> Response:
        if not request.scope.get("nicegui_page_path"):
            raise exception  # as NiceGUI: a plain 500 outside pages
        log.exception("page %s failed", request.url.path, exc_info=exception)
        return _error_page(request, 500)

    nicegui.app.add_exception_handler(404, not_found)
    nicegui.app.add_exception_handler(Exception, server_error)
