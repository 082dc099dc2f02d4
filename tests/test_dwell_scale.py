"""Shops that keep people longer (docs/metrics.md, "What one kind of shop cannot test"). Every
scenario draws its visitors' time inside from one distribution, so a guess of the same median
dwell for every store beats the hub's estimate on the held-out days; ``--dwell-scale`` stretches
the visits (a dealership's hour instead of a shop's ten minutes) to test the estimate instead.

Measured 2026-12-07 on the held-out days at three times the dwell: median dwell 46 % short,
mean dwell 38 % short, their ranges covering the truth on 4 and 2 days of 30: a randomizing
phone's long visit comes apart in the tracker (2.2 stays of its own, holding a fifth of its
time, the rest joined to other phones' stays), while a fixed-address phone's does not. The
strict xfail below is that failure; it passes once the estimate follows a long-dwell shop."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from footfall.tools.evaluate_metrics import DayResult, Figure, evaluate_run, one_guess_errors
from footfall.tools.evaluate_pipeline import HELD_OUT_SEEDS, Scenario, simulate

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


@pytest.mark.xfail(strict=True, reason="long visits of randomizing phones come apart in the tracker (module doc)")
def test_median_dwell_follows_a_long_dwell_shop(stretched) -> None:
    _, figures = stretched
    assert abs(figures["median_dwell_s"].error()) <= 0.25, figures["median_dwell_s"]


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


@pytest.mark.parametrize(("option", "value"), [("--dwell-scale", "0"), ("--returning-share", "1.5")])
def test_a_shop_that_cannot_be_is_refused(option: str, value: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "footfall", "evaluate", "--metrics", "--seeds", "18", option, value],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and option in proc.stderr
