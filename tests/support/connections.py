"""Network faults on demand, for tests and chaos runs: what a dropped link does to a
connection, without dropping the link."""

from __future__ import annotations

import contextlib
from typing import Any


async def kill_listen_connection(subscription: Any) -> None:
    """Drop the LISTEN connection of a Postgres transport's subscription (a
    jobsys.transport.postgres.Listener) as a network fault would: its backend is
    terminated, and the listener must notice, reconnect and resync by itself."""
    conn = subscription._conn  # the listener's own connection; None while it reconnects
    if conn is not None:
        with contextlib.suppress(Exception):
            await conn.execute("select pg_terminate_backend(pg_backend_pid())")
