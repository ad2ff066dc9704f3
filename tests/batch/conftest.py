"""What the batch tests share: items to submit and checks on the stored counters. The
`batch` and `start_runner` fixtures are in tests/conftest.py (tests/support/runners.py)."""

from __future__ import annotations

from typing import Any

from tests.support.postgres import Db


def items(n: int, prefix: str = "text") -> list[dict[str, Any]]:
    return [{"text": f"{prefix} {i}"} for i in range(n)]


def counters_match(db: Db) -> list[tuple[Any, ...]]:
    """Background jobs whose stored counters differ from count(*) over their items."""
    return db.rows("""
        select j.id, j.running_items, j.completed_items, j.failed_items, j.cancelled_items, c.*
        from jobsys.background_jobs j
        left join lateral (
          select count(*) filter (where i.status = 'running') as running,
                 count(*) filter (where i.status = 'completed') as completed,
                 count(*) filter (where i.status = 'failed') as failed,
                 count(*) filter (where i.status = 'cancelled') as cancelled,
                 count(*) as total
          from jobsys.background_job_items i where i.job_id = j.id) c on true
        where (j.running_items, j.completed_items, j.failed_items, j.cancelled_items, j.total_items)
           <> (c.running, c.completed, c.failed, c.cancelled, c.total)""")


def dump_batch_tables(db: Db) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for table in ("background_jobs", "background_job_items", "background_job_logs"):
        out.extend((table, *row) for row in db.rows(f"select * from jobsys.{table} order by 1"))
    return out
