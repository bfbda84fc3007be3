"""A visitor in a real browser: type a prompt, click Run, see the chart, three columns and timings.

Drives Debian's chromium with Playwright (no browser download). Skipped, with the reason, where no
chromium is installed (``scripts/setup.sh --test`` installs it).
"""

import os
import re
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
SHOT = Path(os.environ.get("DLP_SCREENSHOT_DIR", Path(__file__).resolve().parent.parent / "runs"))


def _browser(p):
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"])


def _open(browser, url, width, height):
    """A page at this size with the app loaded (the prompt box is there)."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url, wait_until="load")
    page.locator("#prompt textarea").wait_for(timeout=30_000)
    return page


def test_type_run_and_see_everything(tiny_app_url):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = _open(browser, tiny_app_url, 1400, 1300)
            page.locator("#prompt textarea").fill("what is the sum of two and three apples")
            page.locator("#run").click()
            for box in ("#out-base", "#out-single", "#out-fused"):
                expect(page.locator(f"{box} textarea")).not_to_have_value("", timeout=30_000)
            expect(page.locator("#router-chart .js-plotly-plot")).to_be_visible(timeout=30_000)
            expect(page.locator("#timing")).to_contain_text("decode tok/s", timeout=30_000)
            expect(page.locator("#timing .js-plotly-plot")).to_be_visible(timeout=30_000)
            expect(page.get_by_text("tok/s ·").first).to_be_visible()
            expect(page.locator("#export")).to_be_visible(timeout=30_000)  # the run record, once the run is done
            expect(page.locator("#diff")).to_contain_text("vs base model")
            expect(page.locator("#run-prompt")).to_contain_text("sum of two and three apples")
            SHOT.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOT / "browser_compare.png"), full_page=True)

            # Bad input: a message in the page, and the earlier outputs stay.
            fused_before = page.locator("#out-fused textarea").input_value()
            page.locator("#prompt textarea").fill("   ")
            page.locator("#run").click()
            expect(page.get_by_text("The prompt is empty").first).to_be_visible(timeout=15_000)
            assert page.locator("#out-fused textarea").input_value() == fused_before
            page.screenshot(path=str(SHOT / "browser_error.png"), full_page=False)
        finally:
            browser.close()


def test_a_new_run_replaces_the_one_on_screen(tiny_app_url):
    """Run, then Run again with another prompt at once: the page ends up showing the second run, with its
    prompt above the answers; Stop ends a run and keeps what was written."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.goto(tiny_app_url, wait_until="load")
            box = page.locator("#prompt textarea")
            box.fill("what is the sum of two and three apples")
            page.locator("#run").click()
            box.fill("translate the food review to french please")
            page.locator("#run").click()
            expect(page.locator("#run-prompt")).to_contain_text("translate the food review", timeout=30_000)
            expect(page.locator("#out-fused textarea")).not_to_have_value("", timeout=30_000)
            page.locator("#stop").click()
            expect(page.locator("#run-prompt")).to_contain_text("translate the food review")
            # Stop is a clean end: the run record and the diffs come, and no output shows an error badge.
            expect(page.locator("#export")).to_be_visible(timeout=30_000)
            expect(page.locator("#diff")).to_contain_text("vs base model")
            assert page.get_by_text("Error", exact=True).count() == 0
            # Moving top-p after a run previews the new routing and says the answers are from the earlier run.
            page.locator("#top-p input[type=number]").fill("0.3")
            page.locator("#top-p input[type=number]").press("Enter")
            expect(page.get_by_text("Preview only").first).to_be_visible(timeout=15_000)
        finally:
            browser.close()


def test_address_prefills_the_form(tiny_app_url):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(tiny_app_url + "?prompt=translate%20the%20food%20review&top_p=0.5", wait_until="load")
            expect(page.locator("#prompt textarea")).to_have_value("translate the food review", timeout=30_000)
            expect(page.locator("#top-p input[type=number]")).to_have_value("0.5")
        finally:
            browser.close()


def test_answers_in_view_and_a_share_link_that_reruns(tiny_app_url):
    """After Run the answers are on screen at 1500x1000 without scrolling by hand; the Share link carries
    the prompt and settings, and opening it fills the form and runs."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = _open(browser, tiny_app_url, 1500, 1000)
            page.locator("#prompt textarea").fill("how many apples are left")
            page.locator("#top-p input[type=number]").fill("0.5")
            page.locator("#top-p input[type=number]").press("Enter")
            page.locator("#run").click()
            expect(page.locator("#out-fused textarea")).not_to_have_value("", timeout=30_000)
            box = page.locator("#out-fused").bounding_box()
            assert box and 0 <= box["y"] and box["y"] + 120 <= 1000, box
            page.locator("#share").click()
            link = page.locator("#share-link input, #share-link textarea").first
            expect(link).to_have_value(re.compile("run=1"), timeout=15_000)
            url = link.input_value()
            assert "top_p=0.5" in url and "apples" in url
            other = browser.new_page(viewport={"width": 1500, "height": 1000})
            other.goto(url, wait_until="load")
            expect(other.locator("#prompt textarea")).to_have_value("how many apples are left", timeout=30_000)
            expect(other.locator("#top-p input[type=number]")).to_have_value("0.5")
            expect(other.locator("#run-prompt")).to_contain_text("how many apples are left", timeout=30_000)
        finally:
            browser.close()
