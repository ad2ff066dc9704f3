"""The dashboard on a real port (nicegui_app.server.serve, in the test's event loop) with a
little of everything to show, and Debian's headless Chromium on it, for the accessibility and
phone-layout tests. Selenium blocks, so the browser side runs in a thread (`in_browser`)."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import uuid
from typing import Any, AsyncIterator, Callable, TypeVar

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from jobsys.batch.facade import BatchJobs
from jobsys.system import JobSystem
from nicegui_app.i18n import Translator
from nicegui_app.server import serve
from tests.core.helpers import add_worker
from tests.dashboard.pages import finish_runs
from tests.support.browser import LANGUAGE, chromium
from tests.support.processes import free_port
from tests.support.waiting import wait_for, wait_until

TOKEN = "a11y-test-token-0123456789"
UI_TIMEOUT_S = 30.0
PHONE = (390, 844)  # an iPhone 12-14 screen in CSS pixels, as the issue measured
LONG_TITLE = " ".join(["야간 점검 – 매장 로비 디스플레이의 시청 확인"] * 3)
LONG_URL = "https://example.com/stores/seoul/gangnam/lobby/displays/" + "x" * 80
t = Translator(LANGUAGE)
ResultT = TypeVar("ResultT")

# Every page the contrast and overflow checks visit: (path, heading or None for a page without one).
PAGES: tuple[tuple[str, str], ...] = (
    ("/", "nav_jobs"),
    ("/devices", "nav_devices"),
    ("/pcs", "nav_pcs"),
    ("/background-jobs", "nav_background"),
    ("/audit", "nav_audit"),
)


# WCAG 2.1 AA by computed colour: each visible text against its effective background (the first
# opaque background up its ancestors, the translucent ones on the way blended in) must reach
# 4.5:1, large text and icons 3:1. Returns the texts below AA: {text, element, ratio, needed, colour, background}.
CONTRAST_JS = """
const canvas = document.createElement('canvas');
canvas.width = canvas.height = 1;
const paint = canvas.getContext('2d', {willReadFrequently: true});
const rgba = (css) => {  // any CSS colour (rgb, oklch, ...) as sRGB 0-255 and alpha 0-1
  paint.clearRect(0, 0, 1, 1);
  paint.fillStyle = '#000';
  paint.fillStyle = css;
  paint.fillRect(0, 0, 1, 1);
  const [r, g, b, a] = paint.getImageData(0, 0, 1, 1).data;
  return [r, g, b, a / 255];
};
const over = (top, below) => top.slice(0, 3).map((c, i) => c * top[3] + below[i] * (1 - top[3]));
const luminance = (rgb) => {
  const [r, g, b] = rgb.map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const ratio = (a, b) => { const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
const background = (element) => {
  const layers = [];
  for (let node = element; node; node = node.parentElement) {
    const colour = rgba(getComputedStyle(node).backgroundColor);
    if (colour[3] > 0) { layers.push(colour); if (colour[3] >= 1) break; }
  }
  return layers.reverse().reduce((below, layer) => over(layer, below), [255, 255, 255]);
};
const opacity = (element) => {
  let product = 1;
  for (let node = element; node; node = node.parentElement) product *= Number(getComputedStyle(node).opacity);
  return product;
};
const failures = [];
for (const element of document.body.querySelectorAll('*')) {
  const text = [...element.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE)
    .map((n) => n.textContent).join('').trim();
  if (!text || ['SCRIPT', 'STYLE', 'NOSCRIPT', 'TITLE'].includes(element.tagName)) continue;
  const style = getComputedStyle(element);
  if (style.visibility !== 'visible' || element.getClientRects().length === 0) continue;
  // WCAG exempts inactive controls (Quasar draws them at 60 % opacity).
  if (element.closest('[disabled], .disabled, [aria-disabled="true"]')) continue;
  const seen = opacity(element);
  if (seen === 0) continue;
  const colour = rgba(style.color);
  colour[3] *= seen;
  const behind = background(element);
  const value = ratio(over(colour, behind), behind);
  const size = parseFloat(style.fontSize);
  const icon = element.closest('.q-icon, .material-icons') !== null;  // a graphic: 3:1 (1.4.11)
  const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
  const needed = icon || large ? 3 : 4.5;
  if (value + 1e-6 < needed) {
    failures.push({text: text.slice(0, 60), element: element.tagName.toLowerCase() + '.' +
      [...element.classList].join('.'), ratio: Math.round(value * 100) / 100, needed,
      colour: style.color, background: 'rgb(' + behind.map(Math.round).join(', ') + ')'});
  }
}
return failures;
"""




def contrast_failures(driver: WebDriver) -> list[dict[str, Any]]:
    """The visible texts of the page as it is now that miss WCAG AA contrast."""
    return list(driver.execute_script(CONTRAST_JS))


@contextlib.asynccontextmanager
async def live_dashboard(jobs: JobSystem, storage: pathlib.Path) -> AsyncIterator[str]:
    """serve() on a free loopback port until the block ends; its base URL."""
    port = free_port()
    task = asyncio.create_task(serve(jobs, host="127.0.0.1", port=port, token=TOKEN, storage_secret="a11y",
                                     storage_dir=storage))
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            async def up() -> bool:
                if task.done():
                    task.result()  # raises why it stopped
                try:
                    return (await client.get("/login")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(up, timeout_s=UI_TIMEOUT_S, what="the dashboard up")
        yield base
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)


async def seed(jobs: JobSystem) -> None:
    """Something in every state the pages colour: jobs active (with completed, failed and running
    runs), paused, cancelled and scheduled with a long title and URL; a draining and a disabled
    device; a PC account; AI batches waiting and cancelled; audit entries from all of it."""
    session = await add_worker(jobs, "w1", 6)
    active = await jobs.create_job(target_url=LONG_URL, duration_sec=60, title=LONG_TITLE,
                                   target_type="device_count", target_value=4)
    await finish_runs(jobs, session.worker_id, completed=1, failed=1, running=1)
    paused = await jobs.create_job(target_url="https://example.com/paused", duration_sec=60,
                                   target_type="device_count", target_value=1)
    await jobs.pause_job(paused.job.id)
    cancelled = await jobs.create_job(target_url="https://example.com/cancelled", duration_sec=60,
                                      target_type="device_count", target_value=1)
    await jobs.cancel_job(cancelled.job.id)
    assert active.job.id
    devices = (await jobs.list_devices()).devices
    idle = [d for d in devices if d.current_job_id is None]
    await jobs.set_device_state(idle[0].id, "draining")
    await jobs.set_device_state(idle[1].id, "disabled")
    await jobs.add_worker_account(f"pc-{uuid.uuid4().hex[:6]}")
    batch = BatchJobs.of(jobs)
    await batch.create_job(template="요약: {text}", items=[{"text": "첫째"}, {"text": "둘째"}], title="주간 요약")
    stopped = await batch.create_job(template="요약: {text}", items=[{"text": "셋째"}], title="중지한 요약")
    await batch.cancel_job(stopped.id)


def log_in(driver: WebDriver, base: str) -> None:
    driver.get(f"{base}/login")
    field = (By.CSS_SELECTOR, f"input[aria-label='{t('token')}']")
    wait_for(lambda: bool(driver.find_elements(*field)), UI_TIMEOUT_S, "the token field")
    driver.find_element(*field).send_keys(TOKEN, Keys.ENTER)
    wait_for(lambda: "/login" not in driver.current_url, UI_TIMEOUT_S, "the page after the login")


def open_page(driver: WebDriver, url: str, heading: str | None) -> None:
    """Load `url` and wait until its heading shows and the page has settled (fonts, layout)."""
    driver.get(url)

    def shown() -> bool:
        if heading is not None and not driver.find_elements(
                By.XPATH, f"//*[@role='heading' and normalize-space()='{t(heading)}']"):
            return False
        return bool(driver.execute_script(
            "return document.readyState === 'complete' && document.fonts.status === 'loaded'"
            " && !document.querySelector('.q-loading');"))

    wait_for(shown, UI_TIMEOUT_S, f"{url} to show")
    settle(driver)


def settle(driver: WebDriver) -> None:
    """Until the page stops changing (no DOM mutation for two animation frames, and transitions
    such as a dialog's have ended): what it shows is then what the checks read."""
    driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        let quietFrames = 0;
        const observer = new MutationObserver(() => { quietFrames = 0; });
        observer.observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
        const tick = () => {
          const moving = document.getAnimations().some((a) => a.playState === 'running');
          quietFrames = moving ? 0 : quietFrames + 1;
          if (quietFrames >= 2) { observer.disconnect(); done(true); } else { requestAnimationFrame(tick); }
        };
        requestAnimationFrame(tick);
    """)


async def in_browser(work: Callable[[WebDriver], ResultT], size: tuple[int, int] | None = None) -> ResultT:
    """Run `work` with a fresh headless Chromium (in a thread: the server runs in this loop)."""
    def run() -> ResultT:
        with chromium("jobsys-a11y-") as driver:
            if size is not None:
                driver.set_window_size(*size)
                # The window's outer size includes no chrome in headless mode; make the viewport exact.
                inner = driver.execute_script("return [window.innerWidth, window.innerHeight];")
                driver.set_window_size(size[0] * 2 - inner[0], size[1] * 2 - inner[1])
            return work(driver)

    return await asyncio.to_thread(run)
