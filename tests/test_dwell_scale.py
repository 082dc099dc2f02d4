"""Shops that keep people longer (docs/metrics.md, "What one kind of shop cannot test"). Every
scenario draws its visitors' time inside from one distribution, so a guess of the same median
dwell for every store beats the hub's estimate on the held-out days; ``--dwell-scale`` stretches
the visits (a dealership's hour instead of a shop's ten minutes) to test the estimate instead.

Measured 2026-12-06 on the held-out days at three times the dwell: the stays' median dwell read
46 % short, their mean 38 %, their ranges covering the truth on 4 and 2 days of 30: a
randomizing phone's long visit is spread over several tracks (phones of one model inside at
once are told apart by their signal only), while a fixed-address phone's is not. With two
sensors or more the dwell now comes from Little's law (hub/dwell.py: the time in the shop over
the visitors), which follows the shop; this held-out store has three sensors."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from footfall.tools.evaluate_metrics import DayResult, Figure, evaluate_run, one_guess_errors
from footfall.tools.evaluate_pipeline import (
    HELD_OUT_SEEDS,
    SHOP_DWELL_SCALES,
    SHOP_RETURNING_SHARES,
    SHOP_STREETS,
    TUNING_SEEDS,
    Scenario,
    scenario,
    simulate,
    varied_shop,
)

SEED = dict(seed=18, scale=0.5, randomized_share=0.6, sensors=3)  # a small held-out store


@pytest.fixture(scope="module")
def stretched(tmp_path_factory: pytest.TempPathFactory):
    sc = Scenario(**SEED, dwell_scale=3.0)
    assert sc.seed in HELD_OUT_SEEDS and "dwell x3" in sc.name
    work = Path(tmp_path_factory.mktemp("dwell3"))
    run = simulate(sc, work)
    [day] = evaluate_run(run, work)
    return run.truth, day.figures


def test_the_visits_are_stretched(stretched) -> None:
    truth, figures = stretched
    assert truth["params"]["dwell_scale"] == 3.0
    dwell = [p["dwell_s"] for p in truth["people"] if p["kind"] == "visitor"]
    # One shop's median is about 10.6 min (tools/simulator/people.py DWELL_CLASSES); three times it.
    assert statistics.median(dwell) > 2.5 * 637.5
    assert figures["median_dwell_s"].truth == pytest.approx(statistics.median(dwell))


def test_median_and_mean_dwell_follow_a_long_dwell_shop(stretched) -> None:
    """Until 2026-12-06 a strict xfail: the stays' median read 40 % short here."""
    _, figures = stretched
    for name in ("median_dwell_s", "mean_dwell_s"):
        f = figures[name]
        assert abs(f.error()) <= 0.25, f
        assert f.covered, f


def test_the_dashboard_says_the_dwell_is_unlike_the_shops_it_was_checked_on(stretched) -> None:
    """What the dwell card shows beside a long-dwell shop's figures (figures.dwell_caveat): the
    mean follows the shop, the median assumes the checked shops' ratio to it."""
    from footfall.hub import figures

    _, f = stretched
    caveat = figures.dwell_caveat(f["median_dwell_s"].estimate, "little")
    assert caveat is not None and "longer" in caveat and "ratio" in caveat
    assert figures.dwell_caveat(600.0) is None and figures.dwell_caveat(None) is None
    short = figures.dwell_caveat(180.0)
    assert short is not None and "shorter" in short and "too long" in short


def test_one_guess_is_the_other_days_median() -> None:
    def day(truth: float) -> DayResult:
        r = DayResult(Scenario(seed=1), "2026-11-02", held_out=False)
        r.figures["median_dwell_s"] = Figure(truth, truth)
        r.figures["return_rate"] = Figure(truth / 1000.0, truth / 1000.0)
        return r

    days = [day(500.0), day(600.0), day(800.0)]
    # Each day's guess: the median of the two others (700, 650, 550).
    assert one_guess_errors(days, "median_dwell_s") == pytest.approx([0.4, 650 / 600 - 1, 550 / 800 - 1])
    assert one_guess_errors(days, "return_rate") == pytest.approx([0.2, 0.05, -0.25])  # points, not ratios


@pytest.mark.parametrize(
    ("mode", "options"),
    [
        ("--metrics", ["--dwell-scale", "0"]),
        ("--metrics", ["--returning-share", "1.5"]),
        ("--metrics", ["--shops", "--dwell-scale", "2"]),
        ("--metrics", ["--dwell-shape", "round"]),
        ("--metrics", ["--shops", "--dwell-shape", "alike"]),
        ("--live", ["--dwell-scale", "20"]),
    ],
)
def test_a_shop_that_cannot_be_is_refused(mode: str, options: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "footfall", "evaluate", mode, "--seeds", "18", *options],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and options[0] in proc.stderr


def test_shops_cover_every_kind_held_out_and_tuning() -> None:
    """``--shops``: every dwell, street and share of returners among the held-out seeds and
    among the tuning ones (returners on the three-day stores, the only ones that have any),
    the store itself (size, phones, sensors, days) unchanged."""
    for seeds in (HELD_OUT_SEEDS, TUNING_SEEDS):
        shops = [varied_shop(scenario(s)) for s in seeds]
        assert {sc.dwell_scale for sc in shops} == set(SHOP_DWELL_SCALES)
        assert {sc.passersby_per_visitor for sc in shops} == set(SHOP_STREETS)
        assert {sc.returning_share for sc in shops if sc.days > 1} == set(SHOP_RETURNING_SHARES)
        for sc in shops:
            base = scenario(sc.seed)
            assert (sc.scale, sc.randomized_share, sc.sensors, sc.days) == (
                base.scale,
                base.randomized_share,
                base.sensors,
                base.days,
            )


def test_fitting_tools_can_fit_on_every_kind_of_shop(tmp_path: Path) -> None:
    """``linked_days(..., shops=True)`` (``fit_visitors --shops``, ``fit_occupancy --shops``):
    the store simulated as the kind of shop ``--shops`` evaluates it as."""
    from footfall.tools.evaluate_pipeline import linked_days

    days = linked_days([45], tmp_path, shops=True)  # a small tuning store, a kiosk's short visits
    day = next(days)
    assert day.run.scenario == varied_shop(scenario(45)) and day.run.scenario.dwell_scale == 0.5
    assert day.run.truth["params"]["dwell_scale"] == 0.5
    days.close()
