"""GET /metrics: Prometheus text exposition of the fleet (jobsys.metrics) and of this
process (`app.state.gauges`: the hub's push sockets, when the hub is mounted). It needs the bearer token like the API (an operator's in
Supabase mode), unless the server runs with --metrics-public. Not in the OpenAPI document:
it is for scrapers (docs/operations.md)."""

from __future__ import annotations

from typing import Callable

from fastapi import APIRouter, Request, Response
from fastapi.security import HTTPBearer
from prometheus_client.core import GaugeMetricFamily

from jobsys import metrics
from jobsys.system import JobSystem
from nicegui_app.api.routes import require_token

# A process's own gauge on GET /metrics: its help text, and how to read it now.
Gauge = tuple[str, Callable[[], float]]

router = APIRouter()
_bearer = HTTPBearer(auto_error=False)


@router.get("/metrics", include_in_schema=False)
async def get_metrics(request: Request) -> Response:
    if request.app.state.metrics_public:
        jobs: JobSystem = request.app.state.jobs
    else:
        jobs = await require_token(request, await _bearer(request))
    families = metrics.snapshot_families(await jobs.metrics_snapshot())
    for name, (help_text, read) in request.app.state.gauges.items():
        gauge = GaugeMetricFamily(name, help_text)
        gauge.add_metric([], float(read()))
        families.append(gauge)
    return Response(metrics.exposition(families), media_type=metrics.CONTENT_TYPE_LATEST)
