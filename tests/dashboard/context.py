"""Hands the per-test services to the NiceGUI main file (which runpy runs, so it cannot take
fixtures). Set by the `dashboard` fixture, read by tests/dashboard/main.py."""

from __future__ import annotations

from typing import Any

current: Any = None  # nicegui_app.services.Services of the running test
STORAGE_SECRET = "test storage secret"
