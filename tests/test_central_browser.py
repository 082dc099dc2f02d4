"""The central pages in a real headless Chromium: sign in, see the stores and their health,
create and recount a cross-store segment, find a profile; a shopper opts out on /optout.

Runs the real app under uvicorn on a free port (SQLite) and drives Debian's Chromium with
Playwright; skips when either is missing. No request may leave the server's origin.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from footfall.cloud_sync.central import apply, auth, schema
from footfall.cloud_sync.central.app import create_app
from footfall.cloud_sync.central.config import CentralConfig
from footfall.cloud_sync.central.db import Database
from footfall.cloud_sync.central.testing import ServerThread, profile_record

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-sync", "--no-first-run"]


def signed_in(p, base: str, path: str, user: str, password: str) -> tuple:
    """Chromium opened at ``path``, sent to the login page and signed in there (back at ``/``):
    (browser, page, requests to other origins, page errors), the last two filled as it goes."""
    browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
    page = browser.new_page()
    foreign: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(base) else foreign.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base + path)
    page.wait_for_url(base + "/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")
    return browser, page, foreign, errors


pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
]


def test_pages_in_chromium(tmp_path: Path):
    sync_api = pytest.importorskip("playwright.sync_api")
    key_file = tmp_path / "chain.key"
    key_file.write_text("ef" * 32)
    db = Database(tmp_path / "central.db")
    schema.init(db)
    now = time.time()
    with db.connect() as conn:
        auth.add_user(conn, "maria", "marketing-pass-1", role="marketing")
        for store in ("north", "south"):
            conn.execute("INSERT INTO hubs (hub_id, name, secret, created) VALUES (?, ?, 'x', 0)", (store, store))
    for store, devices in (("north", [1, 2, 3]), ("south", [2, 3])):
        records = [profile_record(f"{i:032x}", first_seen=now - 7200, last_seen=now - 3600) for i in devices]
        records.append(
            {
                "kind": "health",
                "key": store,
                "data": {"sensors_total": 3, "sensors_stale": 1 if store == "south" else 0, "sensors_failing": 0},
            }
        )
        apply.apply_batch(db, store, {"batch_id": store, "seq": 1, "records": records})
    app = create_app(CentralConfig(chain_key_file=str(key_file)), db=db)
    with ServerThread(app) as server, sync_api.sync_playwright() as p:
        base = server.url
        browser, page, foreign, errors = signed_in(p, base, "/", "maria", "marketing-pass-1")
        try:
            page.wait_for_selector("#stores tbody tr")
            rows = page.locator("#stores tbody tr").all_inner_texts()
            assert len(rows) == 2 and "north" in rows[0] and "(1 / 0)" in rows[1]
            assert "maria (marketing)" in page.inner_text("#who")
            # Create the default rule (2+ stores in 30 days) and recount it.
            page.click("summary")
            page.fill("#new-segment input[name=id]", "two-stores")
            page.click("#new-segment button[type=submit]")
            page.wait_for_selector("#segments tbody tr")
            page.click("#segments tbody tr button:has-text('recount')")
            # (CSP forbids eval, so no wait_for_function: selectors only.)
            page.wait_for_selector("#segments tbody tr td:nth-child(3):text-is('2')")
            page.click("#segments tbody tr button:has-text('history')")
            page.wait_for_selector("#chart polyline", state="attached")
            page.fill("#search input[name=q]", "0000")
            page.click("#search button")
            page.wait_for_selector("#profiles tbody tr")
            assert page.locator("#profiles tbody tr").count() == 3
            page.locator("#profiles tbody tr a").first.click()
            page.wait_for_selector("#profile:has-text('identifiers')")
            # The shopper's opt-out page.
            page.goto(base + "/optout")
            page.fill("input[name=mac]", "not a mac")
            page.click("button[type=submit]")
            page.wait_for_selector("#result.error")
            page.fill("input[name=mac]", "3C:22:FB:00:00:09")
            page.click("button[type=submit]")
            page.wait_for_selector("#result.ok")
            assert errors == [] and foreign == []
        finally:
            browser.close()
    with db.connect() as conn:
        assert conn.scalar("SELECT COUNT(*) FROM optouts") == 1
        assert conn.scalar("SELECT COUNT(*) FROM pushback WHERE kind = 'optout'") == 1
