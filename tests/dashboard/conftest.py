"""Dashboard fixtures: the REST API over ASGI, and NiceGUI's simulated `user` on the pages.

NiceGUI's pytest plugin is not loaded with `-p` (the CI command is a plain
`python -m pytest` and the plugin's `user` fixture would need a `main_file` ini option);
instead the `user` fixture below uses NiceGUI's public `user_simulation` with a main file
(tests/dashboard/main.py), and NiceGUI's storage goes to a temporary directory.
"""

from __future__ import annotations

import pathlib
import shutil
import tempfile
from typing import AsyncIterator, Iterator

import httpx
import pytest

from jobsys.events import ChannelState
from jobsys.system import JobSystem
from tests.dashboard import context
from tests.support.waiting import wait_until

TOKEN = "test-token-0123456789"
MAIN_FILE = pathlib.Path(__file__).with_name("main.py")


@pytest.fixture
async def api(jobs: JobSystem) -> AsyncIterator[httpx.AsyncClient]:
    """The REST API with the right token set on every request."""
    from nicegui_app.api import create_api_app

    transport = httpx.ASGITransport(create_api_app(jobs, TOKEN))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://api.test", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        yield client


@pytest.fixture(scope="session", autouse=True)
def nicegui_storage() -> Iterator[None]:
    """NiceGUI keeps user storage in ./.nicegui by default: not in the repo during tests."""
    from nicegui import app
    from nicegui.storage import Storage

    path = pathlib.Path(tempfile.mkdtemp(prefix="jobsys-nicegui-"))
    Storage.path = path
    app.storage = Storage()
    yield
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def dashboard(jobs: JobSystem) -> AsyncIterator[object]:
    """The process-wide services the pages use, with a live push subscription."""
    from nicegui_app.hub import EventHub
    from nicegui_app.services import Services

    hub = EventHub()
    subscription = await jobs.subscribe_dashboard(hub.publish, hub.set_state)
    await wait_until(lambda: hub.state is ChannelState.SUBSCRIBED, what="dashboard push channel")
    context.current = Services(jobs=jobs, hub=hub, token=TOKEN)
    yield context.current
    await subscription.close()
    context.current = None


@pytest.fixture
def clean_nicegui() -> Iterator[None]:
    """serve() configures the process-wide NiceGUI app; leave it as the next test expects."""
    from nicegui import app
    from nicegui.storage import Storage
    from nicegui.testing.general import nicegui_reset_globals

    storage_path, storage = Storage.path, app.storage
    with nicegui_reset_globals():
        yield
    Storage.path, app.storage = storage_path, storage


@pytest.fixture
async def user(dashboard: object, caplog: pytest.LogCaptureFixture) -> AsyncIterator[object]:
    """NiceGUI's simulated user on the dashboard; fails the test on ERROR logs like NiceGUI's own."""
    from nicegui.testing import user_simulation

    async with user_simulation(main_file=MAIN_FILE) as simulated:
        yield simulated
        _stop_outboxes()
    errors = [r for r in caplog.get_records("call") if r.levelname == "ERROR"]
    assert not errors, f"unexpected ERROR logs: {[r.getMessage() for r in errors]}"


def _stop_outboxes() -> None:
    """Let every page's outbox loop end on its own before NiceGUI's teardown cancels it: on
    Python 3.11 a cancel that lands while the loop's wait_for is being woken is swallowed
    (fixed in 3.12), and the teardown then waits out its 2 s timeout."""
    from nicegui import Client

    for client in list(Client.instances.values()):
        client.outbox.stop()
