"""Read and validate the counts CSV of ``footfall calibrate counts`` (overview: ``hub/calibrate.py``).

What counters export, or a hand count: timestamped people counts (the format is in
docs/calibration.md). Every problem is listed with its line number, up to 20, so whoever counted
can fix the file in one pass. The figures a count can give, the error for unusable input and the
time zone lookup live here too: the fit, the report and the command all start from a parsed file.
"""

from __future__ import annotations

import csv
import io
import math
import re
import statistics
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path

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
