"""The dashboard's loyalty card in a real headless Chromium, on a real simulated three-day store.

Held-out seed 12 (a small store, 80 % randomizing phones, two sensors, three days, a quarter of
the later days' visitors returning) goes through the simulator, the edge agents, the hub's
ingest and link job, and is served by the real app under uvicorn with the store's clock after
the third day. The manager picks the three days: the return rate carries its 90 % range and
says how many phones it was measured on, randomizing ones followed by the networks they ask for
among them (``hub/returning.py``); the unique visitors carry their range and are fewer than the
days' visitors added up (the returners count once).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from footfall.hub import auth, link, store, summaries
from footfall.hub.api import WebSettings, create_app
from tests.conftest import Served
from tests.test_dashboard_browser import ARGS, CHROMIUM, PASSWORD, signed_in
from tests.test_dashboard_estimates_browser import js_round

FIRST, LAST = "2026-11-02", "2026-11-04"
CLOCK = datetime(2026, 11, 4, 23, 0, tzinfo=UTC).timestamp()  # after the third day's closing
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install -y chromium)"
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    from footfall.tools.evaluate_pipeline import HELD_OUT_SEEDS, Scenario, ingest, simulate

    sc = Scenario(seed=12, scale=0.5, randomized_share=0.8, sensors=2, days=3)
    assert sc.seed in HELD_OUT_SEEDS
    work = tmp_path_factory.mktemp("loyalty")
    run = simulate(sc, work)
    db = work / "hub.db"
    writer, _ = ingest(run, db)
    link.relink(writer.conn, writer.config, since=0, now=CLOCK)
    summaries.rebuild_summaries(writer.conn)
    writer.conn.close()
    conn = store.connect(db)
    auth.add_user(conn, "manager", PASSWORD)
    key = auth.create_api_key(conn, "browser-test")
    conn.close()
    app = create_app(db, WebSettings(tz="UTC", clock=lambda: CLOCK, refresh_interval_s=0))
    served = Served(app, lifespan="on")
    yield served.url, key
    served.stop()


def test_loyalty_card_shows_the_return_rate_and_unique_visitors_with_ranges(server: tuple[str, str]) -> None:
    base, key = server
    sync_api = pytest.importorskip("playwright.sync_api")
    headers = {"X-API-Key": key}
    params = {"start": FIRST, "end": LAST}
    lo = httpx.get(base + "/api/loyalty", params=params, headers=headers).json()
    ff = httpx.get(base + "/api/footfall", params=params | {"granularity": "day"}, headers=headers).json()
    assert lo["estimated"] and lo["return_rate"] is not None
    assert lo["return_rate_low"] <= lo["return_rate"] <= lo["return_rate_high"]
    assert 0 < lo["return_rate_networks"] < lo["return_rate_heard"]
    unique = lo["unique_visitors"]
    assert lo["unique_visitors_low"] < unique < lo["unique_visitors_high"]
    assert unique < ff["totals"]["visitors"]  # the days' visitors added up count a returner twice
    assert ff["totals"]["unique_visitors"] == unique

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page, errors = signed_in(browser, base, viewport={"width": 1366, "height": 1000})
            page.evaluate("document.body.dataset.loaded = '0'")
            page.fill("#start", FIRST)
            page.fill("#end", LAST)
            page.click("#range button[type=submit]")
            page.wait_for_selector("body[data-loaded='1']", timeout=20_000)

            assert page.inner_text("#return-rate").strip().endswith("%")
            assert "90 % range" in page.inner_text("#return-rate-range")
            heard = page.inner_text("#return-rate-heard")
            assert f"measured on {lo['return_rate_heard']} phones followed across days" in heard
            assert f"({lo['return_rate_networks']} by the networks they ask for)" in heard
            shown = page.inner_text("#unique-visitors").replace(",", "")
            assert shown.startswith(str(js_round(unique)))
            assert f"{js_round(lo['unique_visitors_low'])}–{js_round(lo['unique_visitors_high'])}" in shown
            assert "estimated people" in page.inner_text("#unique-visitors-label")
            assert not errors, errors
        finally:
            browser.close()
