"""The centre's fleet page in a real headless Chromium: a real hub's sync cycle reports its fleet
to the real central service (uvicorn, PostgreSQL); the operator signs in, opens /fleet from the
stores page and sees every sensor, down ones first; then the O2O results page. Skips without Chromium, Playwright or
PostgreSQL; no request may leave the server's origin.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from footfall.cloud_sync.central import auth, schema
from footfall.cloud_sync.central.app import create_app
from footfall.cloud_sync.central.config import CentralConfig
from footfall.cloud_sync.central.db import Database
from footfall.cloud_sync.central.testing import ServerThread, reset
from footfall.cloud_sync.sender import Sender
from footfall.cloud_sync.sync_cli import cycle
from tests import test_central_sync as shared
from tests.test_central_browser import CHROMIUM, signed_in
from tests.test_fleet_e2e import SITE, make_store

pg_url = shared.pg_url
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
]


def test_fleet_page_in_chromium(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    monkeypatch.delenv("FOOTFALL_SITE_DIR", raising=False)
    db = Database(pg_url)
    schema.init(db)
    reset(db)
    with db.connect() as conn:
        secret = auth.add_hub(conn, SITE, name="Store 7").encode()
        auth.add_hub(conn, "store-8", name="Store 8")
        auth.add_user(conn, "ops", "ops-password-1", role="readonly")
    with ServerThread(create_app(CentralConfig(), db=db)) as server, sync_api.sync_playwright() as p:
        hub_conn, cfg, _ = make_store(tmp_path, server.url)
        assert cycle(hub_conn, cfg, Sender(hub_conn, cfg, secret, sleep=lambda s: None), pull=False)
        base = server.url
        browser, page, foreign, errors = signed_in(p, base, "/fleet", "ops", "ops-password-1")
        try:
            page.click("header a[href='/fleet']")
            page.wait_for_url(base + "/fleet")
            page.wait_for_selector("#sensors tbody tr")
            sensors = page.locator("#sensors tbody tr")
            assert sensors.count() == 4
            first, last = sensors.first.inner_text(), sensors.last.inner_text()
            assert "s4" in first and "certificate expired" in first and "never" in first
            assert "s1" in last and "ok" in last
            assert page.locator("#sensors tbody tr.level-down").count() == 3
            assert page.locator("#sensors tbody tr.level-down td:nth-child(3) .bad").count() == 3
            stores = page.locator("#stores tbody tr").all_inner_texts()
            assert "Store 7" in stores[0] and "3 sensors down" in stores[0] and "3 / 4" in stores[0]
            assert "Store 8" in stores[1] and "no fleet report yet" in stores[1]
            assert "2 stores, 4 sensors: 3 down" in page.inner_text("#summary")
            assert "ops (readonly)" in page.inner_text("#who")
            # The O2O page, from the stores page's header: the store synced no scenario yet.
            page.goto(base + "/")
            page.click("header a[href='/o2o']")
            page.wait_for_url(base + "/o2o")
            page.wait_for_selector("#results tbody tr")
            assert "no scenario results in this period" in page.inner_text("#results")
            assert page.get_attribute("#csv", "href").endswith("&format=csv")
            assert errors == [] and foreign == []
            # Left open, the page refreshes itself: a store added at the centre shows up, and when
            # the centre goes away the last tables stay, with a line that says so.
            page.goto(base + "/fleet?refresh=1")
            page.wait_for_selector("#sensors tbody tr")
            assert "Refreshed every 1 s" in page.inner_text("#refreshed")
            with db.connect() as conn:
                auth.add_hub(conn, "store-9", name="Store 9")
            page.wait_for_selector("#summary:has-text('3 stores')")
            server.stop()
            page.wait_for_selector("#refreshed.warn")
            assert "Not refreshed" in page.inner_text("#refreshed")
            assert "the tables are as of" in page.inner_text("#refreshed")  # the centre's time, UTC
            assert page.locator("#sensors tbody tr").count() == 4 and "3 stores" in page.inner_text("#summary")
        finally:
            browser.close()
    db.close()
