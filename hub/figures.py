"""Estimated people for the dashboard: what the link job stored, added up over any period.

``hub/link.py`` stores, per local day and hour, every headline figure as an estimate of people
with a 90 % range and the count the sensors heard (``hub/estimate.py`` says how each is
estimated). The API reads them here and puts them beside the raw counts of ``hub/metrics.py``:

- counts add up over hours, days and weeks; their ranges add up too (the model part of an
  error is shared by neighbouring days, so adding the ends is the honest, not the narrow, sum);
- the capture rate of a period is its visitors over visitors plus passers-by, its range from
  the ends of both;
- dwell: the mean weighted by visitors; the median of one day is the day's own, over several
  days it is read off the days' dwell histograms added up;
- the return rate pools the visitors the hub can follow across days.

Periods not estimated yet (the link job has not run, or the last ``settle_s`` minutes) fall
back to the heard counts, and say so: ``estimated`` is false.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from footfall.hub.ranges import wilson
from footfall.hub.returning import rate_figures
from footfall.hub.site_model import Calibration

EXPLAIN = {
    "visitors": "People who came in, estimated from the phones heard inside (a fixed address as one "
    "person; a random one from its stays and from its scans over those of an average visit), corrected "
    "for phones not heard and for people without a probing phone; with one sensor, raised by the share of "
    "the people-in-store minutes in tracks of phones strung together for hours; the range is 90 %.",
    "passersby": "People who walked past, estimated from scans heard outside at the street-facing sensor: "
    "each scan's chance of being a passer-by's, judged from the scans around it, and (with two sensors "
    "or more, averaged with it) the scans of short stays that are not visits, less those visitors leave "
    "on their way in and out; the range is 90 %.",
    "capture_rate": "Visitors over visitors plus passers-by, both estimated.",
    "dwell": "Mean: the visitors' time in the store (the people-in-store minutes) over the visitors; "
    "median: the mean times the median-to-mean ratio of the shops it was checked on (0.58), a shape assumed. "
    "With one sensor: the mean from each visit's first to last scan inside, plus the wait for a phone's scan; "
    "the median halfway (in ratio) between the visits' own median and the mean times 0.58.",
    "return_rate": "Share of today's visitors who came before, measured on the phones recognisable across "
    "days (a fixed address, or a random one that asks for its saved networks by name) and assumed alike "
    "for the others; the range is 90 %.",
    "occupancy": "People inside, minute by minute, from each visit's first to last inside scan.",
    "now": "People inside now: the phones the sensors hear inside, averaged over the last 15 minutes, "
    "times what such a count meant in people on this store's past days; it lags people arriving or "
    "leaving by about seven minutes.",
    "heard": "Heard = devices the sensors heard (after linking a phone's random addresses); the "
    "headline figure is the estimate of people.",
}

COUNT_FIELDS = ("visitors", "passersby")


def latest_calibration(conn: sqlite3.Connection) -> Calibration:
    """The site's calibration against a real count (the latest), or none (factors 1.0)."""
    row = conn.execute(
        "SELECT visitors, passersby, source, fit FROM calibrations ORDER BY created DESC, id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return Calibration()
    return Calibration(float(row[0]), float(row[1]), row[2], json.loads(row[3]))


def calibrated(fig: dict[str, Any], cal: Calibration) -> dict[str, Any]:
    """A stored figure with the calibration's factors on the estimates (heard counts stay)."""
    if cal.visitors == 1.0 and cal.passersby == 1.0:
        return fig
    out = dict(fig)
    factors = {"visitors": cal.visitors, "passersby": cal.passersby}
    for name, factor in factors.items():
        for suffix in ("", "_low", "_high"):
            if out.get(name + suffix) is not None:
                out[name + suffix] = out[name + suffix] * factor
    if out.get("revisions"):
        out["revisions"] = [
            r
            | {
                "from": round(r["from"] * factors.get(r.get("figure", ""), 1.0), 1),
                "to": round(r["to"] * factors.get(r.get("figure", ""), 1.0), 1),
            }
            for r in out["revisions"]
        ]
    v, p = out.get("visitors"), out.get("passersby")
    if v is not None and p is not None and v + p > 0:
        out["capture_rate"] = v / (v + p)
        vl, vh, pl, ph = (out.get(k) for k in ("visitors_low", "visitors_high", "passersby_low", "passersby_high"))
        if None not in (vl, vh, pl, ph):
            out["capture_rate_low"] = vl / (vl + ph) if vl + ph else None
            out["capture_rate_high"] = vh / (vh + pl) if vh + pl else None
    return out


def _load(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[tuple[str, int, dict[str, Any], float]]:
    cal = latest_calibration(conn)
    return [(d, h, calibrated(json.loads(f), cal), w) for d, h, f, w in conn.execute(sql, args)]


def day_rows(conn: sqlite3.Connection, start: date, end: date) -> dict[str, dict[str, Any]]:
    """The whole-day estimates of every day in [start, end] that has one."""
    rows = _load(
        conn,
        "SELECT day, hour, figures, watermark FROM estimates WHERE hour = -1 AND day BETWEEN ? AND ?",
        (start.isoformat(), end.isoformat()),
    )
    return {d: f | {"watermark": w} for d, _, f, w in rows}


def hour_rows(conn: sqlite3.Connection, start: date, end: date) -> dict[tuple[str, int], dict[str, Any]]:
    rows = _load(
        conn,
        "SELECT day, hour, figures, watermark FROM estimates WHERE hour >= 0 AND day BETWEEN ? AND ?",
        (start.isoformat(), end.isoformat()),
    )
    return {(d, h): f | {"watermark": w} for d, h, f, w in rows}


def _sum(figs: Sequence[Mapping[str, Any]], key: str) -> float | None:
    vals = [f.get(key) for f in figs]
    if not vals or any(v is None for v in vals):
        return None
    return float(sum(vals))


def combine(figs: Sequence[Mapping[str, Any]], *, dwell_median: bool = True) -> dict[str, Any]:
    """One period's figures from its parts' (hours or days)."""
    out: dict[str, Any] = {}
    for name in COUNT_FIELDS:
        for suffix in ("", "_low", "_high", "_heard"):
            v = _sum(figs, name + suffix)
            out[name + suffix] = None if v is None else round(v, 1)
    v, p = out["visitors"], out["passersby"]
    if v is not None and p is not None and v + p > 0:
        out["capture_rate"] = round(v / (v + p), 4)
        vl, vh, pl, ph = out["visitors_low"], out["visitors_high"], out["passersby_low"], out["passersby_high"]
        out["capture_rate_low"] = round(vl / (vl + ph), 4) if vl is not None and ph and vl + ph > 0 else None
        out["capture_rate_high"] = (
            round(vh / (vh + pl), 4) if vh is not None and pl is not None and vh + pl > 0 else None
        )
        vh_, ph_ = out["visitors_heard"], out["passersby_heard"]
        out["capture_rate_heard"] = (
            round(vh_ / (vh_ + ph_), 4) if vh_ is not None and ph_ is not None and vh_ + ph_ else None
        )
    else:
        out |= {"capture_rate": None, "capture_rate_low": None, "capture_rate_high": None, "capture_rate_heard": None}
    # Mean dwell: weighted by each part's visitors.
    weights = [(f.get("visitors") or 0.0) for f in figs]
    total = sum(weights)
    for suffix in ("", "_low", "_high", "_heard"):
        vals = [(f.get("mean_dwell_s" + suffix), w) for f, w in zip(figs, weights, strict=True)]
        vals = [(x, w) for x, w in vals if x is not None and w > 0]
        tw = sum(w for _, w in vals)
        out["mean_dwell_s" + suffix] = round(sum(x * w for x, w in vals) / tw, 1) if vals and tw else None
    if len(figs) == 1:
        for suffix in ("", "_low", "_high", "_heard"):
            out["median_dwell_s" + suffix] = figs[0].get("median_dwell_s" + suffix)
    elif dwell_median and total > 0:
        out |= _median_of_histograms(figs)
    return out


def _median_of_histograms(figs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    from footfall.hub.metrics import DWELL_EDGES, _histogram_median

    hist = [0.0] * len(DWELL_EDGES)
    widths: list[tuple[float, float]] = []
    for f in figs:
        h = f.get("dwell_hist") or []
        for i, x in enumerate(h[: len(hist)]):
            hist[i] += x
        med, lo, hi = f.get("median_dwell_s"), f.get("median_dwell_s_low"), f.get("median_dwell_s_high")
        if med and lo is not None and hi is not None:
            widths.append(((hi - lo) / 2 / med, f.get("visitors") or 0.0))
    # _histogram_median takes counts; scaled weights keep the interpolation exact enough.
    med = _histogram_median([round(x * 1000) for x in hist])
    if med is None:
        return {"median_dwell_s": None, "median_dwell_s_low": None, "median_dwell_s_high": None}
    tw = sum(w for _, w in widths)
    rel = sum(r * w for r, w in widths) / tw if tw else 0.2
    return {
        "median_dwell_s": med,
        "median_dwell_s_low": round(med * (1 - rel), 1),
        "median_dwell_s_high": round(med * (1 + rel), 1),
        "median_dwell_s_heard": None,
    }


def period_totals(conn: sqlite3.Connection, start: date, end: date) -> dict[str, Any] | None:
    """Estimated figures of [start, end] (whole days), or None when no day has estimates."""
    days = day_rows(conn, start, end)
    if not days:
        return None
    n_days = (end - start).days + 1
    figs = [days[d] for d in sorted(days)]
    out = combine(figs)
    out["estimated"] = len(days) == n_days
    out["as_of"] = max(f["watermark"] for f in figs)
    out |= _return_rate(figs)
    out |= _unique(conn, sorted(days), out)
    # Oldest first by when the run was: a past day relinked today is today's news.
    revs = [r | {"day": d} for d in sorted(days) for r in days[d].get("revisions") or []]
    out["revisions"] = sorted(revs, key=lambda r: r.get("at") or 0.0)
    return out


def _return_rate(figs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A period's return rate: the days' followed visitors pooled, not a mean of days' rates."""
    n = sum(f.get("return_rate_heard") or 0 for f in figs)
    k = sum((f.get("return_rate") or 0.0) * (f.get("return_rate_heard") or 0) for f in figs)
    return rate_figures(k, n, sum(f.get("return_rate_networks") or 0 for f in figs))


def _unique(conn: sqlite3.Connection, days: Sequence[str], out: Mapping[str, Any]) -> dict[str, Any]:
    """Unique visitors of a period, with a range: its visitors, less the share of repeat visits
    measured on the visitors the hub can follow across days (``estimated_visitors``: one row
    per day a followed visitor came). The range: the visitors' range times the Wilson 90 %
    interval of that share of first visits."""
    visitors, low, high = out.get("visitors"), out.get("visitors_low"), out.get("visitors_high")
    same = {"unique_visitors": visitors, "unique_visitors_low": low, "unique_visitors_high": high}
    if visitors is None or len(days) <= 1:
        return same
    marks = ", ".join("?" * len(days))
    total, distinct = conn.execute(
        f"SELECT count(*), count(DISTINCT device_key) FROM estimated_visitors WHERE day IN ({marks})", list(days)
    ).fetchone()
    if not total:
        return same
    lo, hi = wilson(distinct, total)
    return {
        "unique_visitors": round(visitors * distinct / total, 1),
        "unique_visitors_low": round(low * lo, 1) if low is not None else None,
        "unique_visitors_high": round(high * hi, 1) if high is not None else None,
    }


def series(
    conn: sqlite3.Connection, start: date, end: date, granularity: str, key_of: Any
) -> dict[str, dict[str, Any]]:
    """Estimated figures per period label (``key_of(day, hour)`` as metrics' series)."""
    if granularity == "hour":
        parts = {(d, h): f for (d, h), f in hour_rows(conn, start, end).items()}
    else:
        parts = {(d, 0): f for d, f in day_rows(conn, start, end).items()}
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for (d, h), f in sorted(parts.items()):
        grouped.setdefault(key_of(d, h), []).append(f)
    return {label: combine(figs, dwell_median=False) | {"estimated": True} for label, figs in grouped.items()}


def occupancy(conn: sqlite3.Connection, start: float, end: float, window_s: int) -> list[dict[str, Any]]:
    """People present per window of [start, end) (UNIX seconds), from the stored minutes."""
    from footfall.hub.occupancy import windows

    factor = latest_calibration(conn).visitors
    minutes = {
        m: p * factor
        for m, p in conn.execute(
            "SELECT minute, people FROM occupancy WHERE minute >= ? AND minute < ?", (int(start), int(end))
        )
    }
    first = int(start // window_s * window_s)
    # Minutes the job has not estimated stay out: a window without any is None, not 0.
    got = windows(minutes, window_s) if minutes else {}
    out = []
    t = first
    while t < end:
        out.append({"start": t, "people": None if t not in got else round(got[t], 2)})
        t += window_s
    return out


def now_people(conn: sqlite3.Connection, now: float, tz: tzinfo) -> dict[str, Any] | None:
    """People inside at the latest estimated minute (the job runs ``settle_s`` behind)."""
    # The latest whole minute before now.
    row = conn.execute(
        "SELECT minute, people FROM occupancy WHERE minute <= ? ORDER BY minute DESC LIMIT 1", (now - 60,)
    ).fetchone()
    if row is None:
        return None
    minute, people = row
    people *= latest_calibration(conn).visitors
    day = datetime.fromtimestamp(minute, tz).date().isoformat()
    fig = conn.execute("SELECT figures FROM estimates WHERE day = ? AND hour = -1", (day,)).fetchone()
    rel = 0.15
    if fig is not None:
        f = calibrated(json.loads(fig[0]), latest_calibration(conn))
        if f.get("visitors"):
            rel = (f["visitors_high"] - f["visitors"]) / f["visitors"]
    return {
        "people": round(people, 1),
        "people_low": round(people * (1 - rel), 1),
        "people_high": round(people * (1 + rel), 1),
        "as_of": minute + 60,
        "age_s": round(max(0.0, now - minute - 60), 1),
    }


def days_between(start: date, end: date) -> Iterable[date]:
    d = start
    while d <= end:
        yield d
        d += timedelta(days=1)


_TRAFFIC = ("visitors", "passersby", "capture_rate", "mean_dwell_s")
_SUFFIXES = ("", "_low", "_high", "_heard")


def traffic(raw: Mapping[str, Any], est: Mapping[str, Any] | None) -> dict[str, Any]:
    """A raw traffic dict (heard counts) with the estimated figures on top, when there are some."""
    out = dict(raw)
    if est is None:
        for name in _TRAFFIC:
            out[f"{name}_low"] = out[f"{name}_high"] = None
            out[f"{name}_heard"] = raw.get(name)
        out["estimated"] = False
        return out
    for name in _TRAFFIC:
        for suffix in _SUFFIXES:
            out[name + suffix] = est.get(name + suffix)
    out["visitors"] = out["visitors"] if out["visitors"] is not None else raw.get("visitors", 0)
    out["passersby"] = out["passersby"] if out["passersby"] is not None else raw.get("passersby", 0)
    out["estimated"] = bool(est.get("estimated", True))
    return out


def annotate_footfall(conn: sqlite3.Connection, out: dict[str, Any], start: date, end: date) -> dict[str, Any]:
    """metrics.footfall's answer with estimates of people (store-wide; zones stay heard counts)."""
    from footfall.hub.metrics import _period_key

    # Estimates are of customers, store-wide: a zone, or staff and equipment counted in, are
    # heard counts only.
    store_wide = out.get("zone") is None and not out.get("include_excluded")
    est = period_totals(conn, start, end) if store_wide else None
    totals = traffic(out["totals"], est)
    for suffix in ("", "_low", "_high"):
        totals["median_dwell_s" + suffix] = None if est is None else est.get("median_dwell_s" + suffix)
    totals["as_of"] = None if est is None else est.get("as_of")
    totals["revisions"] = [] if est is None else est.get("revisions", [])
    # Heard devices have no range; estimated people have one.
    totals["unique_visitors_low"] = totals["unique_visitors_high"] = None
    if est is not None:
        for suffix in ("", "_low", "_high"):
            totals["unique_visitors" + suffix] = est.get("unique_visitors" + suffix)
    out["totals"] = totals
    per = series(conn, start, end, out["granularity"], _period_key(out["granularity"])) if store_wide else {}
    out["series"] = [traffic(p, per.get(p["period"])) for p in out["series"]]
    out["zones"] = [traffic(z, None) for z in out["zones"]]
    out["explain"] = EXPLAIN
    return out


def dwell_caveat(median_s: float | None, dwell_from: str = "stays") -> str | None:
    """A sentence for a median dwell estimate outside the kind of shop the dwell figures were
    checked on (``Defaults.dwell_checked_s``), None inside it or without an estimate.
    ``dwell_from``: how the figures were made (``PeriodEstimate.dwell_from``): from the stays'
    lengths (one sensor) such a dwell read far off; from Little's law the scale holds and what
    is not checked is the shape the median assumes."""
    from footfall.hub.estimate import DEFAULTS

    lo, hi = DEFAULTS.dwell_checked_s
    if median_s is None or lo <= median_s <= hi:
        return None
    longer = median_s > hi
    where = (
        f"Visits here look {'longer' if longer else 'shorter'} than in the shops these dwell figures were "
        f"checked on ({lo / 60:.0f}-{hi / 60:.0f} min): "
    )
    if dwell_from == "little":
        return where + (
            "the mean follows such a shop (simulated ones of three times the dwell read it 8 % short on average, "
            "up to half where nearly every phone randomizes), and the median "
            f"is taken as {DEFAULTS.median_to_mean:.2f} of the mean, the ratio of the shops checked on, "
            "which this store's visits may not share."
        )
    return (
        where
        + "on simulated shops such a dwell read "
        + ("about 40 % too short, and the visitors too many" if longer else "up to a third too long")
        + ", and the range may miss it."
    )


def annotate_engagement(conn: sqlite3.Connection, out: dict[str, Any], start: date, end: date) -> dict[str, Any]:
    """metrics.engagement's answer with estimated dwell (store-wide): medians, means, histogram."""
    for name in ("median_dwell_s", "mean_dwell_s"):
        out[f"{name}_heard"] = out.get(name)
        out[f"{name}_low"] = out[f"{name}_high"] = None
    out["estimated"] = False
    out["explain"] = EXPLAIN["dwell"]
    out["dwell_caveat"] = None
    if out.get("zone") is not None:
        return out
    days = day_rows(conn, start, end)
    if not days:
        return out
    figs = [days[d] for d in sorted(days)]
    est = combine(figs)
    for name in ("median_dwell_s", "mean_dwell_s"):
        for suffix in ("", "_low", "_high"):
            out[name + suffix] = est.get(name + suffix)
    hist = [0.0] * len(out["histogram"])
    for f in figs:
        for i, x in enumerate((f.get("dwell_hist") or [])[: len(hist)]):
            hist[i] += x
    total = sum(hist)
    for b, x in zip(out["histogram"], hist, strict=True):
        b["visits"] = round(x, 1)
    for bucket in out["buckets"]:
        n = sum(
            x
            for b, x in zip(out["histogram"], hist, strict=True)
            if b["lo_s"] >= bucket["lo_s"] and (bucket["hi_s"] is None or b["lo_s"] < bucket["hi_s"])
        )
        bucket["visits"] = round(n, 1)
        bucket["share"] = round(n / total, 4) if total else None
    out["visits"] = round(total, 1)
    out["estimated"] = len(days) == (end - start).days + 1
    method = "little" if all(f.get("dwell_from") == "little" for f in figs) else "stays"
    out["dwell_caveat"] = dwell_caveat(out.get("median_dwell_s"), method)
    return out


def annotate_loyalty(conn: sqlite3.Connection, out: dict[str, Any], start: date, end: date) -> dict[str, Any]:
    """metrics.loyalty's answer with the estimated return rate and unique visitors."""
    out["return_rate_heard"] = out["return_rate_networks"] = None
    out["return_rate_low"] = out["return_rate_high"] = None
    out["unique_visitors_low"] = out["unique_visitors_high"] = None
    out["estimated"] = False
    out["explain"] = EXPLAIN["return_rate"]
    est = period_totals(conn, start, end)
    if est is None:
        return out
    for suffix in ("", "_low", "_high", "_heard", "_networks"):
        out["return_rate" + suffix] = est.get("return_rate" + suffix)
    if est.get("unique_visitors") is not None and est.get("return_rate") is not None:
        unique = est["unique_visitors"]
        out["unique_visitors"] = unique
        out["unique_visitors_low"] = est.get("unique_visitors_low")
        out["unique_visitors_high"] = est.get("unique_visitors_high")
        out["returning_visitors"] = round(unique * est["return_rate"], 1)
        out["new_visitors"] = round(unique - out["returning_visitors"], 1)
    out["estimated"] = bool(est.get("estimated")) and est.get("return_rate") is not None
    return out


def annotate_compare(conn: sqlite3.Connection, out: dict[str, Any], hour: int) -> dict[str, Any]:
    """metrics_today.compare's answer with estimates: whole hours before ``hour`` on both days (like for
    like), and last week's whole day."""
    from footfall.hub.metrics import _period_key

    for block, full in (("today", False), ("last_week_same_time", False), ("last_week_full_day", True)):
        d = date.fromisoformat(out[block]["date"])
        if full:
            est = period_totals(conn, d, d)
        else:
            hours = [f for (_, h), f in hour_rows(conn, d, d).items() if h < hour]
            est = combine(hours, dwell_median=False) | {"estimated": True} if hours else None
        out[block] = traffic(out[block], est)
    t, lw = out["today"], out["last_week_same_time"]

    def change(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else round((a - b) / b, 4)

    out["change"] = {
        "visitors": change(t["visitors"], lw["visitors"]),
        "passersby": change(t["passersby"], lw["passersby"]),
        "capture_rate_points": (
            round(t["capture_rate"] - lw["capture_rate"], 4)
            if t["capture_rate"] is not None and lw["capture_rate"] is not None
            else None
        ),
    }
    per = series(conn, date.fromisoformat(t["date"]), date.fromisoformat(t["date"]), "hour", _period_key("hour"))
    per_lw = series(conn, date.fromisoformat(lw["date"]), date.fromisoformat(lw["date"]), "hour", _period_key("hour"))
    for h in out["hourly"]:
        a = per.get(f"{t['date']}T{h['hour']:02d}")
        b = per_lw.get(f"{lw['date']}T{h['hour']:02d}")
        if a is not None:
            h["today"] = a["visitors"]
        if b is not None:
            h["last_week"] = b["visitors"]
    return out
