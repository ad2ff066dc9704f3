"""Jobs page: a device run whose screenshot a hub worker uploaded shows a thumbnail in the
job's per-device rows, and a click opens the full image; the image itself comes from the
dashboard's own door (/screenshots/...), which takes the logged-in session only."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest
from nicegui import ui
from nicegui.testing import User

from jobsys import hub_protocol
from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.dashboard import context
from tests.dashboard.pages import login
from tests.support.pages import element

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@pytest.fixture
def evidence_dir(dashboard: object, tmp_path: pathlib.Path) -> pathlib.Path:
    """The hub's screenshots, in the services main.py installs (so: before `user`)."""
    path = tmp_path / "evidence" / "hub"
    context.current = dataclasses.replace(context.current, evidence_dir=path)
    return path


async def test_a_run_with_a_hub_screenshot_shows_a_thumbnail_that_opens_the_full_image(
        evidence_dir: pathlib.Path, user: User, jobs: JobSystem) -> None:
    session = await add_worker(jobs, "w1", 2)
    job = (await jobs.create_job(target_url="https://example.com/watch", duration_sec=5)).job
    shot, plain = await jobs.claim_assignments(session.worker_id, start=True)
    evidence_dir.mkdir(parents=True)
    (evidence_dir / f"{shot.assignment_id}-{shot.attempt}.png").write_bytes(PNG)
    uri = hub_protocol.evidence_uri(shot.assignment_id, shot.attempt, "image/png")
    await jobs.complete_assignment(shot.assignment_id, shot.attempt, {"evidence_path": uri})
    await jobs.complete_assignment(plain.assignment_id, plain.attempt, {"evidence_path": "/pc/local.png"})
    page_url = f"/screenshots/{shot.assignment_id}/{shot.attempt}"

    logged_out = await user.http_client.get(page_url)
    assert logged_out.status_code == 401 and logged_out.content != PNG
    await login(user, language="en")
    with user.scope(marker=f"job-{job.id}"):
        expansion = element(user, "job-devices")
        assert isinstance(expansion, ui.expansion)
        expansion.value = True
        await user.should_see(marker=f"assignment-{plain.serial}", retries=50)
        await user.should_see(marker=f"screenshot-{shot.serial}", retries=50)
        await user.should_not_see(marker=f"screenshot-{plain.serial}")  # a local path: nothing to show
        thumbnail = element(user, f"screenshot-{shot.serial}")
        assert isinstance(thumbnail, ui.image) and thumbnail.source == page_url
    user.find(marker=f"screenshot-{shot.serial}").click()
    await user.should_see(marker="screenshot-full", retries=50)
    assert element(user, "screenshot-full").source == page_url

    served = await user.http_client.get(page_url)
    assert (served.status_code, served.headers["content-type"], served.content) == (200, "image/png", PNG)
    assert (await user.http_client.get(f"/screenshots/{plain.assignment_id}/{plain.attempt}")).status_code == 404
