"""list_background_jobs searches, sorts and filters by several statuses in SQL, pages in that
order and counts what matches, at any size; bad arguments are refused at the library edge and
again in SQL (as a PostgREST caller could send them), and nothing changes."""

from __future__ import annotations

from typing import Any

import pytest

from jobsys import InvalidInput, rpc
from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchStatus
from tests.batch.conftest import dump_batch_tables
from tests.support.postgres import Db

TEMPLATE = "Summarise: {text}"
MANY = 1030  # more than one read's 1,000 rows: nothing may depend on reading them all


async def many_jobs(batch: BatchJobs, db: Db) -> None:
    """MANY jobs titled "note 0001".. (1..1010 pending, the rest running; note 0001 the newest),
    plus jobs the filters must leave out: a completed "note 0000" and a pending "aaa other"."""
    model = await batch.create_job(template=TEMPLATE, items=[{"text": "x"}], title="aaa other")
    db.run("""insert into jobsys.background_jobs (title, status, payload, total_items, created_at, started_at)
              select format('note %%s', lpad(i::text, 4, '0')), case when i <= 1010 then 'pending' else 'running' end,
                     m.payload, 1, now() - i * interval '1 second',
                     case when i > 1010 then now() - i * interval '1 second' end
              from generate_series(1, %s) i, jobsys.background_jobs m where m.id = %s""", (MANY, model.id))
    db.run("""insert into jobsys.background_jobs (title, status, payload, total_items, completed_items)
              select 'note 0000', 'completed', payload, 1, 1 from jobsys.background_jobs where id = %s""",
           (model.id,))


def titles(listing: Any) -> list[str]:
    return [job.title for job in listing.jobs]


async def test_search_sort_and_statuses_page_through_every_match(batch: BatchJobs, db: Db) -> None:
    await many_jobs(batch, db)
    active = (BatchStatus.PENDING, BatchStatus.RUNNING)
    seen: list[str] = []
    for offset in range(0, MANY, 400):  # three pages: every match once, in order
        listing = await batch.list_jobs(statuses=active, q="NOTE", sort="-title", limit=400, offset=offset)
        assert listing.matching == MANY
        seen += titles(listing)
    assert seen == [f"note {i:04d}" for i in range(MANY, 0, -1)]
    assert listing.summary.total == MANY + 2  # the summary still counts every job

    first = await batch.list_jobs(statuses=active, q="note", sort="title", limit=3)
    assert titles(first) == ["note 0001", "note 0002", "note 0003"]  # the completed note 0000 is filtered out
    one = await batch.list_jobs(status="running", q="note", sort="created", limit=2)  # the old argument
    assert titles(one) == ["note 1030", "note 1029"] and one.matching == MANY - 1010
    started = await batch.list_jobs(sort="started", limit=2)  # rows without a start come last
    assert titles(started) == ["note 1030", "note 1029"]
    newest = await batch.list_jobs(limit=1)  # old callers: newest first, everything
    assert titles(newest) == ["note 0000"] and newest.matching == MANY + 2
    assert (await batch.list_jobs(q="100%", limit=5)).matching == 0  # % is no wildcard


LIBRARY_BAD: list[tuple[str, dict[str, Any]]] = [
    ("unknown sort", {"sort": "price"}),
    ("sort injection", {"sort": "title; drop table jobsys.background_jobs"}),
    ("search too long", {"q": "x" * 201}),
    ("unknown status", {"statuses": ["done"]}),
    ("no statuses", {"statuses": []}),
    ("status and statuses", {"status": "pending", "statuses": ["running"]}),
    ("limit 0", {"limit": 0}),
    ("limit 1001", {"limit": 1001}),
    ("negative offset", {"offset": -1}),
]


@pytest.mark.parametrize("case, args", LIBRARY_BAD, ids=[c for c, _ in LIBRARY_BAD])
async def test_the_library_refuses_bad_list_arguments(batch: BatchJobs, db: Db, case: str,
                                                      args: dict[str, Any]) -> None:
    await batch.create_job(template=TEMPLATE, items=[{"text": "x"}])
    before = dump_batch_tables(db)
    with pytest.raises(InvalidInput):
        await batch.list_jobs(**args)
    assert dump_batch_tables(db) == before


SQL_BAD: list[tuple[str, dict[str, Any]]] = [
    ("unknown sort", {"p_sort": "price"}),
    ("sort with two dashes", {"p_sort": "--title"}),
    ("search too long", {"p_q": "x" * 201}),
    ("unknown status", {"p_statuses": ["done"]}),
    ("null status", {"p_statuses": [None]}),
    ("no statuses", {"p_statuses": []}),
    ("too many statuses", {"p_statuses": ["pending"] * 6}),
    ("status and statuses", {"p_status": "pending", "p_statuses": ["running"]}),
    ("old status argument", {"p_status": "done"}),
]


@pytest.mark.parametrize("case, args", SQL_BAD, ids=[c for c, _ in SQL_BAD])
async def test_sql_refuses_bad_list_arguments_when_the_edge_is_bypassed(
        batch: BatchJobs, db: Db, case: str, args: dict[str, Any]) -> None:
    await batch.create_job(template=TEMPLATE, items=[{"text": "x"}])
    before = dump_batch_tables(db)
    with pytest.raises(InvalidInput):
        await batch.transport.call(rpc.LIST_BACKGROUND_JOBS, {"p_limit": 10, "p_offset": 0, **args})
    assert dump_batch_tables(db) == before
