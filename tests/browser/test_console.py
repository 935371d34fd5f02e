"""The console and /docs in a real browser: Debian's chromium (apt-get install chromium; .ci/run
installs it when missing) driven by Playwright's Python package, never a downloaded browser.

One console app of its own, beside the session's: its charts sample a consumer-like metrics
endpoint (prometheus_client over real HTTP) every half second. Flags come from two gate
settlements of one code, recorded by the session's consumer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, Request, async_playwright

from service.api.app import create_app
from service.settings import Settings
from tests import factories as f
from tests.conftest import serving
from tests.metrics_source import MetricsSource

pytestmark = pytest.mark.usefixtures("consumer")

CHROMIUM = "/usr/bin/chromium"
INSTALLED = Path(CHROMIUM).exists()
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WAIT_MS = 20_000
# The first colour of every chart (console.js COLORS[0]): its pixels mean a line was drawn.
LINE_RGB = (0x0B, 0x6B, 0xCB)


@pytest.fixture(scope="module")
async def console_url(settings: Settings) -> AsyncIterator[str]:
    process = MetricsSource()

    async def busy() -> None:
        while True:
            process.work()
            await asyncio.sleep(0.1)

    with process.served() as metrics_url:
        own = settings.model_copy(update={"metrics_urls": [metrics_url],
                                          "console_sample_interval_s": 0.5})
        app = create_app(own)
        working = asyncio.create_task(busy())
        async with app.router.lifespan_context(app), serving(app) as url:
            yield url
        working.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await working


@pytest.fixture(scope="module")
async def browser(console_url: str) -> AsyncIterator[Browser]:
    assert INSTALLED, "apt-get install chromium (.ci/run does it on CI)"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        await launched.close()


def _watch_requests(page: Page, origin: str) -> list[str]:
    """Every URL the page asks for that is not its own origin's (a CDN, say), and every
    script error or console error (a blocked asset, a policy violation) as `error: …`."""
    elsewhere: list[str] = []

    def seen(request: Request) -> None:
        if not request.url.startswith((origin, "data:")):
            elsewhere.append(request.url)

    page.on("request", seen)
    page.on("pageerror", lambda error: elsewhere.append(f"error: {error}"))
    page.on("console", lambda message: elsewhere.append(f"error: {message.text}")
            if message.type == "error" else None)
    return elsewhere


async def _mint(api: httpx.AsyncClient, admin: dict[str, str], role: str) -> tuple[int, str]:
    response = await api.post("/v1/api-keys", json={"role": role}, headers=admin)
    assert response.status_code == 201, response.text
    return response.json()["key_id"], response.json()["key"]


async def _line_pixels(page: Page, chart: str) -> int:
    """How many pixels of the chart's canvas are in its first line colour."""
    count: int = await page.evaluate("""([selector, rgb]) => {
        const canvas = document.querySelector(selector);
        if (!canvas) return 0;
        const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let n = 0;
        for (let i = 0; i < pixels.length; i += 4) {
          if (Math.abs(pixels[i] - rgb[0]) < 8 && Math.abs(pixels[i + 1] - rgb[1]) < 8
              && Math.abs(pixels[i + 2] - rgb[2]) < 8 && pixels[i + 3] > 200) n++;
        }
        return n;
    }""", [f"#{chart} canvas", list(LINE_RGB)])
    return count


async def _signed_in(browser: Browser, console_url: str, key: str) -> tuple[Page, list[str]]:
    """A console page signed in with `key`, and what it asked of elsewhere (see above)."""
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    elsewhere = _watch_requests(page, console_url)
    await page.goto(f"{console_url}/console")
    await page.fill("#key", key)
    await page.click("#sign-in-form button[type=submit]")
    await page.wait_for_selector("#app:not([hidden])", timeout=WAIT_MS)
    return page, elsewhere


async def test_sign_in_watch_a_flag_arrive_close_its_case_and_see_the_charts(
    browser: Browser, console_url: str, api: httpx.AsyncClient, admin_headers: dict[str, str],
    tmp_path: Path,
) -> None:
    ops_id, ops_key = await _mint(api, admin_headers, "ops")
    page, elsewhere = await _signed_in(browser, console_url, ops_key)
    assert await page.evaluate("sessionStorage.getItem('tracegate.key')") == ops_key
    assert ops_key not in page.url
    await page.locator("#feed-state.live").wait_for(timeout=WAIT_MS)

    a, b = await f.register(api, admin_headers), await f.register(api, admin_headers)
    code = f.cn20()
    first = f.settlement(a, [f.line(1, [code])])
    await f.settle(api, admin_headers, first)
    answer = await f.settle(api, admin_headers, f.settlement(b, [f.line(1, [code])]))
    [flag_id] = answer["flags"]
    row = f'#feed-rows tr[data-flag-id="{flag_id}"]'
    await page.wait_for_selector(row, timeout=WAIT_MS)  # arrived live, over the stream

    await page.click(row)
    await page.wait_for_selector("#case-apply", timeout=WAIT_MS)
    assert first["settlement_id"] in await page.inner_text("#case-body .pair .first")
    assert await page.locator("#case-body .timeline li.first").count() == 1
    await page.screenshot(path=str(tmp_path / "case.png"))
    await page.select_option("#case-status", "closed")
    await page.select_option("#case-resolution", "legitimate")
    await page.fill("#case-note", "a return the pharmacy had not recorded yet")
    await page.click("#case-apply")
    await page.wait_for_selector("#case-body h2 .status-closed", timeout=WAIT_MS)
    case = (await api.get(f"/v1/flags/{flag_id}", headers=admin_headers)).json()
    assert (case["status"], case["resolution"]) == ("closed", "legitimate")
    assert case["history"][-1]["by"] == {"key_id": ops_id, "role": "ops"}
    await page.click("#case .close button")
    assert await page.get_attribute(f"{row} .status", "data-status") == "closed"

    await page.click("#tabs button[data-tab=charts]")
    charts = ("chart-codes", "chart-flags", "chart-gate", "chart-lag", "chart-dlq")
    for chart in charts:
        await page.wait_for_selector(f"#{chart} canvas", timeout=WAIT_MS)
    drawn = await _wait_for_lines(page, charts)
    assert all(n > 20 for n in drawn.values()), drawn
    assert len(await page.screenshot(path=str(tmp_path / "console.png"), full_page=True)) > 10_000
    assert elsewhere == []
    await page.close()


async def _wait_for_lines(page: Page, charts: tuple[str, ...]) -> dict[str, Any]:
    """Each chart's line pixels, once every chart has drawn a line (the series refresh every
    5 s; the sampler needs two samples for a rate)."""
    drawn: dict[str, Any] = {}
    for _ in range(60):
        drawn = {chart: await _line_pixels(page, chart) for chart in charts}
        if all(n > 20 for n in drawn.values()):
            break
        await asyncio.sleep(0.5)
    return drawn


async def test_a_pos_key_cannot_sign_in_and_a_bad_key_is_told_so(
    browser: Browser, console_url: str, api: httpx.AsyncClient, admin_headers: dict[str, str],
) -> None:
    pharmacy = await f.register(api, admin_headers)
    pos = (await f.key_for(api, admin_headers, "pos", pharmacy))["Authorization"][7:]
    page = await browser.new_page()
    await page.goto(f"{console_url}/console")
    for key, words in ((pos, "cannot use the console"), ("tg_not_a_key", "Unknown or revoked")):
        await page.fill("#key", key)
        await page.click("#sign-in-form button[type=submit]")
        await page.locator("#sign-in-error", has_text=words).wait_for(timeout=WAIT_MS)
        assert await page.evaluate("sessionStorage.getItem('tracegate.key')") is None
        await page.evaluate("document.getElementById('sign-in-error').textContent = ''")
    assert await page.is_hidden("#app")
    await page.close()


async def test_the_docs_load_with_no_request_leaving_the_service(
    browser: Browser, console_url: str, tmp_path: Path
) -> None:
    page = await browser.new_page()
    elsewhere = _watch_requests(page, console_url)
    await page.goto(f"{console_url}/docs")
    await page.wait_for_selector(".swagger-ui .info .title", timeout=WAIT_MS)
    assert "tracegate" in await page.inner_text(".swagger-ui .info .title")
    await page.wait_for_selector(".opblock-tag", timeout=WAIT_MS)
    assert await page.locator(".opblock").count() >= 15
    await page.screenshot(path=str(tmp_path / "docs.png"))
    assert elsewhere == []
    await page.close()


async def test_a_regulator_looks_a_code_and_an_institution_up(
    browser: Browser, console_url: str, api: httpx.AsyncClient, admin_headers: dict[str, str],
) -> None:
    a, b = await f.register(api, admin_headers), await f.register(api, admin_headers)
    code = f.cn20()
    await f.settle(api, admin_headers, f.settlement(a, [f.line(1, [code])]))
    [flag_id] = (await f.settle(api, admin_headers, f.settlement(b, [f.line(1, [code])])))[
        "flags"]
    _, key = await _mint(api, admin_headers, "regulator")
    page, elsewhere = await _signed_in(browser, console_url, key)

    await page.click("#tabs button[data-tab=code]")
    flag_row = f'#code-result tr[data-flag-id="{flag_id}"]'
    for _ in range(40):  # the record trails the gate: look again until the flag is there
        await page.fill("#code-input", code)
        await page.click("#code-form button[type=submit]")
        await page.wait_for_selector("#code-result table, #code-result .error", timeout=WAIT_MS)
        if await page.locator(flag_row).count():
            break
        await asyncio.sleep(0.25)
    events = await page.locator("#code-result table:first-of-type tbody tr").all_inner_texts()
    assert len(events) == 1
    assert "payment" in events[0]
    assert a in events[0]

    await page.click("#tabs button[data-tab=institution]")
    await page.fill("#institution-input", b)
    await page.click("#institution-form button[type=submit]")
    await page.wait_for_selector(f'#institution-result tr[data-flag-id="{flag_id}"]',
                                 timeout=WAIT_MS)
    shown = await page.inner_text("#institution-result")
    assert f"test {b}" in shown  # the institution record (a regulator may read it)
    assert "false-alert rate" in shown
    assert elsewhere == []
    await page.close()
