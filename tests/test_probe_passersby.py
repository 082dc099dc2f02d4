"""The linking-free passers-by probe (tools/probe_passersby.py): on a simulated tuning day, what
it counts is nearly all passers-by (the hub's count is a third to a half visitors' scans), and it
refuses held-out seeds."""

from __future__ import annotations

from pathlib import Path

import pytest

from footfall.tools import probe_passersby
from footfall.tools.evaluate_pipeline import TUNING_SEEDS


def test_isolated_scans_are_passersby(tmp_path: Path) -> None:
    assert 9 in TUNING_SEEDS  # scale 0.5, 60 % randomizing, two sensors
    row = probe_passersby.probe(9, 5.0, tmp_path, 180.0)
    iso = row["isolated"]
    print(row["truth"], row["hub"], iso)
    assert 0 < iso.raw < iso.outside
    assert iso.by_kind.get("passerby", 0) >= 0.8 * iso.raw
    assert iso.raw <= iso.weighted <= probe_passersby.MAX_WEIGHT * iso.raw
    assert "isolated, weighted" in probe_passersby.report([row])


def test_held_out_seeds_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        probe_passersby.main(["--seeds", "12"])
    assert exc.value.code == 2 and "held-out" in capsys.readouterr().err
