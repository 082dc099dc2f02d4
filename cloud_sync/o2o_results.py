"""O2O results for the centre: each scenario's report per local day, kept up to date.

The hub's report (``hub/o2o/reports.py``) follows a cohort (the targets assigned on a day) to
now: coupons are redeemed and targets come back for days after they were assigned. So every
sync run re-reports the last ``days`` local days of every scenario, and only the days whose
figures changed are queued (``scenario_result`` records, period ``day:YYYY-MM-DD``). The
records carry additive counts and money, never only ratios, so the centre can add days and
stores up and recompute match rate, ROMI and uplift for any period
(``cloud_sync/central/o2o.py``); and, apart from the cohort, what the partner bills for the
matches and SMS made that day (``invoice``, by event time). Finished ``o2o_runs`` are queued
too, one ``scenario_result`` per run (:func:`_enqueue_scenario_results`).
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
        # Days with targets assigned (the cohort) or with a match or SMS (what the partner bills
        # that day: an evening's targets are matched the next morning, after the quiet hours).
        times = [
            t
            for r in conn.execute(
                "SELECT assigned_at, matched_at, messaged_at FROM o2o_targets WHERE scenario_id = ?"
                " AND (assigned_at >= ? OR matched_at >= ? OR messaged_at >= ?)",
                (sc.id, since, since, since),
            )
            for t in r
            if t is not None and t >= since
        ]
        for day in sorted({dt.datetime.fromtimestamp(t, zone).date() for t in times}):
            start = dt.datetime.combine(day, dt.time(), tzinfo=zone).timestamp()
            end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=zone).timestamp()
            billed = conn.execute(
                "SELECT total(known = 1 AND matched_at >= ? AND matched_at < ?),"
                " total(message_id IS NOT NULL AND messaged_at >= ? AND messaged_at < ?)"
                " FROM o2o_targets WHERE scenario_id = ?",
                (start, end, start, end, sc.id),
            ).fetchone()
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
                # By event time, as reports.partner_invoice and the partner's own usage count.
                "billed_matched": int(billed[0]),
                "billed_sms": int(billed[1]),
                "invoice": round(billed[0] * sc.price_match + billed[1] * sc.price_sms, 2),
            }
            if outbox.enqueue_if_changed(conn, "scenario_result", f"{site}|{sc.name}|{period}", data, now=now):
                n += 1
    return n


def _enqueue_scenario_results(conn: sqlite3.Connection, site: str, now: float) -> int:
    if not (outbox.has_table(conn, "o2o_runs") and outbox.has_table(conn, "o2o_scenarios")):
        return 0
    n = 0
    rows = conn.execute(
        """SELECT r.*, s.name AS scenario FROM o2o_runs r JOIN o2o_scenarios s ON s.id = r.scenario_id
           WHERE r.finished IS NOT NULL ORDER BY r.id"""
    )
    names = [d[0] for d in rows.description]
    for row in rows.fetchall():
        data = dict(zip(names, row, strict=True)) | {"site": site}
        day = dt.datetime.fromtimestamp(data["started"], dt.UTC).date().isoformat()
        data["period"] = f"{day}#run-{data['id']}"
        if outbox.enqueue_if_changed(
            conn, "scenario_result", f"{site}|{data['scenario_id']}|{data['id']}", data, now=now
        ):
            n += 1
    return n
