"""Pages behind the token: a page without a logged-in session redirects to /login."""

from __future__ import annotations

import functools
import urllib.parse
from typing import Awaitable, Callable

from fastapi import Request
from fastapi.responses import RedirectResponse
from nicegui import app, ui

from nicegui_app import auth, services

PageBuilder = Callable[[Request], Awaitable[None]]
Page = Callable[[Request], Awaitable[RedirectResponse | None]]


def logged_in() -> bool:
    return auth.session_matches(app.storage.user.get(auth.SESSION_KEY), services.get().token)


def safe_next(path: str | None) -> str:
    """Only local paths: a login link must not send the operator to another site."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def guarded_page(path: str, title: str = "jobsys") -> Callable[[PageBuilder], Page]:
    def decorator(build: PageBuilder) -> Page:
        @functools.wraps(build)
        async def page(request: Request) -> RedirectResponse | None:
            if not logged_in():
                query = urllib.parse.urlencode({"to": request.url.path})
                return RedirectResponse(f"/login?{query}", status_code=303)
            await build(request)
            return None

        ui.page(path, title=title)(page)
        return page

    return decorator
