"""WCAG 2.1 AA in a real browser: every page (jobs, devices, a device, PCs, background jobs,
audit, login, 404) with data in every coloured state, checked in headless Chromium by
computed colour (browser_pages.CONTRAST_JS). Also: a title per page, the current page marked in the menu,
icon buttons named, focus to the first field when a dialog opens."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from jobsys.system import JobSystem
from nicegui_app.pages import frame
from nicegui_app.pages.job_progress import contrast_ratio
from tests.dashboard.browser_pages import (
    PAGES,
    contrast_failures,
    UI_TIMEOUT_S,
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

needs_chromium = pytest.mark.skipif(bool(absent()), reason=f"{' and '.join(absent())} missing")


def test_the_theme_keeps_aa_for_every_colour_it_remaps() -> None:
    """White text on each remapped Quasar colour, and each as text on white (the browser checks
    below see only the colours the seeded pages happen to show)."""
    for name, colour in {**frame.THEME, **frame.PALETTE, **frame.TEXT_ONLY, "link": frame.LINK,
                         "focus": frame.FOCUS_RING}.items():
        assert contrast_ratio("#ffffff", colour) >= 4.5, (name, colour, contrast_ratio("#ffffff", colour))

# Controls without an accessible name: an icon's ligature ("delete") is not one.
NAMES_JS = """
const controls = document.body.querySelectorAll(
  'button, a[href], input:not([type=hidden]), [role=radio], [role=radiogroup], [role=checkbox], [role=switch], ' +
  '[role=button]');
const named = (e) => {
  if ((e.getAttribute('aria-label') || '').trim() || (e.getAttribute('title') || '').trim()) return true;
  const by = e.getAttribute('aria-labelledby');
  if (by && by.split(/\\s+/).some((id) => (document.getElementById(id)?.textContent || '').trim())) return true;
  if (e.id && document.querySelector('label[for="' + e.id + '"]')) return true;
  const copy = e.cloneNode(true);
  copy.querySelectorAll('.q-icon, .material-icons').forEach((i) => i.remove());
  return copy.textContent.trim() !== '';
};
// tabindex=-1: out of the keyboard's reach, a helper of another control (Quasar's file input in its pick button)
return [...controls].filter((e) => e.getClientRects().length && e.getAttribute('tabindex') !== '-1' && !named(e))
  .map((e) => e.outerHTML.slice(0, 300));
"""
# Tab through the page until a button has the focus; its outline as the browser draws it.
FOCUS_JS = """
const e = document.activeElement;
if (!e || e === document.body) return null;
const s = getComputedStyle(e);
return {tag: e.tagName.toLowerCase(), style: s.outlineStyle, width: parseFloat(s.outlineWidth), colour: s.outlineColor,
        visible: e.matches(':focus-visible')};
"""


def unnamed_controls(driver: WebDriver) -> list[str]:
    return list(driver.execute_script(NAMES_JS))


def _report(found: dict[str, list[dict[str, Any]]]) -> str:
    return "\n".join(
        f"{page}: {f['ratio']}:1 < {f['needed']}:1 {f['text']!r} <{f['element']}> {f['colour']} on {f['background']}"
        for page, failures in found.items() for f in failures)


@needs_chromium
async def test_every_page_keeps_aa_contrast_and_has_its_own_title(
        clean_nicegui: None, jobs: JobSystem, tmp_path: pathlib.Path) -> None:
    await seed(jobs)
    device = (await jobs.list_devices()).devices[0]
    pages = (*PAGES, (f"/devices/{device.id}", "device_detail"))
    async with live_dashboard(jobs, tmp_path / "storage") as base:

        def visit(driver: WebDriver) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str], dict[str, list[str]]]:
            found: dict[str, list[dict[str, Any]]] = {}
            titles: dict[str, str] = {}
            unnamed: dict[str, list[str]] = {}
            open_page(driver, f"{base}/login", None)
            found["/login"], titles["/login"] = contrast_failures(driver), driver.title
            log_in(driver, base)
            for path, heading in pages:
                open_page(driver, base + path, heading)
                found[path], titles[path] = contrast_failures(driver), driver.title
                unnamed[path] = unnamed_controls(driver)
                if path == "/":
                    ARTIFACTS.mkdir(exist_ok=True)
                    driver.save_screenshot(str(ARTIFACTS / "desktop_jobs.png"))
            # The create dialogs on top of their pages.
            for path, heading, button in (("/", "nav_jobs", "new_job"), ("/background-jobs", "nav_background",
                                                                          "new_batch")):
                open_page(driver, base + path, heading)
                driver.find_element(By.XPATH, f"//button[.//span[normalize-space()='{t(button)}']]").click()
                wait_for(lambda: bool(driver.find_elements(By.CSS_SELECTOR, ".q-dialog input, .q-dialog textarea")),
                         UI_TIMEOUT_S, f"the {button} dialog")
                settle(driver)
                found[f"{path} ({button})"] = contrast_failures(driver)
                unnamed[f"{path} ({button})"] = unnamed_controls(driver)
            open_page(driver, f"{base}/no-such-page", None)
            found["/no-such-page"], titles["/no-such-page"] = contrast_failures(driver), driver.title
            return found, titles, unnamed

        found, titles, unnamed = await in_browser(visit)
    failing = {page: failures for page, failures in found.items() if failures}
    assert not failing, "text below WCAG AA contrast:\n" + _report(failing)
    assert len(set(titles.values())) == len(titles), titles  # every page tells itself apart
    assert all(title != "jobsys" and "NiceGUI" not in title for title in titles.values()), titles
    assert titles["/"] == t("page_title", page=t("nav_jobs"))
    assert not any(unnamed.values()), f"controls without an accessible name: {unnamed}"


@needs_chromium
async def test_keyboard_focus_is_visible_and_the_menu_marks_the_current_page(
        clean_nicegui: None, jobs: JobSystem, tmp_path: pathlib.Path) -> None:
    async with live_dashboard(jobs, tmp_path / "storage") as base:

        def use(driver: WebDriver) -> tuple[list[dict[str, Any]], dict[str, str | None], bool]:
            log_in(driver, base)
            open_page(driver, f"{base}/background-jobs", "nav_background")
            current = {a.text: a.get_attribute("aria-current")
                       for a in driver.find_elements(By.CSS_SELECTOR, "header nav a")}
            menu_button_shown = driver.find_element(By.CSS_SELECTOR, f"header button[aria-label='{t('menu')}']"
                                                    ).is_displayed()
            focused: list[dict[str, Any]] = []
            for _ in range(12):  # the header's links and buttons, then the page's
                ActionChains(driver).send_keys(Keys.TAB).perform()
                state = driver.execute_script(FOCUS_JS)
                if state is not None:
                    focused.append(state)
            return focused, current, menu_button_shown

        focused, current, menu_button_shown = await in_browser(use)
    assert current == {t("nav_jobs"): None, t("nav_devices"): None, t("nav_background"): "page",
                       t("nav_pcs"): None, t("nav_audit"): None}, current
    assert not menu_button_shown  # wide screen: the pages are in the header itself
    assert {f["tag"] for f in focused} >= {"a", "button"}, focused
    for state in focused:  # every stop shows a ring of at least 2 px
        assert state["visible"] and state["style"] != "none" and state["width"] >= 2, state
