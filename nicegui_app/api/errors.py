"""One error shape for every API failure: {"error": {"code", "message", "details"}}.

Library errors keep their code and HTTP status; FastAPI's own failures (bad JSON,
validation, unknown route, wrong method) are rewritten into the same shape, so a
client never parses two formats. `message` stays the server's English text (stable for
scripts); a client whose Accept-Language prefers Korean also gets
`localized_message: {"locale": "ko", "message": ...}`, the same sentence the dashboard shows
(nicegui_app/server_errors.py: mapped by code and details, falling back to the English text). `HeadAsGet` lets HEAD of every GET route answer as GET
does, without the body.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobsys.errors import JobsysError
from nicegui_app.i18n import FALLBACK_LANGUAGE, Translator, from_accept_language
from nicegui_app.server_errors import describe

log = logging.getLogger(__name__)

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": description,
        "content": {
            "application/json": {"example": {"error": {"code": code, "message": description, "details": {}}}}
        },
    }
    for status, code, description in [
        (400, "bad_request", "Malformed JSON or id"),
        (401, "unauthorized", "Missing or wrong bearer token"),
        (403, "forbidden", "The Supabase account is not an operator"),
        (404, "not_found", "No such job"),
        (409, "conflict", "Illegal transition"),
        (422, "invalid_input", "Validation failed"),
    ]
}


class ApiError(Exception):
    """An HTTP-level refusal the library does not know about (auth, malformed ids, routes)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    request: Request | None = None,
) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message, "details": details or {}}
    language = from_accept_language(request.headers.get("accept-language")) if request is not None else "en"
    if language != FALLBACK_LANGUAGE:  # English readers have it in `message` already
        error["localized_message"] = {"locale": language,
                                      "message": describe(Translator(language), code, message, details)}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only the parts that are JSON and safe to echo: no input values, no exception objects.
    return [
        {"loc": list(e.get("loc", ())), "type": e.get("type", ""), "msg": e.get("msg", "")}
        for e in exc.errors()
    ]


def _where(loc: list[Any]) -> str:
    """'target_url' for ['body', 'target_url']; 'body' for a body that is wrong as a whole."""
    return ".".join(str(part) for part in (loc[1:] or loc)) or "request"


API_PREFIX = "/api"
ORIGINAL_METHOD = "jobsys.method"  # scope key: the method the client sent, where HeadAsGet changed it


def is_api_path(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def request_method(request: Request) -> str:
    """The method the client sent (HEAD, where HeadAsGet serves it as GET)."""
    return str(request.scope.get(ORIGINAL_METHOD, request.method))


def allowed_methods(request: Request) -> str:
    """The methods the routes at this path accept, for the `Allow` header a 405 must carry
    (RFC 9110 §15.5.6): the routes that match the path but not the method (a catch-all route,
    which matches every method, never counts), plus HEAD wherever GET is under /api (HeadAsGet)."""
    allowed: set[str] = set()
    pending = list(request.app.router.routes)
    while pending:
        route = pending.pop()
        included = getattr(route, "original_router", None)  # FastAPI >= 0.16x wraps included routers
        if included is not None:
            pending.extend(included.routes)
        elif route.matches(request.scope)[0] is Match.PARTIAL:
            allowed.update(getattr(route, "methods", None) or ())
    if "GET" in allowed and is_api_path(request.url.path):
        allowed.add("HEAD")
    return ", ".join(sorted(allowed))


class HeadAsGet:
    """HEAD of any /api path is served as GET and sent without the body: the same status and
    headers (Content-Length included), so HEAD of a GET route answers as GET does, and HEAD
    of anything else as GET would (404, 405, 401). Routes declare GET only, so the OpenAPI
    document lists no HEAD operations."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD" or not is_api_path(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def send_without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET", ORIGINAL_METHOD: "HEAD"}, receive, send_without_body)


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    headers = dict(exc.headers or {})
    if exc.status == 405 and "Allow" not in headers and (allowed := allowed_methods(request)):
        headers["Allow"] = allowed
    return error_response(exc.status, exc.code, exc.message, exc.details, headers or None, request)


async def _on_jobsys_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, JobsysError)
    if exc.http_status >= 500:
        log.warning("%s %s failed: %s", request.method, request.url.path, exc.message)
    return error_response(exc.http_status, exc.code, exc.message, exc.details, request=request)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _validation_errors(exc)
    if any(e["type"] == "json_invalid" for e in errors):
        return error_response(400, "malformed_json", "the request body is not valid JSON", {"errors": errors})
    message = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in errors)
    return error_response(422, "invalid_input", message or "invalid request", {"errors": errors}, request=request)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    # FastAPI's only 400 is a body it cannot parse (not UTF-8, say): the same code as bad JSON.
    codes = {400: "malformed_json", 404: "not_found", 405: "method_not_allowed"}
    code = codes.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and (allowed := allowed_methods(request)):
        headers["Allow"] = allowed  # Starlette's lists the first matching route's methods only
    return error_response(exc.status_code, code, str(exc.detail), headers=headers or None)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return error_response(500, "internal", "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(JobsysError, _on_jobsys_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
