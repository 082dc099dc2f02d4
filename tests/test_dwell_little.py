"""Dwell from Little's law (``hub/dwell.py``): with two sensors or more the mean dwell is the
period's time in the shop over its visitors, the median that times ``Defaults.median_to_mean``;
a randomizing track as long as staff's adds its inside scans' time and no visitor; one sensor
keeps the stays' figures. The held-out figures are in docs/metrics.md, "Dwell from Little's law",
and tests/test_dwell_scale.py runs a long-dwell shop."""

from __future__ import annotations

import pytest

from footfall.hub import figures
from footfall.hub import inside as inside_mod
from footfall.hub.dwell import chain_pieces, person_seconds
from footfall.hub.estimate import DEFAULTS, LONG_STAY_S, ScanRecord, Session, SiteModel, classify, estimate

SHOP, STREET = {"shop": -55.0, "door": -60.0}, {"door": -75.0, "shop": -88.0}


def model(sensors: int = 2) -> SiteModel:
    if sensors == 1:
        inside = inside_mod.fit([{"shop": -55.0}] * 200, [{"shop": -80.0}] * 200, [])
    else:
        inside = inside_mod.fit([dict(SHOP)] * 200, [dict(STREET)] * 200, [])
    return SiteModel(inside=inside, scan_rate=1 / 60, session_prior=0.5, heard_share=0.95, visit_dwell_s=900.0)


def visit(key: str, start: float, minutes: int) -> Session:
    """A fixed-address phone heard inside every minute for ``minutes`` minutes."""
    return Session(key, [ScanRecord(start + 60.0 * i, dict(SHOP)) for i in range(minutes + 1)], identified=True)


def test_the_mean_is_the_time_in_the_shop_over_the_visitors_and_the_median_follows_it() -> None:
    m = model()
    stays = [visit(f"k{i}", 3000.0 * i, n) for i, n in enumerate((4, 8, 12, 20, 40))]
    day = estimate(stays, m, [("day", 0.0, 86400.0)])["day"]
    assert day.dwell_from == "little"
    # Each visit occupies the shop from its first to its last inside scan and half a scan's wait
    # at each end, as one person each (a fixed address); the occupancy factor as the minutes'.
    spans = [60.0 * n + 1.0 / m.scan_rate for n in (4, 8, 12, 20, 40)]
    mean = DEFAULTS.occupancy_factor * sum(spans) / len(spans)
    assert day.visitors.estimate == pytest.approx(5 / m.heard_share / DEFAULTS.probing_share)
    assert day.mean_dwell_s.estimate == pytest.approx(mean)
    assert day.median_dwell_s.estimate == pytest.approx(mean * DEFAULTS.median_to_mean)
    for f in (day.median_dwell_s, day.mean_dwell_s):
        assert f.low < f.estimate < f.high
    # What was heard stays the stays' own: the median of their lengths.
    assert day.median_dwell_s.heard == pytest.approx(60.0 * 12 + 1.0 / m.scan_rate)


def test_a_visit_three_times_as_long_reads_three_times_as_long() -> None:
    """What the stays' factor could not do: the scale is the data's, not the tuning shop's."""
    m = model()

    def day(k: int) -> float:
        stays = [visit(f"k{i}", 10_000.0 * i, k * n) for i, n in enumerate((3, 6, 10, 20, 30))]
        return estimate(stays, m, [("day", 0.0, 86400.0)])["day"].mean_dwell_s.estimate or 0.0

    assert day(3) / day(1) == pytest.approx(3.0, rel=0.1)


def test_a_track_as_long_as_staffs_adds_its_time_and_no_visitor() -> None:
    m = model()
    stays = [visit("a", 0.0, 10), visit("b", 5000.0, 20)]
    # A randomizing track of six hours, heard inside every two minutes.
    chain = Session("chain", [ScanRecord(120.0 * i, dict(SHOP)) for i in range(int((LONG_STAY_S + 7200) / 120))])
    classify([*stays, chain], m)
    without = person_seconds(stays, chain_pieces(stays, m, DEFAULTS), m, 0.0, 86400.0, DEFAULTS)
    with_chain = person_seconds(stays, chain_pieces([*stays, chain], m, DEFAULTS), m, 0.0, 86400.0, DEFAULTS)
    each = DEFAULTS.occupancy_factor / m.heard_share / DEFAULTS.probing_share * 60.0 / DEFAULTS.inside_scans_per_min
    assert with_chain - without == pytest.approx(len(chain.scans) * each, rel=1e-6)
    a = estimate(stays, m, [("day", 0.0, 86400.0)])["day"]
    b = estimate([*stays, chain], m, [("day", 0.0, 86400.0)])["day"]
    assert b.visitors.estimate == pytest.approx(a.visitors.estimate)
    assert (b.mean_dwell_s.estimate or 0) > (a.mean_dwell_s.estimate or 0)
    # Only the scans heard in the period count; none once the period is over before the chain.
    assert person_seconds([], chain_pieces([chain], m, DEFAULTS), m, LONG_STAY_S * 3, LONG_STAY_S * 4, DEFAULTS) == 0.0


def test_one_sensor_keeps_the_stays_figures() -> None:
    m = model(1)
    stays = [
        Session(f"k{i}", [ScanRecord(1000.0 * i + 60.0 * j, {"shop": -55.0}) for j in range(9)], True) for i in range(4)
    ]
    day = estimate(stays, m, [("day", 0.0, 86400.0)])["day"]
    assert m.weak and day.dwell_from == "stays"


def test_the_caveat_says_what_is_assumed_when_the_dwell_comes_from_littles_law() -> None:
    lo, hi = DEFAULTS.dwell_checked_s
    assert figures.dwell_caveat((lo + hi) / 2, "little") is None
    long = figures.dwell_caveat(hi * 3, "little")
    assert long is not None and "longer" in long and f"{DEFAULTS.median_to_mean:.2f}" in long
    assert "40 %" not in long
    stays = figures.dwell_caveat(hi * 3, "stays")
    assert stays is not None and "40 % too short" in stays
