"""One sensor's visitors (``estimate.weak_little_mean``): the geometric mean of the tracker's
count and Little's law's, the period's person-time over the stays' mean visit. The tracker
strings busy shops' randomizing phones into tracks as long as staff's, which the count drops
and the occupancy keeps; the held-out figures are in docs/metrics.md, "One sensor's visitors
with Little's law"."""

from __future__ import annotations

import math

import pytest

from footfall.hub import inside as inside_mod
from footfall.hub.dwell import chain_pieces, person_seconds
from footfall.hub.estimate import (
    DEFAULTS,
    LONG_STAY_S,
    ScanRecord,
    Session,
    SiteModel,
    classify,
    counted_stays,
    estimate,
    weak_little_mean,
)

SHOP = {"shop": -55.0}


def one_sensor() -> SiteModel:
    inside = inside_mod.fit([dict(SHOP)] * 200, [{"shop": -80.0}] * 200, [])
    assert inside.trained and inside.sensors == ("shop",)
    return SiteModel(inside=inside, scan_rate=1 / 60, session_prior=0.5, heard_share=0.95, crowding=10.0)


def two_sensors() -> SiteModel:
    inside = inside_mod.fit([{"shop": -55.0, "door": -60.0}] * 200, [{"door": -75.0, "shop": -88.0}] * 200, [])
    return SiteModel(inside=inside, scan_rate=1 / 60, session_prior=0.5, heard_share=0.95, visit_dwell_s=900.0)


def visit(key: str, start: float, minutes: int, scan: dict[str, float] = SHOP) -> Session:
    """A randomizing phone's stay heard inside every minute for ``minutes`` minutes."""
    return Session(key, [ScanRecord(start + 60.0 * i, dict(scan)) for i in range(minutes + 1)])


def chain(scan: dict[str, float] = SHOP) -> Session:
    """Phones of one model strung into one track of six hours, a scan every two minutes."""
    return Session("chain", [ScanRecord(120.0 * i, dict(scan)) for i in range(int((LONG_STAY_S + 7200) / 120))])


DAY = [("day", 0.0, 86400.0)]


def test_the_count_is_the_geometric_mean_of_the_trackers_and_littles() -> None:
    m = one_sensor()
    stays = [visit(f"k{i}", 3000.0 * i, n) for i, n in enumerate((4, 8, 12, 20, 40))]
    day = estimate(stays, m, DAY)["day"]
    # The tracker's count: the stays' visit probabilities times the one-sensor correction.
    tracker = sum(s.p_visit for s in stays) * m.visitor_factor()
    mean = weak_little_mean(stays, m, DAY, None)
    assert mean == pytest.approx(day.mean_dwell_s.estimate)
    little = person_seconds(stays, chain_pieces(stays, m, DEFAULTS), m, 0.0, 86400.0, DEFAULTS) / mean
    assert day.visitors.estimate == pytest.approx(math.sqrt(tracker * little))
    assert min(tracker, little) <= day.visitors.estimate <= max(tracker, little)
    low, high = day.visitors.low, day.visitors.high
    assert low is not None and high is not None and low < day.visitors.estimate < high


def test_with_one_sensor_a_track_as_long_as_staffs_brings_its_visitors_back() -> None:
    m = one_sensor()
    stays = [visit(f"k{i}", 20_000.0 + 3000.0 * i, n) for i, n in enumerate((6, 10, 15, 25))]
    a = estimate(stays, m, DAY)["day"]
    b = estimate([*stays, chain()], m, DAY)["day"]
    # The tracker's count drops the track as staff; its time in the shop raises Little's part.
    assert (b.visitors.estimate or 0) > (a.visitors.estimate or 0) * 1.2
    # Two sensors tell the shop from the street: there the track adds time, and no visitor.
    m2 = two_sensors()
    inside2 = {"shop": -55.0, "door": -60.0}
    stays2 = [visit(f"k{i}", 20_000.0 + 3000.0 * i, n, inside2) for i, n in enumerate((6, 10, 15, 25))]
    a2 = estimate(stays2, m2, DAY)["day"]
    b2 = estimate([*stays2, chain(inside2)], m2, DAY)["day"]
    assert b2.visitors.estimate == pytest.approx(a2.visitors.estimate)
    assert weak_little_mean(stays2, m2, DAY, None) is None


def test_an_hour_divides_by_the_days_mean_visit() -> None:
    """An hour's few stays would make its own mean noisy: every period takes the widest's."""
    m = one_sensor()
    stays = [visit(f"k{i}", 600.0 * i, n) for i, n in enumerate((3, 5, 8, 12, 30, 45))]
    hour = ("h0", 0.0, 3600.0)
    out = estimate(stays, m, [*DAY, hour])
    classify(stays, m)
    mean = weak_little_mean(stays, m, [*DAY, hour], None)
    assert mean == pytest.approx(out["day"].mean_dwell_s.estimate)
    mine = counted_stays(stays, 0.0, 3600.0, None, DEFAULTS)
    tracker = sum(s.p_visit for s in mine) * m.visitor_factor()
    little = person_seconds(mine, chain_pieces(stays, m, DEFAULTS), m, 0.0, 3600.0, DEFAULTS) / mean
    assert out["h0"].visitors.estimate == pytest.approx(math.sqrt(tracker * little))


def test_live_it_counts_only_finished_stays_on_both_sides() -> None:
    """Before the last stay is over neither the count nor the mean holds it: the figure of the
    finished stays is what the next run, with the last stay over, says about them too."""
    m = one_sensor()
    stays = [visit(f"k{i}", 1000.0 * i, n) for i, n in enumerate((4, 9, 14, 22))]
    last_end = stays[-1].last
    before = estimate(stays, m, DAY, final_before=last_end)["day"]
    done = estimate(stays[:-1], m, DAY)["day"]
    assert before.visitors.estimate == pytest.approx(done.visitors.estimate)
