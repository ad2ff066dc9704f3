"""The readiness answer every jobsys process gives its supervisor (GET /readyz): the dashboard
(nicegui_app.api.health) and `jobsys worker --health-port` (jobsys_cli.health_port)."""

from __future__ import annotations

from typing import Mapping

import pydantic


class Health(pydantic.BaseModel):
    status: str


class Readiness(pydantic.BaseModel):
    status: str  # ready | not_ready
    checks: dict[str, str]  # name -> "ok" or why not
    failing: list[str]

    @property
    def http_status(self) -> int:
        return 503 if self.failing else 200


def readiness(results: Mapping[str, str | None]) -> Readiness:
    """From each check's result (None when fine, else why not)."""
    failing = sorted(name for name, reason in results.items() if reason is not None)
    return Readiness(status="not_ready" if failing else "ready", failing=failing,
                     checks={name: reason or "ok" for name, reason in results.items()})
