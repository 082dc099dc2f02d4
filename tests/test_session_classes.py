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


def stay(key: str, t: float, kind: str, rssi: float = -70.0) -> Session:
    """A stay of one scan, of a few scans within a walk past, or of half an hour; by default
    every scan at -70 dBm, which the untrained inside model reads as neither inside nor out
    (one sensor)."""
    times = {"single": [0.0], "short": [0.0, 40.0], "long": [0.0, 600.0, 1200.0, 1800.0]}[kind]
    return Session(key, [ScanRecord(t + dt, {"s1": rssi}) for dt in times])


def sessions_drawn(visit_share: float, n: int, seed: int = 3, day: int = 0, rssi_gap: float = 0.0) -> list[Session]:
    """``n`` stays a day apart per ``day``; visits' scans ``rssi_gap / 2`` dB above -70, walks
    past as much below (0: the signal says nothing)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        visit = rng.random() < visit_share
        dist = DEFAULTS.shape_visit if visit else DEFAULTS.shape_pass
        kind = rng.choices(SHAPES, weights=dist)[0]
        rssi = -70.0 + (rssi_gap / 2 if visit else -rssi_gap / 2)
        out.append(stay(f"k{day}-{i}", T0 + day * 86400 + 30 * i, kind, rssi))
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


def test_a_week_of_history_does_not_drown_the_default_shapes() -> None:
    """The hub fits a site's model on a week: the anchor grows with the days, so a week of stays
    that the signal hardly sorts (2 dB between visits and walks past) is held where one day of
    them is; a fixed anchor would let the week's EM wander off along its ridge."""
    inside = InsideModel()
    one_day = sessions_drawn(0.3, 1500, rssi_gap=2.0)
    week = [s for d in range(7) for s in sessions_drawn(0.3, 1500, seed=10 + d, day=d, rssi_gap=2.0)]
    _, llr_day = session_classes(one_day, inside, DEFAULTS.passby_max_s)
    _, llr_week = session_classes(week, inside, DEFAULTS.passby_max_s)
    for k in SHAPES:
        assert abs(llr_week[k] - llr_day[k]) < 0.25, (k, llr_day, llr_week)


def test_a_piece_is_held_no_longer_than_it_takes_to_call_a_stay_staff() -> None:
    """A passer-by's one-scan piece inside a stay heard from 09:00 to midnight (a neighbour's
    phone the tracker joined it to) is held until that stay is four hours old, not until
    midnight: the day's last count comes before the stay ends."""
    from types import SimpleNamespace

    from footfall.hub.analysis import _hold_pieces
    from footfall.hub.estimate import LONG_STAY_S

    long_stay = Session("E", [ScanRecord(T0 + 600 * i, {"s1": -60.0}) for i in range(90)])  # 15 h
    piece = stay("P", T0 + 7200, "single")
    sweep = SimpleNamespace(device="mac-of-the-piece", first=piece.first)
    _hold_pieces([piece], [SimpleNamespace(sweep=sweep, key="P")], [SimpleNamespace(sweep=sweep, key="E")], [long_stay])
    assert piece.held_until == T0 + LONG_STAY_S
    short_stay = Session("E", [ScanRecord(T0 + 7000, {"s1": -60.0}), ScanRecord(T0 + 7400, {"s1": -60.0})])
    piece2 = stay("P", T0 + 7200, "single")
    _hold_pieces(
        [piece2], [SimpleNamespace(sweep=sweep, key="P")], [SimpleNamespace(sweep=sweep, key="E")], [short_stay]
    )
    assert piece2.held_until == T0 + 7400
