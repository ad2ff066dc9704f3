"""Screenshots uploaded by hub workers (placeholder until the evidence routes land)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobsys_hub.app import Hub


def routes(hub: Hub) -> list[Any]:
    return []
