"""NiceGUI main file for the `user` fixture: the dashboard pages on the test's JobSystem.

NiceGUI's user simulation runs this file per test (`user_simulation(main_file=...)`) and
resets its globals afterwards; `ui.run` only configures the app under simulation."""

from __future__ import annotations

from nicegui import ui

from nicegui_app.app import install_pages
from tests.dashboard import context

install_pages(context.current)
ui.run(storage_secret=context.STORAGE_SECRET, show_welcome_message=False)
