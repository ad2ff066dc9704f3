"""The whole product in a real browser: `jobsys up` (embedded Postgres, dashboard, simulated
worker) in a subprocess, driven by headless Chromium the way an operator would use it."""

from __future__ import annotations

import secrets
import shutil
import uuid

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from jobsys.models import title_from_url
from nicegui_app.i18n import Translator
from tests.e2e import browser
from tests.support.browser import LANGUAGE, chromium
from tests.support.postgres import world_traversable_dir
from tests.support.processes import free_port

SIM_DEVICES = 5
SIM_SPEED = 20  # a 20 s display runs in about 1 s
DURATION_SEC = 20
STARTUP_TIMEOUT_S = 120  # first start: initdb + migrations
UI_TIMEOUT_S = 30
COMPLETION_TIMEOUT_S = 90
STOP_TIMEOUT_S = 60

t = Translator(LANGUAGE)

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=browser.missing() or "")


# Locators: NiceGUI's markers stay on the server, so the page is found by its visible labels
# (Quasar gives every input an aria-label equal to its label).
def _input(label: str, within: str = "") -> tuple[str, str]:
    return By.CSS_SELECTOR, f"{within} input[aria-label='{label}']".strip()


def _button(text: str, within: str = "") -> tuple[str, str]:
    return By.XPATH, f"{within}//button[.//span[contains(@class, 'block') and normalize-space()='{text}']]"


DIALOG = "//div[contains(@class, 'q-dialog')]"


def _job_card(url: str) -> tuple[str, str]:
    return By.XPATH, f"//tbody[.//div[normalize-space()='{url}']]"  # the job's row in the jobs table


def _replace_text(field: WebElement, text: str) -> None:
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(text, Keys.TAB)  # leaving the field commits a number input


def _log_in(driver: WebDriver, base_url: str, token: str) -> None:
    wait = WebDriverWait(driver, UI_TIMEOUT_S)
    driver.get(f"{base_url}/")
    wait.until(ec.url_contains("/login"))  # every page is behind the token
    wait.until(ec.visibility_of_element_located(_input(t("token")))).send_keys(token)
    driver.find_element(*_button(t("login"))).click()
    wait.until(ec.visibility_of_element_located(_button(t("new_job"))))
    assert "/login" not in driver.current_url


def _create_job(driver: WebDriver, url: str) -> None:
    wait = WebDriverWait(driver, UI_TIMEOUT_S)
    driver.find_element(*_button(t("new_job"))).click()
    wait.until(ec.visibility_of_element_located((By.XPATH, DIALOG)))
    wait.until(ec.visibility_of_element_located(_input("URL", ".q-dialog"))).send_keys(url)
    # The title follows the URL until the operator types one.
    title = driver.find_element(*_input(t("title"), ".q-dialog"))
    wait.until(lambda _: title.get_attribute("value") == title_from_url(url))
    _replace_text(driver.find_element(*_input(t("duration"), ".q-dialog")), str(DURATION_SEC))
    # The hint shows every connected device, and the button is enabled only for a valid form.
    wait.until(ec.text_to_be_present_in_element((By.XPATH, DIALOG), t("hint_all", n=SIM_DEVICES)))
    wait.until(ec.element_to_be_clickable(_button(t("create"), DIALOG))).click()
    wait.until(ec.invisibility_of_element_located((By.XPATH, DIALOG)))


def _completed(card: WebElement) -> bool:
    bar = card.find_element(By.CSS_SELECTOR, "[role='progressbar']")
    texts = [e.text for e in card.find_elements(By.XPATH, ".//div")]
    return (
        bar.get_attribute("aria-valuenow") == str(SIM_DEVICES)
        and t("progress", done=SIM_DEVICES, target=SIM_DEVICES, pct=100) in texts
        and t("progress_counts", done=SIM_DEVICES, target=SIM_DEVICES, failed=0) in texts
    )


def _bar_drawn_full(driver: WebDriver, card: WebElement) -> bool:
    """The bar as drawn, not only its value: its completed segment fills it."""
    return bool(driver.execute_script(
        "const bar = arguments[0].querySelector('[role=progressbar]');"
        "const done = bar.firstElementChild;"
        "return done.getBoundingClientRect().width >= bar.getBoundingClientRect().width - 0.5;",
        card,
    ))


def test_operator_creates_a_job_and_watches_it_finish_in_chromium() -> None:
    browser.ARTIFACTS.mkdir(exist_ok=True)
    screenshot = browser.ARTIFACTS / "job_completed.png"
    failure = browser.ARTIFACTS / "failure.png"
    for stale in (screenshot, failure):
        stale.unlink(missing_ok=True)
    workdir = world_traversable_dir("jobsys-e2e-")
    token = secrets.token_urlsafe(24)
    server = browser.JobsysUp(
        data_dir=workdir / "data", port=free_port(), token=token,
        log_path=browser.ARTIFACTS / "jobsys_up.log",
        extra_args=["--sim-devices", str(SIM_DEVICES), "--sim-speed", str(SIM_SPEED)],
    )
    try:
        server.wait_ready(STARTUP_TIMEOUT_S)
        with chromium("jobsys-e2e-chromium-") as driver:
            try:
                _log_in(driver, server.url, token)
                # The header's live count reaches every simulated device once the worker registers.
                WebDriverWait(driver, UI_TIMEOUT_S).until(
                    ec.text_to_be_present_in_element((By.TAG_NAME, "header"), t("connected", n=SIM_DEVICES)))

                driver.execute_script("window.__samePage = true;")  # gone if the page reloads
                job_url = f"https://example.com/e2e/{uuid.uuid4().hex[:8]}"
                _create_job(driver, job_url)
                card = WebDriverWait(driver, UI_TIMEOUT_S).until(
                    ec.visibility_of_element_located(_job_card(job_url)))
                # Pushed to the page as the simulated devices finish, without a reload.
                WebDriverWait(driver, COMPLETION_TIMEOUT_S).until(lambda _: _completed(card))
                WebDriverWait(driver, UI_TIMEOUT_S).until(lambda d: _bar_drawn_full(d, card))
                assert driver.execute_script("return window.__samePage === true;")
                assert t("job_status_completed") in card.find_element(By.CSS_SELECTOR, ".q-badge").text
                assert driver.save_screenshot(str(screenshot))
            except Exception:
                driver.save_screenshot(str(failure))
                raise
            assert screenshot.stat().st_size > 0
            # Ctrl-C with the operator's page still open: the server closes its websocket.
            assert server.interrupt(STOP_TIMEOUT_S) == 0, server.output()
        assert "stopped" in server.output()
    finally:
        server.close()
        shutil.rmtree(workdir, ignore_errors=True)
