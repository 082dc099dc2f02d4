"""Every CSV export carries its headline figures with their 90 % ranges and heard counts.

A real hub database (``store.connect``): visits as in tests/test_hub_api.py, plus the rows the
link job stores (``estimates`` per day and hour, ``occupancy`` per minute) written directly in
its format, so the API reads estimated figures; then each report's CSV through the real app.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from footfall.hub import auth, store
from footfall.hub.api import WebSettings, create_app
from footfall.hub.metrics import DWELL_EDGES
from footfall.hub.ranges import wilson
from tests.test_hub_metrics import D, ts, visit

NOW = ts(D, 15, 30)
LAST_WEEK = D - timedelta(days=7)
RANGED = ("visitors", "passersby", "capture_rate", "mean_dwell_s")


def fig(visitors: float, passersby: float, *, back: int = 0, followed: int = 0) -> dict:
    """One period's figures as ``hub/link.py`` stores them (a whole day also has its dwell
    histogram and return rate)."""
    cap = visitors / (visitors + passersby) if visitors + passersby else None
    vl, vh, pl, ph = visitors * 0.8, visitors * 1.25, passersby * 0.7, passersby * 1.3
    out = {
        "visitors": visitors,
        "visitors_low": vl,
        "visitors_high": vh,
        "visitors_heard": round(visitors * 0.6, 1),
        "passersby": passersby,
        "passersby_low": pl,
        "passersby_high": ph,
        "passersby_heard": round(passersby * 0.3, 1),
        "capture_rate": cap,
        "capture_rate_low": None if cap is None else vl / (vl + ph),
        "capture_rate_high": None if cap is None else vh / (vh + pl),
        "capture_rate_heard": cap,
        "median_dwell_s": 600.0,
        "median_dwell_s_low": 480.0,
        "median_dwell_s_high": 750.0,
        "median_dwell_s_heard": 560.0,
        "mean_dwell_s": 800.0,
        "mean_dwell_s_low": 690.0,
        "mean_dwell_s_high": 930.0,
        "mean_dwell_s_heard": 770.0,
        "sessions": 10,
    }
    if followed:
        lo, hi = wilson(back, followed)
        out |= {
            "return_rate": round(back / followed, 4),
            "return_rate_low": round(lo, 4),
            "return_rate_high": round(hi, 4),
            "return_rate_heard": followed,
            "dwell_hist": [visitors / 4 if 600 <= edge < 1800 else 0.0 for edge in DWELL_EDGES],
        }
    return out


def add_estimates(conn, day: date, hours: range, per_hour: tuple[float, float], watermark: float, back: int) -> None:
    rows = [(day.isoformat(), h, json.dumps(fig(*per_hour)), watermark, watermark) for h in hours]
    v, p = per_hour[0] * len(hours), per_hour[1] * len(hours)
    rows.append((day.isoformat(), -1, json.dumps(fig(v, p, back=back, followed=8)), watermark, watermark))
    conn.executemany("INSERT INTO estimates (day, hour, figures, watermark, computed) VALUES (?, ?, ?, ?, ?)", rows)


def seed(path: Path, *, estimates: bool) -> str:
    conn = store.connect(path)
    for i in range(6):
        visit(conn, f"v{i}", D, 10 + i % 3, dwell_s=300 * (i + 1))
    for i in range(14):
        visit(conn, f"p{i}", D, 11, cls="passerby", dwell_s=30, zone="entrance")
    visit(conn, "v0", LAST_WEEK, 10)
    conn.execute("INSERT INTO presence VALUES ('s1', 'floor', ?, 20, 5)", (NOW - 20,))
    if estimates:
        # Today estimated up to 15:00 (the job runs behind), last week's whole day.
        add_estimates(conn, D, range(10, 15), (4.0, 9.0), ts(D, 15), back=2)
        add_estimates(conn, LAST_WEEK, range(10, 18), (3.0, 8.0), ts(LAST_WEEK + timedelta(days=1), 0), back=1)
        minutes = range(int(ts(D, 10)), int(NOW - 60) + 1, 60)
        conn.executemany("INSERT INTO occupancy (minute, people) VALUES (?, ?)", [(m, 3.0) for m in minutes])
    key = auth.create_api_key(conn, "sheet")
    conn.commit()
    conn.close()
    return key


@pytest.fixture(params=[True, False], ids=["estimated", "heard-only"])
def hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[TestClient, bool]]:
    key = seed(tmp_path / "hub.db", estimates=request.param)
    app = create_app(tmp_path / "hub.db", WebSettings(tz="UTC", refresh_interval_s=0, clock=lambda: NOW))
    app.state.refresher.run_once()
    with TestClient(app, headers={"X-API-Key": key}) as client:
        yield client, request.param


def get_csv(client: TestClient, path: str, **params: str) -> tuple[list[str], list[dict[str, str]]]:
    r = client.get(path, params={**params, "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), path
    reader = csv.DictReader(io.StringIO(r.text))
    rows = list(reader)
    assert reader.fieldnames, f"{path}: no header"
    return list(reader.fieldnames), rows


def num(cell: str) -> float | None:
    return None if cell == "" else float(cell)


def check_ranges(row: dict[str, str], names: tuple[str, ...], estimated: bool) -> None:
    """Every figure has its range and heard columns; an estimate lies within its range, and a
    figure not estimated is the heard count, with no range."""
    for name in names:
        value, lo, hi, heard = (num(row[name + s]) for s in ("", "_low", "_high", "_heard"))
        if estimated:
            assert value is not None and lo is not None and hi is not None, (name, row)
            assert lo <= value <= hi, (name, row)
        else:
            assert lo is None and hi is None, (name, row)
            assert value == heard, (name, row)
    assert row["estimated"] == str(estimated)


def by_row(rows: list[dict[str, str]], kind: str) -> list[dict[str, str]]:
    return [r for r in rows if r["row"] == kind]


def test_footfall_csv_has_each_period_and_the_totals(hub: tuple[TestClient, bool]) -> None:
    client, estimated = hub
    header, rows = get_csv(client, "/api/footfall", start=D.isoformat(), granularity="hour")
    assert header[:5] == ["period", "visitors", "passersby", "capture_rate", "mean_dwell_s"]
    assert len(by_row(rows, "period")) == 24 and rows[11]["period"] == f"{D.isoformat()}T11"
    for r in by_row(rows, "period"):
        check_ranges(r, RANGED, r["estimated"] == "True")
    # The job stored today's hours 10-14 only: the others are heard counts.
    hours = [r["period"][-2:] for r in by_row(rows, "period") if r["estimated"] == "True"]
    assert hours == ["10", "11", "12", "13", "14"] * estimated
    # The last row is the range's total, as the JSON's totals.
    total = rows[-1]
    assert (total["row"], total["period"]) == ("total", "total") and by_row(rows, "total") == [total]
    totals = client.get("/api/footfall", params={"start": D.isoformat()}).json()["totals"]
    check_ranges(total, RANGED, totals["estimated"])
    for name in ("visitors", "visitors_low", "visitors_high", "visitors_heard", "unique_visitors", "as_of"):
        assert num(total[name]) == totals[name], name
    if estimated:
        assert num(total["median_dwell_s_low"]) <= num(total["median_dwell_s"]) <= num(total["median_dwell_s_high"])
        assert total["as_of_time"] == f"{D.isoformat()} 15:00"
    else:
        assert total["median_dwell_s"] == total["as_of_time"] == ""


def test_engagement_csv_has_the_median_and_mean_dwell(hub: tuple[TestClient, bool]) -> None:
    client, estimated = hub
    for days in (0, 7):  # one day: the day's own median; a week: read off the histograms
        start = (D - timedelta(days=days)).isoformat()
        header, rows = get_csv(client, "/api/engagement", start=start, end=D.isoformat())
        assert header[:5] == ["bucket", "lo_s", "hi_s", "visits", "share"]  # as before
        assert [r["row"] for r in rows] == ["bucket"] * 5 + ["histogram"] * len(DWELL_EDGES) + ["total"]
        assert all(r["bucket"] == "" for r in by_row(rows, "histogram"))
        body = client.get("/api/engagement", params={"start": start, "end": D.isoformat()}).json()
        total = rows[-1]
        assert total["bucket"] == "total" and num(total["visits"]) == body["visits"]
        for name in ("median_dwell_s", "mean_dwell_s"):
            for suffix in ("", "_low", "_high", "_heard"):
                assert num(total[name + suffix]) == body[name + suffix], name + suffix
            value, lo, hi = (num(total[name + s]) for s in ("", "_low", "_high"))
            if estimated:
                assert lo <= value <= hi, name
            else:
                assert lo is None and hi is None and value == num(total[name + "_heard"])
        # A week with only some days estimated is not "estimated" as a whole.
        assert total["estimated"] == str(estimated and days == 0) == str(body["estimated"])


def test_loyalty_csv_has_each_days_and_the_periods_return_rate(hub: tuple[TestClient, bool]) -> None:
    client, estimated = hub
    params = {"start": LAST_WEEK.isoformat(), "end": D.isoformat()}
    header, rows = get_csv(client, "/api/loyalty", **params)
    assert header[:3] == ["day", "new", "returning"]
    days = by_row(rows, "day")
    assert [r["day"] for r in days] == [(LAST_WEEK + timedelta(days=i)).isoformat() for i in range(8)]
    for r in days:
        est = r["estimated"] == "True"
        assert est == (estimated and r["day"] in (LAST_WEEK.isoformat(), D.isoformat())), r
        if est:
            lo, value, hi = (num(r["return_rate" + s]) for s in ("_low", "", "_high"))
            assert 0 <= lo <= value <= hi <= 1 and num(r["return_rate_heard"]) == 8
        else:
            assert r["return_rate_low"] == r["return_rate_high"] == ""
    today = next(r for r in days if r["day"] == D.isoformat())
    if not estimated:
        assert num(today["return_rate"]) == round(1 / 6, 4)  # the share of heard visitors who came before
    # The period's total: its return rate pools the days' followed phones, as the JSON's.
    total = rows[-1]
    assert (total["row"], total["day"], total["new"]) == ("total", "total", "")
    body = client.get("/api/loyalty", params=params).json()
    for name in (
        "return_rate",
        "return_rate_low",
        "return_rate_high",
        "return_rate_heard",
        "unique_visitors",
        "unique_visitors_low",
        "unique_visitors_high",
    ):
        assert num(total[name]) == body[name], name
    # Two of the eight days estimated: the rate is theirs, and not called estimated for the whole week.
    assert total["estimated"] == str(body["estimated"]) == "False"
    if estimated:
        lo, value, hi = (num(total["return_rate" + s]) for s in ("_low", "", "_high"))
        assert lo <= value <= hi and (value, num(total["return_rate_heard"])) == (round(3 / 16, 4), 16)
        _, rows = get_csv(client, "/api/loyalty", start=D.isoformat())
        assert rows[-1]["estimated"] == "True" and num(rows[-1]["return_rate"]) == 0.25


def test_now_csv_has_the_store_with_its_range(hub: tuple[TestClient, bool]) -> None:
    client, estimated = hub
    header, rows = get_csv(client, "/api/now")
    assert header[:4] == ["zone", "inside", "devices", "age_s"]
    assert [(r["row"], r["zone"], r["inside"]) for r in rows[:-1]] == [("zone", "floor", "5")]
    store_row = rows[-1]
    assert (store_row["row"], store_row["zone"]) == ("store", "store")
    body = client.get("/api/now").json()
    for name in ("now_in_store", "now_in_store_low", "now_in_store_high", "as_of", "as_of_estimate"):
        assert num(store_row[name]) == body[name], name
    assert store_row["source"] == body["source"] and num(store_row["inside"]) == body["now_in_store"]
    assert num(store_row["now_in_store_heard"]) == 5  # the largest zone's live count
    if estimated:
        lo, value, hi = (num(store_row["now_in_store" + s]) for s in ("_low", "", "_high"))
        assert lo < value == 3.0 < hi and store_row["estimated"] == "True"
        assert store_row["as_of_time"] == f"{D.isoformat()} 15:30"  # the estimate's minute, local
    else:
        assert store_row["now_in_store_low"] == store_row["now_in_store_high"] == ""
        assert store_row["estimated"] == "False" and store_row["source"] == "presence"


def test_compare_csv_has_both_days_with_their_ranges(hub: tuple[TestClient, bool]) -> None:
    client, estimated = hub
    header, rows = get_csv(client, "/api/compare")
    assert header[:3] == ["hour", "today", "last_week"]
    assert [int(r["hour"]) for r in by_row(rows, "hour")] == list(range(24))
    body = client.get("/api/compare").json()
    blocks = rows[-3:]
    assert [r["row"] for r in blocks] == ["today", "last_week_same_time", "last_week_full_day"]
    for r in blocks:
        b = body[r["row"]]
        assert r["date"] == b["date"] and r["hour"] == r["today"] == ""
        check_ranges(r, RANGED, estimated)
        for name in RANGED:
            for suffix in ("", "_low", "_high", "_heard"):
                assert num(r[name + suffix]) == b[name + suffix], (r["row"], name + suffix)
    today = blocks[0]
    assert num(today["change_visitors"]) == body["change"]["visitors"] and today["local_time"] == "15:30"
    if estimated:  # like for like: today's five whole hours against the same hours last week
        assert (num(today["visitors"]), num(blocks[1]["visitors"]), num(blocks[2]["visitors"])) == (20, 15, 24)


def test_empty_exports_still_have_a_header(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    conn = store.connect(path)
    key = auth.create_api_key(conn, "sheet")
    conn.close()
    app = create_app(path, WebSettings(tz="UTC", refresh_interval_s=0, clock=lambda: NOW))
    with TestClient(app, headers={"X-API-Key": key}) as client:
        r = client.get("/api/sensors", params={"format": "csv"})
        assert r.text == (
            "site,sensor,status,state,version,online_since,offline_since,last_message,"
            "last_message_age_s,messages,message_rate,backlog,dropped\n"
        )
        assert client.get("/api/rejects/csv").text == "reason,count,last_at,last_detail\n"
        for path_, names in (
            ("/api/now", ("now_in_store",)),
            ("/api/footfall", RANGED),
            ("/api/engagement", ("median_dwell_s", "mean_dwell_s")),
            ("/api/loyalty", ("return_rate",)),
            ("/api/compare", RANGED),
        ):
            header, rows = get_csv(client, path_)
            assert {n + s for n in names for s in ("", "_low", "_high", "_heard")} <= set(header), path_
            assert "row" in header and rows, path_
        header, rows = get_csv(client, "/api/occupancy")
        assert header == ["start", "people", "time"] and len(rows) == 144
