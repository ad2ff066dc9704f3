"""Where the database is: from flags, then the environment, then the embedded default."""

from __future__ import annotations

import os
import pathlib

from jobsys.embedded import EmbeddedPostgres, default_data_dir

ENV_DATABASE_URL = "JOBSYS_DATABASE_URL"


def resolve_database(database_url: str | None, data_dir: pathlib.Path | None) -> tuple[str, EmbeddedPostgres | None]:
    """The URL to use and, in embedded mode, the server the caller must stop."""
    url = database_url or (None if data_dir else os.environ.get(ENV_DATABASE_URL))
    if url:
        return url, None
    embedded = EmbeddedPostgres(data_dir or default_data_dir())
    return embedded.start(), embedded
