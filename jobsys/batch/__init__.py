"""AI batch jobs: an operator's prompt template run over N items by background runners.

    from jobsys.batch import BatchCreate, BatchJobs
    batch = BatchJobs.of(jobs)                       # jobs: a connected JobSystem
    job = await batch.create_job(template="Summarise:\\n{text}", items=[{"text": "..."}])

The runner lives in jobsys.batch.runner (BatchRunner, run_runner), imported on demand
because it loads the Gemini SDK; the `jobsys batch-runner` and `jobsys batch` commands are
in jobsys_cli.
"""

from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import (
    BatchCreate,
    BatchItem,
    BatchItemPage,
    BatchJob,
    BatchJobList,
    BatchLog,
    BatchLogPage,
    BatchProgress,
    BatchStatus,
    BatchSummary,
    LogLevel,
    ProviderChoice,
)

__all__ = [
    "BatchCreate", "BatchItem", "BatchItemPage", "BatchJob", "BatchJobList", "BatchJobs", "BatchLog", "BatchLogPage",
    "BatchProgress", "BatchStatus", "BatchSummary", "LogLevel", "ProviderChoice",
]
