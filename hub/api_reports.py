"""The dashboard's report areas: now, footfall, engagement (dwell), loyalty, today vs last week,
occupancy and how each figure is estimated, as JSON or CSV.

One module per dashboard area (as datasette keeps one per view): ``hub/api.py`` mounts
:func:`router` behind its login.
"""

import sqlite3
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Query

from footfall.hub import figures, localtime, metrics, metrics_today
from footfall.hub.api_models import Compare, Engagement, Footfall, Loyalty, Method, Now, Occupancy
from footfall.hub.api_responses import _csv_response, _format, _json
from footfall.hub.now import store_now

if TYPE_CHECKING:
    from footfall.hub.api import WebSettings


def _parse_day(value: str | None, name: str, default: date) -> date:
    if value is None or value == "":
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise HTTPException(400, f"{name} must be a date as YYYY-MM-DD, got {value!r}") from None


# ---------------------------------------------------------------- CSV exports
# Each export keeps the columns and rows it always had, in the same order, and adds its headline
# figures after them: a ``row`` column names each row's kind (a detail row's kind is the name of
# its key column: "period", "day", "bucket", "histogram", "zone", "hour"), and the headline rows
# come last ("total", "store", "today", ...; a text key column names them too). Each figure has
# ``_low`` and ``_high`` (its 90 % range, empty where not estimated) and ``_heard`` (what the
# sensors heard) beside ``estimated``, as in the JSON.
_RANGE = ("", "_low", "_high", "_heard")
_TRAFFIC = ("visitors", "passersby", "capture_rate", "mean_dwell_s")


def _figure_cells(src: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name + suffix: src.get(name + suffix) for name in names for suffix in _RANGE}


def _local_time(unix: float | None, tz: str) -> str | None:
    return None if unix is None else datetime.fromtimestamp(unix, localtime._tz(tz)).strftime("%Y-%m-%d %H:%M")


def footfall_csv(out: dict[str, Any], tz: str) -> list[dict[str, Any]]:
    """Each period, then the whole range's totals (unique visitors and median dwell are not sums)."""
    t = out["totals"]
    total = {"period": "total", **t, "row": "total", "as_of_time": _local_time(t.get("as_of"), tz)}
    return [{**p, "row": "period"} for p in out["series"]] + [total]


def engagement_csv(out: dict[str, Any]) -> list[dict[str, Any]]:
    """Buckets, the histogram, then the period's visits and median and mean dwell."""
    rows = [{**b, "row": "bucket"} for b in out["buckets"]]
    rows += [{"bucket": "", **h, "row": "histogram"} for h in out["histogram"]]
    total = {"bucket": "total", "visits": out["visits"], "row": "total"}
    rows.append(total | _figure_cells(out, "median_dwell_s", "mean_dwell_s") | {"estimated": out["estimated"]})
    return rows


def loyalty_csv(out: dict[str, Any], days: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each day with its return rate (estimated where the day is, else the heard share), then the
    period's total: its return rate pools the days' followed phones, it is not a mean of days."""
    rows = []
    for p in out["series"]:
        f = days.get(p["day"]) or {}
        if f.get("return_rate") is not None:
            cells, estimated = _figure_cells(f, "return_rate"), True
        else:
            seen = p["new"] + p["returning"]
            rate = round(p["returning"] / seen, 4) if seen else None
            cells, estimated = _figure_cells({"return_rate": rate}, "return_rate"), False
        rows.append({**p, "row": "day", **cells, "estimated": estimated})
    total = {"day": "total", "row": "total", **_figure_cells(out, "return_rate"), "estimated": out["estimated"]}
    for name in (
        "unique_visitors",
        "unique_visitors_low",
        "unique_visitors_high",
        "new_visitors",
        "returning_visitors",
        "visitor_days",
    ):
        total[name] = out[name]
    total["median_days_since_last_visit"] = out["median_days_since_last_visit"]
    return rows + [total]


def now_csv(out: dict[str, Any], heard: float, tz: str) -> list[dict[str, Any]]:
    """Each zone's live count, then the store: people now with its range and what was heard."""
    as_of = out["as_of_estimate"] if out["as_of_estimate"] is not None else out["as_of"]
    store_row = {"zone": "store", "inside": out["now_in_store"], "devices": None, "age_s": None, "row": "store"}
    store_row |= {
        "now_in_store": out["now_in_store"],
        "now_in_store_low": out["now_in_store_low"],
        "now_in_store_high": out["now_in_store_high"],
        "now_in_store_heard": heard,
        "estimated": out["source"] in ("occupancy", "presence_calibrated"),
        "source": out["source"],
        "as_of": out["as_of"],
        "as_of_estimate": out["as_of_estimate"],
        "as_of_time": _local_time(as_of, tz),
    }
    return [{**z, "row": "zone"} for z in out["zones"]] + [store_row]


def compare_csv(out: dict[str, Any]) -> list[dict[str, Any]]:
    """Visitors per hour on both days, then today, the same weekday last week at the same time and
    last week's whole day, each figure with its range; today's row has the changes."""
    rows = [{**h, "row": "hour"} for h in out["hourly"]]
    for block in ("today", "last_week_same_time", "last_week_full_day"):
        b = out[block]
        row = {"hour": None, "today": None, "last_week": None, "row": block, "date": b["date"]}
        row |= _figure_cells(b, *_TRAFFIC) | {"estimated": b["estimated"]}
        if block == "today":
            row |= {f"change_{k}": v for k, v in out["change"].items()} | {"local_time": out["local_time"]}
        rows.append(row)
    return rows


def router(settings: "WebSettings", Conn: Any) -> APIRouter:
    """The /api report routes (authentication is added by the caller); ``Conn`` is the app's
    connection dependency, so a request borrows one connection for its login check and its report."""
    routes = APIRouter()

    def period(start: str | None, end: str | None, *, longest: int) -> tuple[date, date]:
        today = localtime.local_today(settings.clock(), settings.tz)
        s = _parse_day(start, "start", today)
        e = _parse_day(end, "end", s if start else today)
        if e < s:
            raise HTTPException(400, f"end {e} is before start {s}")
        if (e - s).days + 1 > longest:
            raise HTTPException(400, f"range of {(e - s).days + 1} days is too long (at most {longest})")
        return s, e

    def known_zone(conn: sqlite3.Connection, zone: str | None) -> str | None:
        """``zone`` if the store has it; an unknown one is a 404 naming the known zones (a typo
        used to answer all zeros, which reads as a zone where nobody went)."""
        if not zone:
            return None
        zones = metrics.known_zones(conn)
        if zone not in zones:
            known = ", ".join(zones) if zones else "none yet (no sensor has reported)"
            raise HTTPException(404, f"unknown zone {zone!r}; known zones: {known}")
        return zone

    start_q = Query(None, description="first local day, YYYY-MM-DD (default today)")
    end_q = Query(None, description="last local day, inclusive (default: start)")
    fmt_q = Query("json", description="json or csv")
    excl_q = Query(False, description="count staff and fixed devices too")

    @routes.get("/api/now", response_model=Now, tags=["metrics"])
    def now(conn: Conn, format: str = fmt_q, include_excluded: bool = excl_q) -> Any:
        """People in the store now: the estimate at the latest estimated minute (live presence of the
        sensors, or recent visits, until there is one)."""
        clock = settings.clock()
        out = metrics_today.now_in_store(
            conn,
            now=clock,
            window_s=settings.now_window_s,
            presence_max_age_s=settings.presence_max_age_s,
            include_excluded=include_excluded,
        )
        heard = out["now_in_store"]
        est = store_now(
            conn,
            clock,
            localtime._tz(settings.tz),
            presence_max_age_s=settings.presence_max_age_s,
            occupancy_max_age_s=settings.now_max_age_s,
        )
        out["now_in_store_low"] = out["now_in_store_high"] = out["as_of_estimate"] = None
        if est is not None:
            out["now_in_store"] = est["people"]
            out["now_in_store_low"], out["now_in_store_high"] = est["people_low"], est["people_high"]
            out["as_of_estimate"] = est["as_of"]
            out["source"] = est["source"]
        if _format(format) == "csv":
            return _csv_response(now_csv(out, heard, settings.tz), "now")
        return _json(out)

    @routes.get("/api/footfall", response_model=Footfall, tags=["metrics"])
    def footfall(
        conn: Conn,
        start: str | None = start_q,
        end: str | None = end_q,
        granularity: str = Query("hour", description="hour, day or week"),
        zone: str | None = Query(None, description="one zone (sensor id); default the whole store; unknown: 404"),
        include_excluded: bool = excl_q,
        format: str = fmt_q,
    ) -> Any:
        """Visitors, passers-by and capture rate by hour, day or week, and by zone."""
        if granularity not in metrics.GRANULARITIES:
            raise HTTPException(
                400, f"granularity must be one of {', '.join(metrics.GRANULARITIES)}, got {granularity!r}"
            )
        longest = settings.max_hour_days if granularity == "hour" else settings.max_days
        s, e = period(start, end, longest=longest)
        out = metrics.footfall(
            conn, s, e, granularity=granularity, zone=known_zone(conn, zone), include_excluded=include_excluded
        )
        out = figures.annotate_footfall(conn, out, s, e)
        if _format(format) == "csv":
            return _csv_response(footfall_csv(out, settings.tz), f"footfall-{s}-{e}-{granularity}")
        return _json(out)

    @routes.get("/api/engagement", response_model=Engagement, tags=["metrics"])
    def engagement(
        conn: Conn,
        start: str | None = start_q,
        end: str | None = end_q,
        zone: str | None = Query(None, description="one zone (sensor id); unknown: 404"),
        include_excluded: bool = excl_q,
        format: str = fmt_q,
    ) -> Any:
        """Dwell-time distribution: histogram, buckets, median and mean."""
        s, e = period(start, end, longest=settings.max_days)
        out = metrics.engagement(conn, s, e, zone=known_zone(conn, zone), include_excluded=include_excluded)
        out = figures.annotate_engagement(conn, out, s, e)
        if _format(format) == "csv":
            return _csv_response(engagement_csv(out), f"dwell-{s}-{e}")
        return _json(out)

    @routes.get("/api/loyalty", response_model=Loyalty, tags=["metrics"])
    def loyalty(
        conn: Conn,
        start: str | None = start_q,
        end: str | None = end_q,
        include_excluded: bool = excl_q,
        format: str = fmt_q,
    ) -> Any:
        """New vs returning visitors, return rate, visit frequency, days since last visit."""
        s, e = period(start, end, longest=settings.max_days)
        out = metrics.loyalty(conn, s, e, include_excluded=include_excluded)
        out = figures.annotate_loyalty(conn, out, s, e)
        if _format(format) == "csv":
            return _csv_response(loyalty_csv(out, figures.day_rows(conn, s, e)), f"loyalty-{s}-{e}")
        return _json(out)

    @routes.get("/api/compare", response_model=Compare, tags=["metrics"])
    def compare(conn: Conn, include_excluded: bool = excl_q, format: str = fmt_q) -> Any:
        """Today so far vs the same weekday last week at the same time of day."""
        clock = settings.clock()
        out = metrics_today.compare(conn, now=clock, tz=settings.tz, include_excluded=include_excluded)
        out = figures.annotate_compare(conn, out, localtime.local_hour(clock, settings.tz))
        if _format(format) == "csv":
            return _csv_response(compare_csv(out), f"compare-{out['today']['date']}")
        return _json(out)

    @routes.get("/api/occupancy", response_model=Occupancy, tags=["metrics"])
    def occupancy(
        conn: Conn,
        start: str | None = start_q,
        end: str | None = end_q,
        window: int = Query(600, ge=60, le=86400, description="window length, seconds (a multiple of 60)"),
        format: str = fmt_q,
    ) -> Any:
        """People inside per window (estimated, minute by minute, averaged over each window)."""
        if window % 60:
            raise HTTPException(400, f"window must be a multiple of 60 seconds, got {window}")
        s, e = period(start, end, longest=settings.max_hour_days)
        zone = localtime._tz(settings.tz)
        lo = datetime.combine(s, dt_time(), zone).timestamp()
        hi = datetime.combine(e + timedelta(days=1), dt_time(), zone).timestamp()
        rows = figures.occupancy(conn, lo, hi, window)
        for r in rows:
            r["time"] = datetime.fromtimestamp(r["start"], zone).strftime("%Y-%m-%d %H:%M")
        out = {
            "start": s.isoformat(),
            "end": e.isoformat(),
            "window_s": window,
            "explain": figures.EXPLAIN["occupancy"],
            "series": rows,
        }
        if _format(format) == "csv":
            return _csv_response(rows, f"occupancy-{s}-{e}", ("start", "people", "time"))
        return _json(out)

    @routes.get("/api/method", response_model=Method, tags=["metrics"])
    def method(conn: Conn, start: str | None = start_q, end: str | None = end_q) -> Any:
        """How each figure is estimated, and what each day's model was fitted on."""
        s, e = period(start, end, longest=settings.max_days)
        days = {d: f.get("model", {}) for d, f in figures.day_rows(conn, s, e).items()}
        cal = figures.latest_calibration(conn)
        calibration = {
            "visitors": cal.visitors,
            "passersby": cal.passersby,
            "source": cal.source or "none: the documented defaults apply",
            "fit": cal.fit,
        }
        return _json({"explain": figures.EXPLAIN, "days": days, "calibration": calibration})

    return routes
