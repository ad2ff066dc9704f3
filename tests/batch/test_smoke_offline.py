"""The offline provider end to end: a job runs, outputs are labelled offline, counters exact."""

from __future__ import annotations

from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchStatus
from jobsys.batch.providers.offline import OFFLINE_LABEL
from tests.batch.conftest import counters_match, items
from tests.support.postgres import Db
from tests.support.runners import StartRunner, wait_final


async def test_offline_job_completes_and_is_labelled_offline(batch: BatchJobs, db: Db,
                                                             start_runner: StartRunner) -> None:
    await start_runner()
    job = await batch.create_job(template="Summarise: {text}", items=items(30), concurrency=4)
    assert job.status is BatchStatus.PENDING and job.total_items == 30
    final = await wait_final(batch, job.id)
    assert final.status is BatchStatus.COMPLETED
    assert (final.completed_items, final.failed_items, final.running_items, final.progress_percent) == (30, 0, 0, 100)
    assert final.offline and final.result["providers"] == ["offline"]
    page = await batch.job_items(job.id, limit=1000)
    assert [i.idx for i in page.items] == list(range(30))
    assert all(i.output and i.output.startswith(OFFLINE_LABEL) and i.provider == "offline" for i in page.items)
    assert counters_match(db) == []
