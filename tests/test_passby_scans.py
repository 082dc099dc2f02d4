"""The passers-by scan count (``hub/passby_scans.py``): each outside scan's chance of being a
passer-by's, from what surrounds it, summed; the estimate is its geometric mean with the stays'
count. The model is fitted by ``tools/fit_passby_scans.py`` on simulated tuning days."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from footfall.hub import inside as inside_mod
from footfall.hub import passby_scans
from footfall.hub.estimate import DEFAULTS, ScanRecord, Session, SiteModel, estimate
from footfall.tools.fit_passby_scans import export

INSIDE = {"shop": -55.0, "door": -60.0}
STREET = {"door": -75.0, "shop": -88.0}


def model() -> SiteModel:
    inside = inside_mod.fit([dict(INSIDE)] * 200, [dict(STREET)] * 200, [])
    return SiteModel(inside=inside, session_prior=0.5, heard_share=0.95, front_sensor="door", visit_dwell_s=900.0)


def stay(key: str, ident: str, times: list[float], peak: dict[str, float], p_visit: float = 0.0) -> Session:
    s = Session(key, [ScanRecord(t, dict(peak), ident) for t in times])
    s.p_visit = p_visit
    return s


def _shipped(one_sensor: bool = False) -> passby_scans.ScanModel:
    model = passby_scans.default_model(one_sensor)
    assert model is not None, "the hub ships a fitted model of each kind"
    return model


def test_the_shipped_model_computes_what_scikit_learn_fitted() -> None:
    """The hub evaluates the regression with numpy from its JSON: the same probabilities as the
    scikit-learn pipeline the tool fitted, inside the features' range."""
    from footfall.tools import fit_passby_scans

    rng = np.random.default_rng(1)
    n = len(passby_scans.FEATURES)
    x = rng.normal(size=(400, n))
    y = (x[:, 0] + x[:, 1] * x[:, 2] + rng.normal(size=400) > 0).astype(int)
    days = [fit_passby_scans.Day(1, 5.0, 2, 100, 100.0, x, y)]
    pipe = fit_passby_scans.fit(days)
    shipped = passby_scans.ScanModel.from_dict(
        json.loads(json.dumps(export(pipe, {"2": 1.0, "3": 1.0}, "test", x).to_dict()))
    )
    assert shipped.probabilities(x) == pytest.approx(pipe.predict_proba(x)[:, 1], rel=1e-9, abs=1e-12)


def test_a_model_for_other_features_is_refused() -> None:
    d = _shipped().to_dict()
    d["features"] = d["features"][:-1]
    with pytest.raises(ValueError, match="features"):
        passby_scans.ScanModel.from_dict(d)


def test_a_lone_street_scan_is_a_passer_by_more_surely_than_one_amid_a_visit() -> None:
    """Two outside scans of one fingerprint at the street-facing sensor: one alone, one between a
    phone's scans inside the shop a minute either side (a visitor at the door)."""
    m = model()
    walk = stay("w", "fp:a", [10_000.0], STREET)
    visit = stay("v", "fp:b", [20_000.0 + 60.0 * i for i in range(10)], INSIDE, p_visit=1.0)
    at_door = stay("d", "fp:b", [20_270.0], STREET)
    sessions = [walk, visit, at_door]
    nb = passby_scans.Neighbours.of(sessions, m)
    cands = passby_scans.candidates(sessions, nb)
    assert [sc.t for sc in cands] == [10_000.0, 20_270.0]
    p = _shipped().probabilities(passby_scans.features(cands, nb, -1.5))
    assert p[0] > 3 * p[1], p


def test_a_site_unlike_any_simulated_gets_clipped_features_not_extremes() -> None:
    """A street busier against the shop than any tuning day (features past their fitted range):
    the probabilities stay those of the range's edge, not 0 or 1 from a runaway product."""
    sm = _shipped()
    m = model()
    walk = stay("w", "fp:a", [10_000.0], STREET)
    nb = passby_scans.Neighbours.of([walk], m)
    x = passby_scans.features(passby_scans.candidates([walk], nb), nb, 50.0)
    edge = x.copy()
    edge[:, -1] = sm.high[-1]
    assert sm.probabilities(x) == pytest.approx(sm.probabilities(edge))
    assert 0.01 < float(sm.probabilities(x)[0]) < 0.999


def test_one_sensor_counts_on_its_own_scan_model_alone() -> None:
    """One sensor has its own scan model (fitted on one-sensor days), and its count is the figure
    alone: the stays' count of one sensor does not follow the street (docs/metrics.md)."""
    one = _shipped(one_sensor=True)
    assert one.combine == "alone" and one.spread
    inside = inside_mod.fit([{"door": -55.0}] * 200, [{"door": -80.0}] * 200, [])
    m = SiteModel(inside=inside, session_prior=0.5, heard_share=0.95, front_sensor="door")
    assert m.one_sensor and passby_scans.model_for(m) is one
    walks = [stay(f"w{i}", f"fp:{i}", [1000.0 + 300.0 * i], {"door": -80.0}) for i in range(20)]
    e = estimate([], m, [("day", 0.0, 86400.0)], pass_sessions=walks)["day"]
    assert e.passersby_counts["scans"] > 0
    assert e.passersby.estimate == pytest.approx(e.passersby_counts["scans"])
    assert e.passersby.low < e.passersby.estimate < e.passersby.high


def test_a_site_whose_inside_model_is_not_trained_keeps_the_stays_count() -> None:
    untrained = inside_mod.fit([dict(INSIDE)] * 3, [dict(STREET)] * 3, [])
    m = SiteModel(inside=untrained, session_prior=0.5, heard_share=0.95, front_sensor="door")
    assert m.weak and not m.one_sensor
    assert passby_scans.model_for(m) is None


def test_the_figure_is_the_geometric_mean_of_the_two_counts() -> None:
    m = model()
    walks = [stay(f"w{i}", f"fp:{i % 7}", [1000.0 + 400.0 * i], STREET) for i in range(60)]
    visits = [
        stay(f"v{i}", f"fp:v{i}", [5000.0 + 900.0 * i + 60.0 * k for k in range(8)], INSIDE, 1.0) for i in range(8)
    ]
    e = estimate(visits, m, [("day", 0.0, 86400.0)], pass_sessions=walks + visits)["day"]
    c = e.passersby_counts
    assert c["stays"] > 0 and c["scans"] > 0
    assert e.passersby.estimate == pytest.approx(math.sqrt(c["stays"] * c["scans"]))
    # Calibration scales both counts, so the mean by the same factor.
    m.calibration.passersby = 2.0
    e2 = estimate(visits, m, [("day", 0.0, 86400.0)], pass_sessions=walks + visits)["day"]
    assert e2.passersby.estimate == pytest.approx(2.0 * e.passersby.estimate)


def test_on_a_simulated_tuning_day_passers_by_scans_score_higher(tmp_path) -> None:
    """Through the real agent, ingest and link job (tuning seed 9, two sensors): the scans the
    simulator says are passers-by's get a higher probability than the rest, and the summed
    probabilities, times the shipped factor, land near the true passers-by."""
    from footfall.tools import fit_passby_scans

    d = fit_passby_scans.day(9, 5.0)
    assert d.sensors == 2 and len(d.y) == len(d.x) > 100
    p = _shipped().probabilities(d.x)
    assert p[d.y == 1].mean() > 2 * p[d.y == 0].mean()
    est = _shipped().factor(2) * p.sum()
    assert 0.7 * d.truth < est < 1.3 * d.truth


def test_the_fit_refuses_held_out_seeds(capsys: pytest.CaptureFixture[str]) -> None:
    from footfall.tools import fit_passby_scans

    with pytest.raises(SystemExit) as exc:
        fit_passby_scans.main(["--seeds", "12"])
    assert exc.value.code == 2 and "held-out" in capsys.readouterr().err


def test_live_a_scan_waits_for_the_ten_minutes_after_it_and_the_day_end_counts_all() -> None:
    """Live, a scan is asked about only once the scans of the ten minutes after it have reached
    the hub (they come a visit gap late), so a later scan of the same phone cannot lower a chance
    already counted; once the watermark has passed the day's end, every scan counts."""
    gap = DEFAULTS.session_gap_s
    day_end = 86_400.0
    assert passby_scans.settled_before(None, gap, day_end) is None
    assert passby_scans.settled_before(50_000.0, gap, day_end) == 50_000.0 - gap - passby_scans.NEAR_S
    # Live the link job's periods end at its watermark: held; once the watermark is past, not.
    assert passby_scans.settled_before(day_end, gap, day_end) == day_end - gap - passby_scans.NEAR_S
    assert passby_scans.settled_before(day_end + 60.0, gap, day_end) is None
    m = model()
    walks = [stay(f"w{i}", f"fp:{i}", [10_000.0 + 60.0 * i], STREET) for i in range(40)]
    period = [("day", 0.0, day_end)]
    early = estimate([], m, period, final_before=10_000.0 + 60.0 * 20 + gap + passby_scans.NEAR_S, pass_sessions=walks)
    final = estimate([], m, period, final_before=day_end + 60.0, pass_sessions=walks)
    assert 0 < early["day"].passersby_counts["scans"] < final["day"].passersby_counts["scans"]


def test_a_one_sensor_site_not_trained_yet_keeps_the_stays_count() -> None:
    untrained = inside_mod.fit([{"door": -55.0}] * 3, [{"door": -80.0}] * 3, [])
    m = SiteModel(inside=untrained, session_prior=0.5, heard_share=0.95, front_sensor="door")
    assert len(m.inside.sensors) == 1 and not m.inside.trained
    assert passby_scans.model_for(m) is None


def test_the_fit_needs_two_stores_to_leave_one_out(capsys: pytest.CaptureFixture[str]) -> None:
    from footfall.tools import fit_passby_scans

    with pytest.raises(SystemExit) as exc:
        fit_passby_scans.main(["--one-sensor", "--seeds", "3"])
    assert exc.value.code == 2 and "two tuning stores" in capsys.readouterr().err


def test_a_model_fitted_with_the_tracks_asks_about_their_stays_scans() -> None:
    """The identity pass's stays left out as staff because they are in a randomizing track as
    long as staff's (Session.in_track) hold passers-by's scans too: a model fitted so asks about
    them, like any stay, once they are over; one fitted without them (``tracks`` false) does not."""
    one = _shipped(one_sensor=True)
    assert one.tracks and passby_scans.ScanModel.from_dict(one.to_dict()).tracks
    assert _shipped().tracks  # the 2-3 sensor model was fitted so too
    inside = inside_mod.fit([{"door": -55.0}] * 200, [{"door": -80.0}] * 200, [])
    m = SiteModel(inside=inside, session_prior=0.5, heard_share=0.95, front_sensor="door")
    walks = [stay(f"w{i}", f"fp:{i}", [1000.0 + 300.0 * i], {"door": -80.0}) for i in range(20)]
    # Three pieces of a track: left out as staff, each a street scan.
    pieces = [stay(f"t{i}", "fp:t", [2000.0 + 700.0 * i], {"door": -80.0}) for i in range(3)]
    for p in pieces:
        p.long_presence = p.in_track = True
        assert p.staff
    nb = passby_scans.Neighbours.of([*walks, *pieces], m)
    assert len(passby_scans.candidates([*walks, *pieces], nb, tracks=True)) == len(walks) + 3
    assert len(passby_scans.candidates([*walks, *pieces], nb)) == len(walks)
    day = [("day", 0.0, 86400.0)]
    with_pieces = estimate([], m, day, pass_sessions=[*walks, *pieces])["day"]
    without = estimate([], m, day, pass_sessions=walks)["day"]
    assert with_pieces.passersby.estimate > without.passersby.estimate
    # Live, a piece counts once it is over, as any stay: not before its visit gap has passed.
    last = pieces[-1].last
    live = estimate([], m, day, final_before=last + 60.0, pass_sessions=[*walks, *pieces])["day"]
    done = estimate([], m, day, final_before=last + 60.0, pass_sessions=[*walks, *pieces[:2]])["day"]
    assert live.passersby_counts["scans"] == pytest.approx(done.passersby_counts["scans"])


def test_one_sensor_asks_about_each_scan_whatever_the_ratio_of_outside_to_inside_scans() -> None:
    """With one sensor the street-vs-shop ratio is no feature (ScanModel.street_vs_shop): it
    splits scans at the site's inside edge, which one sensor fits on a hundred night scans. The
    same street scans then count the same however many scans of the shop read inside, and the
    2-3 sensor model still takes the ratio in."""
    one, two = _shipped(one_sensor=True), _shipped()
    assert not one.street_vs_shop and two.street_vs_shop
    assert not passby_scans.ScanModel.from_dict(one.to_dict()).street_vs_shop
    inside = inside_mod.fit([{"door": -55.0}] * 200, [{"door": -80.0}] * 200, [])
    m = SiteModel(inside=inside, session_prior=0.5, heard_share=0.95, front_sensor="door")
    walks = [stay(f"w{i}", f"fp:{i}", [1000.0 + 300.0 * i], {"door": -80.0}) for i in range(20)]
    nb = passby_scans.Neighbours.of(walks, m)
    quiet, busy = (passby_scans.expected_scans(walks, nb, ratio, one) for ratio in (-2.0, 1.0))
    assert quiet == pytest.approx(busy)
    quiet, busy = (passby_scans.expected_scans(walks, nb, ratio, two) for ratio in (-2.0, 1.0))
    assert quiet != pytest.approx(busy)
    # In the hub's estimate: visitors' inside scans change the ratio, not the street's count.
    shop = [stay(f"v{i}", f"fp:v{i}", [5000.0 + 400.0 * i + 30.0 * k for k in range(20)], {"door": -55.0}, 0.9)
            for i in range(10)]  # fmt: skip
    day = [("day", 0.0, 86400.0)]
    alone = estimate([], m, day, pass_sessions=walks)["day"].passersby_counts["scans"]
    amid = estimate(shop, m, day, pass_sessions=[*walks, *shop])["day"].passersby_counts["scans"]
    assert amid == pytest.approx(alone)


def test_the_one_sensor_tuning_stores_hold_every_kind_the_held_out_ones_do() -> None:
    """The one-sensor scan model is fitted on the one-sensor tuning stores: every size and share
    of randomizing phones of the held-out one-sensor stores is among them (it had no 60 % one
    before 2026-12-06, night), and none of them is held out."""
    from footfall.tools.evaluate_pipeline import HELD_OUT_SEEDS, TUNING_SEEDS, scenario

    def kinds(seeds: tuple[int, ...]) -> set[tuple[float, float]]:
        return {(sc.scale, sc.randomized_share) for sc in map(scenario, seeds) if sc.sensors == 1}

    assert kinds(HELD_OUT_SEEDS) <= kinds(TUNING_SEEDS)
    assert len(kinds(TUNING_SEEDS)) == 9
    assert not set(TUNING_SEEDS) & set(HELD_OUT_SEEDS)
