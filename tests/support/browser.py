"""Headless Chromium (Debian's chromium + chromium-driver) through chromedriver, started
the same way by the end-to-end test (tests/e2e) and the browser benchmark
(bench/browser_latency.py)."""

from __future__ import annotations

import contextlib
import pathlib
import shutil
import tempfile
from typing import Iterator

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = pathlib.Path("/usr/bin/chromium")
CHROMEDRIVER = pathlib.Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers give /dev/shm 64 MB; Chromium would crash on it
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)
LANGUAGE = "ko"  # the dashboard's first language; fonts-noto-cjk makes a screenshot readable


def absent() -> list[str]:
    """The browser's programs that are not installed here."""
    return [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]


@contextlib.contextmanager
def chromium(profile_prefix: str, language: str = LANGUAGE) -> Iterator[WebDriver]:
    """A headless Chromium with a fresh profile, quit and removed afterwards."""
    profile = tempfile.mkdtemp(prefix=profile_prefix)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--lang={language}"):
        options.add_argument(flag)
    # Accept-Language picks the dashboard's language; pin it so the labels are known.
    options.add_experimental_option("prefs", {"intl.accept_languages": language})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
