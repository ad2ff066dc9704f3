"""GET /api/background-jobs searches (q), sorts (sort) and takes several statuses (status
repeated), answering `matching`; bad values get 422 with the error shape and change nothing.
Old calls (one status, limit, offset) answer as before."""

from __future__ import annotations

import httpx
import pytest

from jobsys.system import JobSystem
from tests.dashboard.test_api import assert_error
from tests.dashboard.test_background_api import BATCH, ROOT, dump_background
from tests.support.postgres import Db


async def test_search_sort_and_several_statuses(api: httpx.AsyncClient, jobs: JobSystem) -> None:
    for title in ("Weekly notes", "daily NOTES", "reviews"):
        await api.post(ROOT, json={**BATCH, "title": title})
    stopped = (await api.post(ROOT, json={**BATCH, "title": "old notes"})).json()
    await api.post(f"{ROOT}/{stopped['id']}/cancel")

    listed = (await api.get(ROOT, params={"q": "notes", "sort": "title"})).json()
    assert [j["title"] for j in listed["jobs"]] == ["daily NOTES", "old notes", "Weekly notes"]
    assert listed["matching"] == 3 and listed["summary"]["total"] == 4
    active = (await api.get(ROOT, params=[("status", "pending"), ("status", "running"), ("q", "NOTES"),
                                          ("sort", "-title")])).json()
    assert [j["title"] for j in active["jobs"]] == ["Weekly notes", "daily NOTES"]
    one = (await api.get(ROOT, params={"status": "cancelled", "limit": 1, "offset": 0})).json()
    assert [j["title"] for j in one["jobs"]] == ["old notes"] and one["matching"] == 1


@pytest.mark.parametrize("params", [
    {"sort": "price"}, {"sort": "--title"}, {"q": "x" * 201}, {"q": "tab\there"}, {"status": "done"},
    [("status", "pending")] * 6,
], ids=["unknown sort", "two dashes", "long search", "control character", "unknown status", "six statuses"])
async def test_bad_list_parameters_get_422_and_change_nothing(
        api: httpx.AsyncClient, db: Db, params: object) -> None:
    await api.post(ROOT, json=BATCH)
    before = dump_background(db)
    response = await api.get(ROOT, params=params)  # type: ignore[arg-type]
    assert_error(response, 422, "invalid_input")
    assert dump_background(db) == before
