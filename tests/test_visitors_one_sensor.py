"""One sensor's visitors (``estimate.chain_factor``): the tracker's count of stays, raised by the
share of the person-time in tracks as long as staff's. The tracker strings busy shops'
randomizing phones into such tracks, which the count drops as staff and the occupancy keeps; the
held-out figures are in docs/metrics.md, "One sensor's visitors and the tracks as long as
staff's"."""

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
    chain_factor,
    classify,
    counted_stays,
    estimate,
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
STAYS = ((6, 10, 15, 25), 25_000.0)


def stays(scan: dict[str, float] = SHOP) -> list[Session]:
    minutes, start = STAYS
    return [visit(f"k{i}", start + 3000.0 * i, n, scan) for i, n in enumerate(minutes)]


def test_the_factor_is_halfway_in_ratio_between_none_and_tracks_like_the_rest() -> None:
    assert chain_factor(0.0) == 1.0
    # Three quarters of the time in tracks: the count alone, or four times it if their people
    # stayed like the counted ones; the geometric mean of the two.
    assert chain_factor(0.75) == pytest.approx(2.0)
    assert chain_factor(1.0) == chain_factor(0.99) < float("inf")
    assert chain_factor(-0.1) == 1.0


def test_without_such_tracks_the_count_stands() -> None:
    m = one_sensor()
    mine = stays()
    day = estimate(mine, m, DAY)["day"]
    assert day.visitors.estimate == pytest.approx(sum(s.p_visit for s in mine) * m.visitor_factor())


def test_with_one_sensor_a_track_as_long_as_staffs_raises_the_count_by_its_share_of_the_time() -> None:
    m = one_sensor()
    mine, track = stays(), chain()
    a = estimate(mine, m, DAY)["day"]
    b = estimate([*mine, track], m, DAY)["day"]
    classify([*mine, track], m)
    pieces = chain_pieces([*mine, track], m, DEFAULTS)
    total = person_seconds(mine, pieces, m, 0.0, 86400.0, DEFAULTS)
    in_tracks = person_seconds([], pieces, m, 0.0, 86400.0, DEFAULTS)
    assert 0.3 < in_tracks / total < 0.9
    assert b.visitors.estimate == pytest.approx(a.visitors.estimate * chain_factor(in_tracks / total))
    low, high = b.visitors.low, b.visitors.high
    assert low is not None and high is not None and low < b.visitors.estimate < high
    # Two sensors tell the shop from the street: there the track adds time, and no visitor.
    m2 = two_sensors()
    inside2 = {"shop": -55.0, "door": -60.0}
    a2 = estimate(stays(inside2), m2, DAY)["day"]
    b2 = estimate([*stays(inside2), chain(inside2)], m2, DAY)["day"]
    assert b2.visitors.estimate == pytest.approx(a2.visitors.estimate)


def test_each_period_takes_its_own_share() -> None:
    """The track's scans count in the hour they were heard; an hour without any keeps its count."""
    m = one_sensor()
    mine, track = stays(), chain()
    hours = [("early", 0.0, 3600.0), ("late", 25_000.0, 40_000.0)]
    out = estimate([*mine, track], m, hours)
    alone = estimate(mine, m, hours)
    assert out["late"].visitors.estimate == pytest.approx(alone["late"].visitors.estimate)
    # Before 4 h the track's time is all that was heard: the share is capped, not infinite.
    assert math.isfinite(out["early"].visitors.estimate or 0.0)
    mine_late = counted_stays(mine, 25_000.0, 40_000.0, None, DEFAULTS)
    assert len(mine_late) == len(mine)


def test_live_it_counts_only_finished_stays() -> None:
    """Before the last stay is over the count does not hold it: the figure of the finished stays
    is what the next run, with the last stay over, says about them too."""
    m = one_sensor()
    mine = [visit(f"k{i}", 1000.0 * i, n) for i, n in enumerate((4, 9, 14, 22))]
    before = estimate(mine, m, DAY, final_before=mine[-1].last)["day"]
    done = estimate(mine[:-1], m, DAY)["day"]
    assert before.visitors.estimate == pytest.approx(done.visitors.estimate)
