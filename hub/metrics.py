"""Footfall metrics as the retail analytics trade defines them (Meraki, RetailNext, Purple).

Every function takes an open ``sqlite3`` connection to the hub database (see
``footfall.hub.store``) and plain parameters, and returns plain dicts and lists ready for JSON.
Periods are inclusive ranges of the store's local days (``datetime.date``); the ``day`` and
``hour`` columns are already local. ``docs/metrics.md`` explains each metric for people.

Vocabulary
- **Visit**: one stay of one device in the store, merged across sensors (``visits`` table).
- **Visitors** (footfall): visits classified ``visitor`` (came in). **Passers-by**: visits
  classified ``passerby`` (heard outside, never came in). Footfall counts visits, as a door
  counter would; **unique visitors** counts distinct devices (``device_key``, the hub's
  estimate of one physical device -- never the raw, randomizable MAC hash ``device``).
- **Capture rate** = visitors / (visitors + passers-by): the share of the traffic passing the
  store that came in.
- **Dwell**: visit duration (``dwell_s``) of visitors; mean is exact, the median is read off a
  19-bin histogram (linear inside the bin) so that it costs the same for a day or a year.
- **New** visitor: a unique visitor of the period whose first visit ever to this store is in
  the period; **returning**: seen before the period. **Return rate** = returning / unique.
- **Visit frequency**: each visitor-day (one device on one day) is classed by the distinct
  days that device visited in the 30 days ending that day: daily (15 or more), weekly (4-14),
  occasional (1-3).
- **Days since last visit**: for a returning visitor-day, days since the device's previous
  visit day.

Staff and fixed devices (``excluded``) are left out unless ``include_excluded=True``.

This module has the reports over a period of days (footfall, engagement, loyalty); today's
figures are in ``hub/metrics_today.py``, sensor health in ``hub/metrics_health.py``.

Speed: every query reads small per-day summary tables (migrations 2 and 5 in ``migrations_1_5.py``:
``agg_hour``, ``agg_dwell``, ``visitor_days``, ``agg_gap``, ``agg_freq``, ``agg_day``, ``agg_prev``,
``agg_loyalty_day``), never millions of raw
rows. Ingest never writes them (it pays nothing): ``refresh_summaries`` recomputes a day
from its raw visits when the day's fingerprint changes; the dashboard server runs it every
few seconds, so today's figures lag ingest by at most that. Days whose raw visits retention
deleted before they were ever summarized are read from ``hourly`` rows with
``rolled_up = 1``; those carry no dwell histogram, distinct devices or frequency, so results
say how many visits came from rolled-up data. A summarized day keeps its summaries when
retention deletes its raw visits (they are frozen).
"""

from __future__ import annotations

import bisect
import sqlite3
from datetime import date, timedelta
from typing import Any

GRANULARITIES = ("hour", "day", "week")
# Lower edges (seconds) of the dwell histogram bins; mirrors the ``dwell_bins`` table.
DWELL_EDGES = (
    0,
    60,
    120,
    180,
    300,
    420,
    600,
    900,
    1200,
    1800,
    2700,
    3600,
    5400,
    7200,
    10800,
    14400,
    21600,
    28800,
    43200,
)
# The last bin is open; for the median inside it, assume it spans to one day.
_LAST_BIN_HI = 86400


def dwell_bin(dwell_s: float) -> int:
    """The histogram bin (index into ``DWELL_EDGES``) a dwell of ``dwell_s`` seconds falls in."""
    return bisect.bisect_right(DWELL_EDGES, dwell_s) - 1


DWELL_BUCKETS = (
    ("under 5 min", 0, 300),
    ("5-20 min", 300, 1200),
    ("20-60 min", 1200, 3600),
    ("1-6 h", 3600, 21600),
    ("6 h+", 21600, None),
)
GAP_BUCKETS = (
    ("1 day", 1, 1),
    ("2-7 days", 2, 7),
    ("8-30 days", 8, 30),
    ("31-90 days", 31, 90),
    ("91+ days", 91, None),
)
FREQUENCY = (("daily", 15, 30), ("weekly", 4, 14), ("occasional", 1, 3))


# Hours rolled up by retention count from ``hourly`` only where no summary of the day exists:
# a summarized day keeps its (more detailed) summaries when retention deletes its raw visits.
_UNSUMMARIZED = "day NOT IN (SELECT day FROM summary_days)"


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def _excl_clause(include_excluded: bool, column: str = "excl") -> str:
    return "" if include_excluded else f" AND {column} = 0"


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def week_start(d: date) -> date:
    """Weeks run Monday to Sunday (ISO 8601), labelled by their Monday."""
    return d - timedelta(days=d.weekday())


def _period_key(granularity: str):
    if granularity == "hour":
        return lambda day, hour: f"{day}T{hour:02d}"
    if granularity == "day":
        return lambda day, hour: day
    if granularity == "week":
        weeks: dict[str, str] = {}

        def week_of(day: str, hour: int) -> str:
            if day not in weeks:
                weeks[day] = week_start(date.fromisoformat(day)).isoformat()
            return weeks[day]

        return week_of
    raise ValueError(f"unknown granularity {granularity!r}; expected one of {GRANULARITIES}")


def _periods(start: date, end: date, granularity: str) -> list[str]:
    if granularity == "hour":
        return [f"{d.isoformat()}T{h:02d}" for d in _days(start, end) for h in range(24)]
    if granularity == "day":
        return [d.isoformat() for d in _days(start, end)]
    weeks = sorted({week_start(d) for d in _days(start, end)})
    return [w.isoformat() for w in weeks]


def _rows(conn: sqlite3.Connection, sql: str, args: Any = ()) -> list[tuple]:
    """Plain tuples: building ``sqlite3.Row`` objects costs more than the query on big reads."""
    cur = conn.cursor()
    cur.row_factory = None
    return cur.execute(sql, args).fetchall()


def rolled_up_days(conn: sqlite3.Connection, start: date, end: date) -> list[str]:
    """Local days in the range with hours that retention rolled up into ``hourly``."""
    rows = conn.execute(
        "SELECT DISTINCT day FROM hourly WHERE rolled_up = 1 AND day BETWEEN ? AND ? ORDER BY day",
        (start.isoformat(), end.isoformat()),
    )
    return [r[0] for r in rows]


def _traffic(visitors: int, passersby: int, dwell_s: float) -> dict[str, Any]:
    return {
        "visitors": visitors,
        "passersby": passersby,
        "capture_rate": _ratio(visitors, visitors + passersby),
        "mean_dwell_s": round(dwell_s / visitors, 1) if visitors else None,
    }


def footfall(
    conn: sqlite3.Connection,
    start: date,
    end: date,
    *,
    granularity: str = "hour",
    zone: str | None = None,
    include_excluded: bool = False,
) -> dict[str, Any]:
    """Visitors, passers-by and capture rate over [start, end] by hour, day or week, and by zone.

    ``series`` has one entry per period (zeros included, so charts need no gap filling);
    ``zones`` splits the totals by the zone (sensor) that saw each visit strongest;
    ``totals.unique_visitors`` counts distinct devices (store-wide only: None with a zone).
    """
    key = _period_key(granularity)
    s, e = start.isoformat(), end.isoformat()
    where = "day BETWEEN ? AND ?" + _excl_clause(include_excluded)
    args: list[Any] = [s, e]
    rolled_where = f"rolled_up = 1 AND day BETWEEN ? AND ? AND {_UNSUMMARIZED}"
    rolled_args: list[Any] = [s, e]
    if zone is not None:
        where += " AND zone = ?"
        args.append(zone)
        rolled_where += " AND zone = ?"
        rolled_args.append(zone)
    series: dict[str, list[float]] = {p: [0, 0, 0.0] for p in _periods(start, end, granularity)}
    by_zone: dict[str, list[float]] = {}
    # Hourly series read the hourly summary; longer ones the daily one (a row per day and zone).
    if granularity == "hour":
        sql = f"SELECT day, hour, zone, class, visits, dwell_s FROM agg_hour WHERE {where}"
    else:
        sql = f"SELECT day, 0, zone, class, visits, dwell_s FROM agg_day WHERE {where}"
    for day, hour, z, cls, n, dwell in _rows(conn, sql, args):
        slot = series.setdefault(key(day, hour), [0, 0, 0.0])
        zslot = by_zone.setdefault(z, [0, 0, 0.0])
        if cls == "visitor":
            slot[0] += n
            slot[2] += dwell
            zslot[0] += n
            zslot[2] += dwell
        elif cls == "passerby":
            slot[1] += n
            zslot[1] += n
    rolled_visits = 0
    sql = (
        "SELECT day, hour, zone, sum(visitors), sum(passersby), sum(dwell_s_sum) FROM hourly "
        f"WHERE {rolled_where} GROUP BY 1, 2, 3"
    )
    for day, hour, z, v, pb, dwell in _rows(conn, sql, rolled_args):
        for slot in (series.setdefault(key(day, hour), [0, 0, 0.0]), by_zone.setdefault(z, [0, 0, 0.0])):
            slot[0] += v
            slot[1] += pb
            slot[2] += dwell
        rolled_visits += v + pb
    total = [sum(x[i] for x in series.values()) for i in range(3)]
    totals = _traffic(int(total[0]), int(total[1]), total[2])
    totals["unique_visitors"] = (
        unique_visitors(conn, start, end, include_excluded=include_excluded) if zone is None else None
    )
    return {
        "start": s,
        "end": e,
        "granularity": granularity,
        "zone": zone,
        "include_excluded": include_excluded,
        "totals": totals,
        "series": [{"period": p, **_traffic(int(v), int(pb), d)} for p, (v, pb, d) in sorted(series.items())],
        "zones": [{"zone": z, **_traffic(int(v), int(pb), d)} for z, (v, pb, d) in sorted(by_zone.items())],
        "rolled_up_visits": rolled_visits,
    }


def known_zones(conn: sqlite3.Connection) -> list[str]:
    """Every zone a report can be asked about: the sensors that ever sent something and the
    zones in the summaries (a sensor since removed still has its history). The summary tables
    hold a row per day and zone, not per visit: reading them stays cheap for a year of data."""
    rows = conn.execute("SELECT sensor FROM sensors UNION SELECT zone FROM agg_day UNION SELECT zone FROM hourly")
    return sorted(r[0] for r in rows if r[0])


def unique_visitors(conn: sqlite3.Connection, start: date, end: date, *, include_excluded: bool = False) -> int:
    """Distinct visitor devices in [start, end] (summarized days).

    A device's first visitor-day inside the period is the one whose previous visit day is
    before ``start`` (or that has none), so counting those rows counts each device once:
    per day, one seek in ``agg_prev`` for the running total of such rows.
    """
    row = conn.execute(
        "SELECT coalesce(sum((SELECT p.cum FROM agg_prev p WHERE p.day = l.day AND p.excl = l.excl "
        "AND p.prev_day < ? ORDER BY p.prev_day DESC LIMIT 1)), 0) "
        "FROM agg_loyalty_day l WHERE l.day BETWEEN ? AND ?" + _excl_clause(include_excluded, "l.excl"),
        (start.isoformat(), start.isoformat(), end.isoformat()),
    ).fetchone()
    return int(row[0])


def _histogram_median(counts: list[int]) -> float | None:
    n = sum(counts)
    if not n:
        return None
    half = n / 2
    seen = 0
    for i, c in enumerate(counts):
        if c and seen + c >= half:
            lo = DWELL_EDGES[i]
            hi = DWELL_EDGES[i + 1] if i + 1 < len(DWELL_EDGES) else _LAST_BIN_HI
            return round(lo + (hi - lo) * (half - seen) / c, 1)
        seen += c
    return None


def engagement(
    conn: sqlite3.Connection,
    start: date,
    end: date,
    *,
    zone: str | None = None,
    include_excluded: bool = False,
) -> dict[str, Any]:
    """Dwell-time distribution of visitors: histogram, trade buckets, median and mean."""
    s, e = start.isoformat(), end.isoformat()
    where = "day BETWEEN ? AND ? AND class = 'visitor'" + _excl_clause(include_excluded)
    args: list[Any] = [s, e]
    if zone is not None:
        where += " AND zone = ?"
        args.append(zone)
    counts = [0] * len(DWELL_EDGES)
    dwell_sum = 0.0
    for b, n, d in conn.execute(
        f"SELECT bin, sum(visits), sum(dwell_s) FROM agg_dwell WHERE {where} GROUP BY bin", args
    ):
        counts[b] += n
        dwell_sum += d
    raw_visits = sum(counts)
    rolled_sql = "SELECT coalesce(sum(visitors), 0), coalesce(sum(dwell_s_sum), 0) FROM hourly"
    rolled_sql += f" WHERE rolled_up = 1 AND day BETWEEN ? AND ? AND {_UNSUMMARIZED}" + (
        " AND zone = ?" if zone is not None else ""
    )
    rolled_visits, rolled_dwell = conn.execute(rolled_sql, args).fetchone()
    visits = raw_visits + rolled_visits
    histogram = []
    for i, lo in enumerate(DWELL_EDGES):
        hi = DWELL_EDGES[i + 1] if i + 1 < len(DWELL_EDGES) else None
        histogram.append({"lo_s": lo, "hi_s": hi, "visits": counts[i]})
    buckets = []
    for label, lo, hi in DWELL_BUCKETS:
        n = sum(c for edge, c in zip(DWELL_EDGES, counts, strict=True) if edge >= lo and (hi is None or edge < hi))
        buckets.append({"bucket": label, "lo_s": lo, "hi_s": hi, "visits": n, "share": _ratio(n, raw_visits)})
    return {
        "start": s,
        "end": e,
        "zone": zone,
        "include_excluded": include_excluded,
        "visits": visits,
        "mean_dwell_s": round((dwell_sum + rolled_dwell) / visits, 1) if visits else None,
        "median_dwell_s": _histogram_median(counts),
        "buckets": buckets,
        "histogram": histogram,
        "rolled_up_visits": rolled_visits,
    }


def loyalty(conn: sqlite3.Connection, start: date, end: date, *, include_excluded: bool = False) -> dict[str, Any]:
    """New vs returning visitors, return rate, visit frequency and days since last visit."""
    s, e = start.isoformat(), end.isoformat()
    excl = _excl_clause(include_excluded)
    per_day: dict[str, list[int]] = {d.isoformat(): [0, 0] for d in _days(start, end)}
    sums = [0] * 10  # visitor_days, new, 5 gap buckets, daily, weekly, occasional
    for row in _rows(
        conn,
        "SELECT day, visitor_days, new, gap_1, gap_2_7, gap_8_30, gap_31_90, gap_91, daily, weekly, occasional "
        f"FROM agg_loyalty_day WHERE day BETWEEN ? AND ?{excl}",
        (s, e),
    ):
        slot = per_day.setdefault(row[0], [0, 0])
        slot[0] += row[2]
        slot[1] += row[1] - row[2]
        for i, v in enumerate(row[1:]):
            sums[i] += v
    visitor_days, new = sums[0], sums[1]
    unique = unique_visitors(conn, start, end, include_excluded=include_excluded)
    returning = unique - new
    gap_buckets = [
        {"bucket": label, "min_days": lo, "max_days": hi, "visitor_days": sums[2 + i]}
        for i, (label, lo, hi) in enumerate(GAP_BUCKETS)
    ]
    returning_days = sum(sums[2:7])
    median_gap = None
    if returning_days:
        # The bucket totals say which bucket holds the middle visitor-day; only that bucket's
        # exact gaps are read, one index seek per day (a year of all gaps is ~35k rows).
        seen, bucket = 0, len(GAP_BUCKETS) - 1
        for i in range(len(GAP_BUCKETS)):
            if seen + sums[2 + i] >= returning_days / 2:
                bucket = i
                break
            seen += sums[2 + i]
        _, lo, hi = GAP_BUCKETS[bucket]
        for gap, n in _rows(
            conn,
            "SELECT g.gap, sum(g.visitors) FROM agg_loyalty_day l CROSS JOIN agg_gap g "
            "ON g.day = l.day AND g.excl = l.excl AND g.gap BETWEEN ? AND ? "
            f"WHERE l.day BETWEEN ? AND ?{_excl_clause(include_excluded, 'l.excl')} GROUP BY g.gap ORDER BY g.gap",
            (lo, hi if hi is not None else 1_000_000, s, e),
        ):
            seen += n
            if seen >= returning_days / 2:
                median_gap = gap
                break
    freq = dict(zip((name for name, _, _ in FREQUENCY), sums[7:10], strict=True))
    rolled_new, rolled_ret = conn.execute(
        "SELECT coalesce(sum(new_visitors), 0), coalesce(sum(returning_visitors), 0) FROM hourly "
        f"WHERE rolled_up = 1 AND day BETWEEN ? AND ? AND {_UNSUMMARIZED}",
        (s, e),
    ).fetchone()
    return {
        "start": s,
        "end": e,
        "include_excluded": include_excluded,
        "unique_visitors": unique,
        "new_visitors": new,
        "returning_visitors": returning,
        "return_rate": _ratio(returning, unique),
        "visitor_days": visitor_days,
        "frequency": [
            {"frequency": name, "visitor_days": freq[name], "share": _ratio(freq[name], visitor_days)}
            for name, _, _ in FREQUENCY
        ],
        "days_since_last_visit": gap_buckets,
        "median_days_since_last_visit": median_gap,
        "series": [{"day": d, "new": v[0], "returning": v[1]} for d, v in sorted(per_day.items())],
        "rolled_up": {"new_visitors": rolled_new, "returning_visitors": rolled_ret},
    }
