"""Pages behind a login: a page without a logged-in session redirects to /login.

Embedded mode: the session holds the API token's fingerprint and pages call through the
process's JobSystem. Supabase mode: it holds the id of an operator session kept in
memory (nicegui_app.supabase_auth) and pages call as that operator.
"""

from __future__ import annotations

import contextvars
import functools
import urllib.parse
from typing import Awaitable, Callable

from fastapi import Request
from fastapi.responses import RedirectResponse
from nicegui import app, ui

from jobsys import errors
from jobsys.auth import JobsysRole, role_of, unverified_claims
from jobsys.system import JobSystem
from nicegui_app import auth, services

PageBuilder = Callable[[Request], Awaitable[None]]
Page = Callable[[Request], Awaitable[RedirectResponse | None]]
# The signed-in user's role, found by check_login for the page being built (one request's task):
# pages hide what the role may not do. Only looks: the SQL checks every call's role itself.
_page_role: contextvars.ContextVar[JobsysRole | None] = contextvars.ContextVar("jobsys_page_role", default=None)
WRITERS = frozenset({JobsysRole.OPERATOR, JobsysRole.ADMIN})  # run jobs and AI batches
# app.storage.user: {"session": the SESSION_KEY value, "role": "operator"}, the role last found
# for this login. When the database or Supabase Auth is briefly unreachable the page keeps it,
# rather than showing an operator a read-only page with no reason given.
LAST_ROLE_KEY = "last_role"


def _found(role: JobsysRole) -> None:
    _page_role.set(role)
    remembered = {"session": app.storage.user.get(auth.SESSION_KEY), "role": role.value}
    if app.storage.user.get(LAST_ROLE_KEY) != remembered:  # a write only when it changed
        app.storage.user[LAST_ROLE_KEY] = remembered


def _last_known() -> JobsysRole | None:
    """The role last found for this very login (another login on this browser does not count)."""
    stored = app.storage.user.get(LAST_ROLE_KEY)
    if not isinstance(stored, dict) or stored.get("session") != app.storage.user.get(auth.SESSION_KEY):
        return None
    try:
        return JobsysRole(stored.get("role"))
    except ValueError:
        return None


def page_jobs() -> JobSystem | None:
    """The JobSystem this browser's user acts through, or None when not logged in."""
    svc = services.get()
    stored = app.storage.user.get(auth.SESSION_KEY)
    if svc.supabase is not None:
        session = svc.supabase.session(stored)
        return session.jobs if session is not None else None
    account = auth.account_digest(stored)
    if account is not None:  # a named account: every call runs with its role
        return svc.jobs.for_operator(account)
    return svc.jobs if auth.session_matches(stored, svc.token) else None


def operator_email() -> str | None:
    """The signed-in operator's email (Supabase mode) or account name and role (an embedded
    account), for the header."""
    svc = services.get()
    if svc.supabase is None:
        return app.storage.user.get(auth.ACCOUNT_LABEL_KEY) if auth.account_digest(
            app.storage.user.get(auth.SESSION_KEY)) else None
    session = svc.supabase.session(app.storage.user.get(auth.SESSION_KEY))
    return session.email if session is not None else None


def page_role() -> JobsysRole | None:
    """The role of the user this page is built for (None outside a guarded page)."""
    return _page_role.get()


def logged_in() -> bool:
    return page_jobs() is not None


async def check_login() -> bool:
    """Logged in, with a usable token. In Supabase mode the operator's JWT is refreshed
    here when due, so a session Supabase has ended (refresh token revoked) leads to /login
    rather than to a page whose every call fails."""
    svc = services.get()
    _page_role.set(None)  # unknown (shown as a viewer) until found below
    if svc.supabase is None:
        account = auth.account_digest(app.storage.user.get(auth.SESSION_KEY))
        if account is None:
            if not logged_in():
                return False
            _page_role.set(JobsysRole.ADMIN)  # the API token: the owner of the hub, every right
            return True
        try:
            session = await svc.jobs.operator_session(account)
        except errors.Unauthorized:  # revoked since: back to the login page
            app.storage.user.pop(auth.SESSION_KEY, None)
            app.storage.user.pop(LAST_ROLE_KEY, None)
            return False
        except errors.TransportError:  # the database briefly unreachable: the session stands
            _page_role.set(_last_known())
        else:
            _found(JobsysRole(session.role.value))
        return True
    stored = app.storage.user.get(auth.SESSION_KEY)
    supabase_session = svc.supabase.session(stored)
    if supabase_session is None:
        return False
    try:
        access_token = await supabase_session.tokens.token()
    except errors.Forbidden:
        app.storage.user.pop(auth.SESSION_KEY, None)
        app.storage.user.pop(LAST_ROLE_KEY, None)
        await svc.supabase.sign_out(stored)
        return False
    except errors.TransportError:  # Supabase Auth briefly unreachable: the session stands
        _page_role.set(_last_known())
    else:
        try:
            _found(role_of(unverified_claims(access_token)))  # for looks only; PostgREST verifies it
        except errors.Forbidden:
            pass  # not a JWT (a test double's token): no role known, so read-only looks
    return True


async def log_out() -> None:
    stored = app.storage.user.pop(auth.SESSION_KEY, None)
    app.storage.user.pop(LAST_ROLE_KEY, None)
    supabase = services.get().supabase
    if supabase is not None:
        await supabase.sign_out(stored)  # ends the server-side session and revokes its refresh token


def safe_next(path: str | None) -> str:
    """Only local paths: a login link must not send the operator to another site."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def guarded_page(path: str, title: str = "jobsys") -> Callable[[PageBuilder], Page]:
    def decorator(build: PageBuilder) -> Page:
        @functools.wraps(build)
        async def page(request: Request) -> RedirectResponse | None:
            if not await check_login():
                # The whole address, filters included: a shared link survives the login.
                asked = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                query = urllib.parse.urlencode({"to": asked})
                return RedirectResponse(f"/login?{query}", status_code=303)
            await build(request)
            return None

        ui.page(path, title=title)(page)
        return page

    return decorator
