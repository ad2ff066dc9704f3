"""The embedded default: Postgres from the pip package `pgserver`, data kept in a directory.

Several processes may share one data directory (`jobsys up` and extra `jobsys worker
--data-dir`): pgserver starts the server once and stops it when the last user exits.
"""

from __future__ import annotations

import os
import pathlib

import platformdirs

ENV_DATA_DIR = "JOBSYS_DATA_DIR"


def default_data_dir() -> pathlib.Path:
    configured = os.environ.get(ENV_DATA_DIR)
    if configured:
        return pathlib.Path(configured).expanduser()
    return pathlib.Path(platformdirs.user_data_dir("jobsys"))


class EmbeddedPostgres:
    def __init__(self, data_dir: pathlib.Path) -> None:
        self.data_dir = data_dir
        self._server: object | None = None

    def start(self) -> str:
        """Start (or join) the server; return its connection URL."""
        import pgserver  # imported here: only the embedded mode needs it

        pgdata = self.data_dir / "pgdata"
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(pgdata, cleanup_mode="stop")
        return self.url

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("embedded Postgres is not started")
        return self._server.get_uri()  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()  # type: ignore[attr-defined]
            self._server = None
