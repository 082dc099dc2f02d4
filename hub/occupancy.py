"""People in the shop, minute by minute.

A visit (a stay the inside model calls a visit, see ``hub/estimate.py``) occupies the shop
from its first inside scan to its last, widened by half a scan interval at each end: a phone
inside scans every minute or few, so its owner walked in before the first scan and out after
the last. Each minute counts the share of it that the visit covered, weighted like the visitor
count (the probability that the stay is a visit, the chance such a stay was heard at all, the
probing share and the site's calibration; a randomizing phone's scans over what one phone makes
in the visit's own span rather than in the site's mean visit, see :func:`present_weight`), times
``Defaults.occupancy_factor``: without it the minutes of a tuning day came out 10 % short of
the visitors' time inside (20 % with one sensor) where the visitors and their mean dwell came
out right (``python -m footfall.tools.fit_occupancy``). Staff and equipment
(stays of four hours and more) and stays that are not visits never count: a phone on the
pavement, however strong, is not in the room.

:func:`people_per_window` is the library entry point: visits straight from the agents (payload
dicts, version 1 or 2), no database. The hub's job stores the same per-minute figures for the
dashboard (``hub/link.py``), which serves windows of them (``footfall hub occupancy``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from footfall.hub.estimate import DEFAULTS, Defaults, Session, SiteModel, classify, fill_visit_dwell

MINUTE = 60


def present_weight(s: Session, model: SiteModel, defaults: Defaults = DEFAULTS) -> float:
    """People one stay puts in the shop while it lasts (0 for staff and stays that are not
    visits): ``SiteModel.people`` over its inside interval and inside scans."""
    return presence_of(s, model, defaults)[2]


def chained(s: Session) -> bool:
    """A randomizing phone's stay as long as staff's: visitors' scans strung into one track (see
    the module doc), not a person present all day."""
    return s.staff and not s.identified and not s.long_presence


def chain_minutes(s: Session, model: SiteModel, defaults: Defaults = DEFAULTS) -> Iterator[tuple[float, float, float]]:
    """(start, end, people) pieces of a chained stay's presence: per inside scan, one person for
    the time a phone inside takes to make one scan, centred on it."""
    each = 60.0 / defaults.inside_scans_per_min
    people = model.calibration.visitors / model.heard_share / defaults.probing_share
    for sc in s.scans:
        if model.inside.llr(sc.peak) > 0:
            yield sc.t - each / 2, sc.t + each / 2, people


def presence_of(s: Session, model: SiteModel, defaults: Defaults = DEFAULTS) -> tuple[float, float, float]:
    """(start, end, people) of a stay's time in the shop; people 0, and no interval worked out,
    for staff, chained stays (:func:`chain_minutes`) and stays that are not visits."""
    if s.staff or s.p_visit <= 0:
        return 0.0, 0.0, 0.0
    inside = [sc.t for sc in s.scans if model.inside.llr(sc.peak) > 0]
    times = inside or [s.first, s.last]
    half = 0.5 / model.scan_rate
    a, b = times[0] - half, times[-1] + half
    return a, b, model.people(s, defaults, span_s=b - a, scans=len(inside) or len(s.scans))


def per_minute(
    sessions: Sequence[Session], model: SiteModel, start: float, end: float, defaults: Defaults = DEFAULTS
) -> dict[int, float]:
    """People present per minute in [start, end): ``{minute start (UTC seconds): people}``."""
    classify(sessions, model)
    scale = defaults.occupancy_factor_weak if model.weak else defaults.occupancy_factor
    first = int(start // MINUTE * MINUTE)
    out: dict[int, float] = {m: 0.0 for m in range(first, int(end), MINUTE)}
    for s in sessions:
        for a, b, w in chain_minutes(s, model, defaults) if chained(s) else [presence_of(s, model, defaults)]:
            if w > 0:
                _spread(out, a, b, w * scale)
    return out


def _spread(out: dict[int, float], a: float, b: float, people: float) -> None:
    """Add ``people`` present from ``a`` to ``b`` to the minutes it covers (in part at the ends)."""
    m = int(a // MINUTE * MINUTE)
    while m < b:
        cover = min(b, m + MINUTE) - max(a, m)
        if cover > 0 and m in out:
            out[m] += people * cover / MINUTE
        m += MINUTE


def windows(minutes: Mapping[int, float], window_s: int) -> dict[int, float]:
    """Average people per window (window start -> people) of per-minute figures."""
    if window_s < MINUTE or window_s % MINUTE:
        raise ValueError("the window must be a whole number of minutes (a multiple of 60 s)")
    sums: dict[int, float] = defaultdict(float)
    counts: dict[int, int] = defaultdict(int)
    for m, people in minutes.items():
        w = int(m // window_s * window_s)
        sums[w] += people
        counts[w] += 1
    return {w: sums[w] / (window_s // MINUTE) for w in sorted(sums)}


def people_per_window(
    visits: Iterable[Mapping[str, Any]],
    presence: Iterable[Mapping[str, Any]] = (),
    window_s: int = 600,
    *,
    is_open: Callable[[float], bool] | None = None,
    tz: Any = None,
) -> dict[int, float]:
    """People present per window, ``{window start (UTC seconds): people}``, from agent visits.

    Runs the hub's own steps in memory (``hub/analysis.py``: linking, the site model fitted on
    these visits, stays; then :func:`per_minute`). ``presence`` reports (the agents' live
    counts) only extend the span covered: a window with reports and no visit reads 0, not
    missing. ``is_open`` gives opening hours (the quiet hours the inside model learns the
    street from); by default they are inferred from the data.
    """
    from zoneinfo import ZoneInfo

    from footfall.hub.analysis import analyse, infer_open

    vs = [v for v in visits if v.get("type", "visit") == "visit"]
    times = [float(v["first_seen"]) for v in vs] + [float(v["last_seen"]) for v in vs]
    times += [float(p["ts"]) for p in presence if "ts" in p]
    if not times:
        return {}
    if is_open is None:
        is_open = infer_open(vs, tz or ZoneInfo("UTC"))
    an = analyse(vs, is_open=is_open)
    fill_visit_dwell(an.model, an.sessions, min(times), max(times) + MINUTE)
    minutes = per_minute(an.sessions, an.model, min(times), max(times) + MINUTE)
    return windows(minutes, window_s)
