"""The dashboard in a real headless Chromium: log in, read the seeded store's numbers, screenshot.

Runs the real app under uvicorn on a free port against a seeded SQLite store, and drives
Debian's Chromium with Playwright. Skips when Chromium or Playwright is missing. Set
``FOOTFALL_SCREENSHOT=/some/file.png`` to keep the screenshot.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from footfall.hub import auth, segment_clusters, segments, store
from footfall.hub.api import WebSettings, create_app
from footfall.hub.sensors import mark_replayed
from footfall.tools.bench.seed_store import SITE as SEED_SITE
from footfall.tools.bench.seed_store import build
from tests.conftest import Served

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "shop-floor-42"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install -y chromium)"
    ),
]


def signed_in(browser: Any, base: str, **context: Any) -> tuple[Any, list[str]]:
    """A page of a new browser context (``context``: its options) signed in as the manager, the
    dashboard loaded, and the page errors it records from then on."""
    page = browser.new_context(**context).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base + "/login")
    page.fill("#username", "manager")
    page.fill("#password", PASSWORD)
    page.click("#submit")
    page.wait_for_url(base + "/")
    page.wait_for_selector("body[data-loaded='1']", timeout=20_000)
    return page, errors


def _trading_zone() -> str:
    """A store zone where it is now between noon and 9 pm: the seeded store trades 08-21, so
    before it opens "today" has no visits (the test then failed from 23:00 to 07:00 UTC with
    Paris). The zones' offsets leave no gap of 9 hours, so one always fits."""
    now = datetime.now(UTC)
    for tz in ZONES:
        if 12 <= now.astimezone(ZoneInfo(tz)).hour < 21:
            return tz
    raise AssertionError(f"no zone in {ZONES} trades at {now:%H:%M} UTC")


ZONES = ("Europe/Paris", "America/New_York", "America/Los_Angeles", "Asia/Kolkata", "Asia/Tokyo", "Pacific/Auckland")
STORE_TZ = _trading_zone()
# The browser in another zone than the store: every time shown must still be the store's.
BROWSER_TZ = "Asia/Tokyo" if STORE_TZ == "America/Los_Angeles" else "America/Los_Angeles"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, API key) of a running hub serving a seeded store."""
    db = tmp_path_factory.mktemp("browser") / "hub.db"
    build(db, 40_000, 21, tz=STORE_TZ, seed=7)
    conn = store.connect(db)
    auth.add_user(conn, "manager", PASSWORD)
    key = auth.create_api_key(conn, "browser-test")
    # Segments: clusters over the last two days (a small window keeps this quick) and two rule
    # segments recounted three times, so the dashboard has sizes and a trend to show.
    segment_clusters.run_clustering(conn, lookback_days=2, k_range=(2, 4))
    t = time.time()
    segments.create_segment(conn, "quick look-ins", {"field": "max_dwell_s", "op": "<", "value": 300}, now=t - 7200)
    segments.create_segment(
        conn, "regulars", {"field": "visit_days", "op": ">=", "value": 3}, dynamic=False, now=t - 7200
    )
    segments.refresh_segments(conn, now=t - 3600)
    segments.refresh_segments(conn, now=t)
    # A fifth sensor whose data is a replay, as in the demo: neither online nor offline.
    mark_replayed(conn, SEED_SITE, ["replay-s9"], until=t - 600)
    conn.close()
    # Presence stays "fresh" for the whole test however slow the machine: the number shown
    # must then equal the API's exactly.
    app = create_app(db, WebSettings(tz=STORE_TZ, refresh_interval_s=5, presence_max_age_s=3600))
    served = Served(app, lifespan="on")
    yield served.url, key
    served.stop()


def no_horizontal_overflow(page, width: int) -> None:
    """The document is no wider than the viewport and nothing in a card is cut off (the page
    was once 508 px wide on a phone, with its tables cut off). A table wider than the screen
    must scroll inside a box of its own (itself or an ancestor with overflow-x auto/scroll)
    that fits the screen, never widen the page."""
    widths = page.evaluate("() => [document.documentElement.scrollWidth, document.body.scrollWidth]")
    assert max(widths) <= width, f"page is {max(widths)} px wide on a {width} px screen"
    cut = page.evaluate(
        """() => {
            const scrolls = (e) => ['auto', 'scroll'].includes(getComputedStyle(e).overflowX);
            const fits = (e) => e.getBoundingClientRect().right <= window.innerWidth + 0.5;
            const bad = [...document.querySelectorAll('.topbar, .kpi, .card, svg')]
                .filter((e) => !fits(e) || (!(e instanceof SVGElement) && e.scrollWidth > e.clientWidth + 1));
            for (const t of document.querySelectorAll('table')) {
                let box = t;
                while (box && box !== document.body && !scrolls(box)) box = box.parentElement;
                const scroller = box && box !== document.body ? box : null;
                if (scroller ? !fits(scroller) : !fits(t) || t.scrollWidth > t.clientWidth + 1) bad.push(t);
            }
            return bad.map((e) => e.id || e.getAttribute('class') || e.tagName);
        }"""
    )
    assert cut == [], f"wider than the screen or cut off: {cut}"


def _digits_pattern(n: int) -> str:
    """``n`` as the page may print it, with any thousands separator."""
    return "^" + r"\D?".join(str(n)) + "$"


def _chromium():
    return pytest.importorskip("playwright.sync_api")


def test_login_numbers_and_screenshot(server: tuple[str, str], tmp_path: Path) -> None:
    base, key = server
    sync_api = _chromium()
    expect = sync_api.expect
    headers = {"X-API-Key": key}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 1000}, timezone_id=BROWSER_TZ)
            failed: list[str] = []
            # Nothing may come from outside the hub (no CDN): record any foreign request.
            page.on("request", lambda r: None if r.url.startswith((base, "data:")) else failed.append(r.url))
            page.goto(base + "/")
            page.wait_for_url(base + "/login")
            page.fill("#username", "manager")
            page.fill("#password", "wrong password")
            page.click("#submit")
            page.wait_for_selector("#login-error:not([hidden])")
            assert "wrong" in page.inner_text("#login-error")
            page.fill("#password", PASSWORD)
            page.click("#submit")
            page.wait_for_url(base + "/")
            page.wait_for_selector("body[data-loaded='1']", timeout=20_000)

            now = httpx.get(base + "/api/now", headers=headers).json()
            compare = httpx.get(base + "/api/compare", headers=headers).json()
            today = compare["today"]["date"]
            footfall = httpx.get(base + "/api/footfall", params={"start": today, "end": today}, headers=headers).json()

            def number(sel: str) -> int:
                return int("".join(ch for ch in page.inner_text(sel) if ch.isdigit()))

            # One clock: the store's zone, named once in the header; "updated" is the hub's clock in it.
            assert compare["tz"] == STORE_TZ
            expect(page.locator("#store-tz")).to_have_text(f"store time: {STORE_TZ}")
            assert page.locator(f"text={STORE_TZ}").count() == 1
            hh, mm = map(int, compare["local_time"].split(":"))
            shown = re.fullmatch(r"updated (\d\d):(\d\d)", page.inner_text("#updated"))
            assert shown, page.inner_text("#updated")
            assert abs((int(shown[1]) * 60 + int(shown[2])) - (hh * 60 + mm)) % 1440 in (0, 1, 1439)

            assert now["source"] == "presence" and now["now_in_store"] > 0
            assert number("#now-in-store") == now["now_in_store"]
            # No estimates in this store: the page shows heard counts and says they are not estimates.
            assert footfall["totals"]["estimated"] is False
            assert "not estimated yet" in page.inner_text("#now-in-store-range")
            assert "not estimated yet" in page.inner_text("#range-visitors-range")
            assert page.inner_text("#range-visitors-unit").strip() == "heard"
            assert "–" not in page.inner_text("#range-visitors-range")

            assert number("#today-visitors") == compare["today"]["visitors"]
            assert number("#range-visitors") == footfall["totals"]["visitors"]
            assert footfall["totals"]["visitors"] > 0
            assert page.locator("#sensors tr").count() == 5
            assert page.locator("#sensors tr[data-status='online']").count() == 3
            replayed = page.locator("#sensors tr[data-status='replayed']")
            assert replayed.count() == 1 and "replayed" in replayed.inner_text()
            assert "recorded capture" in page.inner_text("#sensors-note")
            assert page.locator("#chart-footfall svg rect").count() > 10

            # Segments and clusters: the seeded names with the API's sizes, a trend line each.
            segs = httpx.get(base + "/api/segments", headers=headers).json()["segments"]
            rules = [s for s in segs if s["kind"] == "rule"]
            assert {s["name"] for s in rules} == {"quick look-ins", "regulars"}
            for s in rules:
                row = page.locator(f"#segments tr[data-segment='{s['name']}']")
                assert s["name"] in row.inner_text()
                assert int(re.sub(r"\D", "", row.locator("td.size").inner_text())) == s["size"] > 0
                assert row.locator("svg path.spark-line").count() == 1
            clusters = httpx.get(base + "/api/clusters", headers=headers).json()
            assert clusters["k"] >= 2
            assert page.locator("#clusters tr").count() == clusters["k"]
            for c in clusters["clusters"]:
                row = page.locator(f"#clusters tr[data-cluster='{c['label']}']")
                assert int(re.sub(r"\D", "", row.locator("b.size").inner_text())) == c["size"]
                assert c["profile"]["typical_time"] in row.inner_text()
            assert f"k = {clusters['k']}" in page.inner_text("#clusters-meta")

            # A 7-day range redraws with daily bars.
            page.click("[data-days='7']")
            # Polled from Python: the page's CSP (rightly) forbids evaluating strings as script.
            expect(page.locator("#footfall-gran")).to_have_text("by day")
            week = httpx.get(
                base + "/api/footfall",
                params={"start": page.input_value("#start"), "end": today, "granularity": "day"},
                headers=headers,
            ).json()
            expect(page.locator("#range-visitors")).to_have_text(
                re.compile(_digits_pattern(week["totals"]["visitors"]))
            )
            page.click("[data-days='1']")
            expect(page.locator("#footfall-gran")).to_have_text("by hour")
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
            if os.environ.get("FOOTFALL_SCREENSHOT"):
                shutil.copy(shot, os.environ["FOOTFALL_SCREENSHOT"])
            assert failed == []

            # A 390 px phone: no horizontal scrolling, the tables stacked, nothing cut off.
            page.set_viewport_size({"width": 390, "height": 844})
            expect(page.locator("#chart-footfall svg")).to_have_attribute("viewBox", re.compile(r"^0 0 (2|3)\d\d "))
            no_horizontal_overflow(page, 390)
            assert page.locator("#clusters tr").count() == clusters["k"]
            page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
            if os.environ.get("FOOTFALL_SCREENSHOT_DIR"):
                shutil.copy(tmp_path / "phone.png", Path(os.environ["FOOTFALL_SCREENSHOT_DIR"]) / "seeded-phone.png")
                shutil.copy(shot, Path(os.environ["FOOTFALL_SCREENSHOT_DIR"]) / "seeded-desktop.png")
            # The other pages a manager opens on a phone: the O2O report's wide table scrolls in its box.
            page.goto(base + "/o2o")
            page.wait_for_selector("table")
            no_horizontal_overflow(page, 390)
            # Same store clock as the dashboard, named once in its header.
            expect(page.locator("#store-tz")).to_have_text(f"store time: {STORE_TZ}")
            assert page.inner_text("body").count(STORE_TZ) == 1
            page.goto(base + "/")
            page.wait_for_selector("body[data-loaded='1']", timeout=20_000)

            page.click("#logout")
            page.wait_for_url(base + "/login")
            no_horizontal_overflow(page, 390)
            assert page.request.get(base + "/api/now").status == 401
        finally:
            browser.close()


def test_api_rejects_browser_without_login(server: tuple[str, str]) -> None:
    base, _ = server
    r = httpx.get(base + "/api/footfall")
    assert r.status_code == 401
    started = time.monotonic()
    assert httpx.get(base + "/static/app.js").status_code == 200
    assert time.monotonic() - started < 30
