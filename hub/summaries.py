"""The per-day summary tables the metrics read, kept up to date from the raw visits.

``hub/metrics.py`` reads small per-day tables (migrations 2 and 5 in ``hub/migrations_1_5.py``:
``agg_hour``, ``agg_dwell``, ``visitor_days``, ``agg_gap``, ``agg_freq``, ``agg_day``,
``agg_prev``, ``agg_loyalty_day``) instead of millions of raw visits. Ingest never writes them:
:func:`refresh_summaries` recomputes a day from its raw visits when the day's fingerprint
changes (the dashboard server runs it every few seconds, the link job after relinking a day),
:func:`rebuild_summaries` recomputes everything in bulk. A day whose raw visits retention
deleted keeps its summaries (frozen).
"""

from __future__ import annotations

import sqlite3
import time
from datetime import date, timedelta, tzinfo

from footfall.hub.localtime import local_today
from footfall.hub.metrics import DWELL_EDGES

SUMMARY_TABLES = (
    "agg_hour",
    "agg_dwell",
    "visitor_days",
    "agg_gap",
    "agg_freq",
    "agg_day",
    "agg_prev",
    "agg_loyalty_day",
)
# The per-day tables derived from agg_hour ({hour}) and visitor_days ({vd}); {where} picks the days.
_DAY_TABLES_SQL = (
    "INSERT INTO agg_day SELECT day, zone, class, excl, sum(visits), sum(dwell_s) FROM {hour} "
    "WHERE {where} GROUP BY 1, 2, 3, 4",
    "INSERT INTO agg_prev SELECT day, excl, prev, visitors, sum(visitors) OVER (PARTITION BY day, excl ORDER BY prev) "
    "FROM (SELECT day, excl, coalesce(prev_day, '') AS prev, count(*) AS visitors FROM {vd} "
    "WHERE visits > 0 AND {where} GROUP BY 1, 2, 3)",
    "INSERT INTO agg_loyalty_day SELECT day, excl, count(*), count(*) - count(gap), total(gap = 1), "
    "total(gap BETWEEN 2 AND 7), total(gap BETWEEN 8 AND 30), total(gap BETWEEN 31 AND 90), total(gap > 90), "
    "total(days_30 >= 15), total(days_30 BETWEEN 4 AND 14), total(days_30 <= 3) "
    "FROM (SELECT day, excl, days_30, CAST(julianday(day) - julianday(prev_day) AS INTEGER) AS gap "
    "FROM {vd} WHERE visits > 0 AND {where}) GROUP BY 1, 2",
)
_BIN_SQL = (
    "CASE "
    + " ".join(f"WHEN dwell_s < {hi} THEN {i}" for i, hi in enumerate(DWELL_EDGES[1:]))
    + f" ELSE {len(DWELL_EDGES) - 1} END"
)
_GAP_SQL = "CASE WHEN prev_day IS NULL THEN -1 ELSE min(400, CAST(julianday(day) - julianday(prev_day) AS INTEGER)) END"
# Cheap enough to run on a day's raw visits every few seconds (plain SQL, no Python per row),
# and it moves with every kind of change ingest makes: new, merged (longer dwell, other zone),
# reclassified, excluded, re-keyed. Values are weighted by the row id so that a change moving
# between rows still moves the sums; string columns enter by first and last character and length.
_FINGERPRINT_SQL = (
    "SELECT count(*), coalesce(max(id), 0), round(total(dwell_s * (id % 97 + 1)), 3), "
    "total(id * (unicode(class) + 3 * excluded + 5 * hour + 7 * unicode(best_sensor) "
    "+ 11 * unicode(substr(best_sensor, -1)) + 13 * length(best_sensor) + 17 * unicode(device_key) "
    "+ 19 * unicode(substr(device_key, -1)) + 23 * length(device_key))) "
    "FROM visits WHERE day = ?"
)


def fingerprint(conn: sqlite3.Connection, day: str) -> str:
    return "|".join(str(x) for x in conn.execute(_FINGERPRINT_SQL, (day,)).fetchone())


def _stage_tables(conn: sqlite3.Connection) -> None:
    for table in SUMMARY_TABLES:
        conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS stage_{table} AS SELECT * FROM main.{table} WHERE 0")
    conn.execute("CREATE INDEX IF NOT EXISTS temp.stage_visitor_days_key ON stage_visitor_days(device_key, excl)")


def summarize_day(conn: sqlite3.Connection, day: str, *, now: float | None = None) -> str:
    """Recompute one day's summaries from its raw visits; returns the fingerprint stored.

    Everything is computed first into temporary tables (reading one snapshot, holding no
    lock on the store), then swapped in by a short write transaction, so ingest waits for
    a few milliseconds of copying, not for the aggregation. ``prev_day``/``days_30`` read the
    earlier days' ``visitor_days``, so days are summarized oldest first; a day changed later
    does not rewrite the days after it (``rebuild_summaries`` does).
    """
    now = time.time() if now is None else now
    if conn.in_transaction:
        conn.commit()
    _stage_tables(conn)
    with conn:
        for table in SUMMARY_TABLES:
            conn.execute(f"DELETE FROM temp.stage_{table}")
        fp = fingerprint(conn, day)  # in the same read snapshot as the sums below
        conn.execute(
            "INSERT INTO temp.stage_agg_hour SELECT day, hour, best_sensor, class, excluded, count(*), total(dwell_s) "
            "FROM main.visits WHERE day = ? GROUP BY 1, 2, 3, 4, 5",
            (day,),
        )
        conn.execute(
            "INSERT INTO temp.stage_agg_dwell SELECT day, best_sensor, class, excluded, "
            f"{_BIN_SQL}, count(*), total(dwell_s) FROM main.visits WHERE day = ? GROUP BY 1, 2, 3, 4, 5",
            (day,),
        )
        conn.execute(
            """INSERT INTO temp.stage_visitor_days
            SELECT device_key, excl, day, visits, dwell_s,
                (SELECT max(v.day) FROM main.visitor_days v
                 WHERE v.device_key = t.device_key AND v.excl = t.excl AND v.day < t.day),
                1 + (SELECT count(*) FROM main.visitor_days v
                     WHERE v.device_key = t.device_key AND v.excl = t.excl AND v.day < t.day
                       AND v.day > date(t.day, '-30 days'))
            FROM (SELECT device_key, excluded AS excl, day, count(*) AS visits, total(dwell_s) AS dwell_s
                  FROM main.visits WHERE day = ? AND class = 'visitor' GROUP BY 1, 2) AS t""",
            (day,),
        )
        conn.execute(
            f"INSERT INTO temp.stage_agg_gap SELECT day, excl, {_GAP_SQL}, count(*) FROM temp.stage_visitor_days "
            "GROUP BY 1, 2, 3"
        )
        conn.execute(
            "INSERT INTO temp.stage_agg_freq SELECT day, excl, days_30, count(*) FROM temp.stage_visitor_days "
            "GROUP BY 1, 2, 3"
        )
        for sql in _DAY_TABLES_SQL:
            conn.execute(
                sql.format(where="1", hour="temp.stage_agg_hour", vd="temp.stage_visitor_days").replace(
                    "INSERT INTO ", "INSERT INTO temp.stage_", 1
                )
            )
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table in SUMMARY_TABLES:
            if table == "visitor_days":
                continue
            conn.execute(f"DELETE FROM main.{table} WHERE day = ?", (day,))
            conn.execute(f"INSERT INTO main.{table} SELECT * FROM temp.stage_{table}")
        # visitor_days is keyed by device, so a day's rows are spread over the whole table:
        # write only the rows that changed (few, when today is refreshed every few seconds).
        conn.execute(
            "DELETE FROM main.visitor_days WHERE day = ? AND NOT EXISTS (SELECT 1 FROM temp.stage_visitor_days s "
            "WHERE s.device_key = visitor_days.device_key AND s.excl = visitor_days.excl)",
            (day,),
        )
        conn.execute(
            "INSERT INTO main.visitor_days SELECT * FROM temp.stage_visitor_days WHERE true "
            "ON CONFLICT (device_key, excl, day) DO UPDATE SET visits = excluded.visits, dwell_s = excluded.dwell_s, "
            "prev_day = excluded.prev_day, days_30 = excluded.days_30 "
            "WHERE visits IS NOT excluded.visits OR dwell_s IS NOT excluded.dwell_s "
            "OR prev_day IS NOT excluded.prev_day OR days_30 IS NOT excluded.days_30"
        )
        conn.execute(
            "INSERT OR REPLACE INTO summary_days (day, fingerprint, refreshed, frozen) VALUES (?, ?, ?, 0)",
            (day, fp, now),
        )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return fp


def refresh_summaries(
    conn: sqlite3.Connection,
    *,
    now: float | None = None,
    tz: str | tzinfo | None = None,
    check_days: int = 6,
    max_days: int | None = None,
) -> dict[str, int]:
    """Bring the summaries up to date with ``visits``; cheap when nothing changed.

    1. Days with raw visits never summarized, oldest first (at most ``max_days`` per call).
    2. Today and yesterday (local), whenever their fingerprint moved.
    3. The ``check_days`` summarized days checked longest ago: recomputed if their raw visits
       changed (late messages, staff flagged later, re-keyed devices). A day that lost raw
       visits while ``hourly`` holds rolled-up rows for it is being retired by retention:
       its summaries are frozen, keeping the detail (dwell histogram, loyalty) the hourly
       roll-up cannot carry.
    """
    now = time.time() if now is None else now
    stats = {"summarized": 0, "checked": 0, "frozen": 0}
    first, last = conn.execute("SELECT min(day), max(day) FROM visits").fetchone()
    if first is None:
        return stats
    known = {r[0] for r in conn.execute("SELECT day FROM summary_days")}
    d, end = date.fromisoformat(first), date.fromisoformat(last)
    while d <= end:
        day = d.isoformat()
        if day not in known:
            summarize_day(conn, day, now=now)
            stats["summarized"] += 1
            if max_days is not None and stats["summarized"] >= max_days:
                return stats
        d += timedelta(days=1)
    today = local_today(now, tz)
    hot = [(today - timedelta(days=1)).isoformat(), today.isoformat()]
    stale = [
        r[0]
        for r in conn.execute(
            "SELECT day FROM summary_days WHERE frozen = 0 AND day NOT IN (?, ?) ORDER BY refreshed LIMIT ?",
            (*hot, check_days),
        )
    ]
    for day in hot + stale:
        fp = fingerprint(conn, day)
        stats["checked"] += 1
        row = conn.execute("SELECT fingerprint FROM summary_days WHERE day = ?", (day,)).fetchone()
        if row is not None and row[0] == fp:
            if day in stale:
                with conn:
                    conn.execute("UPDATE summary_days SET refreshed = ? WHERE day = ?", (now, day))
            continue
        if row is None and fp.startswith("0|"):
            continue  # no visits that day and nothing summarized
        rolled = conn.execute("SELECT 1 FROM hourly WHERE rolled_up = 1 AND day = ? LIMIT 1", (day,)).fetchone()
        if rolled and row is not None:
            with conn:
                conn.execute("UPDATE summary_days SET frozen = 1, refreshed = ? WHERE day = ?", (now, day))
            stats["frozen"] += 1
            continue
        summarize_day(conn, day, now=now)
        stats["summarized"] += 1
    return stats


def rebuild_summaries(conn: sqlite3.Connection, *, now: float | None = None) -> None:
    """Recompute every summary from ``visits`` in bulk (bulk loads, repair after visits
    arrived far out of order). Frozen days (raw visits retired by retention) are kept."""
    now = time.time() if now is None else now
    with conn:
        frozen = "(SELECT day FROM summary_days WHERE frozen = 1)"
        for table in SUMMARY_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE day NOT IN {frozen}")
        conn.execute("DELETE FROM summary_days WHERE frozen = 0")
        conn.execute(
            "INSERT INTO agg_hour SELECT day, hour, best_sensor, class, excluded, count(*), total(dwell_s) "
            f"FROM visits WHERE day NOT IN {frozen} GROUP BY 1, 2, 3, 4, 5"
        )
        conn.execute(
            f"INSERT INTO agg_dwell SELECT day, best_sensor, class, excluded, {_BIN_SQL}, count(*), total(dwell_s) "
            f"FROM visits WHERE day NOT IN {frozen} GROUP BY 1, 2, 3, 4, 5"
        )
        _rebuild_visitor_days(conn, frozen)
        conn.execute(
            f"INSERT INTO agg_gap SELECT day, excl, {_GAP_SQL}, count(*) FROM visitor_days "
            f"WHERE day NOT IN {frozen} GROUP BY 1, 2, 3"
        )
        conn.execute(
            "INSERT INTO agg_freq SELECT day, excl, days_30, count(*) FROM visitor_days "
            f"WHERE day NOT IN {frozen} GROUP BY 1, 2, 3"
        )
        for sql in _DAY_TABLES_SQL:
            conn.execute(sql.format(where=f"day NOT IN {frozen}", hour="agg_hour", vd="visitor_days"))
        days = conn.execute(
            _FINGERPRINT_SQL.replace("SELECT ", "SELECT day, ", 1).replace("WHERE day = ?", "GROUP BY day")
        ).fetchall()
        conn.executemany(
            "INSERT OR IGNORE INTO summary_days (day, fingerprint, refreshed, frozen) VALUES (?, ?, ?, 0)",
            [(r[0], "|".join(str(x) for x in r[1:]), now) for r in days],
        )


def _rebuild_visitor_days(conn: sqlite3.Connection, frozen: str) -> None:
    # Frozen days' rows stay and still count as history for the days after them.
    conn.execute(
        f"""INSERT INTO visitor_days
        SELECT device_key, excl, day, visits, dwell_s, prev_day, days_30 FROM (
            SELECT device_key, excl, day, visits, dwell_s, kept, lag(day) OVER w AS prev_day,
                count(*) OVER (w RANGE BETWEEN 29 PRECEDING AND CURRENT ROW) AS days_30
            FROM (SELECT device_key, excluded AS excl, day, julianday(day) AS jd, count(*) AS visits,
                         total(dwell_s) AS dwell_s, 0 AS kept
                  FROM visits WHERE class = 'visitor' AND day NOT IN {frozen} GROUP BY 1, 2, 3
                  UNION ALL
                  SELECT device_key, excl, day, julianday(day), visits, dwell_s, 1 FROM visitor_days)
            WINDOW w AS (PARTITION BY device_key, excl ORDER BY jd))
        WHERE kept = 0"""
    )
