"""Fixtures for the core tests that also check the REST edge."""

from __future__ import annotations

from typing import AsyncIterator

import httpx
import pytest

from jobsys.system import JobSystem

API_TOKEN = "core-api-token-0123456789"


@pytest.fixture
async def api(jobs: JobSystem) -> AsyncIterator[httpx.AsyncClient]:
    """The REST API in process; a server error comes back as a 500 response instead of raising here."""
    from nicegui_app.api import create_api_app

    transport = httpx.ASGITransport(create_api_app(jobs, API_TOKEN), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test",
                                 headers={"Authorization": f"Bearer {API_TOKEN}"}) as client:
        yield client
