"""``footfall evaluate --calibration``: the pieces that need no simulation (the door count the
simulated store would export, the baseline, the summary). The whole pipeline runs in
``tests/test_calibrate_counts.py`` (end to end) and in the command itself."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from footfall.hub.calibrate import read_counts
from footfall.tools import evaluate_calibration as ec
from footfall.tools.evaluate_cli import register_evaluate

DAY0 = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
H = 3600


def person(kind: str, day: int, arrive: float, inside: list[float] | None = None) -> dict:
    return {"kind": kind, "day": day, "arrive": arrive, "inside": inside}


@pytest.fixture
def truth() -> dict:
    d1 = DAY0 + 86400
    people = [
        # Arrived at 10:55 outside, came in at 11:05: the door counts 11:00.
        person("visitor", 0, DAY0 + 10 * H + 55 * 60, [DAY0 + 11 * H + 5 * 60, DAY0 + 12 * H]),
        person("visitor", 0, DAY0 + 11 * H, [DAY0 + 11 * H + 30 * 60, DAY0 + 11 * H + 50 * 60]),
        person("passerby", 0, DAY0 + 10 * H + 59 * 60),
        person("passerby", 0, DAY0 + 11 * H),
        person("passerby", 0, DAY0 + 11 * H + 1),
        person("staff", 0, DAY0 + 8 * H, [DAY0 + 8 * H, DAY0 + 18 * H]),  # never counted
        person("fixed", 0, DAY0, None),
        person("visitor", 1, d1 + 14 * H, [d1 + 14 * H + 60, d1 + 15 * H]),
        person("passerby", 1, d1 + 14 * H + 10),
    ]
    return {"days": [{"date": "2026-11-02"}, {"date": "2026-11-03"}, {"date": "2026-11-04"}], "people": people}


def test_hourly_truth_counts_entries_and_arrivals_not_staff(truth):
    h = ec.hourly_truth(truth)
    assert h[0] == {int(DAY0 + 10 * H): [0, 1], int(DAY0 + 11 * H): [2, 2]}
    assert h[1] == {int(DAY0 + 86400 + 14 * H): [1, 1]}
    assert h[2] == {}  # a simulated day with nobody stays a day


def test_door_count_csv_reads_back_with_the_real_reader(truth, tmp_path):
    h = ec.hourly_truth(truth)
    text = ec.door_count_csv(h, (0, 1))
    assert text.splitlines()[:2] == ["start,visitors,passersby", "2026-11-02T10:00:00+00:00,0,1"]
    path = tmp_path / "door.csv"
    path.write_text(text)
    counts = read_counts(path, "UTC")  # what fit_counts is given: the CSV must be one a store could export
    assert counts.figures == ("visitors", "passersby") and counts.step_s == H
    assert [(r.start, r.end - r.start, r.visitors, r.passersby) for r in counts.rows] == [
        (DAY0 + 10 * H, H, 0.0, 1.0),
        (DAY0 + 11 * H, H, 2.0, 2.0),
        (DAY0 + 86400 + 14 * H, H, 1.0, 1.0),
    ]
    assert ec.door_count_csv(h, (2,)) == "start,visitors,passersby\n"


def test_baseline_is_the_counts_mean_per_counted_day(truth):
    h = ec.hourly_truth(truth)
    assert ec.baseline(h, (0,)) == {"visitors": 2.0, "passersby": 3.0}
    assert ec.baseline(h, (0, 1)) == {"visitors": 1.5, "passersby": 2.0}
    # A counted day with nobody still counts as a day (the mean is per day, not per busy day).
    assert ec.baseline(h, (0, 2)) == {"visitors": 1.0, "passersby": 1.5}


def check(protocol: str, held: bool, before: float | None, after: float | None, base: float, truth: float = 100.0):
    return ec.Check(1, held, protocol, "2026-11-03", "visitors", truth, before, after, base, 1.1)


def test_check_errors_and_summary():
    c = check("a", False, 80.0, 95.0, 120.0)
    assert c.error_before == pytest.approx(-0.2) and c.error_after == pytest.approx(-0.05)
    assert c.error_baseline == pytest.approx(0.2)
    assert check("a", False, None, None, 1.0).error_before is None
    assert check("a", False, 1.0, 1.0, 1.0, truth=0.0).error_after is None

    checks = [
        check("a", False, 80.0, 95.0, 120.0),
        check("a", False, 130.0, 110.0, 105.0),
        check("b", True, 90.0, 104.0, 150.0),
    ]
    rows = ec.summary(checks)
    assert [(r["seeds"], r["protocol"], r["figure"], r["days"]) for r in rows] == [
        ("tuning", "a", "visitors", 2),
        ("held-out", "b", "visitors", 1),
    ]
    a = rows[0]
    assert a["mean_abs_before"] == pytest.approx(0.25) and a["within_before"] == 0
    assert a["mean_abs_after"] == pytest.approx(0.075) and a["within_after"] == 2 and a["n_after"] == 2
    assert a["mean_abs_baseline"] == pytest.approx(0.125) and a["within_baseline"] == 1
    text = ec.format_summary(rows)
    assert "a: count day 1, check days 2-3" in text and "25.0%" in text and "7.5%" in text


def test_protocols_never_check_a_counted_day():
    for p in ec.PROTOCOLS:
        assert not set(p.counted) & set(p.checked)


def test_the_flag_is_wired():
    import argparse

    parser = argparse.ArgumentParser()
    register_evaluate(parser.add_subparsers())
    args = parser.parse_args(["evaluate", "--calibration", "--seeds", "held-out", "--json"])
    assert args.calibration and args.json and args.seeds == "held-out"


def test_one_day_seeds_are_skipped_without_simulating(tmp_path, capsys):
    assert ec.evaluate_seeds([1, 2, 3], tmp_path) == ([], [], [1, 2, 3])
    assert not list(tmp_path.iterdir())
    assert ec.cmd_calibration("1-3", False, str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "skipped (one simulated day, nothing to check): seeds 1, 2, 3" in out and "nothing measured" in out


def test_command_prints_the_summary_and_json(monkeypatch, capsys):
    import json

    checks = [check("a", True, 90.0, 104.0, 100.0), check("b", True, 90.0, 95.0, 100.0)]
    fits = [ec.Fit(1, "a", {"visitors": 1.1, "passersby": 1.0}, ["only 1 day counted"])]
    monkeypatch.setattr(ec, "evaluate_seeds", lambda seeds, workdir, progress: (checks, fits, [2]))
    assert ec.cmd_calibration("1-2", False, None) == 0
    out = capsys.readouterr().out
    assert "held-out  a: count day 1, check days 2-3" in out and "exact here by construction" in out
    assert ec.cmd_calibration("1-2", True, None) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["skipped_one_day_seeds"] == [2] and data["fits"][0]["factors"]["visitors"] == 1.1
    assert data["checks"][0]["error_after"] == pytest.approx(0.04) and len(data["summary"]) == 2
