"""A visit's length for the median dwell (``estimate.visit_length``): with one sensor the stay's
first to last scan, since one sensor's signal takes the scans from the back of the shop for the
street's; with two or more the first to last inside scan (``dwell_of``). The mean keeps
``dwell_of`` either way (docs/metrics.md, "Median dwell with one sensor"). With one sensor the
median is then the geometric mean of the stays' median and the mean times the median-to-mean
ratio (``ranges.dwell_figures``)."""

from __future__ import annotations

import pytest

from footfall.hub import inside as inside_mod
from footfall.hub.estimate import DEFAULTS, ScanRecord, Session, SiteModel, dwell_of, estimate, visit_length

SHOP, BACK = {"shop": -55.0}, {"shop": -80.0}  # one sensor: the back of the shop reads as the street


def one_sensor_model() -> SiteModel:
    inside = inside_mod.fit([dict(SHOP)] * 200, [dict(BACK)] * 200, [])
    assert inside.trained and len(inside.sensors) == 1
    return SiteModel(inside=inside, session_prior=0.5, crowding=10.0, heard_share=0.95)


def two_sensor_model() -> SiteModel:
    inside = inside_mod.fit([{"shop": -55.0, "door": -60.0}] * 200, [{"door": -75.0, "shop": -88.0}] * 200, [])
    assert inside.trained and len(inside.sensors) == 2
    return SiteModel(inside=inside, session_prior=0.5, crowding=10.0, heard_share=0.95)


def browsing(key: str, start: float, model_sensors: int) -> Session:
    """Ten minutes in the shop, the first and last two minutes at the back."""
    strong = SHOP if model_sensors == 1 else {"shop": -55.0, "door": -60.0}
    weak = BACK if model_sensors == 1 else {"door": -75.0, "shop": -88.0}
    scans = [ScanRecord(start + i * 60.0, dict(weak if i < 2 or i > 8 else strong)) for i in range(11)]
    s = Session(key, scans, False)
    s.p_visit = 1.0
    return s


def test_one_sensor_median_takes_the_whole_stay() -> None:
    m = one_sensor_model()
    s = browsing("k", 0.0, 1)
    wait = 1.0 / m.scan_rate
    assert dwell_of(s, m) == pytest.approx((480.0 - 120.0 + wait) * DEFAULTS.dwell_factor)
    assert visit_length(s, m) == pytest.approx((600.0 + wait) * DEFAULTS.dwell_factor)


def test_two_sensors_keep_the_inside_scans() -> None:
    m = two_sensor_model()
    s = browsing("k", 0.0, 2)
    assert visit_length(s, m) == dwell_of(s, m) < (600.0 + 1.0 / m.scan_rate) * DEFAULTS.dwell_factor


def test_the_one_sensor_median_and_mean_use_their_own_lengths() -> None:
    m = one_sensor_model()
    stays = [browsing(f"k{i}", i * 1000.0, 1) for i in range(5)]
    day = estimate(stays, m, [("day", 0.0, 86400.0)])["day"]
    # estimate() classifies the stays again; the lengths do not depend on p_visit here.
    mean = dwell_of(stays[0], m) * DEFAULTS.mean_dwell_factor / DEFAULTS.dwell_factor
    assert day.mean_dwell_s.estimate == pytest.approx(mean)
    # The stays' median (the whole span) and the mean's scale, half each in log terms.
    median = (visit_length(stays[0], m) * mean * DEFAULTS.median_to_mean) ** 0.5
    assert day.median_dwell_s.estimate == pytest.approx(median)
    assert day.median_dwell_s.heard == pytest.approx(visit_length(stays[0], m) / DEFAULTS.dwell_factor)
    low, high = day.median_dwell_s.low, day.median_dwell_s.high
    assert low is not None and high is not None and low < median < high
