"""Daily aggregates for the centre: each closed local day of the store (visitors, passers-by,
capture rate, dwell, and which sensors reported), queued again whenever its figures change.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import statistics
import zoneinfo
from typing import Any

from footfall.cloud_sync.outbox import enqueue_if_changed, get_state, set_state


def _day_bounds(day: str, tz: zoneinfo.ZoneInfo) -> tuple[float, float]:
    d = dt.date.fromisoformat(day)
    start = dt.datetime.combine(d, dt.time(), tzinfo=tz)
    end = dt.datetime.combine(d + dt.timedelta(days=1), dt.time(), tzinfo=tz)
    return start.timestamp(), end.timestamp()


def daily_aggregate(conn: sqlite3.Connection, site: str, day: str, tz: zoneinfo.ZoneInfo) -> dict[str, Any]:
    """One closed local day of the store: visitors, passers-by, capture rate, dwell, sensors."""
    r = conn.execute(
        """SELECT count(DISTINCT CASE WHEN class = 'visitor' THEN device_key END),
                  count(DISTINCT CASE WHEN class = 'passerby' THEN device_key END),
                  total(class = 'visitor'), total(CASE WHEN class = 'visitor' THEN dwell_s END)
           FROM visits WHERE day = ? AND excluded = 0""",
        (day,),
    ).fetchone()
    visitors, passersby, visits, dwell_sum = int(r[0]), int(r[1]), int(r[2]), float(r[3])
    dwells = [
        d[0]
        for d in conn.execute("SELECT dwell_s FROM visits WHERE day = ? AND excluded = 0 AND class = 'visitor'", (day,))
    ]
    start, end = _day_bounds(day, tz)
    sensors: dict[str, dict[str, Any]] = {}
    for sensor, n, first, last in conn.execute(
        "SELECT sensor, count(*), min(ts), max(ts) FROM presence WHERE site = ? AND ts >= ? AND ts < ? GROUP BY sensor",
        (site, start, end),
    ):
        sensors[sensor] = {"presence_reports": n, "first_report": first, "last_report": last}
    for sensor, n in conn.execute(
        "SELECT best_sensor, count(*) FROM visits WHERE day = ? GROUP BY best_sensor", (day,)
    ):
        sensors.setdefault(sensor, {})["visits"] = n
    return {
        "site": site,
        "day": day,
        "visitors": visitors,
        "passersby": passersby,
        "capture_rate": round(visitors / (visitors + passersby), 4) if visitors + passersby else None,
        "visits": visits,
        "dwell_total_s": round(dwell_sum, 1),
        "dwell_mean_s": round(dwell_sum / visits, 1) if visits else None,
        "dwell_median_s": round(statistics.median(dwells), 1) if dwells else None,
        "sensor_health": {"sensors_reporting": len(sensors), "sensors": sensors},
    }


def closed_days(conn: sqlite3.Connection, tz: zoneinfo.ZoneInfo, now: float, lookback_days: int) -> list[str]:
    """Local days before today that have visits: all of them at the first run, then the last few."""
    today = dt.datetime.fromtimestamp(now, tz).date().isoformat()
    last = get_state(conn, "aggregate_day")
    if last is None:
        rows = conn.execute("SELECT DISTINCT day FROM visits WHERE day < ? ORDER BY day", (today,))
    else:
        since = (dt.date.fromisoformat(today) - dt.timedelta(days=max(lookback_days, 1))).isoformat()
        since = min(since, (dt.date.fromisoformat(last) + dt.timedelta(days=1)).isoformat())
        rows = conn.execute("SELECT DISTINCT day FROM visits WHERE day >= ? AND day < ? ORDER BY day", (since, today))
    return [r[0] for r in rows]


def _enqueue_daily(conn: sqlite3.Connection, site: str, tz: zoneinfo.ZoneInfo, now: float, lookback: int) -> int:
    n = 0
    days = closed_days(conn, tz, now, lookback)
    for day in days:
        if enqueue_if_changed(conn, "daily_aggregate", f"{site}|{day}", daily_aggregate(conn, site, day, tz), now=now):
            n += 1
    if days:
        set_state(conn, "aggregate_day", max(days[-1], get_state(conn, "aggregate_day") or ""))
    return n
