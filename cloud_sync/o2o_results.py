"""O2O results for the centre: each scenario's report per local day, kept up to date.

The hub's report (``hub/o2o/reports.py``) follows a cohort (the targets assigned on a day) to
now: coupons are redeemed and targets come back for days after they were assigned. So every
sync run re-reports the last ``days`` local days of every scenario, and only the days whose
figures changed are queued (``scenario_result`` records, period ``day:YYYY-MM-DD``). The
records carry additive counts and money, never only ratios, so the centre can add days and
stores up and recompute match rate, ROMI and uplift for any period
(``cloud_sync/central/o2o.py``).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import zoneinfo

from footfall.cloud_sync import outbox

DAYS = 35  # beyond a coupon's usual validity plus the attribution window (7 days)


def enqueue_days(conn: sqlite3.Connection, site: str, zone: zoneinfo.ZoneInfo, now: float, days: int = DAYS) -> int:
    if not (outbox.has_table(conn, "o2o_targets") and outbox.has_table(conn, "o2o_scenarios")):
        return 0
    from footfall.hub.o2o import reports
    from footfall.hub.o2o.scenarios import Scenario

    today = dt.datetime.fromtimestamp(now, zone).date()
    first = today - dt.timedelta(days=days - 1)
    since = dt.datetime.combine(first, dt.time(), tzinfo=zone).timestamp()
    n = 0
    for row in conn.execute("SELECT * FROM o2o_scenarios ORDER BY id").fetchall():
        sc = Scenario.from_row(row)
        assigned = [
            r[0]
            for r in conn.execute(
                "SELECT assigned_at FROM o2o_targets WHERE scenario_id = ? AND assigned_at >= ?", (sc.id, since)
            )  # fmt: skip
        ]
        for day in sorted({dt.datetime.fromtimestamp(t, zone).date() for t in assigned}):
            start = dt.datetime.combine(day, dt.time(), tzinfo=zone).timestamp()
            end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=zone).timestamp()
            rep = reports.scenario_report(conn, sc, start, end, tz=zone)
            period = f"day:{day.isoformat()}"
            data = rep | {
                "site": site,
                "period": period,
                "day": day.isoformat(),
                # The campaign's fixed cost is not a day's: the centre adds it once per period.
                "margin": sc.margin,
                "return_value": round(rep["revenue"] * sc.margin, 2),
                "price_match": sc.price_match,
                "price_sms": sc.price_sms,
            }
            if outbox.enqueue_if_changed(conn, "scenario_result", f"{site}|{sc.name}|{period}", data, now=now):
                n += 1
    return n
