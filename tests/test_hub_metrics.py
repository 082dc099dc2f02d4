"""Footfall metrics on small hand-built store databases with answers worked out by hand."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from footfall.hub import metrics, metrics_health, metrics_today, store, summaries

D = date(2026, 3, 10)  # a Tuesday


def ts(day: date, hour: int, minute: int = 0) -> float:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC).timestamp()


def visit(
    conn: sqlite3.Connection,
    key: str,
    day: date,
    hour: int,
    *,
    minute: int = 0,
    dwell_s: float = 600,
    cls: str = "visitor",
    zone: str = "floor",
    excluded: int = 0,
    device: str | None = None,
) -> int:
    first = ts(day, hour, minute)
    cur = conn.execute(
        "INSERT INTO visits (site, device, device_key, randomized, first_seen, last_seen, dwell_s, inside_s, class, "
        "long_stay, excluded, best_sensor, best_rssi, sensors, n_sensor_visits, day, hour) "
        "VALUES ('s1', ?, ?, 0, ?, ?, ?, ?, ?, 0, ?, ?, -60, ?, 1, ?, ?)",
        (
            device or key,
            key,
            first,
            first + dwell_s,
            dwell_s,
            dwell_s,
            cls,
            excluded,
            zone,
            f'["{zone}"]',
            day.isoformat(),
            hour,
        ),
    )
    return int(cur.lastrowid)


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    c = store.connect(tmp_path / "hub.db")
    yield c
    c.close()


def refresh(conn: sqlite3.Connection, now_day: date = D) -> None:
    conn.commit()
    summaries.refresh_summaries(conn, now=ts(now_day, 23, 59), tz="UTC", check_days=1000)


def test_footfall_capture_rate_by_hour_zone_and_staff(conn: sqlite3.Connection) -> None:
    visit(conn, "a", D, 10, zone="entrance")
    visit(conn, "b", D, 10, zone="floor", dwell_s=1200)
    visit(conn, "c", D, 11, zone="floor", dwell_s=300)
    for i in range(5):
        visit(conn, f"p{i}", D, 10, cls="passerby", zone="entrance", dwell_s=40)
    visit(conn, "p5", D, 11, cls="passerby", zone="entrance", dwell_s=40)
    visit(conn, "staff", D, 9, dwell_s=8 * 3600, excluded=1)
    refresh(conn)

    out = metrics.footfall(conn, D, D, granularity="hour")
    assert out["totals"]["visitors"] == 3
    assert out["totals"]["passersby"] == 6
    assert out["totals"]["capture_rate"] == round(3 / 9, 4)
    assert out["totals"]["mean_dwell_s"] == round((600 + 1200 + 300) / 3, 1)
    assert out["totals"]["unique_visitors"] == 3
    assert len(out["series"]) == 24
    by_period = {p["period"]: p for p in out["series"]}
    assert by_period["2026-03-10T10"]["visitors"] == 2
    assert by_period["2026-03-10T10"]["passersby"] == 5
    assert by_period["2026-03-10T10"]["capture_rate"] == round(2 / 7, 4)
    assert by_period["2026-03-10T09"]["visitors"] == 0  # staff left out
    assert by_period["2026-03-10T03"]["capture_rate"] is None
    zones = {z["zone"]: z for z in out["zones"]}
    assert zones["entrance"]["visitors"] == 1 and zones["entrance"]["passersby"] == 6
    assert zones["floor"]["visitors"] == 2

    only_floor = metrics.footfall(conn, D, D, granularity="hour", zone="floor")
    assert only_floor["totals"]["visitors"] == 2 and only_floor["totals"]["unique_visitors"] is None

    with_staff = metrics.footfall(conn, D, D, granularity="day", include_excluded=True)
    assert with_staff["totals"]["visitors"] == 4
    assert with_staff["series"] == [{"period": "2026-03-10", **with_staff["totals"]} | {"period": "2026-03-10"}] or (
        with_staff["series"][0]["visitors"] == 4
    )


def test_unique_visitors_count_device_keys_not_mac_hashes(conn: sqlite3.Connection) -> None:
    # One phone rotating its MAC: three raw hashes, one estimated device.
    for i, hour in enumerate((9, 12, 17)):
        visit(conn, "phone-1", D, hour, device=f"rotating-mac-{i}")
    visit(conn, "phone-2", D, 12)
    visit(conn, "phone-1", D + timedelta(days=1), 10, device="rotating-mac-9")
    refresh(conn, D + timedelta(days=1))
    out = metrics.footfall(conn, D, D + timedelta(days=1), granularity="day")
    assert out["totals"]["visitors"] == 5
    assert out["totals"]["unique_visitors"] == 2
    assert metrics.unique_visitors(conn, D, D) == 2
    assert metrics.unique_visitors(conn, D + timedelta(days=1), D + timedelta(days=1)) == 1


def test_week_granularity_runs_monday_to_sunday(conn: sqlite3.Connection) -> None:
    sunday = date(2026, 3, 8)
    monday = date(2026, 3, 9)
    visit(conn, "a", sunday, 12)
    visit(conn, "b", monday, 12)
    visit(conn, "c", monday + timedelta(days=6), 12)  # the next Sunday: same week as monday
    refresh(conn, monday + timedelta(days=6))
    out = metrics.footfall(conn, sunday, monday + timedelta(days=6), granularity="week")
    assert [(p["period"], p["visitors"]) for p in out["series"]] == [("2026-03-02", 1), ("2026-03-09", 2)]
    with pytest.raises(ValueError):
        metrics.footfall(conn, D, D, granularity="minute")


def test_engagement_buckets_median_and_mean(conn: sqlite3.Connection) -> None:
    dwells = [120, 240, 600, 900, 1500, 2400, 4000, 7200, 30000]
    for i, d in enumerate(dwells):
        visit(conn, f"v{i}", D, 12, dwell_s=d)
    visit(conn, "p", D, 12, cls="passerby", dwell_s=30)  # passers-by have no dwell in the store
    refresh(conn)
    out = metrics.engagement(conn, D, D)
    assert out["visits"] == 9
    assert out["mean_dwell_s"] == round(sum(dwells) / 9, 1)
    buckets = {b["bucket"]: b["visits"] for b in out["buckets"]}
    assert buckets == {"under 5 min": 2, "5-20 min": 2, "20-60 min": 2, "1-6 h": 2, "6 h+": 1}
    assert sum(b["share"] for b in out["buckets"]) == pytest.approx(1.0, abs=1e-3)
    # The 5th of 9 values (1500 s) lies in the 1200-1800 s bin; the estimate stays inside it.
    assert 1200 <= out["median_dwell_s"] <= 1800
    assert sum(h["visits"] for h in out["histogram"]) == 9


def test_loyalty_new_returning_gap_and_frequency(conn: sqlite3.Connection) -> None:
    start = D
    end = D + timedelta(days=1)
    visit(conn, "old", D - timedelta(days=10), 12)  # last seen 10 days before the period
    visit(conn, "old", D, 12)
    visit(conn, "twice", D, 12)  # first visit ever in the period ...
    visit(conn, "twice", D + timedelta(days=1), 12)  # ... and back the next day: still one new visitor
    visit(conn, "fresh", D + timedelta(days=1), 15)
    # A regular: 16 of the last 30 days.
    for k in range(16):
        visit(conn, "regular", D + timedelta(days=1) - timedelta(days=k), 9)
    visit(conn, "passer", D, 12, cls="passerby")
    visit(conn, "staff", D, 8, excluded=1)
    refresh(conn, end)

    out = metrics.loyalty(conn, start, end)
    assert out["unique_visitors"] == 4  # old, twice, fresh, regular
    assert out["new_visitors"] == 2  # twice, fresh
    assert out["returning_visitors"] == 2  # old, regular
    assert out["return_rate"] == 0.5
    # visitor-days in the period: old D, twice D, twice D+1, fresh D+1, regular D and D+1
    assert out["visitor_days"] == 6
    series = {d["day"]: (d["new"], d["returning"]) for d in out["series"]}
    assert series == {"2026-03-10": (1, 2), "2026-03-11": (1, 2)}
    gaps = {b["bucket"]: b["visitor_days"] for b in out["days_since_last_visit"]}
    assert gaps["1 day"] == 3  # twice on D+1, regular on D and D+1
    assert gaps["8-30 days"] == 1  # old, 10 days
    assert out["median_days_since_last_visit"] == 1
    freq = {f["frequency"]: f["visitor_days"] for f in out["frequency"]}
    # regular on D+1 has 16 days in the last 30 (daily), on D 15 (daily); the rest occasional.
    assert freq == {"daily": 2, "weekly": 0, "occasional": 4}

    staff = metrics.loyalty(conn, start, end, include_excluded=True)
    assert staff["unique_visitors"] == 5


def test_now_in_store_presence_then_fallback(conn: sqlite3.Connection) -> None:
    now = ts(D, 15)
    conn.execute("INSERT INTO presence VALUES ('s1', 'entrance', ?, 40, 12)", (now - 30,))
    conn.execute("INSERT INTO presence VALUES ('s1', 'entrance', ?, 41, 14)", (now - 10,))
    conn.execute("INSERT INTO presence VALUES ('s1', 'floor', ?, 30, 9)", (now - 20,))
    conn.execute("INSERT INTO presence VALUES ('s1', 'fitting', ?, 30, 99)", (now - 3600,))  # stale
    visit(conn, "left-now", D, 14, minute=50, dwell_s=9 * 60)  # ended 1 min ago
    visit(conn, "left-long-ago", D, 12)
    visit(conn, "staff", D, 14, minute=0, dwell_s=3580, excluded=1)
    conn.commit()
    out = metrics_today.now_in_store(conn, now=now)
    assert out["source"] == "presence"
    assert out["now_in_store"] == 14  # the largest fresh zone, never a sum of overlapping zones
    assert {z["zone"]: z["inside"] for z in out["zones"]} == {"entrance": 14, "floor": 9}
    assert out["recent_visitors"] == 1

    later = metrics_today.now_in_store(conn, now=now + 600, window_s=900)
    assert later["source"] == "recent_visits"
    assert later["now_in_store"] == 1
    assert metrics_today.now_in_store(conn, now=now + 600, window_s=900, include_excluded=True)["now_in_store"] == 2


def test_compare_today_with_same_weekday_last_week_same_time(conn: sqlite3.Connection) -> None:
    last = D - timedelta(days=7)
    for hour, minute in ((9, 0), (10, 0), (14, 10), (14, 50), (18, 0)):
        visit(conn, f"lw{hour}{minute}", last, hour, minute=minute)
    visit(conn, "lwp", last, 10, cls="passerby")
    for hour, minute in ((9, 30), (11, 0), (14, 5)):
        visit(conn, f"t{hour}{minute}", D, hour, minute=minute)
    visit(conn, "tp1", D, 10, cls="passerby")
    visit(conn, "tp2", D, 12, cls="passerby")
    conn.commit()
    summaries.refresh_summaries(conn, now=ts(D, 14, 30), tz="UTC", check_days=1000)
    out = metrics_today.compare(conn, now=ts(D, 14, 30), tz="UTC")
    assert out["today"]["date"] == "2026-03-10" and out["last_week_same_time"]["date"] == "2026-03-03"
    assert out["today"]["visitors"] == 3
    assert out["today"]["passersby"] == 2
    assert out["last_week_same_time"]["visitors"] == 3  # 9:00, 10:00, 14:10 -- not 14:50 or 18:00
    assert out["last_week_same_time"]["passersby"] == 1
    assert out["last_week_full_day"]["visitors"] == 5
    assert out["change"]["visitors"] == 0.0
    assert out["change"]["capture_rate_points"] == round(3 / 5 - 3 / 4, 4)
    hourly = {h["hour"]: (h["today"], h["last_week"]) for h in out["hourly"]}
    assert hourly[14] == (1, 2) and hourly[18] == (0, 1)


def test_sensor_health_states(conn: sqlite3.Connection) -> None:
    now = 1_000_000.0
    rows = [
        ("entrance", "online", now - 20, None),
        ("floor", "online", now - 3600, None),  # claims online, silent for an hour
        ("fitting", "offline", now - 600, now - 600),
    ]
    for sensor, state, last, offline_since in rows:
        conn.execute(
            "INSERT INTO sensors (site, sensor, state, last_message, offline_since, messages, health) "
            "VALUES ('s1', ?, ?, ?, ?, 10, '{\"cpu_temp_c\": 50}')",
            (sensor, state, last, offline_since),
        )
    out = metrics_health.sensor_health(conn, now=now, stale_after_s=180)
    status = {s["sensor"]: s["status"] for s in out["sensors"]}
    assert status == {"entrance": "online", "floor": "stale", "fitting": "offline"}
    assert (out["online"], out["stale"], out["offline"]) == (1, 1, 1)
    assert out["sensors"][0]["health"] == {"cpu_temp_c": 50}


def test_rejects(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO ingest_rejects VALUES ('schema', 3, 1.0, 'missing field')")
    conn.execute("INSERT INTO ingest_rejects VALUES ('garbage', 5, 2.0, NULL)")
    out = metrics_health.rejects(conn)
    assert out["total"] == 8
    assert [r["reason"] for r in out["reasons"]] == ["garbage", "schema"]


def test_refresh_follows_late_and_changed_visits(conn: sqlite3.Connection) -> None:
    visit(conn, "a", D, 10)
    refresh(conn)
    assert metrics.footfall(conn, D, D)["totals"]["visitors"] == 1
    late = visit(conn, "b", D, 11)  # a late message for today
    refresh(conn)
    assert metrics.footfall(conn, D, D)["totals"]["visitors"] == 2
    # Days ago: a device found to be staff later, and a merge that moved a visit's zone.
    old = D - timedelta(days=20)
    visit(conn, "x", old, 10)
    refresh(conn)
    assert metrics.footfall(conn, old, old, granularity="day")["totals"]["visitors"] == 1
    conn.execute("UPDATE visits SET excluded = 1 WHERE device_key = 'x'")
    conn.execute("UPDATE visits SET best_sensor = 'fitting' WHERE id = ?", (late,))
    refresh(conn)
    assert metrics.footfall(conn, old, old, granularity="day")["totals"]["visitors"] == 0
    zones = {z["zone"]: z["visitors"] for z in metrics.footfall(conn, D, D)["zones"]}
    assert zones == {"floor": 1, "fitting": 1}


def test_rolled_up_days_come_from_hourly_and_summaries_survive_retention(conn: sqlite3.Connection) -> None:
    # A day rolled up before this hub ever summarized it: only ``hourly`` knows it.
    gone = D - timedelta(days=100)
    conn.execute("INSERT INTO hourly VALUES ('s1', ?, 10, 'floor', 7, 13, 4200.0, 3, 4, 1)", (gone.isoformat(),))
    # A day summarized first, then retired by retention (rolled up + raw deleted).
    kept = D - timedelta(days=50)
    visit(conn, "k1", kept, 10, dwell_s=100)
    visit(conn, "k2", kept, 10, dwell_s=5000)
    visit(conn, "kp", kept, 10, cls="passerby")
    refresh(conn)
    conn.execute("INSERT INTO hourly VALUES ('s1', ?, 10, 'floor', 2, 1, 5100.0, 2, 0, 1)", (kept.isoformat(),))
    conn.execute("DELETE FROM visits WHERE day = ?", (kept.isoformat(),))
    visit(conn, "today", D, 10)
    refresh(conn)
    assert conn.execute("SELECT frozen FROM summary_days WHERE day = ?", (kept.isoformat(),)).fetchone()[0] == 1

    out = metrics.footfall(conn, gone, D, granularity="day")
    assert out["totals"]["visitors"] == 7 + 2 + 1
    assert out["totals"]["passersby"] == 13 + 1
    assert out["rolled_up_visits"] == 20
    days = {p["period"]: p["visitors"] for p in out["series"]}
    assert days[gone.isoformat()] == 7 and days[kept.isoformat()] == 2
    eng = metrics.engagement(conn, kept, kept)
    assert eng["visits"] == 2 and eng["rolled_up_visits"] == 0  # the frozen summary keeps the histogram
    eng = metrics.engagement(conn, gone, gone)
    assert eng["visits"] == 7 and eng["mean_dwell_s"] == 600.0 and eng["median_dwell_s"] is None
    loy = metrics.loyalty(conn, gone, gone)
    assert loy["rolled_up"] == {"new_visitors": 3, "returning_visitors": 4}


def test_incremental_refresh_matches_bulk_rebuild(conn: sqlite3.Connection) -> None:
    import random

    rnd = random.Random(5)
    for _ in range(400):
        day = D - timedelta(days=rnd.randrange(40))
        visit(
            conn,
            f"k{rnd.randrange(60)}",
            day,
            rnd.randrange(8, 21),
            dwell_s=rnd.choice([30, 200, 800, 2000, 9000]),
            cls=rnd.choice(["visitor", "visitor", "passerby"]),
            zone=rnd.choice(["a", "b"]),
            excluded=int(rnd.random() < 0.05),
        )
    refresh(conn)

    def snapshot() -> dict[str, list[tuple]]:
        return {t: sorted(map(tuple, conn.execute(f"SELECT * FROM {t}"))) for t in summaries.SUMMARY_TABLES}

    incremental = snapshot()
    summaries.rebuild_summaries(conn)
    assert snapshot() == incremental


def test_median_days_since_last_visit_beyond_the_first_bucket(conn: sqlite3.Connection) -> None:
    for key, gap in (("a", 10), ("b", 12), ("c", 40), ("d", 1)):
        visit(conn, key, D - timedelta(days=gap), 12)
        visit(conn, key, D, 12)
    refresh(conn)
    out = metrics.loyalty(conn, D, D)
    assert out["returning_visitors"] == 4
    assert out["median_days_since_last_visit"] == 10  # gaps 1, 10, 12, 40: the 2nd of 4
    assert {b["bucket"]: b["visitor_days"] for b in out["days_since_last_visit"]} == {
        "1 day": 1,
        "2-7 days": 0,
        "8-30 days": 2,
        "31-90 days": 1,
        "91+ days": 0,
    }
