"""What the passers-by estimate counts (``passby_stays.passing_scans``, ``SiteModel.passersby``) and
how its defaults are fitted (``tools/fit_passersby.py``).

With two sensors or more it counts the street-facing sensor's scans that read outside, in stays
that are not visits, and takes off the scans visitors leave there before dividing by a
passer-by's: so the figure follows the street rather than the visitors (docs/metrics.md,
"Capture rates other than 1 in 6"). With one sensor, which cannot tell a visitor at the door
from a passer-by, every street-facing scan counts and nothing is taken off."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from footfall.hub import inside as inside_mod
from footfall.hub.estimate import (
    DEFAULTS,
    ScanRecord,
    Session,
    SiteModel,
    estimate,
)
from footfall.hub.passby_stays import passing_scans
from footfall.hub.ranges import Figure, PeriodEstimate, capture_figure, count_figure, passersby_within
from footfall.tools import fit_passersby

INSIDE = {"shop": -55.0, "door": -60.0}
STREET = {"door": -75.0, "shop": -88.0}


def model(**kw) -> SiteModel:
    inside = inside_mod.fit([dict(INSIDE)] * 200, [dict(STREET)] * 200, [])
    assert inside.trained
    return SiteModel(inside=inside, session_prior=0.5, heard_share=0.95, front_sensor="door", visit_dwell_s=900.0, **kw)


def one_sensor() -> SiteModel:
    inside = inside_mod.fit([{"door": -55.0}] * 200, [{"door": -80.0}] * 200, [])
    return SiteModel(inside=inside, session_prior=0.5, heard_share=0.95, front_sensor="door")


def stay(key: str, t: float, peaks: list[dict[str, float]], p_visit: float = 0.0) -> Session:
    s = Session(key, [ScanRecord(t + 60.0 * i, dict(pk)) for i, pk in enumerate(peaks)])
    s.p_visit = p_visit
    return s


def test_only_outside_scans_of_the_street_sensor_count_with_two_sensors() -> None:
    m = model()
    assert not m.weak
    # A piece of a visitor's stay the tracker cut off: two scans inside, one at the street.
    piece = stay("piece", 0.0, [INSIDE, INSIDE, STREET], p_visit=0.2)
    shop_only = stay("back", 0.0, [{"shop": -60.0}])  # not heard by the street-facing sensor
    assert passing_scans([piece, shop_only], m) == pytest.approx(0.8)
    assert passing_scans([piece, shop_only], m, outside_only=False) == pytest.approx(3 * 0.8)


def test_one_sensor_counts_every_scan_it_hears() -> None:
    m = one_sensor()
    assert m.weak
    s = stay("a", 0.0, [{"door": -55.0}, {"door": -80.0}])
    assert passing_scans([s], m) == pytest.approx(2.0)


def test_stays_too_long_for_a_walk_past_and_continued_ones_do_not_count() -> None:
    m = model()
    neighbour = stay("n", 0.0, [STREET] * 20)  # 19 minutes: longer than passby_scans_max_s
    assert neighbour.last - neighbour.first > DEFAULTS.passby_scans_max_s
    carried = stay("c", 0.0, [STREET])
    carried.continued = True
    assert passing_scans([neighbour, carried], m) == 0.0


def test_visitors_scans_come_off_before_dividing_and_never_below_zero() -> None:
    m = model(crowding=10.0)  # the reference crowding: no crowding term
    count = m.passby_count()
    assert count is DEFAULTS.passby_two_sensors and count.outside_only
    factor = m.passersby_factor()
    assert factor == pytest.approx(1 / count.scans / DEFAULTS.probing_share)
    assert m.passersby(100.0, 50.0) == pytest.approx((100.0 - count.visitor_scans * 50.0) * factor)
    assert m.passersby(10.0, 1000.0) == 0.0
    weak = one_sensor()
    assert weak.passby_count() is DEFAULTS.passby_weak and weak.passby_count().visitor_scans == 0.0
    assert weak.passersby(100.0, 50.0) == pytest.approx(100.0 / DEFAULTS.passby_weak.scans / DEFAULTS.probing_share)


def test_three_sensors_have_their_own_count() -> None:
    inside = inside_mod.fit([{**INSIDE, "back": -50.0}] * 200, [{**STREET, "back": -95.0}] * 200, [])
    m = SiteModel(inside=inside, session_prior=0.5, heard_share=0.95, front_sensor="door")
    assert m.passby_count() is DEFAULTS.passby_more_sensors


def test_two_sensor_ranges_are_wider_than_three_sensor_ones() -> None:
    """Each kind of site's passers-by range has its own model spread (measured each store left
    out of the fit: two sensors 0.173, three 0.121 for the mean of the stays' and the scans'
    counts): the same heard day gives a two-sensor store the wider range, and without them the
    site's pooled one (0.19) applies."""
    assert DEFAULTS.passby_two_sensors.spread > DEFAULTS.passby_more_sensors.spread
    assert DEFAULTS.passby_weak.spread is None
    two = model(crowding=10.0)
    inside = inside_mod.fit([{**INSIDE, "back": -50.0}] * 200, [{**STREET, "back": -95.0}] * 200, [])
    three = SiteModel(inside=inside, session_prior=0.5, heard_share=0.95, front_sensor="door", visit_dwell_s=900.0)
    three.crowding = 10.0
    street = {**STREET, "back": -95.0}
    walks = [stay(f"w{i}", 1000.0 + 120.0 * i, [street]) for i in range(400)]

    def rel_half(m: SiteModel) -> float:
        e = estimate([], m, [("day", 0.0, 86400.0)], pass_sessions=walks)["day"].passersby
        return (e.high - e.estimate) / e.estimate

    assert rel_half(two) > rel_half(three)
    pooled = replace(
        DEFAULTS,
        passby_two_sensors=replace(DEFAULTS.passby_two_sensors, spread=None),
        passby_more_sensors=replace(DEFAULTS.passby_more_sensors, spread=None),
    )
    e = estimate([], two, [("day", 0.0, 86400.0)], pooled, pass_sessions=walks)["day"].passersby
    assert (e.high - e.estimate) / e.estimate > rel_half(two)


def test_a_crowded_site_has_more_passers_by_per_scan() -> None:
    """The more phones of one model about, the more often the tracker joins a passer-by's scan
    to a visit's stay, where it is not counted: each counted scan stands for more people."""
    quiet, busy = model(crowding=6.0), model(crowding=15.0)
    exp = DEFAULTS.passby_two_sensors.crowding_exp
    assert exp > 0
    assert busy.passersby_factor() / quiet.passersby_factor() == pytest.approx((15.0 / 6.0) ** exp)
    assert model(crowding=0.0).passersby_factor() == model(crowding=10.0).passersby_factor()


def test_the_estimate_uses_the_count_and_its_visitors() -> None:
    """A day of 40 walks past (one street scan each) and 10 visits: passers-by is what the count
    leaves once the visits' share is off, and its range holds it."""
    m = model()
    walks = [stay(f"w{i}", 1000.0 + 300.0 * i, [STREET]) for i in range(40)]
    visits = [stay(f"v{i}", 1100.0 + 900.0 * i, [INSIDE] * 8, p_visit=1.0) for i in range(10)]
    e = estimate(visits, m, [("day", 0.0, 86400.0)], pass_sessions=walks + visits)["day"]
    # estimate() classifies the stays itself; every walk reads outside, so nearly all of it counts.
    scans = passing_scans(walks + visits, m)
    assert 38.0 < scans <= 40.0
    counts = e.passersby_counts
    assert counts["stays"] == pytest.approx(m.passersby(scans, e.visitors.estimate))
    # The figure is the geometric mean of the stays' count and the scans' (passby_scans).
    assert counts["scans"] > 0
    assert e.passersby.estimate == pytest.approx(math.sqrt(counts["stays"] * counts["scans"]))
    assert e.passersby.low < e.passersby.estimate < e.passersby.high
    # Without the visitors' share taken off the stays' count would be higher by exactly that share.
    plain = replace(DEFAULTS, passby_two_sensors=replace(DEFAULTS.passby_two_sensors, visitor_scans=0.0))
    e0 = estimate(visits, m, [("day", 0.0, 86400.0)], plain, pass_sessions=walks + visits)["day"]
    assert e0.passersby_counts["stays"] - counts["stays"] == pytest.approx(
        DEFAULTS.passby_two_sensors.visitor_scans * e.visitors.estimate * m.passersby_factor()
    )
    assert e0.passersby_counts["scans"] == pytest.approx(counts["scans"])


def test_a_count_all_taken_off_still_has_a_range() -> None:
    """An hour with many visits and two walks past: the visitors' share takes off every scan, so
    the estimate is 0, but its range (and the capture rate's) still says it could be more."""
    m = model()
    walks = [stay(f"w{i}", 1000.0 + 300.0 * i, [STREET]) for i in range(2)]
    visits = [stay(f"v{i}", 1100.0 + 60.0 * i, [INSIDE] * 8, p_visit=1.0) for i in range(30)]
    e = estimate(visits, m, [("hour", 0.0, 3600.0)], pass_sessions=walks + visits)["hour"]
    assert e.passersby.estimate == 0.0
    assert e.passersby.low == 0.0 and e.passersby.high >= 2.0
    # The figure is the mean of the stays' count (0) and the scans' count: the range holds both.
    assert 0.0 < e.passersby_counts["scans"] <= e.passersby.high
    assert e.capture_rate.estimate == 1.0
    assert e.capture_rate.low < 1.0


def test_the_hours_add_up_to_the_day() -> None:
    """A quiet hour whose visits leave more of their share than it has scans reads 0, while the
    day takes that excess off the busy hour: the busy hour is scaled down so that the hours add
    up to the day (passersby_within), its capture rate with it."""
    m = model()
    busy_walks = [stay(f"w{i}", 1000.0 + 60.0 * i, [STREET]) for i in range(40)]
    quiet_walks = [stay(f"q{i}", 3700.0 + 600.0 * i, [STREET]) for i in range(2)]
    visits = [stay(f"v{i}", 3800.0 + 60.0 * i, [INSIDE] * 8, p_visit=1.0) for i in range(30)]
    visits += [stay(f"b{i}", 1500.0 + 600.0 * i, [INSIDE] * 8, p_visit=1.0) for i in range(3)]
    periods = [("day", 0.0, 7200.0), ("busy", 0.0, 3600.0), ("quiet", 3600.0, 7200.0)]
    e = estimate(visits, m, periods, pass_sessions=busy_walks + quiet_walks + visits)
    day, busy, quiet = e["day"], e["busy"], e["quiet"]
    assert quiet.passersby.estimate == 0.0
    before, before_high = busy.passersby.estimate, busy.passersby.high
    assert before > day.passersby.estimate > 0  # each counted on its own: the hours add up to more
    passersby_within(day, [busy, quiet])
    assert busy.passersby.estimate + quiet.passersby.estimate == pytest.approx(day.passersby.estimate)
    assert busy.passersby.low < busy.passersby.estimate < busy.passersby.high
    assert busy.capture_rate.estimate == pytest.approx(
        busy.visitors.estimate / (busy.visitors.estimate + busy.passersby.estimate)
    )
    assert busy.capture_rate.low < busy.capture_rate.estimate < busy.capture_rate.high
    # It rests on the same scans: its range keeps its width.
    assert busy.passersby.high - busy.passersby.estimate == pytest.approx(before_high - before)
    # Hours that already add up to the day are left as they are.
    passersby_within(day, [busy, quiet])
    assert busy.passersby.estimate == pytest.approx(day.passersby.estimate)


def test_hours_that_fall_short_of_the_day_are_scaled_up_to_it() -> None:
    """The geometric mean of two counts, hour by hour, adds up to less than the mean of the day's
    (passby_scans): the hours are scaled up to the day, each keeping its share and the width of its
    range."""

    def period(pas: float) -> PeriodEstimate:
        vis = count_figure(20.0, 0.1, 15.0)
        p = count_figure(pas, 0.2, 10.0)
        return PeriodEstimate(
            vis, p, capture_figure(vis, p, 0.1, 0.2, False), Figure(None, None, None), Figure(None, None, None)
        )

    day, a, b = period(100.0), period(45.0), period(50.0)
    width = a.passersby.high - a.passersby.estimate
    passersby_within(day, [a, b])
    assert a.passersby.estimate + b.passersby.estimate == pytest.approx(100.0)
    assert a.passersby.estimate / b.passersby.estimate == pytest.approx(45.0 / 50.0)
    assert a.passersby.high - a.passersby.estimate == pytest.approx(width)
    assert a.capture_rate.estimate == pytest.approx(20.0 / (20.0 + a.passersby.estimate))


def test_a_day_cleared_to_zero_clears_its_hours_with_their_ranges() -> None:
    """Three walks past in one hour, forty visits in the next: the day's visitors' share takes off
    every scan, so the day reads 0 with a range above it; the first hour, which alone read more,
    then reads 0 too, its range still above what was heard and its capture rate not certain."""
    m = model()
    walks = [stay(f"w{i}", 1000.0 + 300.0 * i, [STREET]) for i in range(3)]
    visits = [stay("a", 1500.0, [INSIDE] * 8, p_visit=1.0)]
    visits += [stay(f"v{i}", 3700.0 + 60.0 * i, [INSIDE] * 8, p_visit=1.0) for i in range(40)]
    periods = [("day", 0.0, 7200.0), ("a", 0.0, 3600.0), ("b", 3600.0, 7200.0)]
    e = estimate(visits, m, periods, pass_sessions=walks + visits)
    assert e["day"].passersby.estimate == 0.0 < e["a"].passersby.estimate
    high = e["a"].passersby.high
    passersby_within(e["day"], [e["a"], e["b"]])
    a = e["a"]
    assert a.passersby.estimate == 0.0 and a.passersby.low == 0.0
    assert a.passersby.high == pytest.approx(high) and a.passersby.high >= a.passersby.heard > 0
    assert a.capture_rate.estimate == 1.0 and a.capture_rate.low < 1.0


def _day(
    seed: int, street: float, truth: int, visitors: float, pb: float, vis: float, sensors: int
) -> fit_passersby.Day:
    kinds = {"passerby": pb, "visitor": vis}
    return fit_passersby.Day(
        seed, street, "2026-11-02", truth, visitors, pb + vis, 2 * (pb + vis), kinds, sensors, 10.0
    )


def test_the_fit_measures_the_visitors_share_and_reports_the_baseline() -> None:
    # Three stores of each kind whose counts are exactly 0.2 scans a passer-by and 0.5 an
    # estimated visitor (two sensors), 0.3 and 0.4 (three).
    days = [
        _day(seed, street, round(100 * street), 100.0, a * round(100 * street), 100.0 * b, sensors)
        for sensors, a, b, seeds in ((2, 0.2, 0.5, (1, 2, 3)), (3, 0.3, 0.4, (4, 5, 6)))
        for seed in seeds
        for street in (2.5, 5.0, 10.0)
    ]
    assert fit_passersby.visitor_scans(days[:9]) == pytest.approx(0.5)
    lines = fit_passersby.report(days)
    text = "\n".join(lines)
    print(text)
    assert f"PassbyCount(scans={0.2 / DEFAULTS.probing_share:.3f}, visitor_scans=0.50, crowding_exp=0.00)" in text
    assert f"PassbyCount(scans={0.3 / DEFAULTS.probing_share:.3f}, visitor_scans=0.40, crowding_exp=0.00)" in text
    assert "0.500 an estimated visitor" in text  # the truth split
    [mine] = [x for x in lines if "this count" in x]
    [base] = [x for x in lines if "baseline" in x]
    assert "spread 0.000" in mine  # the count with the visitors' share off fits them exactly
    assert "spread 0.000" not in base


def test_the_fit_refuses_held_out_seeds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        fit_passersby.main(["--seeds", "12"])
    assert exc.value.code == 2 and "held-out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        fit_passersby.main(["--seeds", "9", "--streets", "0"])
    assert exc.value.code == 2 and "at most 100" in capsys.readouterr().err


def test_the_truth_split_on_a_simulated_tuning_day(tmp_path) -> None:
    """Seed 9 (tuning: small, two sensors, 60 % randomizing) through the real pipeline: what the
    count holds is passers-by's scans, about a fifth of one a passer-by, and some visitors' scans,
    which the default takes off in part; every scan is someone's."""
    [day] = fit_passersby.tuning_days([9], [5.0], tmp_path)
    print(day)
    assert day.sensors == 2 and day.truth == 750 and day.crowding > 0
    assert day.scans == pytest.approx(sum(day.by_kind.values()))
    assert day.all_scans > day.scans
    assert 0.1 < day.by_kind["passerby"] / day.truth < 0.4
    assert 0.1 < day.by_kind["visitor"] / day.visitors < 1.0
    assert day.by_kind.get("unknown", 0.0) == 0.0
