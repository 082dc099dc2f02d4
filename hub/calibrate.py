"""Calibrate the hub's estimates of people against a real count (``footfall calibrate counts``).

The hub cannot measure everything by radio (``hub/estimate.py``, :class:`Defaults`): the share
of people whose phone probes, how long a passer-by stays in range, how many visits the tracker
makes of one person. A door counter, or someone counting for a few days, fixes that per site.

1. :func:`read_counts` reads what counters export: a CSV of timestamped people counts (see
   docs/calibration.md for the format), validated with line numbers.
2. :func:`fit_counts` matches each counted interval with the hub's stored estimates (hourly
   rows of ``estimates``, summed over the interval, partial hours prorated linearly), skipping
   intervals the hub has no settled estimate for, and fits one factor per counted figure: the
   ratio estimator sum(counted) / sum(estimated), with a 90 % interval by bootstrapping over days
   (over intervals when a single day was counted).
3. :func:`store_calibration` stores the factors in ``calibrations``; ``hub/figures.py`` applies
   the latest row when it reads the estimates, to every day at once. The estimates are stored
   uncalibrated, so a new calibration replaces the previous one instead of compounding it, and
   :func:`clear_calibrations` undoes it.

A calibration corrects a per-site bias (the same factor every day). It cannot remove the
day-to-day noise of the estimates: the MAPE after calibration in the report is in-sample and
is the floor of what it can do, not a promise.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import io
import json
import math
import os
import random
import re
import sqlite3
import statistics
import sys
import time
import zoneinfo
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

FIGURES = ("visitors", "passersby")
LABELS = {"visitors": "visitors (people entering)", "passersby": "passers-by"}

# Header names, normalized (lower case, spaces and dashes as underscores).
TIME_COLUMNS = ("start", "time", "timestamp", "datetime")
DATE_COLUMN = "date"
END_COLUMNS = ("end",)
ALIASES = {
    "visitors": ("visitors", "entries", "in"),
    "passersby": ("passersby", "passers_by", "passerby"),
}
# What counters export beside the entries; read and not used.
IGNORED_COLUMNS = ("out", "exits", "note", "notes", "comment")

MAX_ERRORS = 20
BOOTSTRAP = 2000
MIN_DAYS = 3
MAX_HALF_WIDTH = 0.15
SANE_FACTOR = (1 / 3, 3.0)
EARLIEST, LATEST = 946684800.0, 4102444800.0  # 2000-01-01, 2100-01-01 UTC: anything else is a typo


class CountsError(ValueError):
    """Input that cannot be used; ``errors`` lists one sentence per problem, with line numbers."""

    def __init__(self, message: str, errors: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors)

    def __str__(self) -> str:
        msg = super().__str__()
        if not self.errors:
            return msg
        return msg + "\n" + "\n".join(f"  {e}" for e in self.errors)


@dataclass
class CountRow:
    """One counted interval [start, end) in UNIX seconds; a count is None where not counted."""

    line: int
    start: float
    end: float
    visitors: float | None = None
    passersby: float | None = None

    def count(self, figure: str) -> float | None:
        return getattr(self, figure)


@dataclass
class Counts:
    """A parsed counts file: rows in time order, the figures it counts, what was assumed."""

    rows: list[CountRow]
    figures: tuple[str, ...]
    name: str = ""
    step_s: float | None = None  # the interval assumed for rows without an end, if any had none
    ignored_columns: tuple[str, ...] = ()
    empty_rows: int = 0  # rows with no count at all (kept out of the fit)


def get_tz(tz: tzinfo | str | None) -> tzinfo:
    if tz is None:
        return zoneinfo.ZoneInfo("UTC")
    if isinstance(tz, str):
        try:
            return zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise CountsError(f"unknown time zone {tz!r} (give an IANA name such as Europe/Paris)") from None
    return tz


# ----------------------------------------------------------------------------- reading
def _norm(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


_UNIX = re.compile(r"\d+(\.\d+)?")
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}|\d{8}")


def _local_midnight(d: date, tz: tzinfo) -> float:
    return datetime(d.year, d.month, d.day, tzinfo=tz).timestamp()


def parse_time(text: str, tz: tzinfo) -> tuple[float, date | None]:
    """UNIX seconds of an ISO 8601 time (local when it has no offset) or of UNIX seconds; a bare
    date gives its local midnight and the date (the row is then that whole day)."""
    s = text.strip()
    if not s:
        raise ValueError("is empty")
    if _UNIX.fullmatch(s) and len(s.split(".")[0]) >= 9:
        t = float(s)
        if t > 1e11:
            raise ValueError(f"{s!r} looks like milliseconds: give UNIX seconds")
        return _in_range(s, t), None
    if _DATE_ONLY.fullmatch(s):
        try:
            d = date.fromisoformat(s)
        except ValueError:
            raise ValueError(f"{s!r} is not a date") from None
        return _in_range(s, _local_midnight(d, tz)), d
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(
            f"{s!r} is not a time (ISO 8601 such as 2026-11-02T10:00 or 2026-11-02 10:00+01:00, or UNIX seconds)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return _in_range(s, dt.timestamp()), None


def _in_range(text: str, t: float) -> float:
    if not EARLIEST <= t < LATEST:
        raise ValueError(f"{text!r} is not between 2000 and 2100")
    return t


def _parse_count(text: str) -> float | None:
    s = text.strip()
    if not s:
        return None
    try:
        x = float(s)
    except ValueError:
        raise ValueError(f"{s!r} is not a number") from None
    if not math.isfinite(x):
        raise ValueError(f"{s!r} is not a number")
    if x < 0:
        raise ValueError(f"{s} is negative")
    return x


def _sniff_delimiter(header: str) -> str:
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _fmt_local(t: float, tz: tzinfo) -> str:
    return datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M")


def read_counts(source: str | Path | io.TextIOBase, tz: tzinfo | str | None = None, *, name: str = "") -> Counts:
    """Read and validate a counts CSV (a path, or an open text file).

    Raises :class:`CountsError` listing every problem found (up to 20), each with its line.
    """
    tz = get_tz(tz)
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = name or path.name
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise CountsError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")  # header names are ASCII; a Windows export is fine
    else:
        text = source.read()
        text = text.removeprefix("\ufeff")
    return parse_counts(text, tz, name=name or "counts")


def parse_counts(text: str, tz: tzinfo | str | None = None, *, name: str = "counts") -> Counts:
    """:func:`read_counts` on text already read."""
    tz = get_tz(tz)
    lines = text.splitlines()
    first = next((i for i, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith("#")), None)
    if first is None:
        raise CountsError(f"{name} is empty: expected a header row such as 'start,end,visitors'")
    delimiter = _sniff_delimiter(lines[first])
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    errors: list[str] = []

    def err(line: int, msg: str) -> None:
        errors.append(f"line {line}: {msg}")

    header: list[str] | None = None
    header_line = 0
    records: list[tuple[int, list[str]]] = []
    try:
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields) or fields[0].lstrip().startswith("#"):
                continue
            if header is None:
                header, header_line = fields, line
            else:
                records.append((line, fields))
    except csv.Error as exc:
        raise CountsError(f"{name}: line {reader.line_num}: not valid CSV ({exc})") from None
    if header is None:
        raise CountsError(f"{name} is empty: expected a header row such as 'start,end,visitors'")
    cols = [_norm(h) for h in header]
    index: dict[str, int] = {}
    for i, c in enumerate(cols):
        if not c:
            err(header_line, f"column {i + 1} has no name")
        elif c in index:
            err(header_line, f"column {header[i].strip()!r} appears twice")
        else:
            index[c] = i
    known = set(TIME_COLUMNS) | {DATE_COLUMN} | set(END_COLUMNS) | set(IGNORED_COLUMNS)
    for aliases in ALIASES.values():
        known |= set(aliases)
    unknown = [header[i].strip() for i, c in enumerate(cols) if c and c not in known]
    if unknown:
        err(
            header_line,
            f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; expected a time column "
            f"({'/'.join(TIME_COLUMNS)}, or date), optionally end, and visitors (or entries/in) and/or passersby"
            f" (ignored: {'/'.join(IGNORED_COLUMNS)})",
        )
    times = [c for c in TIME_COLUMNS if c in index]
    has_date = DATE_COLUMN in index
    if len(times) > 1:
        err(header_line, f"several time columns ({', '.join(times)}): keep one")
    if not times and not has_date:
        err(header_line, f"no time column: name one {', '.join(TIME_COLUMNS)} (or date)")
    figure_col: dict[str, int] = {}
    for fig, aliases in ALIASES.items():
        present = [a for a in aliases if a in index]
        if len(present) > 1:
            err(header_line, f"columns {' and '.join(present)} both give the {fig} count: keep one")
        elif present:
            figure_col[fig] = index[present[0]]
    if not figure_col and not errors:
        err(header_line, "no count column: name it visitors (or entries/in) and/or passersby")
    if not records and not errors:
        raise CountsError(f"{name}: no counts after the header (line {header_line})")
    if errors:
        raise CountsError(f"{name} has a bad header", errors)

    time_col = index[times[0]] if times else index[DATE_COLUMN]
    date_col = index[DATE_COLUMN] if has_date and times else None
    end_col = index.get("end")
    ncols = len(header)

    def when(fields: list[str], col: int, line: int, what: str) -> tuple[float, date | None] | None:
        value = fields[col].strip()
        if date_col is not None:
            d = fields[date_col].strip()
            if not value:
                value = d
            elif d and "-" not in value[1:] and not _UNIX.fullmatch(value):
                value = f"{d}T{value}"  # date and time of day in two columns
        try:
            return parse_time(value, tz)
        except ValueError as exc:
            err(line, f"{what} {exc}")
            return None

    parsed: list[tuple[int, float, float | None, date | None, dict[str, float | None]]] = []
    empty = 0
    for line, fields in records:
        if len(errors) >= MAX_ERRORS:
            break
        if len(fields) != ncols:
            err(line, f"{len(fields)} fields, the header has {ncols}")
            continue
        start = when(fields, time_col, line, "time")
        end: tuple[float, date | None] | None = None
        end_ok = True
        if end_col is not None and fields[end_col].strip():
            end = when(fields, end_col, line, "end")
            end_ok = end is not None
        counts: dict[str, float | None] = {}
        ok = start is not None and end_ok
        for fig, col in figure_col.items():
            try:
                counts[fig] = _parse_count(fields[col])
            except ValueError as exc:
                err(line, f"{header[col].strip()} {exc}")
                ok = False
        if not ok or start is None:
            continue
        t0, day0 = start
        t1: float | None = None
        if end is not None:
            t1, day1 = end
            if day1 is not None and day0 is not None:
                t1 = _local_midnight(day1 + timedelta(days=1), tz)  # an end date is inclusive
            elif date_col is not None and t1 <= t0 and t0 - t1 < 86400 and day1 is None:
                t1 += 86400  # 23:00 to 00:00 on a date column
            if t1 <= t0:
                err(line, f"end {fields[end_col].strip()!r} is not after the start {fields[time_col].strip()!r}")
                continue
        elif day0 is not None:
            t1 = _local_midnight(day0 + timedelta(days=1), tz)
        if all(v is None for v in counts.values()):
            empty += 1
        parsed.append((line, t0, t1, day0, counts))
    if len(errors) >= MAX_ERRORS:
        errors.append(f"(stopped after {MAX_ERRORS} errors)")
    if errors:
        raise CountsError(f"{name} has {'bad rows' if len(errors) > 1 else 'a bad row'}", errors)

    # Rows without an end: up to the next row's start, at most the file's usual step (an hourly
    # file's last row of the day does not stretch over the night); the last row one step.
    parsed.sort(key=lambda r: (r[1], r[0]))
    starts = [r[1] for r in parsed]
    gaps = [round(b - a) for a, b in zip(starts, starts[1:], strict=False) if b > a]
    step: float | None = None
    rows: list[CountRow] = []
    needs_step = any(r[2] is None for r in parsed)
    if needs_step:
        step = float(statistics.mode(gaps)) if gaps else 3600.0
        step = min(step, 86400.0)
    for i, (line, t0, t1, _, counts) in enumerate(parsed):
        if t1 is None:
            assert step is not None
            nxt = parsed[i + 1][1] if i + 1 < len(parsed) else math.inf
            t1 = min(t0 + step, nxt) if nxt > t0 else t0 + step
        rows.append(CountRow(line, t0, t1, counts.get("visitors"), counts.get("passersby")))
    # Overlaps, in time order: each row against the one reaching furthest so far.
    reach: CountRow | None = None
    for r in rows:
        if reach is not None and r.start < reach.end:
            if r.start == reach.start:
                err(r.line, f"same start ({_fmt_local(r.start, tz)}) as line {reach.line}")
            else:
                err(
                    r.line,
                    f"interval {_fmt_local(r.start, tz)}-{_fmt_local(r.end, tz)} overlaps line {reach.line} "
                    f"({_fmt_local(reach.start, tz)}-{_fmt_local(reach.end, tz)})",
                )
            if len(errors) >= MAX_ERRORS:
                break
        if reach is None or r.end > reach.end:
            reach = r
    if errors:
        errors.sort(key=lambda e: int(e.split(":")[0].split()[1]))
        raise CountsError(f"{name} has overlapping intervals", errors)
    ignored = tuple(header[i].strip() for i, c in enumerate(cols) if c in IGNORED_COLUMNS)
    return Counts(rows, tuple(f for f in FIGURES if f in figure_col), name, step, ignored, empty)


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


def _fit_figure(fig: str, matches: Sequence[_Match]) -> tuple[dict[str, Any] | None, list[str]]:
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
    factor = truth / est
    by_day: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for m in usable:
        g = by_day[m.day]
        g[0] += m.row.count(fig) or 0.0
        g[1] += m.estimate[fig] or 0.0
        g[2] += 1
    days = sorted(by_day)
    if len(days) >= 2:
        groups, grouped_by = [(by_day[d][0], by_day[d][1]) for d in days], "days"
    else:
        groups, grouped_by = [(m.row.count(fig) or 0.0, m.estimate[fig] or 0.0) for m in usable], "intervals"
    ci = _bootstrap(groups)
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
    elif max(ci[1] / factor - 1, 1 - ci[0] / factor) > MAX_HALF_WIDTH:
        warnings.append(
            f"{label}: the factor's 90 % interval ({ci[0]:.2f}-{ci[1]:.2f}) is wider than +-{MAX_HALF_WIDTH:.0%}: "
            "the counted periods disagree; count more days before trusting it"
        )
    if not SANE_FACTOR[0] <= factor <= SANE_FACTOR[1]:
        warnings.append(
            f"{label}: factor {factor:.2f} is far from 1; check the count covers the same doors (or pavement) the "
            "sensors hear, and that the time zone is the hub's"
        )
    return out, warnings


def latest(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """The calibration in force (the latest row), or None."""
    row = conn.execute(
        "SELECT id, created, visitors, passersby, source FROM calibrations ORDER BY created DESC, id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    return {"id": row[0], "created": row[1], "visitors": row[2], "passersby": row[3], "source": row[4]}


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
    for fig in counts.figures:
        res, warns = _fit_figure(fig, matched)
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


# ----------------------------------------------------------------------------- storing
def store_calibration(conn: sqlite3.Connection, report: Mapping[str, Any], *, now: float | None = None) -> int:
    """Store the report's factors as the site's calibration (the latest applies); returns its id."""
    factors = report["factors"]
    created = time.time() if now is None else now
    # The latest by ``created`` applies: never store one older than the one in force.
    prev = conn.execute("SELECT max(created) FROM calibrations").fetchone()[0]
    if prev is not None and created <= prev:
        created = prev + 1e-3
    with conn:
        cur = conn.execute(
            "INSERT INTO calibrations (created, visitors, passersby, source, fit) VALUES (?, ?, ?, ?, ?)",
            (
                created,
                float(factors.get("visitors", 1.0)),
                float(factors.get("passersby", 1.0)),
                str(report.get("source", "")),
                json.dumps(report),
            ),
        )
    return int(cur.lastrowid)


def clear_calibrations(conn: sqlite3.Connection, *, latest_only: bool = False) -> int:
    """Remove every calibration (the defaults apply again), or only the latest (the one before
    it applies again). Returns the number of rows removed."""
    with conn:
        if latest_only:
            cur = conn.execute(
                "DELETE FROM calibrations WHERE id = "
                "(SELECT id FROM calibrations ORDER BY created DESC, id DESC LIMIT 1)"
            )
        else:
            cur = conn.execute("DELETE FROM calibrations")
    return cur.rowcount


# ----------------------------------------------------------------------------- the report
def _pct(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{100 * x:+.1f}%" if abs(x) >= 0.0005 else " 0.0%"


def format_report(report: Mapping[str, Any]) -> str:
    """The fit report as text for the terminal."""
    out = [f"Calibration against {report['source']} (time zone {report['tz']})"]
    sk = report["skipped"]
    line = f"  {report['rows']} intervals read, {report['intervals_used']} matched with the hub's estimates"
    skipped = []
    if sk["no_estimate"]:
        skipped.append(f"{sk['no_estimate']} with no estimate")
    if sk["provisional"]:
        wm = report.get("watermark")
        when = ""
        if wm is not None:
            with contextlib.suppress(CountsError):
                when = f" (after {_fmt_local(wm, get_tz(report['tz']))})"
        skipped.append(f"{sk['provisional']} in the hub's provisional period{when}")
    if skipped:
        line += "; skipped " + " and ".join(skipped)
        if sk.get("lines"):
            line += f" (lines {', '.join(map(str, sk['lines'][:10]))}{', ...' if len(sk['lines']) > 10 else ''})"
    out.append(line)
    if report.get("rows_without_count"):
        n = report["rows_without_count"]
        out.append(f"  {n} row{' has' if n == 1 else 's have'} no count and {'was' if n == 1 else 'were'} left out")
    if report.get("assumed_step_s"):
        out.append(f"  rows without an end: up to the next row's start, at most {report['assumed_step_s'] / 60:g} min")
    for fig, f in report["figures"].items():
        out.append("")
        out.append(LABELS[fig])
        out.append(f"  {'day':10} {'counted':>9} {'estimated':>10} {'error':>8} {'calibrated':>11} {'error':>8}")
        for d in f["per_day"]:
            out.append(
                f"  {d['day']:10} {d['truth']:9.0f} {d['estimate']:10.1f} {_pct(d['error_before']):>8} "
                f"{d['calibrated']:11.1f} {_pct(d['error_after']):>8}"
            )
        out.append(
            f"  {'total':10} {f['truth']:9.0f} {f['estimate']:10.1f} {_pct(_rel(f['estimate'], f['truth'])):>8} "
            f"{f['estimate'] * f['factor']:11.1f} {_pct(0.0):>8}"
        )
        mb, ma = f["mape_before"], f["mape_after"]
        if mb is not None and ma is not None:
            out.append(f"  MAPE over days: {100 * mb:.1f} % before, {100 * ma:.1f} % after (in-sample)")
        ci = f"90 % interval {f['low']:.3f}-{f['high']:.3f}" if f["low"] is not None else "no interval"
        out.append(
            f"  factor {f['factor']:.3f} ({ci}, bootstrap over {f['bootstrap_over'] or '-'}), "
            f"from {f['intervals']} intervals on {f['days']} day{'s' if f['days'] != 1 else ''}"
        )
    if report.get("warnings"):
        out.append("")
        out.append("Warnings:")
        out += [f"  - {w}" for w in report["warnings"]]
    prev = report.get("replaces")
    if prev:
        out.append("")
        out.append(
            f"In force until now: visitors x{prev['visitors']:.3f}, passers-by x{prev['passersby']:.3f} "
            f"({prev['source']})"
        )
    return "\n".join(out)


# ----------------------------------------------------------------------------- command line
def _resolve(args: Any) -> tuple[str, str]:
    """Database and time zone: flags, then the hub's TOML (--config), then env and defaults."""
    from footfall.hub import config

    cfg = config.load(getattr(args, "config", None))
    db = getattr(args, "db", None) or cfg.db
    tz = getattr(args, "tz", None)
    if not tz:
        tz = cfg.timezone if getattr(args, "config", None) else os.environ.get("FOOTFALL_TZ") or cfg.timezone
    return db, tz


def _fail(args: Any, message: str, errors: Sequence[str] = ()) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "errors": list(errors)}, indent=1))
    else:
        print(f"footfall calibrate counts: {message}", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
    return 1


def main(args: Any) -> int:
    """``footfall calibrate counts``: the arguments come from ``edge_agent/cli.py``."""
    from footfall.hub import config, store

    actions = [a for a in ("truth", "show", "undo", "clear") if getattr(args, a, None)]
    if len(actions) > 1:
        return _fail(
            args, f"give one of --truth, --show, --undo, --clear (not {' and '.join('--' + a for a in actions)})"
        )
    try:
        db, tz_name = _resolve(args)
    except (config.ConfigError, OSError) as exc:
        return _fail(args, f"hub settings: {exc}")
    try:
        tz = get_tz(tz_name)
    except CountsError as exc:
        return _fail(args, str(exc))
    if not Path(db).is_file():
        return _fail(args, f"no hub database at {db} (give --db or --config)")
    try:
        conn = store.connect(db)
    except (sqlite3.Error, RuntimeError) as exc:
        return _fail(args, f"cannot open {db}: {exc}")
    try:
        if args.clear or args.undo:
            n = clear_calibrations(conn, latest_only=args.undo)
            now = latest(conn)
            msg = f"removed {n} calibration{'s' if n != 1 else ''}; " + (
                f"in force now: visitors x{now['visitors']:.3f}, passers-by x{now['passersby']:.3f} ({now['source']})"
                if now
                else "the dashboard shows the uncalibrated estimates (defaults)"
            )
            print(json.dumps({"removed": n, "in_force": now}) if args.json else msg)
            return 0
        if args.show:
            row = conn.execute("SELECT fit FROM calibrations ORDER BY created DESC, id DESC LIMIT 1").fetchone()
            if row is None:
                print(json.dumps(None) if args.json else "no calibration: the dashboard shows the defaults")
                return 0
            report = json.loads(row[0])
            print(json.dumps(report, indent=1) if args.json else format_report(report))
            return 0
        if not args.truth:
            return _fail(args, "give --truth counts.csv (or --show, --undo, --clear)")
        try:
            counts = read_counts(args.truth, tz)
            report = fit_counts(conn, counts, tz)
        except CountsError as exc:
            return _fail(args, exc.args[0], exc.errors)
        if args.dry_run:
            report["stored"] = None
        else:
            report["stored"] = store_calibration(conn, report)
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            print(format_report(report))
            print()
            f = report["factors"]
            if args.dry_run:
                print(
                    f"Dry run: nothing stored (visitors would be x{f['visitors']:.3f}, "
                    f"passers-by x{f['passersby']:.3f})."
                )
            else:
                print(
                    f"Stored as calibration {report['stored']}: the dashboard now shows visitors x{f['visitors']:.3f}, "
                    f"passers-by x{f['passersby']:.3f} on every day. Undo: footfall calibrate counts --undo"
                )
        return 0
    except sqlite3.Error as exc:
        return _fail(args, f"database error: {exc}")
    finally:
        conn.close()
