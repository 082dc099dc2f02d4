"""Which stays are visits (hub/estimate.py): the session EM anchored by the default stay shapes,
and passers-by held until the estimation pass's stay that holds them is over."""

from __future__ import annotations

import math
import random
from dataclasses import replace

from footfall.hub.estimate import (
    DEFAULTS,
    SHAPES,
    ScanRecord,
    Session,
    SiteModel,
    estimate,
)
from footfall.hub.inside import InsideModel
from footfall.hub.sitefit import session_classes, shape_em

T0 = 1_793_000_000.0


def stay(key: str, t: float, kind: str) -> Session:
    """A stay of one scan, of a few scans within a walk past, or of half an hour; every scan at
    -70 dBm, which the untrained inside model reads as neither inside nor out (one sensor)."""
    times = {"single": [0.0], "short": [0.0, 40.0], "long": [0.0, 600.0, 1200.0, 1800.0]}[kind]
    return Session(key, [ScanRecord(t + dt, {"s1": -70.0}) for dt in times])


def sessions_drawn(visit_share: float, n: int, seed: int = 3) -> list[Session]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        dist = DEFAULTS.shape_visit if rng.random() < visit_share else DEFAULTS.shape_pass
        kind = rng.choices(SHAPES, weights=dist)[0]
        out.append(stay(f"k{i}", T0 + 60 * i, kind))
    return out


def test_without_a_signal_to_tell_them_apart_the_shapes_stay_near_the_defaults() -> None:
    inside = InsideModel()
    assert inside.llr({"s1": -70.0}) == 0.0  # the signal says nothing
    sessions = sessions_drawn(0.4, 600)
    pi, p_vis, p_pas = shape_em(sessions, inside, DEFAULTS.passby_max_s, DEFAULTS)
    assert abs(pi - 0.4) < 0.08
    for i, k in enumerate(SHAPES):
        assert abs(p_vis[k] - DEFAULTS.shape_visit[i]) < 0.08
        assert abs(p_pas[k] - DEFAULTS.shape_pass[i]) < 0.08
    # Without the prior the EM has no anchor: a single-scan stay is a visit or a walk past by
    # whatever the starting point made of it, far from how such stays were generated.
    plain = replace(DEFAULTS, shape_prior_n=0.0)
    _, v0, p0 = shape_em(sessions, inside, plain.passby_max_s, plain)
    _, llr = session_classes(sessions, inside, DEFAULTS.passby_max_s)
    truth = math.log(DEFAULTS.shape_visit[0] / DEFAULTS.shape_pass[0])
    assert abs(llr["single"] - truth) < abs(math.log(v0["single"] / p0["single"]) - truth)


def test_a_passer_by_piece_inside_an_open_stay_is_held_until_that_stay_is_over() -> None:
    """The identity pass's one-scan piece lies inside a stay of the estimation pass that is still
    going (a clerk's morning): it is not counted yet, so that finding the clerk to be staff at
    midday takes nothing back; once that stay is over it counts."""
    model = SiteModel(inside=InsideModel(), session_prior=0.05, shape_llr={"single": -3.0, "short": -1.0, "long": 2.0})
    piece = stay("p", T0, "single")
    piece.held_until = T0 + 3 * 3600
    period = [("day", T0 - 3600, T0 + 86400)]
    gap = DEFAULTS.session_gap_s
    before = estimate([], model, period, final_before=T0 + 2 * 3600, pass_sessions=[piece])["day"]
    after = estimate([], model, period, final_before=T0 + 3 * 3600 + gap + 1, pass_sessions=[piece])["day"]
    assert before.passersby.heard == 0
    assert after.passersby.heard == 1 and (after.passersby.estimate or 0) > 0
