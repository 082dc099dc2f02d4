"""Fit ``footfall calibrate counts``'s factors: counted intervals against the stored estimates.

Each counted interval is matched with the hub's hourly rows of ``estimates``, summed over the
interval with partial hours prorated linearly; intervals the hub has no settled estimate for are
skipped. One factor per counted figure is the ratio estimator sum(counted) / sum(estimated), with
a 90 % interval by bootstrapping over days (over intervals when a single day was counted).

A calibration corrects a per-site bias (the same factor every day). It cannot remove the
day-to-day noise of the estimates: the MAPE after calibration in the report is in-sample and
is the floor of what it can do, not a promise.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import sqlite3
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

from footfall.hub.calibrate_counts import FIGURES, LABELS, CountRow, Counts, CountsError, _fmt_local, get_tz
from footfall.hub.calibrate_store import latest

if TYPE_CHECKING:
    from footfall.hub.estimate import SiteModel

BOOTSTRAP = 2000
MIN_DAYS = 3
MAX_HALF_WIDTH = 0.15
SANE_FACTOR = (1 / 3, 3.0)
# How much a store's figure wanders from day to day around its own bias: the standard
# deviation of log(truth / estimate) between the days of one store, pooled over the simulator's
# tuning stores with three days (4, 8, 40 and 48 with 2-3 sensors, 44 and 52 with one) at the
# three streets the model spreads are measured over (2.5, 5 and 10 passers-by a visitor; 24
# and 12 degrees of freedom), for the figures as they are since 2026-12-06 (passers-by: the mean
# of the stays' and the scans' counts with 2-3 sensors, the scans' count alone with one;
# measured again later on 2026-12-06, `footfall evaluate --metrics --seeds 4,8,40,48,44,52
# --passersby-per-visitor 2.5|10`). Before: visitors 0.049 and 0.085 (seeds 4 and 8, or 44 and
# 52, at one street), passers-by 0.125 and 0.13 (the stays' count). The rest of the figure's
# model spread (Defaults.spread, or the passers-by count's own: credibility) is the store's own
# bias, the part a count can take out.
DAY_NOISE: dict[bool, dict[str, float]] = {
    False: {"visitors": 0.081, "passersby": 0.100},
    True: {"visitors": 0.078, "passersby": 0.175},
}


def credibility(fig: str, days: int, weak: bool, model_spread: float | None = None) -> float:
    """The share of the counted days' log ratio to apply: bias variance over bias variance plus
    the day noise of the counted days' mean (a credibility weight). A figure whose error is mostly
    day-to-day noise (passers-by with two or three sensors) keeps its default more; one that is
    mostly a store's bias (a one-sensor store) takes nearly all of the count's factor.

    ``model_spread``: the figure's whole model spread at this site, when it is not the site
    kind's ``ModelSpread`` (passers-by: ``passby_stays.passersby_spread``)."""
    from footfall.hub.estimate import DEFAULTS

    spread = DEFAULTS.one_sensor_spread if weak else DEFAULTS.spread
    total = getattr(spread, fig) if model_spread is None else model_spread
    noise = DAY_NOISE[weak][fig] ** 2
    bias = max(total**2 - noise, 0.0)
    return bias / (bias + noise / max(days, 1)) if bias > 0 else 0.0


def counted_site(conn: sqlite3.Connection, days: Iterable[str]) -> SiteModel | None:
    """The latest of the counted days' site models of the kind most of them are: those that tell
    street from shop by signal pattern, or the weak ones (SiteModel.weak: one sensor or an
    untrained inside model). None without any model, which counts as not weak."""
    from footfall.hub.estimate import SiteModel

    days = list(days)
    if not days:
        return None
    marks = ",".join("?" * len(days))
    rows = conn.execute(f"SELECT model FROM site_models WHERE day IN ({marks}) ORDER BY day", days).fetchall()
    models = [SiteModel.from_dict(json.loads(r[0])) for r in rows]
    weak = bool(models) and sum(m.weak for m in models) * 2 > len(models)
    return next((m for m in reversed(models) if m.weak == weak), None)


def figure_spread(fig: str, model: SiteModel | None) -> float | None:
    """The figure's model spread at the counted site where it is not its kind's ModelSpread."""
    from footfall.hub.passby_stays import passersby_spread

    return passersby_spread(model) if fig == "passersby" and model is not None else None


# ----------------------------------------------------------------------------- matching
@dataclass
class _Segment:
    start: float
    end: float
    day: str
    figures: Mapping[str, Any]


def _segments(conn: sqlite3.Connection, first: date, last: date, tz: tzinfo) -> list[_Segment]:
    """The stored hourly estimates of [first, last] as absolute intervals. An hour runs to the
    next wall-clock hour, as the link job counts it (the hour a clock goes back covers two), at
    most to its day's watermark (the hour being estimated when the job ran is partial)."""
    rows = conn.execute(
        "SELECT day, hour, figures, watermark FROM estimates WHERE hour >= 0 AND day BETWEEN ? AND ?",
        (first.isoformat(), last.isoformat()),
    ).fetchall()
    out: list[_Segment] = []
    for day, hour, figs, watermark in rows:
        try:
            d = date.fromisoformat(day)
            f = json.loads(figs)
            local = datetime(d.year, d.month, d.day, int(hour), tzinfo=tz)
        except (ValueError, TypeError):
            continue
        if not isinstance(f, dict):
            continue
        start = local.timestamp()
        end = min((local + timedelta(hours=1)).timestamp(), float(watermark))
        if end > start:
            out.append(_Segment(start, end, day, f))
    out.sort(key=lambda s: s.start)
    return out


@dataclass
class _Match:
    row: CountRow
    day: str  # local day of the interval's start
    estimate: dict[str, float | None]


def _match(rows: Sequence[CountRow], segments: Sequence[_Segment]) -> tuple[list[_Match], list[CountRow]]:
    """Each interval with its estimates summed over the hours it covers (partial hours prorated);
    intervals not wholly covered by settled estimates are returned apart."""
    starts = [s.start for s in segments]
    matched: list[_Match] = []
    unmatched: list[CountRow] = []
    for r in rows:
        i = max(bisect.bisect_right(starts, r.start) - 1, 0)
        covered = 0.0
        sums: dict[str, float | None] = dict.fromkeys(FIGURES, 0.0)
        while i < len(segments) and segments[i].start < r.end:
            s = segments[i]
            overlap = min(r.end, s.end) - max(r.start, s.start)
            if overlap > 0:
                covered += overlap
                share = overlap / (s.end - s.start)
                for fig in FIGURES:
                    v = s.figures.get(fig)
                    cur = sums[fig]
                    sums[fig] = None if cur is None or not isinstance(v, (int, float)) else cur + v * share
            i += 1
        if covered >= (r.end - r.start) - 1.0:
            matched.append(_Match(r, "", sums))
        else:
            unmatched.append(r)
    return matched, unmatched


# ----------------------------------------------------------------------------- fitting
def _bootstrap(groups: Sequence[tuple[float, float]], n: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float] | None:
    """5th and 95th percentiles of sum(truth)/sum(estimate) over groups resampled with replacement."""
    if len(groups) < 2:
        return None
    rng = random.Random(seed)
    k = len(groups)
    ratios = []
    for _ in range(n):
        t = e = 0.0
        for _ in range(k):
            a, b = groups[rng.randrange(k)]
            t += a
            e += b
        if e > 0:
            ratios.append(t / e)
    if len(ratios) < n // 2:
        return None
    ratios.sort()
    return ratios[int(0.05 * (len(ratios) - 1))], ratios[int(math.ceil(0.95 * (len(ratios) - 1)))]


def _rel(a: float, b: float) -> float | None:
    return (a - b) / b if b else None


def _fit_figure(
    fig: str, matches: Sequence[_Match], model: SiteModel | None = None
) -> tuple[dict[str, Any] | None, list[str]]:
    usable = [m for m in matches if m.row.count(fig) is not None and m.estimate.get(fig) is not None]
    label = LABELS[fig]
    if not usable:
        return None, [f"{label}: no counted interval has an estimate to compare with"]
    truth = sum(m.row.count(fig) or 0.0 for m in usable)
    est = sum(m.estimate[fig] or 0.0 for m in usable)
    if truth <= 0:
        return None, [f"{label}: the count is zero over every matched interval; nothing to calibrate against"]
    if est <= 0:
        return None, [f"{label}: the hub estimated none over the counted intervals; check the time zone and the dates"]
    fitted = truth / est
    by_day: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for m in usable:
        g = by_day[m.day]
        g[0] += m.row.count(fig) or 0.0
        g[1] += m.estimate[fig] or 0.0
        g[2] += 1
    days = sorted(by_day)
    # What is applied: the fitted factor shrunk toward 1 by how much of its log is a store's bias
    # rather than the counted days' noise (chosen on the tuning seeds; docs/calibration.md).
    weak = model is not None and model.weak
    weight = credibility(fig, len(days), weak, figure_spread(fig, model))
    factor = fitted**weight
    if len(days) >= 2:
        groups, grouped_by = [(by_day[d][0], by_day[d][1]) for d in days], "days"
    else:
        groups, grouped_by = [(m.row.count(fig) or 0.0, m.estimate[fig] or 0.0) for m in usable], "intervals"
    raw_ci = _bootstrap(groups)
    ci = None if raw_ci is None else (raw_ci[0] ** weight, raw_ci[1] ** weight)
    per_day = []
    before: list[float] = []
    after: list[float] = []
    for d in days:
        t, e, n = by_day[d]
        eb, ea = _rel(e, t), _rel(e * factor, t)
        per_day.append(
            {
                "day": d,
                "intervals": int(n),
                "truth": round(t, 1),
                "estimate": round(e, 1),
                "calibrated": round(e * factor, 1),
                "error_before": None if eb is None else round(eb, 4),
                "error_after": None if ea is None else round(ea, 4),
            }
        )
        if eb is not None and ea is not None:
            before.append(abs(eb))
            after.append(abs(ea))
    out: dict[str, Any] = {
        "factor": round(factor, 4),
        "fitted": round(fitted, 4),
        "weight": round(weight, 3),
        "low": None if ci is None else round(ci[0], 4),
        "high": None if ci is None else round(ci[1], 4),
        "truth": round(truth, 1),
        "estimate": round(est, 1),
        "intervals": len(usable),
        "days": len(days),
        "bootstrap_over": grouped_by if ci is not None else None,
        "mape_before": round(statistics.fmean(before), 4) if before else None,
        "mape_after": round(statistics.fmean(after), 4) if after else None,
        "per_day": per_day,
    }
    warnings = []
    if len(days) < MIN_DAYS:
        warnings.append(
            f"{label}: only {len(days)} day{'s' if len(days) > 1 else ''} counted; one day's noise can move the "
            f"factor: count at least {MIN_DAYS} ordinary days (a week is better)"
        )
    if ci is None:
        warnings.append(f"{label}: a single counted interval gives no interval for the factor; count more")
    elif raw_ci is not None and max(raw_ci[1] / fitted - 1, 1 - raw_ci[0] / fitted) > MAX_HALF_WIDTH:
        # How much the counted days disagree is the data's, so it is judged before any shrinking.
        warnings.append(
            f"{label}: the counted factor's 90 % interval ({raw_ci[0]:.2f}-{raw_ci[1]:.2f}) is wider than "
            f"+-{MAX_HALF_WIDTH:.0%}: "
            "the counted periods disagree; count more days before trusting it"
        )
    if not SANE_FACTOR[0] <= fitted <= SANE_FACTOR[1]:
        warnings.append(
            f"{label}: factor {fitted:.2f} is far from 1; check the count covers the same doors (or pavement) the "
            "sensors hear, and that the time zone is the hub's"
        )
    return out, warnings


def _tz_check(conn: sqlite3.Connection, tz: tzinfo) -> str | None:
    """A warning when the hub stored its visits' local hours in another time zone."""
    rows = conn.execute("SELECT first_seen, day, hour FROM visits ORDER BY id DESC LIMIT 200").fetchall()
    if not rows:
        return None
    wrong = 0
    for t, day, hour in rows:
        local = datetime.fromtimestamp(t, tz)
        if local.date().isoformat() != day or local.hour != hour:
            wrong += 1
    if wrong > len(rows) // 2:
        return (
            f"the hub stored its visits' hours in another time zone than {getattr(tz, 'key', tz)}: "
            "give the hub's --tz (or --config), or every interval is matched with the wrong hours"
        )
    return None


def fit_counts(
    conn: sqlite3.Connection,
    rows: Counts | Sequence[CountRow],
    tz: tzinfo | str | None,
    *,
    name: str = "",
) -> dict[str, Any]:
    """Fit the calibration factors of the counted figures against the stored estimates.

    ``rows`` is :func:`read_counts`'s result (or its rows). Returns the report (JSON-ready):
    factors, their intervals, per-day truth vs estimate before and after, MAPE, warnings.
    Raises :class:`CountsError` when nothing can be fitted.
    """
    tz = get_tz(tz)
    counts = rows if isinstance(rows, Counts) else Counts(list(rows), _figures_of(rows), name or "counts")
    name = name or counts.name or "counts"
    # Rows with nothing counted (blank cells) take no part.
    rows_ = sorted((r for r in counts.rows if any(r.count(f) is not None for f in FIGURES)), key=lambda r: r.start)
    if not rows_:
        raise CountsError(f"{name}: no counts (every count cell is empty)")
    first = datetime.fromtimestamp(rows_[0].start, tz).date() - timedelta(days=1)
    last = datetime.fromtimestamp(max(r.end for r in rows_), tz).date() + timedelta(days=1)
    segments = _segments(conn, first, last, tz)
    matched, unmatched = _match(rows_, segments)
    for m in matched:
        m.day = datetime.fromtimestamp(m.row.start, tz).date().isoformat()
    watermark = conn.execute("SELECT max(watermark) FROM estimates").fetchone()[0]
    provisional = [r for r in unmatched if watermark is not None and r.end > watermark]
    missing = [r for r in unmatched if not (watermark is not None and r.end > watermark)]
    warnings: list[str] = []
    tz_warning = _tz_check(conn, tz)
    if tz_warning:
        warnings.append(tz_warning)
    if not matched:
        span = conn.execute("SELECT min(day), max(day) FROM estimates WHERE hour = -1").fetchone()
        have = (
            f"the hub has estimates for {span[0]}..{span[1]}, settled up to {_fmt_local(watermark, tz)}"
            if span and span[0]
            else "the hub has no estimates yet (the link job has not run)"
        )
        raise CountsError(
            f"none of the {len(rows_)} counted intervals "
            f"({_fmt_local(rows_[0].start, tz)} to {_fmt_local(rows_[-1].end, tz)}) has a settled estimate: {have}",
            [tz_warning] if tz_warning else [],
        )
    report_figs: dict[str, Any] = {}
    model = counted_site(conn, sorted({m.day for m in matched}))
    for fig in counts.figures:
        res, warns = _fit_figure(fig, matched, model)
        warnings += warns
        if res is not None:
            report_figs[fig] = res
    if not report_figs:
        raise CountsError(f"{name}: nothing to calibrate", warnings)
    prev = latest(conn)
    for fig in FIGURES:
        if fig not in report_figs and prev is not None and abs(prev[fig] - 1.0) > 1e-9:
            warnings.append(
                f"{LABELS[fig]} were not counted: their factor goes back to 1.0 (the calibration in force has "
                f"{prev[fig]:.3f})"
            )
    if len(unmatched) > len(rows_) / 2:
        warnings.append(f"{len(unmatched)} of {len(rows_)} counted intervals could not be matched (see skipped)")
    used_days = sorted({m.day for m in matched if any(f in report_figs for f in FIGURES)})
    hours = sum(m.row.end - m.row.start for m in matched) / 3600.0
    span = used_days[0] if len(used_days) == 1 else f"{used_days[0]}..{used_days[-1]}"
    kind = "door count" if "visitors" in report_figs else "count"
    source = f"{kind} {name}, {span}, {hours:g} hours"
    return {
        "version": 1,
        "created": time.time(),
        "file": name,
        "tz": getattr(tz, "key", str(tz)),
        "source": source,
        "factors": {f: report_figs[f]["factor"] if f in report_figs else 1.0 for f in FIGURES},
        "counted": list(counts.figures),
        "rows": len(rows_),
        "rows_without_count": counts.empty_rows,
        "intervals_used": len(matched),
        "days": used_days,
        "hours": round(hours, 2),
        "assumed_step_s": counts.step_s,
        "ignored_columns": list(counts.ignored_columns),
        "skipped": {
            "no_estimate": len(missing),
            "provisional": len(provisional),
            "lines": sorted(r.line for r in unmatched)[:50],
        },
        "watermark": watermark,
        "figures": report_figs,
        "warnings": warnings,
        "replaces": prev,
    }


def _figures_of(rows: Iterable[CountRow]) -> tuple[str, ...]:
    rows = list(rows)
    return tuple(f for f in FIGURES if any(r.count(f) is not None for r in rows))
