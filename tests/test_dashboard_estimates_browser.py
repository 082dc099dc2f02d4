"""The dashboard's estimates of people in a real headless Chromium, on a real simulated store.

A simulated store day (``footfall.tools.evaluate_metrics``: simulator -> edge agents -> hub
ingest -> link job -> summaries) is served by the real app under uvicorn with the store's clock
fixed at 18:00 on that day, after ingesting what the sensors had sent by then and running the
link job as the hub would at that time: the estimates reach 17:45 (``settle_s`` behind), as in a
live store. The browser runs in another time zone than the store, so every "as of" must be the
store's time. Checks: headline figures with their 90 % range and the heard count labelled as
such, the one-line explanations, the occupancy chart, "now in store" with its "as of" time,
and a 390 px phone screen without horizontal scrolling. Set ``FOOTFALL_SCREENSHOT_DIR`` to keep
the screenshots.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from footfall.hub import auth, link, store, summaries
from footfall.hub.api import WebSettings, create_app
from tests.conftest import Served
from tests.test_dashboard_browser import ARGS, CHROMIUM, PASSWORD, no_horizontal_overflow, signed_in

DAY = "2026-11-02"
CLOCK = datetime(2026, 11, 2, 18, 0, tzinfo=UTC).timestamp()  # the store's clock (its time zone is UTC)
BROWSER_TZ = "Asia/Tokyo"  # UTC+9: a page printing browser time would say 03:00, not 18:00
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install -y chromium)"
    ),
]


def js_round(x: float) -> int:
    """The page rounds with Math.round (halves up); Python's round() rounds halves to even."""
    return math.floor(x + 0.5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """(base URL, API key, database) of a hub serving a simulated store at 18:00, estimates
    included."""
    from footfall.tools.evaluate_pipeline import Scenario, ingest, simulate

    work = tmp_path_factory.mktemp("estimates")
    run = simulate(Scenario(seed=21, scale=0.4), work)
    db = work / "hub.db"
    writer, _ = ingest(run, db, until=CLOCK)  # what the sensors had sent by 18:00
    conn = writer.conn
    link.relink(conn, writer.config, since=0, now=CLOCK)
    summaries.rebuild_summaries(conn)
    conn.close()
    conn = store.connect(db)
    auth.add_user(conn, "manager", PASSWORD)
    key = auth.create_api_key(conn, "browser-test")
    conn.close()
    app = create_app(db, WebSettings(tz="UTC", clock=lambda: CLOCK, refresh_interval_s=0))
    served = Served(app, lifespan="on")
    yield served.url, key, db
    served.stop()


def _hm(unix: float) -> str:
    return datetime.fromtimestamp(min(unix, CLOCK), UTC).strftime("%H:%M")


def _shot(page, name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    keep = os.environ.get("FOOTFALL_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / name)


def test_estimates_ranges_heard_occupancy_and_phone(server: tuple[str, str, Path], tmp_path: Path) -> None:
    base, key, db = server
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    headers = {"X-API-Key": key}
    ff = httpx.get(base + "/api/footfall", params={"start": DAY, "end": DAY}, headers=headers).json()
    now = httpx.get(base + "/api/now", headers=headers).json()
    en = httpx.get(base + "/api/engagement", params={"start": DAY, "end": DAY}, headers=headers).json()
    occ = httpx.get(base + "/api/occupancy", params={"start": DAY, "end": DAY}, headers=headers).json()
    t = ff["totals"]
    # The store this test needs: estimated, provisional (the estimates stop before the clock).
    # The estimate may be above or below the heard count (the tracker splits and joins phones).
    assert t["estimated"] and t["visitors"] > 0 and t["visitors_heard"] > 0 and t["as_of"] < CLOCK
    assert now["source"] in ("presence_calibrated", "occupancy") and now["now_in_store"] >= 0.5
    assert sum(p["people"] is not None for p in occ["series"]) > 20

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page, errors = signed_in(browser, base, viewport={"width": 1366, "height": 1000}, timezone_id=BROWSER_TZ)

            # Headline visitors: the estimate in whole people, its 90 % range, the heard count.
            assert page.inner_text("#range-visitors").replace(",", "") == str(js_round(t["visitors"]))
            assert "people" in page.inner_text("#range-visitors-unit")
            rng = page.inner_text("#range-visitors-range")
            assert "90 %" in rng and f"{js_round(t['visitors_low'])}–{js_round(t['visitors_high'])}" in rng
            assert re.search(r"\d+–\d+", rng)
            heard = page.inner_text("#range-visitors-heard")
            assert heard.startswith("heard") and str(js_round(t["visitors_heard"])) in heard
            # Passers-by and the capture rate carry theirs too (rates to 0.1 %).
            assert f"{js_round(t['passersby_low'])}–{js_round(t['passersby_high'])}" in page.inner_text(
                "#range-passersby-range"
            )
            cap = f"{t['capture_rate_low'] * 100:.1f}–{t['capture_rate_high'] * 100:.1f} %"
            assert cap in page.inner_text("#range-capture-range")
            # Provisional: as of the estimates' end, in the store's time (not the browser's).
            assert f"as of {_hm(t['as_of'])}" in page.inner_text("#range-asof")
            assert f"as of {_hm(t['as_of'])}" in page.inner_text("#estimates-asof")

            # The one-line explanations are on the page, beside the figures.
            expect(page.locator("#explain-visitors")).to_be_visible()
            assert page.inner_text("#explain-visitors") == ff["explain"]["visitors"]
            assert page.inner_text("#explain-dwell").strip() != ""
            # The dwell's caveat shows when the API sets one (a dwell unlike the shops it was checked on).
            assert "dwell_caveat" in en
            assert page.inner_text("#dwell-caveat") == (en["dwell_caveat"] or "")
            assert page.inner_text("#explain-now") == ff["explain"]["now"]
            assert "heard" in page.inner_text("#reading").lower()
            assert "estimated" in page.inner_text("#reading").lower()

            # Now in store: people, a range and "as of" in store time.
            assert page.inner_text("#now-in-store").replace(",", "") == str(js_round(now["now_in_store"]))
            assert re.search(r"\d+–\d+", page.inner_text("#now-in-store-range"))
            assert page.inner_text("#now-asof").startswith(f"as of {_hm(now['as_of_estimate'])}")

            # Occupancy: a line with points, and the windows after the estimates marked pending.
            chart = page.locator("#chart-occupancy svg")
            expect(chart).to_have_count(1)
            points = page.locator("#chart-occupancy svg circle.point").count()
            assert points > 20
            assert chart.get_attribute("data-points") == str(points)
            assert page.locator("#chart-occupancy svg path.line").count() >= 1
            assert page.locator("#chart-occupancy svg rect.pending").count() >= 1
            assert "not estimated yet" in page.inner_text("#occupancy-meta")

            # The CSV behind the chart has the ranges and heard counts.
            csv_text = page.request.get(base + page.get_attribute("#csv-footfall", "href")).text()
            assert {"visitors_low", "visitors_high", "visitors_heard", "estimated"} <= set(
                csv_text.splitlines()[0].split(",")
            )
            _shot(page, "estimates-desktop.png", tmp_path)

            # No run has lowered a count yet: no revision line. Then one that did at 17:00 (as
            # link.revisions records it): the card says so, from what to what, in store time.
            assert page.inner_text("#range-passersby-revised") == ""
            conn = store.connect(db)
            shown = round(t["passersby"] + 12.0, 1)
            revision = {"figure": "passersby", "from": shown, "to": t["passersby"], "at": CLOCK - 3600}
            conn.execute(
                "UPDATE estimates SET figures = json_set(figures, '$.revisions', json(?)) WHERE day = ? AND hour = -1",
                (json.dumps([revision]), DAY),
            )
            conn.commit()
            conn.close()
            page.reload()
            page.wait_for_selector("body[data-loaded='1']", timeout=20_000)
            note = page.inner_text("#range-passersby-revised")
            pct = (t["passersby"] - shown) / shown * 100
            assert note.startswith("Revised at 17:00 by a later run"), note
            assert f"{js_round(shown):,} → {js_round(t['passersby']):,} ({pct:.1f} %)" in note, note
            assert page.inner_text("#range-visitors-revised") == ""

            # Seven days: daily bars, occupancy over the week; thirty: occupancy says why not.
            page.click("[data-days='7']")
            expect(page.locator("#footfall-gran")).to_have_text("by day")
            expect(page.locator("#occupancy-card")).to_have_attribute("data-points", re.compile(r"^[1-9]\d*$"))
            page.click("[data-days='30']")
            expect(page.locator("#chart-occupancy .empty-chart")).to_contain_text("up to 14 days")
            assert page.is_hidden("#error")
            page.click("[data-days='1']")
            expect(page.locator("#footfall-gran")).to_have_text("by hour")

            # A 390 px phone: nothing wider than the screen, the figures still there.
            phone = browser.new_context(
                viewport={"width": 390, "height": 844},
                is_mobile=True,
                has_touch=True,
                timezone_id=BROWSER_TZ,
                storage_state=page.context.storage_state(),
            )
            mobile = phone.new_page()
            mobile.goto(base + "/")
            mobile.wait_for_selector("body[data-loaded='1']", timeout=20_000)
            assert re.search(r"\d+–\d+", mobile.inner_text("#range-visitors-range"))
            assert mobile.locator("#chart-occupancy svg circle.point").count() == points
            no_horizontal_overflow(mobile, 390)
            _shot(mobile, "estimates-phone.png", tmp_path)
            phone.close()
            assert errors == []
        finally:
            browser.close()
