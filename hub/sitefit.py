"""What a site's own data says about it: the model the estimates are made with.

Measured every day on the site's stays (``hub/analysis.py``, from the phones it can identify
and from its quiet hours; nothing here reads ground truth): the inside model (signal per
sensor inside vs outside, ``hub/inside.py``), a phone's scan rate, the share of visits heard at
all, how crowded the shop is, the share of stays that are visits and how each shape of stay
weighs visit against walk past (an EM anchored by the default shapes), and which sensor faces
the street. ``hub/estimate.py`` turns a :class:`~footfall.hub.estimate.SiteModel` and the
stays into figures of people.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

from footfall.hub import inside as inside_mod
from footfall.hub.estimate import (
    DEFAULTS,
    MAX_WEIGHT,
    SHAPES,
    Defaults,
    Session,
    SiteModel,
    classify,
    logit,
    shape,
    sigmoid,
)
from footfall.hub.inside import InsideModel
from footfall.hub.site_model import Calibration


def session_classes(
    sessions: Sequence[Session], inside: InsideModel, passby_max_s: float = 90.0, defaults: Defaults | None = None
) -> tuple[float, dict[str, float]]:
    """EM for the share of sessions that are visits and how each shape (one scan, short, long)
    weighs visit against walk-past, given the scans' RSSI likelihood ratios (naive Bayes: the
    shape is learnt from the data, the RSSI model anchors which class is which).

    The shapes start from, and are pulled toward, the defaults measured where the RSSI model
    does anchor the classes (``Defaults.shape_visit``): with one sensor it hardly does, and
    without that pull the EM could settle anywhere along a ridge of equal likelihood."""
    pi, p_vis, p_pas = shape_em(sessions, inside, passby_max_s, defaults or DEFAULTS)
    return pi, {k: round(math.log(p_vis[k] / p_pas[k]), 4) for k in SHAPES}


def shape_em(
    sessions: Sequence[Session], inside: InsideModel, passby_max_s: float, defaults: Defaults
) -> tuple[float, dict[str, float], dict[str, float]]:
    """(share of sessions that are visits, P(shape | visit), P(shape | walk past)): the EM of
    :func:`session_classes`, maximum a posteriori with ``defaults.shape_prior_n`` sessions' worth
    of the default shapes for every day the stays began on (0: plain EM with add-half
    smoothing, how the defaults were measured)."""
    rows = [(sum(inside.llr(sc.peak) for sc in s.scans), shape(s, passby_max_s)) for s in sessions if not s.staff]
    n0 = defaults.shape_prior_n * max(len({int(s.first // 86400) for s in sessions}), 1)
    if n0 > 0:
        prior_vis = dict(zip(SHAPES, defaults.shape_visit, strict=True))
        prior_pas = dict(zip(SHAPES, defaults.shape_pass, strict=True))
        base_vis = {k: n0 * prior_vis[k] for k in SHAPES}
        base_pas = {k: n0 * prior_pas[k] for k in SHAPES}
    else:
        prior_vis = prior_pas = dict.fromkeys(SHAPES, 1.0 / 3)
        base_vis = base_pas = dict.fromkeys(SHAPES, 0.5)
    if not rows:
        return 0.3, prior_vis, prior_pas
    pi = 0.3
    p_vis, p_pas = dict(prior_vis), dict(prior_pas)
    for _ in range(300):
        post = [sigmoid(ll + math.log(p_vis[sh] / p_pas[sh]) + logit(pi)) for ll, sh in rows]
        new_pi = min(max(sum(post) / len(post), 0.01), 0.99)
        vis, pas = dict(base_vis), dict(base_pas)
        for (_, sh), p in zip(rows, post, strict=True):
            vis[sh] += p
            pas[sh] += 1.0 - p
        tv, tp = sum(vis.values()), sum(pas.values())
        p_vis = {k: v / tv for k, v in vis.items()}
        p_pas = {k: v / tp for k, v in pas.items()}
        if abs(new_pi - pi) < 1e-6:
            pi = new_pi
            break
        pi = new_pi
    return pi, p_vis, p_pas


def fit_site_model(
    sessions: Sequence[Session],
    is_open: Callable[[float], bool],
    *,
    sweeps_per_visitor: float = 0.0,
    fitted_on: str = "",
    calibration: Calibration | None = None,
) -> SiteModel:
    """Measure the site: inside model, scan rate, session prior and the street-facing sensor.

    ``sessions`` are the stays of the period fitted on (identified ones marked); nothing here
    reads ground truth. Inside scans come from identified stays of 2 min to 4 h while open and
    from the tracker's stays of 10 min to 4 h (minus their first and last minute); outside
    scans from the sessions heard while the shop was closed (staff and equipment left out).
    """
    inside_scans: list[Mapping[str, float]] = []
    outside_scans: list[Mapping[str, float]] = []
    open_scans: list[Mapping[str, float]] = []
    rate_n = 0
    rate_span = 0.0
    identified = 0
    identified_lengths: list[float] = []
    for s in sessions:
        if s.staff:
            continue
        length = s.last - s.first
        if is_open(s.first) and ((s.identified and length >= 120) or length >= 600):
            inside_scans += [sc.peak for sc in s.scans if s.first + 60 <= sc.t <= s.last - 60]
            if s.identified:
                identified_lengths.append(length)
            if s.identified and length >= 300:
                identified += 1
                rate_n += len(s.scans) - 1
                rate_span += length
        for sc in s.scans:
            (open_scans if is_open(sc.t) else outside_scans).append(sc.peak)
    inside = inside_mod.fit(inside_scans, outside_scans, open_scans)
    rate = _shrunk_rate(rate_n, rate_span)
    model = SiteModel(
        crowding=crowding(sessions, is_open, rate),
        inside=inside,
        scan_rate=rate,
        heard_share=_heard_share(identified_lengths, rate),
        identified=identified,
        sweeps_per_visitor=sweeps_per_visitor,
        fitted_on=fitted_on,
        calibration=calibration or Calibration(),
    )
    open_sessions = [s for s in sessions if is_open(s.first)]
    model.session_prior, model.shape_llr = session_classes(open_sessions, inside, DEFAULTS.passby_max_s)
    # The street-facing sensor: the one that hears the most scans of sessions that are not visits.
    classify(open_sessions, model)
    heard: dict[str, float] = defaultdict(float)
    for s in open_sessions:
        for sc in s.scans:
            for sensor in sc.peak:
                heard[sensor] += 1.0 - s.p_visit
    model.front_sensor = max(heard, key=lambda k: heard[k]) if heard else None
    return model


def crowding(sessions: Sequence[Session], is_open: Callable[[float], bool], scan_rate: float) -> float:
    """Phones present per open minute, from scans alone (scans heard per minute over one phone's
    scans per minute; staff and equipment left out), over the minutes anything was heard. It
    does not depend on linking, whose mistakes it is used to correct."""
    per_minute: dict[int, int] = defaultdict(int)
    for s in sessions:
        if s.staff:
            continue
        for sc in s.scans:
            if is_open(sc.t):
                per_minute[int(sc.t // 60)] += 1
    if not per_minute:
        return 0.0
    return sum(per_minute.values()) / len(per_minute) / (scan_rate * 60.0)


def _heard_share(lengths: Sequence[float], rate: float) -> float:
    """Share of visits heard at all: visits of identified phones (whose length is not cut by
    linking) weighted by how likely a visit that long is heard, 1 - exp(-rate x length), then
    inverted (Horvitz-Thompson over the visits that were heard)."""
    if not lengths:
        return 1.0
    inv = sum(min(1.0 / max(1.0 - math.exp(-rate * (d + 1.0 / rate)), 1e-9), MAX_WEIGHT) for d in lengths)
    return len(lengths) / inv


def _shrunk_rate(n: int, span: float, prior_n: float = 20.0) -> float:
    """Scans per second, shrunk toward the default while few identified stays were measured."""
    prior = DEFAULTS.scan_rate
    return (n + prior_n) / (span + prior_n / prior)
