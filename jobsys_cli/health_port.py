"""`--health-port [HOST:]PORT`: GET /healthz and /readyz of a long-running process (the worker),
for process supervisors: /healthz while it serves, /readyz 200 or 503 naming the failing
checks (jobsys.health), the same answers as the dashboard's; and GET /metrics, the process's
own Prometheus metrics (a worker's runs by outcome, their claim-to-report time, heartbeat
failures, push). Loopback unless HOST says otherwise; the answers hold nothing but check
names, short reasons and counts."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
from typing import Callable, Mapping

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jobsys import aio, metrics
from jobsys.health import Health, readiness

Checks = Callable[[], Mapping[str, str | None]]
Exposition = Callable[[], bytes]


def health_address(text: str) -> tuple[str, int]:
    """`PORT` or `HOST:PORT` (argparse type)."""
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError("give PORT or HOST:PORT, e.g. 9102 or 0.0.0.0:9102") from None
    if not 0 < number < 65536:
        raise argparse.ArgumentTypeError("the port must be between 1 and 65535")
    return (host.strip("[]") or "127.0.0.1"), number


def health_app(checks: Checks, exposition: Exposition | None = None) -> Starlette:
    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse(Health(status="ok").model_dump())

    async def readyz(_: Request) -> JSONResponse:
        body = readiness(checks())
        return JSONResponse(body.model_dump(), status_code=body.http_status)

    async def metrics_text(_: Request) -> Response:
        return Response(exposition() if exposition else b"", media_type=metrics.CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics_text)])


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield  # the process handles signals itself


async def serve_health(address: tuple[str, int], checks: Checks, exposition: Exposition | None = None) -> None:
    """Serve until cancelled. The port is bound here (OSError if busy), not by uvicorn, which
    would end the process on a busy port."""
    host, port = address
    sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    server = _QuietServer(uvicorn.Config(health_app(checks, exposition), log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="health port server")
    try:
        await asyncio.shield(task)
    finally:  # a probe needs no graceful close
        await aio.cancel_and_wait([task])
        sock.close()
