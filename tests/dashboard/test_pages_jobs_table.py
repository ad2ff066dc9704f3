"""The jobs table (issue 20): the view in the address (status, search, sort; shareable and
kept over a reload), sorting by a column, "2 of 3" and "더 보기", the time columns, honest
progress (failures red, cancelled grey, a cancelled job keeps its numbers), page titles and
the contrast of the table's colours (WCAG AA)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from nicegui import ui
from nicegui.testing import User

from jobsys.models import JobStatus
from jobsys.system import JobSystem
from nicegui_app.i18n import Translator
from nicegui_app.pages import job_progress
from nicegui_app.pages import jobs as jobs_page
from nicegui_app.pages.job_progress import (
    BADGE_TEXT,
    MUTED_TEXT,
    RUN_BACKGROUNDS,
    SEGMENT_COLORS,
    STATUS_BACKGROUNDS,
    contrast_ratio,
)
from nicegui_app.pages.rows import when
from tests.core.helpers import add_worker
from tests.dashboard.pages import finish_runs, login
from tests.support.pages import element, text_of
from tests.support.waiting import wait_until

URL = "https://example.com/watch"
WHITE = "#ffffff"
BAR_TRACK = "#e5e7eb"  # the bar's grey track (Tailwind gray-200)


def _order(user: User) -> list[uuid.UUID]:
    """The job ids in the table, top to bottom."""
    ids = []
    for child in element(user, "job-list").default_slot.children:
        marks = [m for m in child._markers if m.startswith("job-")]
        if marks:
            ids.append(uuid.UUID(marks[0].removeprefix("job-")))
    return ids


@pytest.fixture
def addresses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The addresses the page shows in the browser's bar (history.replaceState), in order."""
    shown: list[str] = []
    monkeypatch.setattr(jobs_page, "set_address", shown.append)
    return shown


async def test_the_view_lives_in_the_address(user: User, jobs: JobSystem, addresses: list[str]) -> None:
    await add_worker(jobs, "w1", 1)
    alpha = (await jobs.create_job(target_url="https://alpha.example/", duration_sec=5, title="alpha")).job
    beta = (await jobs.create_job(target_url="https://beta.example/", duration_sec=5, title="beta")).job
    gamma = (await jobs.create_job(target_url="https://gamma.example/", duration_sec=5, title="gamma")).job
    for paused in (beta, gamma):
        await jobs.pause_job(paused.id)

    await login(user)
    await user.open("/?status=paused&sort=title")  # a shared link: filter and order come with it
    await wait_until(lambda: _order(user) == [beta.id, gamma.id], what="paused jobs by title")
    assert element(user, "status-filter").value == "paused"
    assert "arrow_upward" == element(user, "sort-title").props.get("icon-right")

    user.find(marker="sort-title").click()  # again: Z→A
    await wait_until(lambda: _order(user) == [gamma.id, beta.id], what="reversed")
    assert addresses[-1] == "/?status=paused&sort=-title"
    user.find(marker="search").type("gam")
    await wait_until(lambda: _order(user) == [gamma.id], what="searched")
    assert addresses[-1] == "/?status=paused&q=gam&sort=-title"

    element(user, "status-filter").value = ""  # "전체"
    user.find(marker="search").clear()
    user.find(marker="sort-created").click()  # newest first: the default, so the plain address
    await wait_until(lambda: _order(user) == [gamma.id, beta.id, alpha.id], what="all, newest first")
    assert addresses[-1] == "/"

    await user.open("/?q=alpha")  # a reload of a searched view keeps the search
    await wait_until(lambda: _order(user) == [alpha.id], what="the search after a reload")
    assert element(user, "search").value == "alpha"

    await user.open("/?status=bogus&sort=evil")  # unknown values fall back to the defaults
    await wait_until(lambda: len(_order(user)) == 3, what="defaults")
    assert element(user, "status-filter").value == ""


async def test_sorting_by_progress_and_queued(user: User, jobs: JobSystem) -> None:
    session = await add_worker(jobs, "w1", 4)
    first = (await jobs.create_job(target_url=f"{URL}/1", duration_sec=5, target_type="device_count",
                                   target_value=2)).job
    await finish_runs(jobs, session.worker_id, completed=2)
    second = (await jobs.create_job(target_url=f"{URL}/2", duration_sec=5, target_type="device_count",
                                    target_value=2)).job
    await login(user, language="en")
    await wait_until(lambda: _order(user) == [second.id, first.id], what="newest first")
    user.find(marker="sort-progress").click()  # most done first
    await wait_until(lambda: _order(user) == [first.id, second.id], what="by progress")
    user.find(marker="sort-queued").click()  # most queued first
    await wait_until(lambda: _order(user) == [second.id, first.id], what="by queued runs")
    with user.scope(marker=f"job-{second.id}"):
        assert text_of(user, "job-queued") == "2"


async def test_count_and_more(user: User, jobs: JobSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs_page, "PAGE_SIZE", 2)
    await add_worker(jobs, "w1", 1)
    for i in range(3):
        await jobs.create_job(target_url=f"{URL}/{i}", duration_sec=5)
    await login(user)
    await wait_until(lambda: text_of(user, "jobs-count") == "3개 중 2개", what="first page")
    assert len(_order(user)) == 2
    user.find(marker="more-jobs").click()
    await wait_until(lambda: text_of(user, "jobs-count") == "3개 중 3개", what="all")
    await user.should_not_see(marker="more-jobs", retries=20)

    await user.open("/?q=example")  # with a search the summary cannot count the matches
    await wait_until(lambda: text_of(user, "jobs-count") == "2개 표시 (더 있음)", what="more match")
    await user.should_see(marker="more-jobs")


async def test_time_columns(user: User, jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 1)
    running = (await jobs.create_job(target_url=f"{URL}/a", duration_sec=5)).job
    ended = (await jobs.create_job(target_url=f"{URL}/b", duration_sec=5)).job
    ended = await jobs.cancel_job(ended.id)
    later = (await jobs.create_job(target_url=f"{URL}/c", duration_sec=5, start_at=dt.datetime.now(
        dt.timezone.utc) + dt.timedelta(hours=2))).job
    assert ended.ended_at is not None and later.status is JobStatus.SCHEDULED
    await login(user, language="en")
    with user.scope(marker=f"job-{running.id}"):
        assert text_of(user, "job-created") == when(running.created_at)
        assert text_of(user, "job-started") == when(running.created_at)
        assert text_of(user, "job-ended").startswith("created ") and text_of(user, "job-ended").endswith(" ago")
    with user.scope(marker=f"job-{ended.id}"):
        assert text_of(user, "job-ended") == when(ended.ended_at)
        seconds = (ended.ended_at - ended.created_at).total_seconds()
        assert text_of(user, "job-duration") == job_progress.span(Translator("en"), seconds)
    with user.scope(marker=f"job-{later.id}"):
        assert text_of(user, "job-started") == "–"  # waiting for its start time
        assert text_of(user, "job-duration") == "–"


def _width(user: User, key: str) -> float:
    return float(element(user, f"bar-{key}").style["width"].rstrip("%"))


async def test_a_cancelled_job_keeps_its_numbers_with_failures_in_red(user: User, jobs: JobSystem) -> None:
    session = await add_worker(jobs, "w1", 4)
    job = (await jobs.create_job(target_url=URL, duration_sec=5)).job
    await finish_runs(jobs, session.worker_id, completed=1, failed=1)
    await jobs.cancel_job(job.id)
    done = await jobs.get_job(job.id)
    assert (done.completed_count, done.failed_count, done.cancelled_count) == (1, 1, 2)
    await login(user)
    with user.scope(marker=f"job-{job.id}"):
        await user.should_see("1/4대 (25%)")  # not 0 %, not 100 %
        assert text_of(user, "job-counts") == "완료 1 / 4, 실패 1"
        assert text_of(user, "job-cancelled") == "취소 2"
        widths = {key: _width(user, key) for key in SEGMENT_COLORS}
        assert widths == {"completed": 25.0, "running": 0.0, "waiting": 0.0, "failed": 25.0, "cancelled": 50.0}
        for key, colour in SEGMENT_COLORS.items():
            assert element(user, f"bar-{key}").style["background-color"] == colour
        assert element(user, "bar-failed").props["title"] == "실패 1대"
        bar = element(user, "job-bar").props
        assert (bar["role"], bar["aria-valuenow"], bar["aria-valuemax"]) == ("progressbar", "1", "4")
        assert bar["aria-valuetext"] == "완료 1대, 실행 중 0대, 대기 0대, 실패 1대, 취소 2대"


def test_the_table_colours_meet_wcag_aa() -> None:
    """Badges: white text on each state's colour; secondary text on white; bar segments against
    the grey track (WCAG 1.4.11 asks 3:1 of graphics)."""
    for background in (*STATUS_BACKGROUNDS.values(), *RUN_BACKGROUNDS.values()):
        assert contrast_ratio(BADGE_TEXT, background) >= 4.5, background
    assert contrast_ratio(MUTED_TEXT, WHITE) >= 4.5
    for colour in SEGMENT_COLORS.values():
        assert contrast_ratio(colour, BAR_TRACK) >= 3.0, colour
    assert round(contrast_ratio("#ffffff", "#21ba45"), 2) == 2.57  # the old green badge, for the record


async def test_the_rendered_badges_use_the_checked_colours(user: User, jobs: JobSystem) -> None:
    """A computed-colour check of our own over the page: every status badge in the table."""
    await add_worker(jobs, "w1", 2)
    for i, status in enumerate(("active", "paused", "cancelled")):
        job = (await jobs.create_job(target_url=f"{URL}/{i}", duration_sec=5)).job
        if status == "paused":
            await jobs.pause_job(job.id)
        if status == "cancelled":
            await jobs.cancel_job(job.id)
    await login(user)
    badges = list(user.find(marker="job-status").elements)
    assert len(badges) == 3
    for badge in badges:
        assert isinstance(badge, ui.badge)
        assert badge.props.get("color") is None  # a Quasar bg-* class (!important) would win over the style
        ratio = contrast_ratio(badge.style["color"], badge.style["background-color"])
        assert ratio >= 4.5, (badge.text, ratio)


async def test_the_pages_theme_meets_wcag_aa(user: User, jobs: JobSystem) -> None:
    """White header text and badges on Quasar's brand colours, as the page sets them."""
    await login(user)
    (theme,) = user.find(kind=ui.colors).elements
    for name in ("primary", "positive", "negative"):
        assert contrast_ratio(WHITE, theme.props[name]) >= 4.5, name


async def test_every_page_has_its_own_title(user: User, jobs: JobSystem) -> None:
    await login(user)
    assert user.client is not None and user.client.title == "작업 관리 – jobsys"
    await user.open("/devices")
    assert user.client.title == "기기 – jobsys"
    user.http_client.headers["Accept-Language"] = "en"
    await user.open("/")
    assert user.client.title == "Jobs – jobsys"


async def test_the_priority_column_shows_and_sorts(user: User, jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 1)
    urgent = (await jobs.create_job(target_url=f"{URL}/urgent", duration_sec=5, priority=7)).job
    plain = (await jobs.create_job(target_url=f"{URL}/plain", duration_sec=5)).job
    await login(user, language="en")
    await wait_until(lambda: _order(user) == [plain.id, urgent.id], what="newest first")
    user.find(marker="sort-priority").click()  # highest first
    await wait_until(lambda: _order(user) == [urgent.id, plain.id], what="by priority")
    with user.scope(marker=f"job-{urgent.id}"):
        assert text_of(user, "job-priority") == "7"
