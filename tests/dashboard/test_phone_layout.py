"""The dashboard on a phone (390×844 in headless Chromium): no page scrolls sideways, the
header is one line with the pages behind a menu button (a drawer that marks the current
page), the jobs table is a card per job with long titles and URLs cut short but whole in their
title attribute, and the new-job dialog fits the screen with the focus in its first field.
Screenshots go to tests/e2e/artifacts (phone_*.png)."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from jobsys.system import JobSystem
from tests.dashboard.browser_pages import (
    LONG_TITLE,
    LONG_URL,
    PAGES,
    PHONE,
    UI_TIMEOUT_S,
    contrast_failures,
    in_browser,
    live_dashboard,
    log_in,
    open_page,
    seed,
    settle,
    t,
)
from tests.e2e.browser import ARTIFACTS
from tests.support.browser import absent
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(bool(absent()), reason=f"{' and '.join(absent())} missing")

# What sticks out to the right of the screen, and whether the page scrolls sideways.
OVERFLOW_JS = """
const root = document.scrollingElement;
const width = root.clientWidth;
const outside = [...document.body.querySelectorAll('*')].filter((e) => {
  if (e.closest('.q-drawer, .q-dialog, .q-tooltip, .q-menu, .q-notifications')) return false;
  const r = e.getBoundingClientRect();
  return r.width > 0 && r.right > width + 0.5;
}).slice(0, 5).map((e) => e.tagName.toLowerCase() + '.' + [...e.classList].join('.') + ' ' +
  Math.round(e.getBoundingClientRect().right) + 'px: ' + (e.textContent || '').trim().slice(0, 40));
return {scrollWidth: root.scrollWidth, width, innerWidth: window.innerWidth, outside};
"""
# The header's visible parts all on one line, and none of its texts wrapped onto a second.
HEADER_JS = """
const header = document.querySelector('.q-header');
const parts = [...header.children].filter((e) => {
  const r = e.getBoundingClientRect();
  return r.width > 0 && r.height > 0;  // not ui.space(), which has no height
});
const rects = parts.map((e) => e.getBoundingClientRect());
const oneRow = Math.max(...rects.map((r) => r.top)) < Math.min(...rects.map((r) => r.bottom));
const wrapped = [...header.querySelectorAll('*')].filter((e) => {
  const text = [...e.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE).map((n) => n.textContent).join('').trim();
  if (!text || !e.getClientRects().length) return false;
  const style = getComputedStyle(e);
  const line = parseFloat(style.lineHeight) || parseFloat(style.fontSize) * 1.5;
  return e.getBoundingClientRect().height > line * 1.5;
}).map((e) => e.textContent.trim());
return {oneRow, wrapped, parts: parts.length};
"""


def _shot(driver: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / f"phone_{name}.png"))


def _displayed(driver: WebDriver, css: str) -> list[Any]:
    return [e for e in driver.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]


async def test_at_phone_width_no_page_scrolls_sideways_and_the_header_is_one_line(
        clean_nicegui: None, jobs: JobSystem, tmp_path: pathlib.Path) -> None:
    await seed(jobs)
    device = (await jobs.list_devices()).devices[0]
    pages = (*PAGES, (f"/devices/{device.id}", "device_detail"))
    async with live_dashboard(jobs, tmp_path / "storage") as base:

        def visit(driver: WebDriver) -> dict[str, Any]:
            seen: dict[str, Any] = {}
            open_page(driver, f"{base}/login", None)
            seen["/login"] = driver.execute_script(OVERFLOW_JS)
            _shot(driver, "login")
            log_in(driver, base)
            headers: dict[str, Any] = {}
            for path, heading in pages:
                open_page(driver, base + path, heading)
                seen[path] = driver.execute_script(OVERFLOW_JS)
                headers[path] = driver.execute_script(HEADER_JS)
                _shot(driver, "device" if path.count("/") > 1 else path.strip("/") or "jobs")
            open_page(driver, f"{base}/no-such-page", None)
            seen["/no-such-page"] = driver.execute_script(OVERFLOW_JS)
            return {"overflow": seen, "headers": headers}

        found = await in_browser(visit, size=PHONE)
    for path, result in found["overflow"].items():
        assert result["innerWidth"] == PHONE[0], result  # the viewport is the phone's
        assert result["scrollWidth"] <= result["width"], f"{path} scrolls sideways: {result}"
    for path, header in found["headers"].items():
        assert header["oneRow"] and not header["wrapped"], f"{path}: header not one line: {header}"


async def test_phone_menu_job_cards_and_dialog(clean_nicegui: None, jobs: JobSystem, tmp_path: pathlib.Path) -> None:
    await seed(jobs)
    async with live_dashboard(jobs, tmp_path / "storage") as base:

        def use(driver: WebDriver) -> None:
            log_in(driver, base)
            open_page(driver, f"{base}/pcs", "nav_pcs")
            # The pages are behind the menu button; the drawer marks the current one.
            assert not _displayed(driver, "header nav a")
            menu = driver.find_element(By.CSS_SELECTOR, f"header button[aria-label='{t('menu')}']")
            assert menu.is_displayed()
            menu.click()
            wait_for(lambda: bool(_displayed(driver, ".q-drawer a")), UI_TIMEOUT_S, "the menu drawer")
            settle(driver)
            links = {a.text: a.get_attribute("aria-current") for a in _displayed(driver, ".q-drawer a")}
            assert links == {t("nav_jobs"): None, t("nav_devices"): None, t("nav_background"): None,
                             t("nav_pcs"): "page", t("nav_audit"): None}, links
            failing = contrast_failures(driver)
            assert not failing, failing  # the drawer's links (one under the pointer), language and log out
            _shot(driver, "menu")
            next(a for a in _displayed(driver, ".q-drawer a") if a.text == t("nav_jobs")).click()
            wait_for(lambda: driver.current_url.rstrip("/") == base, UI_TIMEOUT_S, "the jobs page")
            open_page(driver, f"{base}/", "nav_jobs")

            # A card per job: the title cell takes the card's whole width, the values are named.
            title = next(e for e in _displayed(driver, "tbody .truncate") if e.text.strip() == LONG_TITLE.strip()
                         or e.get_attribute("title") == LONG_TITLE)
            card = title.find_element(By.XPATH, "./ancestor::tr[1]")
            cell = title.find_element(By.XPATH, "./ancestor::td[1]")
            width = driver.execute_script("return document.scrollingElement.clientWidth;")
            assert card.rect["x"] >= 0 and card.rect["x"] + card.rect["width"] <= width, card.rect
            assert cell.rect["width"] >= card.rect["width"] * 0.9, (cell.rect, card.rect)
            assert driver.execute_script("return getComputedStyle(arguments[0], '::before').content;",
                                         card.find_element(By.CSS_SELECTOR, "td[data-label]")) != "none"
            # Long titles and URLs are cut to the card, and whole in their title attribute.
            url = next(e for e in card.find_elements(By.CSS_SELECTOR, ".truncate") if e.get_attribute("title") == LONG_URL)
            for cut in (title, url):
                assert driver.execute_script("return arguments[0].scrollWidth > arguments[0].clientWidth;", cut)
            assert title.get_attribute("title") == LONG_TITLE
            failing = contrast_failures(driver)
            assert not failing, failing  # the cards' captions and values
            _shot(driver, "jobs_cards")

            # The side panel fills the screen, its per-device table a card per run, nothing wider.
            card.find_element(By.CSS_SELECTOR, f"button[aria-label='{t('open_panel')}']").click()
            wait_for(lambda: len(_displayed(driver, "[role=dialog] tbody tr")) >= 3, UI_TIMEOUT_S,
                     "the panel's runs")  # completed, failed, running (and what top-up added)
            settle(driver)
            sheet = _displayed(driver, "[role=dialog]")[0]
            assert driver.execute_script(
                "const s = arguments[0]; return s.scrollWidth <= s.clientWidth"
                " && s.getBoundingClientRect().right <= document.documentElement.clientWidth;", sheet)
            for run in _displayed(driver, "[role=dialog] tbody tr"):
                assert driver.execute_script("return getComputedStyle(arguments[0]).display;", run) == "flex"
                assert run.rect["x"] + run.rect["width"] <= sheet.rect["x"] + sheet.rect["width"], run.rect
            _shot(driver, "job_panel")
            sheet.find_element(By.CSS_SELECTOR, f"button[aria-label='{t('close')}']").click()
            wait_for(lambda: not _displayed(driver, "[role=dialog]"), UI_TIMEOUT_S, "the panel to close")

            # The new-job dialog fits the screen, and the URL field has the focus.
            new_job = driver.find_element(By.XPATH, f"//button[.//span[normalize-space()='{t('new_job')}']]")
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", new_job)  # not under the header
            new_job.click()
            wait_for(lambda: bool(_displayed(driver, ".q-dialog .q-card")), UI_TIMEOUT_S, "the new-job dialog")
            settle(driver)
            dialog = _displayed(driver, ".q-dialog .q-card")[0]
            fits = driver.execute_script(
                "const r = arguments[0].getBoundingClientRect(); const w = document.documentElement.clientWidth;"
                "return r.left >= 0 && r.right <= w && arguments[0].scrollWidth <= arguments[0].clientWidth;", dialog)
            assert fits, dialog.rect
            focused = driver.switch_to.active_element
            assert focused.get_attribute("aria-label") == t("url"), focused.get_attribute("outerHTML")[:200]
            _shot(driver, "new_job")

        await in_browser(use, size=PHONE)
