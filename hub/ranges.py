"""A figure with its 90 % range: how a period's estimates (``hub/estimate.py``) become the
numbers the dashboard shows, each with the range, the heard count beside it, and how the parts
of a period (a day's hours) are kept to the whole.

A count's range combines its sampling (how many stays or scans it rests on) with the model part
measured on the simulator's tuning days (``ModelSpread``, docs/metrics.md, "Ranges"); the capture
rate's comes from its two counts'; the dwell's from the spread of the stays' lengths; a share's
is Wilson's interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from footfall.hub.estimate_defaults import Z90, Defaults, ModelSpread


@dataclass
class Figure:
    estimate: float | None
    low: float | None
    high: float | None
    heard: float | None = None

    def as_dict(self, name: str, digits: int = 1) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, digits)

        return {
            name: r(self.estimate),
            f"{name}_low": r(self.low),
            f"{name}_high": r(self.high),
            f"{name}_heard": r(self.heard),
        }


def count_figure(est: float, rel_sd: float, heard: float, floor: float | None = None) -> Figure:
    """A count with its 90 % range, never below ``floor`` (people certainly there; by default
    what was heard) unless the estimate itself is."""
    half = Z90 * rel_sd * est
    floor = heard if floor is None else floor
    return Figure(est, max(est - half, floor if est >= floor else 0.0), est + half, heard)


@dataclass
class PeriodEstimate:
    visitors: Figure
    passersby: Figure
    capture_rate: Figure
    median_dwell_s: Figure
    mean_dwell_s: Figure
    sessions: int = 0
    # The two passers-by counts the figure is the geometric mean of (estimate.estimate): the
    # stays' ("stays") and the scans' ("scans"); kept with the day for diagnosis and fitting.
    passersby_counts: dict[str, float] = field(default_factory=dict)
    # How the dwell figures were made: "little" (the period's time in the shop over its visitors,
    # hub/dwell.py) or "stays" (the stays' own lengths: one sensor).
    dwell_from: str = "stays"
    # The stays' mean dwell whichever way the figures were made: what a visitor's phone's scans
    # are set against on the days after (link._history_dwell), as the visitor model was fitted.
    stays_mean_dwell_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out |= self.visitors.as_dict("visitors")
        out |= self.passersby.as_dict("passersby")
        out |= self.capture_rate.as_dict("capture_rate", 4)
        out |= self.median_dwell_s.as_dict("median_dwell_s")
        out |= self.mean_dwell_s.as_dict("mean_dwell_s")
        return out


def weighted_quantile(pairs: Sequence[tuple[float, float]], q: float) -> float | None:
    pairs = sorted(p for p in pairs if p[1] > 0)
    total = sum(w for _, w in pairs)
    if not total:
        return None
    acc = 0.0
    for x, w in pairs:
        acc += w
        if acc >= q * total:
            return x
    return pairs[-1][0]


def capture_figure(vis: Figure, pas: Figure, v_rel: float, p_rel: float, cleared: bool) -> Figure:
    """The capture rate from a period's visitors and passers-by, its range from their relative
    errors (or, where every counted scan was taken off as visitors', from the passers-by's range)."""
    visitors, passersby = vis.estimate or 0.0, pas.estimate or 0.0
    if not visitors + passersby:
        return Figure(None, None, None)
    cap = visitors / (visitors + passersby)
    if cleared:
        fig = Figure(cap, visitors / (visitors + (pas.high or 0.0)), 1.0)
    else:
        c_rel = math.hypot(v_rel, p_rel) * (1 - cap)
        fig = Figure(cap, max(cap * (1 - Z90 * c_rel), 0.0), min(cap * (1 + Z90 * c_rel), 1.0))
    v_heard, pb_heard = vis.heard or 0.0, pas.heard or 0.0
    fig.heard = v_heard / (v_heard + pb_heard) if v_heard + pb_heard else None
    return fig


def passersby_within(whole: PeriodEstimate, parts: Sequence[PeriodEstimate]) -> None:
    """Make the parts' passers-by (a day's hours) add up to the whole's.

    Each period is counted on its own. The stays' count is max(scans - the visitors' share, 0),
    so an hour whose visitors' share is more than its scans reads 0 while the day takes that
    excess off its other hours: the hours of a quiet day added up to a little more than the day
    (street 2.5, held-out seeds 12 and 23: one hour of 72 cut at 0, the hours 0.5 % over). With
    two sensors the figure is also the geometric mean of two counts (estimate.estimate), and the
    hours' means add up to less than the mean of the day's sums (by a few tenths of a per cent
    where the two counts share out the day alike). The day is the better-founded count; each
    hour keeps its share of the hours' sum and the width of its range (it rests on the same
    scans), and its capture rate follows. A day cleared to 0 clears its
    hours the same way: 0, with the range above it that each had."""
    day = whole.passersby.estimate or 0.0
    total = sum(p.passersby.estimate or 0.0 for p in parts)
    if total <= 0.0 or total == day:
        return
    k = day / total
    for part in parts:
        pas, vis = part.passersby, part.visitors
        if not pas.estimate:
            continue
        heard = pas.heard or 0.0
        v_rel = _rel(vis)
        if k <= 0:
            part.passersby = Figure(0.0, 0.0, max(pas.high or 0.0, heard), pas.heard)
            part.capture_rate = capture_figure(vis, part.passersby, v_rel, 0.0, cleared=True)
            continue
        est = pas.estimate * k
        # The same half-width as before (count_figure's, floored at what was heard again).
        p_rel = ((pas.high or pas.estimate) - pas.estimate) / Z90 / est
        part.passersby = count_figure(est, p_rel, heard)
        part.capture_rate = capture_figure(vis, part.passersby, v_rel, p_rel, cleared=False)


def _rel(fig: Figure) -> float:
    """A count's relative error, read off its range's upper end (count_figure's, never floored)."""
    if not fig.estimate or fig.high is None:
        return 1.0
    return (fig.high - fig.estimate) / Z90 / fig.estimate


def mean_dwell(dwell: Sequence[tuple[float, float]], defaults: Defaults) -> float | None:
    """The mean dwell figure of ``estimate._visit_dwells`` pairs (with the mean-dwell factor in place of
    the median's), None without any."""
    total = sum(w for _, w in dwell)
    if not total:
        return None
    return sum(d * w for d, w in dwell) / total * defaults.mean_dwell_factor / defaults.dwell_factor


def dwell_figures(
    lengths: Sequence[tuple[float, float]],
    dwell: Sequence[tuple[float, float]],
    defaults: Defaults,
    spread: ModelSpread,
    *,
    with_mean: bool = False,
) -> tuple[Figure, Figure]:
    """Median and mean visit dwell, each with its range, from (dwell, weight) pairs.

    ``lengths`` holds ``estimate.visit_length`` values (the median's), ``dwell`` ``estimate.dwell_of``
    values (the mean's), both already scaled by ``dwell_factor``; the mean gets its own factor
    (``mean_dwell_factor / dwell_factor``): merged stays lengthen the tail more than the middle.

    ``with_mean`` (one sensor, or an inside model not trained yet: no Little's law): the median is
    the geometric mean of the stays' median and the mean times the median-to-mean ratio
    (``Defaults.median_to_mean``). The stays' median reads short where the tracker cuts visits and
    the mean long where it joins them; on the one-sensor tuning days at three streets their
    errors partly cancel (spread of log(truth / estimate) 0.240 -> 0.170; docs/metrics.md, "Median
    dwell with one sensor"). Half of the shape is then assumed, as with Little's law in full."""
    if not dwell:
        return Figure(None, None, None), Figure(None, None, None)
    total = sum(w for _, w in dwell)
    n_eff = total**2 / sum(w * w for _, w in dwell)
    med = weighted_quantile(lengths, 0.5) or 0.0
    q1, q3 = weighted_quantile(lengths, 0.25) or 0.0, weighted_quantile(lengths, 0.75) or 0.0
    # Standard error of a median ~ 1.25 sigma / sqrt(n), sigma from the interquartile range.
    med_rel = math.hypot(
        1.253 * (q3 - q1) / 1.349 / math.sqrt(n_eff) / med if med else 1.0, spread.dwell * spread.predictive
    )
    scale = defaults.mean_dwell_factor / defaults.dwell_factor
    mean = mean_dwell(dwell, defaults) or 0.0
    if with_mean and med and mean:
        med = math.sqrt(med * mean * defaults.median_to_mean)
    sd = math.sqrt(sum(w * (d * scale - mean) ** 2 for d, w in dwell) / total)
    mean_rel = math.hypot(sd / math.sqrt(n_eff) / mean if mean else 1.0, spread.mean_dwell * spread.predictive)
    heard_med = weighted_quantile([(d / defaults.dwell_factor, 1.0) for d, _ in lengths], 0.5)
    heard_mean = sum(d for d, _ in dwell) / len(dwell) / defaults.dwell_factor
    return (
        Figure(med, med * (1 - Z90 * med_rel), med * (1 + Z90 * med_rel), heard_med),
        Figure(mean, mean * (1 - Z90 * mean_rel), mean * (1 + Z90 * mean_rel), heard_mean),
    )


def wilson(k: float, n: float, z: float = Z90) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
