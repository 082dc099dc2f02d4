"""The stays' count of passers-by: the street-facing sensor's scans in stays that are not visits.

A passer-by's phone is heard in about a quarter of walks past, usually in one scan, so passers-by
are counted as scans, not devices: the scans of the identity pass's stays up to
``Defaults.passby_scans_max_s`` long, each weighed by one less its stay's visit probability,
with two sensors or more only those that read outside (``PassbyCount.outside_only``). The
visitors' share of them comes off and one factor per kind of site turns the rest into people
(``SiteModel.passersby``). The scans' count beside it, which asks of each scan what surrounds it,
is ``hub/passby_scans.py``; ``hub/estimate.py`` combines the two (docs/metrics.md, "The
passers-by count since 2026-12-06").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from footfall.hub import passby_scans
from footfall.hub.estimate_defaults import DEFAULTS, Defaults

if TYPE_CHECKING:  # hub/estimate.py calls this module
    from footfall.hub.estimate import ScanRecord, Session, SiteModel


def passing_scans(
    counted: Sequence[Session], model: SiteModel, defaults: Defaults = DEFAULTS, *, outside_only: bool | None = None
) -> float:
    """The scans the passers-by estimate divides (``counted``: a period's stays of the identity
    pass, :func:`counted_stays`), each weighed by the chance its stay is not a visit: see
    :func:`passing_scan_weights`."""
    return sum(w for _, w in passing_scan_weights(counted, model, defaults, outside_only=outside_only))


def passing_scan_weights(
    counted: Sequence[Session], model: SiteModel, defaults: Defaults = DEFAULTS, *, outside_only: bool | None = None
) -> Iterator[tuple[ScanRecord, float]]:
    """Each scan :func:`passing_scans` counts, with its weight: the street-facing sensor's scans
    in stays up to ``passby_scans_max_s`` long, weighed by one less the stay's p_visit. With two
    sensors or more (``outside_only`` None: as the site's PassbyCount says) only the scans that
    read outside by the site's inside model: a visitor's scans inside the shop land in such stays too,
    a passer-by's hardly ever (3 % of theirs read inside on the tuning days, 42 % of the
    visitors')."""
    front = model.front_sensor
    outside = model.passby_count(defaults).outside_only if outside_only is None else outside_only
    for s in counted:
        if s.continued:
            continue  # the rest of a longer stay: nobody walked past (see Session.continued)
        if s.last - s.first > defaults.passby_scans_max_s:
            continue  # the day-long stays of a neighbour's device (see passby_scans_max_s)
        w = 1.0 - s.p_visit
        for sc in s.scans:
            if (front is None or front in sc.peak) and not (outside and model.inside.llr(sc.peak) >= 0):
                yield sc, w


def passersby_spread(
    model: SiteModel, defaults: Defaults = DEFAULTS, scan_model: passby_scans.ScanModel | None = None
) -> float:
    """The model spread of this site's passers-by figure (log scale, before widening for a new
    day): the scans' count's own where it is the figure alone (one sensor), else the site kind's
    count's (``PassbyCount.spread``: with 2-3 sensors that of the mean of the two counts), else
    the site's ``ModelSpread``. A door-count calibration weighs its factor against it
    (``hub/calibrate_fit.py``), so both read the spread the figure's range is built from."""
    spread = defaults.one_sensor_spread if model.weak else defaults.spread
    out = model.passby_count(defaults).spread or spread.passersby
    scan_model = scan_model if scan_model is not None else passby_scans.model_for(model)
    if scan_model is not None and scan_model.combine == "alone":
        out = scan_model.spread or out
    return out
