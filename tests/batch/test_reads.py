"""The reads the dashboard and the REST API use: list with summary and status filter, items
and logs paged."""

from __future__ import annotations

from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchStatus, ItemResult
from tests.batch.conftest import items


async def test_list_filters_by_status_and_summarises_all(batch: BatchJobs) -> None:
    first = await batch.create_job(template="Summarise: {text}", items=items(2), title="first")
    second = await batch.create_job(template="Summarise: {text}", items=items(3))
    await batch.cancel_job(first.id)
    listed = await batch.list_jobs()
    assert [j.id for j in listed.jobs] == [second.id, first.id]  # newest first
    assert second.title == "Summarise: {text}"  # default title: the template's start
    assert (listed.summary.total, listed.summary.pending, listed.summary.cancelled) == (2, 1, 1)
    assert [j.id for j in (await batch.list_jobs(status="cancelled")).jobs] == [first.id]
    assert (await batch.list_jobs(limit=1, offset=1)).jobs[0].id == first.id


async def test_items_and_logs_page(batch: BatchJobs) -> None:
    job = await batch.create_job(template="Summarise: {text}", items=items(25))
    claimed = await batch.claim_job("r")
    assert claimed is not None
    got = await batch.claim_items(job.id, claimed.lease_token, 25)
    await batch.report(job.id, claimed.lease_token,
                       [ItemResult(idx=i.idx, status="failed" if i.idx % 5 == 0 else "completed",
                                   output=None if i.idx % 5 == 0 else f"out {i.idx}",
                                   error="400 INVALID_ARGUMENT" if i.idx % 5 == 0 else None) for i in got])

    failed = await batch.job_items(job.id, status=BatchStatus.FAILED)
    assert [i.idx for i in failed.items] == [0, 5, 10, 15, 20] and failed.total == 5
    page = await batch.job_items(job.id, limit=10, offset=20)
    assert [i.idx for i in page.items] == [20, 21, 22, 23, 24] and page.total == 25
    assert page.items[1].output == "out 21" and page.items[1].input == {"text": "text 21"}

    newest = await batch.job_logs(job.id, limit=3)
    assert newest.logs[0].message.startswith("completed: 20 of 25 items succeeded, 5 failed")
    assert [line.id for line in newest.logs] == sorted((line.id for line in newest.logs), reverse=True)
    seen = [line.id for line in newest.logs]
    before = newest.next_before_id
    while before is not None:
        older = await batch.job_logs(job.id, limit=3, before_id=before)
        seen += [line.id for line in older.logs]
        before = older.next_before_id
    assert seen == sorted(set(seen), reverse=True) and len(seen) == 1 + 1 + 5 + 1  # created, started, 5 fails, end
