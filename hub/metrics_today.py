"""Today's figures: devices in the store right now, and today so far against last week.

The vocabulary is that of ``hub/metrics.py``; like its reports these take an open connection
to the hub database and return plain dicts ready for JSON.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from footfall.hub.localtime import _tz
from footfall.hub.metrics import _UNSUMMARIZED, _excl_clause, _traffic


def latest_presence(conn: sqlite3.Connection, now: float, max_age_s: float) -> list[tuple[str, float, int, int]]:
    """Each sensor's latest presence report no older than ``max_age_s``: (sensor, ts, devices, inside)."""
    return conn.execute(
        "SELECT sensor, max(ts), devices, inside FROM presence WHERE ts >= ? AND ts <= ? GROUP BY site, sensor "
        "ORDER BY sensor",
        (now - max_age_s, now + 60),
    ).fetchall()


def now_in_store(
    conn: sqlite3.Connection,
    *,
    now: float | None = None,
    window_s: float = 300,
    presence_max_age_s: float = 180,
    include_excluded: bool = False,
) -> dict[str, Any]:
    """Devices in the store right now.

    The sensors publish live ``presence`` counts (devices currently inside their zone). The
    store figure is the largest fresh zone count: zones overlap (one phone is heard by
    several sensors), so a sum would double count and the largest zone is the honest lower
    bound. Without fresh presence (all sensors silent for ``presence_max_age_s``) it falls
    back to distinct visitor devices whose visit ended in the last ``window_s`` seconds.
    Presence counts come from the sensors and cannot leave staff out.
    """
    now = time.time() if now is None else now
    zones = [
        {"zone": sensor, "inside": inside, "devices": devices, "age_s": round(max(0.0, now - ts), 1)}
        for sensor, ts, devices, inside in latest_presence(conn, now, presence_max_age_s)
    ]
    # Visits longer than 12 h are staff or fixed equipment; the bound keeps this an index range scan.
    # Visits in progress at ``now``: begun by then (a past ``now`` must not count later visitors)
    # and heard within the window before it.
    recent = conn.execute(
        "SELECT count(DISTINCT device_key) FROM visits WHERE first_seen >= ? AND first_seen <= ? AND last_seen >= ? "
        "AND class = 'visitor'" + _excl_clause(include_excluded, "excluded"),
        (now - 12 * 3600, now, now - window_s),
    ).fetchone()[0]
    if zones:
        value, source = max(z["inside"] for z in zones), "presence"
    else:
        value, source = recent, "recent_visits"
    return {
        "now_in_store": value,
        "source": source,
        "as_of": now,
        "window_s": window_s,
        "recent_visitors": recent,
        "zones": zones,
    }


def _day_traffic(conn: sqlite3.Connection, day: date, before_hour: int, cut: float | None, excl: str) -> list[float]:
    """[visitors, passers-by, visitor dwell] of one day: whole hours < before_hour from the
    summary, plus the visits of hour ``before_hour`` that started by ``cut`` from raw rows."""
    out = [0, 0, 0.0]
    rows = list(
        conn.execute(
            f"SELECT class, sum(visits), sum(dwell_s) FROM agg_hour WHERE day = ? AND hour < ?{excl} GROUP BY class",
            (day.isoformat(), before_hour),
        )
    )
    if cut is not None:
        rows += conn.execute(
            "SELECT class, count(*), sum(dwell_s) FROM visits WHERE day = ? AND hour = ? AND first_seen <= ?"
            + excl.replace("excl", "excluded")
            + " GROUP BY class",
            (day.isoformat(), before_hour, cut),
        ).fetchall()
    rows += conn.execute(
        f"SELECT 'visitor', sum(visitors), sum(dwell_s_sum) FROM hourly WHERE rolled_up = 1 AND day = ? AND hour < ? "
        f"AND {_UNSUMMARIZED} UNION ALL SELECT 'passerby', sum(passersby), 0 FROM hourly WHERE rolled_up = 1 "
        f"AND day = ? AND hour < ? AND {_UNSUMMARIZED}",
        (day.isoformat(), before_hour + (1 if cut is not None else 0)) * 2,
    ).fetchall()
    for cls, n, dwell in rows:
        if n is None:
            continue
        if cls == "visitor":
            out[0] += n
            out[2] += dwell or 0.0
        elif cls == "passerby":
            out[1] += n
    return out


def _change(now_value: float | None, then_value: float | None) -> float | None:
    if now_value is None or not then_value:
        return None
    return round((now_value - then_value) / then_value, 4)


def compare(
    conn: sqlite3.Connection,
    *,
    now: float | None = None,
    tz: str | tzinfo | None = None,
    include_excluded: bool = False,
) -> dict[str, Any]:
    """Today so far vs the same weekday last week up to the same local time of day.

    Like-for-like: last week's figure counts only visits that had started by the same
    wall-clock time, so a morning is never compared with a whole day (``last_week_full_day``
    gives that too). ``hourly`` has both days' visitors per hour for the chart.
    """
    now = time.time() if now is None else now
    zone = _tz(tz)
    local_now = datetime.fromtimestamp(now, zone)
    today = local_now.date()
    last_week = today - timedelta(days=7)
    cut_then = local_now.replace(tzinfo=None) - timedelta(days=7)
    cut_then_ts = cut_then.replace(tzinfo=zone).timestamp()
    excl = _excl_clause(include_excluded)
    t = _day_traffic(conn, today, local_now.hour, now, excl)
    lw = _day_traffic(conn, last_week, local_now.hour, cut_then_ts, excl)
    lw_full = _day_traffic(conn, last_week, 24, None, excl)
    hours = {h: [0, 0] for h in range(24)}
    for day_idx, day in enumerate((today, last_week)):
        for h, n in conn.execute(
            f"SELECT hour, sum(visits) FROM agg_hour WHERE day = ? AND class = 'visitor'{excl} GROUP BY hour",
            (day.isoformat(),),
        ):
            hours[h][day_idx] += n
        for h, n in conn.execute(
            f"SELECT hour, sum(visitors) FROM hourly WHERE rolled_up = 1 AND day = ? AND {_UNSUMMARIZED} GROUP BY hour",
            (day.isoformat(),),
        ):
            hours[h][day_idx] += n
    today_block = {"date": today.isoformat(), **_traffic(int(t[0]), int(t[1]), t[2])}
    lw_block = {"date": last_week.isoformat(), **_traffic(int(lw[0]), int(lw[1]), lw[2])}
    cap_now, cap_then = today_block["capture_rate"], lw_block["capture_rate"]
    return {
        "as_of": now,
        "local_time": local_now.strftime("%H:%M"),
        "tz": getattr(zone, "key", None) or str(zone),
        "today": today_block,
        "last_week_same_time": lw_block,
        "last_week_full_day": {"date": last_week.isoformat(), **_traffic(int(lw_full[0]), int(lw_full[1]), lw_full[2])},
        "change": {
            "visitors": _change(today_block["visitors"], lw_block["visitors"]),
            "passersby": _change(today_block["passersby"], lw_block["passersby"]),
            "capture_rate_points": (
                round(cap_now - cap_then, 4) if cap_now is not None and cap_then is not None else None
            ),
        },
        "hourly": [{"hour": h, "today": v[0], "last_week": v[1]} for h, v in sorted(hours.items())],
    }
