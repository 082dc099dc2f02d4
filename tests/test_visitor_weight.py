"""How many people one stay stands for (``SiteModel.people``), and where the site's mean visit
comes from (``estimate.fill_visit_dwell``, ``link._history_dwell``).

With two sensors or more, a phone with a fixed address counts as heard and a randomizing phone's
stay is the mean of the tracker's count (corrected for crowding) and its scans over the scans
one phone makes in the site's mean visit. The second part is what joins and splits of the
tracker cannot change; these tests hold that, on real SQLite for the history."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from footfall.hub import inside as inside_mod
from footfall.hub import link, store
from footfall.hub.estimate import (
    DEFAULTS,
    ScanRecord,
    Session,
    SiteModel,
    classify,
    estimate,
    fill_visit_dwell,
)
from footfall.hub.inside import InsideModel

INSIDE = {"shop": -55.0, "door": -60.0}  # heard strongly by both sensors: inside


def trained_model(**kw) -> SiteModel:
    """Two sensors and an inside model learnt from (synthetic) inside and street scans."""
    inside = inside_mod.fit([dict(INSIDE)] * 200, [{"door": -75.0, "shop": -88.0}] * 200, [])
    assert inside.trained
    return SiteModel(inside=inside, session_prior=0.5, crowding=10.0, heard_share=0.95, **kw)


def stay(key: str, start: float, scans: int, every: float = 120.0, identified: bool = False) -> Session:
    return Session(key, [ScanRecord(start + i * every, dict(INSIDE)) for i in range(scans)], identified)


def visit(s: Session) -> Session:
    s.p_visit = 1.0
    return s


def test_fixed_address_stay_counts_as_heard() -> None:
    m = trained_model(visit_dwell_s=900.0)
    s = visit(stay("aa", 0.0, 8, identified=True))
    assert m.people(s) == pytest.approx(1.0 / 0.95 / DEFAULTS.probing_share)


def test_randomizing_stay_is_the_mean_of_tracker_and_scans() -> None:
    m = trained_model(visit_dwell_s=900.0)
    s = visit(stay("k1", 0.0, 8))
    tracker = DEFAULTS.tracker_factor  # crowding 10 = the reference
    scans = 8 / (900.0 / 60.0 * DEFAULTS.inside_scans_per_min)
    w = DEFAULTS.scan_weight
    expected = ((1 - w) * tracker + w * scans) / 0.95 / DEFAULTS.probing_share
    assert m.people(s) == pytest.approx(expected)


def test_joining_two_phones_keeps_the_scan_part() -> None:
    """Two phones the tracker joined into one stay: the tracker part counts one person, the scan
    part still counts the scans of both. Splitting one phone's stay in two does the opposite
    to the tracker part and nothing to the scan part."""
    m = trained_model(visit_dwell_s=900.0)
    only_scans = replace(DEFAULTS, scan_weight=1.0)
    a, b = visit(stay("a", 0.0, 6)), visit(stay("b", 30.0, 6))
    joined = visit(Session("ab", sorted(a.scans + b.scans, key=lambda x: x.t)))
    assert m.people(joined, only_scans) == pytest.approx(m.people(a, only_scans) + m.people(b, only_scans))
    only_tracker = replace(DEFAULTS, scan_weight=0.0)
    assert m.people(joined, only_tracker) == pytest.approx(m.people(a, only_tracker))


def test_a_longer_mean_visit_means_fewer_people_for_the_same_scans() -> None:
    """A dealership whose visitors stay 45 minutes hears more scans per visitor than a kiosk:
    the same scans stand for fewer people (a fixed number of scans per visitor would not)."""
    s = visit(stay("k", 0.0, 10))
    only_scans = replace(DEFAULTS, scan_weight=1.0)
    short, long_ = trained_model(visit_dwell_s=600.0), trained_model(visit_dwell_s=2700.0)
    assert short.people(s, only_scans) == pytest.approx(4.5 * long_.people(s, only_scans))


def test_one_sensor_and_unmeasured_sites_keep_the_tracker_correction() -> None:
    s = visit(stay("k", 0.0, 10))
    weak = SiteModel(inside=InsideModel(sensors=("s1",)), crowding=10.0, visit_dwell_s=900.0)
    assert weak.people(s) == pytest.approx(weak.visitor_factor())
    unmeasured = trained_model()  # no mean visit yet
    assert unmeasured.people(s) == pytest.approx(unmeasured.visitor_factor())
    staff = visit(stay("clerk", 0.0, 130))  # over four hours
    assert trained_model(visit_dwell_s=900.0).people(staff) == 0.0


def test_first_day_takes_its_mean_visit_from_the_day_itself() -> None:
    m = trained_model()
    stays = [stay(f"k{i}", i * 1000.0, n) for i, n in enumerate((3, 6, 9))]
    classify(stays, m)
    fill_visit_dwell(m, stays, 0.0, 86400.0)
    # The stays' mean, as the visitor weights were fitted against (the dashboard's is Little's
    # law's since 2026-12-06, hub/dwell.py).
    mean = estimate(stays, m, [("day", 0.0, 86400.0)])["day"].stays_mean_dwell_s
    assert m.visit_dwell_s == pytest.approx(mean)
    kept = m.visit_dwell_s
    fill_visit_dwell(m, [stay("z", 0.0, 40)], 0.0, 86400.0)  # measured already: not replaced
    assert m.visit_dwell_s == kept


def test_later_days_take_it_from_the_estimates_of_the_days_before(tmp_path) -> None:
    conn = store.connect(tmp_path / "hub.db")
    rows = [
        ("2026-11-01", {"visitors": 100.0, "mean_dwell_s": 900.0}),
        ("2026-11-02", {"visitors": 300.0, "mean_dwell_s": 1300.0}),
        ("2026-11-03", {"visitors": 50.0, "mean_dwell_s": 5000.0}),  # the day itself: not history
        ("2026-10-20", {"visitors": 50.0, "mean_dwell_s": 5000.0}),  # over a week before
    ]
    with conn:
        conn.executemany(
            "INSERT INTO estimates (day, hour, figures, watermark, computed) VALUES (?, -1, ?, 0, 0)",
            [(day, json.dumps(f)) for day, f in rows],
        )
        conn.execute(
            "INSERT INTO estimates (day, hour, figures, watermark, computed) VALUES ('2026-11-02', 10, ?, 0, 0)",
            (json.dumps({"visitors": 1.0, "mean_dwell_s": 99999.0}),),
        )
    assert link._history_dwell(conn, "2026-11-03") == pytest.approx((100 * 900 + 300 * 1300) / 400)
    assert link._history_dwell(conn, "2026-10-01") == 0.0
    assert math.isfinite(link._history_dwell(conn, "2026-11-03"))
    # Days estimated since the dashboard's dwell is Little's law's keep the stays' mean beside it,
    # and that is the one a phone's scans are set against.
    with conn:
        conn.execute(
            "UPDATE estimates SET figures = ? WHERE day = '2026-11-02' AND hour = -1",
            (json.dumps({"visitors": 300.0, "mean_dwell_s": 1300.0, "stays_mean_dwell_s": 1100.0}),),
        )
    assert link._history_dwell(conn, "2026-11-03") == pytest.approx((100 * 900 + 300 * 1100) / 400)


def test_occupancy_counts_a_long_stay_as_one_person_for_longer() -> None:
    """Present at once: the scan part is the scans over those one phone makes in the stay's own
    span, so one phone scanning at the assumed rate is one person however long it stays, and two
    phones joined into one stay are two (a count's weight would make a long stay many people)."""
    from footfall.hub.occupancy import present_weight

    m = trained_model(visit_dwell_s=900.0, scan_rate=DEFAULTS.inside_scans_per_min / 60.0)
    only_scans = replace(DEFAULTS, scan_weight=1.0)
    every = 60.0 / DEFAULTS.inside_scans_per_min
    scale = 1.0 / 0.95 / DEFAULTS.probing_share
    for n in (5, 40):
        s = visit(stay("k", 0.0, n, every=every))
        assert present_weight(s, m, only_scans) == pytest.approx(scale, rel=0.01)
    a, b = visit(stay("a", 0.0, 20, every=every)), visit(stay("b", 1.0, 20, every=every))
    joined = visit(Session("ab", sorted(a.scans + b.scans, key=lambda x: x.t)))
    assert present_weight(joined, m, only_scans) == pytest.approx(2 * scale, rel=0.01)


def test_fit_visitors_recovers_the_numbers_and_refuses_held_out_seeds() -> None:
    """The tool that chose the three numbers finds them again on days made with known ones, and
    will not fit on the held-out seeds."""
    from footfall.tools import fit_visitors

    known = (1.3, 0.6, 0.4)
    days = []
    for i, (crowding, scans) in enumerate([(6, 4), (8, 12), (10, 7), (13, 15), (16, 5), (19, 10)]):
        m = trained_model(visit_dwell_s=600.0 + 100 * i)
        m.crowding = float(crowding)
        stays = [visit(stay(f"k{j}", j * 600.0, scans + j % 3)) for j in range(20)]
        stays += [visit(stay(f"f{j}", j * 900.0, 6, identified=True)) for j in range(4)]
        classify(stays, m)
        truth = estimate(stays, m, [("day", 0.0, 86400.0)], fit_visitors.with_params(known))["day"].visitors.estimate
        days.append(fit_visitors.Day(i, f"day{i}", 0.0, 86400.0, stays, m, truth))
    got = fit_visitors.fit(days, (1.0, 0.9, 0.5))
    assert fit_visitors.rms(fit_visitors.log_errors(days, fit_visitors.with_params(got))) < 1e-3
    assert got[1] == pytest.approx(known[1], abs=0.02)
    with pytest.raises(SystemExit) as e:
        fit_visitors.main(["--seeds", "11"])
    assert e.value.code == 2


def test_the_day_note_says_which_mean_visit_was_used() -> None:
    """/api/method shows each day's model: the mean visit the scans were set against, 0 where
    they were not (one sensor)."""
    from types import SimpleNamespace

    strong = link._model_note(SimpleNamespace(model=trained_model(visit_dwell_s=912.34), link_model=None))
    assert strong["mean_visit_s"] == 912.3
    weak = SiteModel(inside=InsideModel(sensors=("s1",)), visit_dwell_s=900.0)
    assert link._model_note(SimpleNamespace(model=weak, link_model=None))["mean_visit_s"] == 0.0
