"""A period's mean and median visit dwell from Little's law: the visitors' time in the shop over
the visitors.

Every visitor's time inside, summed, is the shop's person-minutes; divided by the visitors it is
their mean dwell, whatever the dwell. Both come from figures the hub already estimates without
following any phone through its visit: the occupancy (``hub/occupancy.py``: a visit's stay
weighted by its scans over those one phone makes in the stay's own span, a randomizing track as
long as staff's by its inside scans) and the visitor count (``estimate.estimate``). The stays'
own lengths do not: phones of one model inside at once are told apart by their signal only,
which inside a shop hardly tells them apart, so the tracker spreads a long visit of a
randomizing phone over several tracks (docs/device-estimation.md, "Phones of one model inside at
once"), and a factor fitted on one kind of shop (``Defaults.dwell_factor``) cannot make up for
it at another: on shops whose visits last three times as long, the stays' median read 41 % short.

The median is the mean times the median-to-mean ratio of the tuning days' visits
(``Defaults.median_to_mean``): an assumption of shape, where the scale is measured. A shop whose
visits are more alike than the simulated shop's (a median nearer the mean) reads its median
short, one with more look-ins and a few very long visits long; the stays' median is kept as what
was heard (``Figure.heard``).

With one sensor, or an inside model not trained yet, the stays' figures stay: there the visitor
count and the occupancy lean on the same inside test, and Little's mean came out worse on the
ordinary shop (held out 6.5 -> 15.6 %) for a gain on others (27.1 -> 15.0 %) that the visitor
count's noise at one sensor does not let hold. Measured in docs/metrics.md, "Dwell from Little's
law". Their median borrows half its shape the same way (``ranges.dwell_figures``).
"""

from __future__ import annotations

from collections.abc import Sequence

from footfall.hub.estimate import Defaults, Session, SiteModel
from footfall.hub.occupancy import chain_minutes, chained, presence_of
from footfall.hub.ranges import Z90, Figure


def chain_pieces(sessions: Sequence[Session], model: SiteModel, defaults: Defaults) -> list[tuple[float, float, float]]:
    """The (start, end, people) pieces of every randomizing track as long as staff's among
    ``sessions`` (``occupancy.chain_minutes``): worked out once for all of a day's periods."""
    return [piece for s in sessions if chained(s) for piece in chain_minutes(s, model, defaults)]


def person_seconds(
    counted: Sequence[Session],
    chains: Sequence[tuple[float, float, float]],
    model: SiteModel,
    start: float,
    end: float,
    defaults: Defaults,
    final_before: float | None = None,
) -> float:
    """The time in the shop of the visits a period counts (``counted``: its stays, as the visitor
    count takes them), as the occupancy weighs it, plus the pieces of ``chains``
    (:func:`chain_pieces`) heard in the period (their visitors are not told apart: each inside
    scan is one person for the time a phone takes to make one). Times the occupancy factor (the
    weak site's where the site cannot tell the shop from the street), as the occupancy's minutes."""
    total = 0.0
    for s in counted:
        a, b, w = presence_of(s, model, defaults)
        total += w * (b - a)
    until = end if final_before is None else min(end, final_before - defaults.session_gap_s)
    for a, b, w in chains:
        if start <= (a + b) / 2 < until:
            total += w * (b - a)
    return total * (defaults.occupancy_factor_weak if model.weak else defaults.occupancy_factor)


def little_figures(
    person_s: float, visitors: Figure, visitors_rel: float, heard: tuple[Figure, Figure], defaults: Defaults
) -> tuple[Figure, Figure] | None:
    """Median and mean dwell (s) with their ranges from the period's person-seconds and its
    visitor count (and the count's relative error); ``heard``: the stays' figures, whose heard
    values are kept. None without visitors or time to divide."""
    v = visitors.estimate or 0.0
    if v <= 0 or person_s <= 0:
        return None
    spread = defaults.spread
    mean = person_s / v
    median = mean * defaults.median_to_mean
    # The visitors' own count noise (a small period's), then the model spread measured on the
    # tuning days for each figure (which holds the occupancy's errors and the visitors' there).
    count = min(visitors_rel, 1.0)
    med_spread, mean_spread = defaults.little_spread
    mean_rel = (count**2 + (mean_spread * spread.predictive) ** 2) ** 0.5
    med_rel = (count**2 + (med_spread * spread.predictive) ** 2) ** 0.5

    def fig(x: float, rel: float, was: Figure) -> Figure:
        return Figure(x, x * max(1.0 - Z90 * rel, 0.0), x * (1.0 + Z90 * rel), was.heard)

    return fig(median, med_rel, heard[0]), fig(mean, mean_rel, heard[1])
