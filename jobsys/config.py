"""Where the database is: from flags, then the environment, then the embedded default."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
from typing import Iterator

from jobsys.embedded import EmbeddedPostgres, default_data_dir

ENV_DATABASE_URL = "JOBSYS_DATABASE_URL"
ENV_SERVER = "JOBSYS_SERVER"  # the hub's address, for a worker PC joining it
ENV_WORKER_TOKEN = "JOBSYS_WORKER_TOKEN"  # that PC's token (jobsys workers add)


def resolve_database(database_url: str | None, data_dir: pathlib.Path | None) -> tuple[str, EmbeddedPostgres | None]:
    """The URL to use and, in embedded mode, the server the caller must stop."""
    url = database_url or (None if data_dir else os.environ.get(ENV_DATABASE_URL))
    if url:
        return url, None
    embedded = EmbeddedPostgres(data_dir or default_data_dir())
    return embedded.start(), embedded


@dataclasses.dataclass(frozen=True)
class Database:
    url: str
    embedded_dir: pathlib.Path | None = None  # the data directory, when it is the embedded server

    @property
    def embedded(self) -> bool:
        return self.embedded_dir is not None


@contextlib.contextmanager
def database(database_url: str | None, data_dir: pathlib.Path | None) -> Iterator[Database]:
    """The database `resolve_database` chooses, for the duration of the block: in embedded
    mode the server is started (or joined) here and stopped at the end (pgserver keeps it
    running while another process still uses the same data directory)."""
    url, embedded = resolve_database(database_url, data_dir)
    try:
        yield Database(url, embedded.data_dir if embedded is not None else None)
    finally:
        if embedded is not None:
            embedded.stop()
