"""The tracker probe (tools/probe_tracks.py): on a small simulated tuning store at three times the
dwell, each step of a long randomizing visit is set against the truth, and the signal of a
phone against its own and against others'. Held-out seeds are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from footfall.tools import probe_tracks


def test_the_probe_counts_every_step_of_a_long_visit(tmp_path: Path) -> None:
    pr = probe_tracks.probe(9, 3.0, tmp_path)
    assert pr.visits > 0 and len(pr.own_keys) == len(pr.top_share) == pr.visits
    steps = sum(pr.steps.values())
    assert steps > pr.visits and pr.steps["same key"] > 0
    assert set(pr.steps) <= {
        "same key",
        "a key mostly another person's",
        "another key of the same person",
        "new device, within 2 s",
        "new device, later",
    }
    assert all(0 < s <= 1 for s in pr.top_share) and min(pr.own_keys) >= 0
    # Signal distances were measured both ways (the finding is that they are close).
    assert pr.same_db and pr.other_db
    text = probe_tracks.report([pr])
    assert "seed 9, dwell x3" in text and "signal vs own phone" in text


def test_held_out_seeds_are_refused() -> None:
    with pytest.raises(SystemExit):
        probe_tracks.main(["--seeds", "12"])
