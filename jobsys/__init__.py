"""jobsys: a Postgres/Supabase-native job system for device fleets and AI batches.

    async with await JobSystem.connect(database_url) as jobs:
        created = await jobs.create_job(target_url="https://example.com", duration_sec=30)
"""

import importlib.metadata

from jobsys.errors import (
    Forbidden, IllegalTransition, InvalidInput, JobsysError, NotFound, StaleRun, TransportError,
)
from jobsys.models import JobCreate, JobStatus, JobUpdate, TargetType
from jobsys.system import JobSystem

try:
    __version__ = importlib.metadata.version("jobsys")
except importlib.metadata.PackageNotFoundError:  # run from a source tree without installing
    __version__ = "0+unknown"

__all__ = [
    "Forbidden", "IllegalTransition", "InvalidInput", "JobCreate", "JobStatus", "JobSystem", "JobUpdate",
    "JobsysError", "NotFound", "StaleRun", "TargetType", "TransportError",
]
