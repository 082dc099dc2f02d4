"""The O2O report in the store's time zone: local report days, store-time page, UTC-labelled API.

Moscow (UTC+3, no DST) makes the boundary visible: a coupon redeemed at 22:45 UTC on D, for a
target assigned at 22:30 UTC, is 01:45 on D+1 in the store and belongs to D+1's report.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from footfall.hub import auth, store
from footfall.hub.api import WebSettings, create_app
from footfall.hub.o2o import reports, scenarios
from footfall.hub.o2o import web as o2o_web
from tests.test_hub_metrics import D, ts

MOSCOW = "Europe/Moscow"
NOW = ts(D, 15, 30)  # 18:30 in Moscow, the same day
NEXT = (D + timedelta(days=1)).isoformat()


@pytest.fixture
def db(tmp_path: Path) -> tuple[Path, str]:
    """One target assigned, messaged and redeemed late on D in UTC, i.e. early on D+1 in Moscow."""
    path = tmp_path / "hub.db"
    conn = store.connect(path)
    sc_id = scenarios.add(conn, scenarios.Scenario(name="late", target="passersby"), now=ts(D, 0))
    assigned = ts(D, 22, 30)
    conn.execute(
        "INSERT INTO o2o_targets (id, scenario_id, run_id, partner_hash, device_key, visit_at, assigned_at, status,"
        " sent_at, known, messageable, matched_at, message_id, messaged_at, updated)"
        " VALUES (1, ?, 1, 'h1', 'dev1', ?, ?, 'messaged', ?, 1, 1, ?, 'm1', ?, ?)",
        (sc_id, assigned - 600, assigned, assigned + 60, assigned + 120, assigned + 300, assigned + 300),
    )
    conn.execute(
        "INSERT INTO o2o_coupons (code, scenario_id, target_id, device_key, partner_hash, kind, value, valid_from,"
        " valid_until, issued_at, redeemed_at, redeemed_store, receipt_id, amount, discount)"
        " VALUES ('LATE1', ?, 1, 'dev1', 'h1', 'percent', 10, ?, ?, ?, ?, 'st', 'R1', 500, 50)",
        (sc_id, assigned, assigned + 30 * 86400, assigned + 300, ts(D, 22, 45)),
    )
    key = auth.create_api_key(conn, "o2o-tz")
    conn.commit()
    conn.close()
    return path, key


def hub_client(db: tuple[Path, str], tz: str, clock: float = NOW) -> TestClient:
    path, key = db
    client = TestClient(create_app(path, WebSettings(tz=tz, refresh_interval_s=0, clock=lambda: clock)))
    client.headers["X-API-Key"] = key
    return client


@pytest.fixture
def moscow(db: tuple[Path, str]) -> Iterator[TestClient]:
    with hub_client(db, MOSCOW) as client:
        yield client


def report_on(client: TestClient, day: str) -> dict:
    r = client.get("/api/o2o/report", params={"start": day, "end": day})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_late_utc_redemption_belongs_to_the_next_local_day(moscow: TestClient, db: tuple[Path, str]) -> None:
    on_d, on_next = report_on(moscow, D.isoformat()), report_on(moscow, NEXT)
    [row_d], [row_next] = on_d["scenarios"], on_next["scenarios"]
    assert (row_d["eligible"], row_d["coupons_redeemed"], row_d["revenue"]) == (0, 0, 0)
    assert (row_next["eligible"], row_next["coupons_redeemed"], row_next["revenue"]) == (1, 1, 500)
    # The invoice cuts the same local days (matched and messaged at 22:32 and 22:35 UTC).
    inv_d = moscow.get("/api/o2o/invoice", params={"start": D.isoformat(), "end": D.isoformat()}).json()
    inv_next = moscow.get("/api/o2o/invoice", params={"start": NEXT, "end": NEXT}).json()
    assert (inv_d["matched"], inv_d["sms"]) == (0, 0) and (inv_next["matched"], inv_next["sms"]) == (1, 1)
    assert inv_next["tz"] == MOSCOW
    # A UTC store reports the same redemption on D: the zone, not the data, moved it.
    with hub_client(db, "UTC") as utc:
        [row_utc] = report_on(utc, D.isoformat())["scenarios"]
    assert (row_utc["coupons_redeemed"], row_utc["tz"]) == (1, "UTC")


def test_the_json_says_its_timestamps_are_utc_and_names_the_zone(moscow: TestClient) -> None:
    out = report_on(moscow, D.isoformat())
    # Moscow midnight is 21:00 UTC the evening before.
    assert (out["start"], out["end"]) == (ts(D - timedelta(days=1), 21), ts(D, 21))
    assert (out["start_utc"], out["end_utc"]) == ("2026-03-09T21:00:00Z", "2026-03-10T21:00:00Z")
    assert (out["tz"], out["start_day"], out["end_day"]) == (MOSCOW, "2026-03-10", "2026-03-10")
    [row] = out["scenarios"]
    assert (row["tz"], row["start"], row["start_utc"], row["end_utc"]) == (
        MOSCOW, out["start"], out["start_utc"], out["end_utc"],
    )  # fmt: skip
    reg = moscow.get("/api/o2o/register", params={"start": NEXT, "end": NEXT}).json()
    assert reg["tz"] == MOSCOW and reg["start_utc"] == "2026-03-10T21:00:00Z"


def test_the_csv_carries_utc_columns_and_the_zone(moscow: TestClient) -> None:
    text = moscow.get("/api/o2o/report", params={"start": NEXT, "end": NEXT, "format": "csv"}).text
    [row] = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0] == ",".join(reports.REPORT_COLUMNS)
    assert (row["tz"], row["start_utc"], row["end_utc"]) == (MOSCOW, "2026-03-10T21:00:00Z", "2026-03-11T21:00:00Z")
    assert row["coupons_redeemed"] == "1"


def test_the_default_period_ends_on_the_local_today(db: tuple[Path, str]) -> None:
    # 22:00 UTC on D is already 01:00 on D+1 in Moscow: "today" is D+1 there.
    with hub_client(db, MOSCOW, clock=ts(D, 22)) as client:
        out = client.get("/api/o2o/report").json()
    assert (out["start_day"], out["end_day"]) == ((D - timedelta(days=28)).isoformat(), NEXT)
    assert out["scenarios"][0]["coupons_redeemed"] == 1


def test_a_dst_day_is_23_hours(db: tuple[Path, str]) -> None:
    # Europe/Paris springs forward on 2026-03-29: that local day is 23 hours long.
    with hub_client(db, "Europe/Paris") as client:
        out = client.get("/api/o2o/report", params={"start": "2026-03-29", "end": "2026-03-29"}).json()
    assert out["end"] - out["start"] == 23 * 3600
    assert (out["start_utc"], out["end_utc"]) == ("2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z")


def test_the_page_is_in_store_time_and_names_the_zone_once(moscow: TestClient) -> None:
    page = moscow.get("/o2o", params={"start": NEXT, "end": NEXT})
    assert page.status_code == 200
    text = page.text
    assert text.count(MOSCOW) == 1 and "UTC" not in text
    header = re.search(r"<header .*?</header>", text, re.S)
    assert header and "store time: Europe/Moscow" in header.group(0)
    assert "<meta name='viewport' content='width=device-width, initial-scale=1'>" in text
    assert f"Targets assigned {NEXT} " in text
    assert "Generated 2026-03-10 18:30." in text  # NOW, 15:30 UTC, in Moscow
    assert f"start={NEXT}&amp;end={NEXT}&amp;format=csv" in text  # the CSV of the period shown
    # The late redemption's revenue is on the page of its local day.
    assert re.search(r"<td>late</td>(<td>[^<]*</td>){9}<td>500\.0</td>", text), text


def test_the_standalone_app_takes_the_zone(db: tuple[Path, str]) -> None:
    path, key = db
    app = o2o_web.create_app(path, clock=lambda: NOW, tz=MOSCOW)
    with TestClient(app) as client:
        out = client.get("/api/o2o/report", params={"start": NEXT, "end": NEXT}, headers={"X-API-Key": key}).json()
    assert out["tz"] == MOSCOW and out["scenarios"][0]["coupons_redeemed"] == 1


def test_html_page_defaults_its_days_from_the_bounds() -> None:
    t0, t1 = ts(D - timedelta(days=1), 21), ts(D + timedelta(days=1), 21)  # D and D+1 in Moscow
    inv = {"start": t0, "end": t1, "recipient": "partner", "lines": [], "total": 0}
    page = reports.html_page([], inv, tz=MOSCOW, now=NOW)
    assert f"Targets assigned {D.isoformat()} – {NEXT} " in page
