"""footfall calibrate on two synthetic walks: the threshold lands between inside and outside."""

import random
import subprocess
import sys

import pytest

from footfall.edge_agent.calibrate import CalibrationError, propose, rssi_by_fingerprint
from footfall.edge_agent.pcapfile import PcapSource, write_pcap
from footfall.tools.simulator.frames import probe_request, radiotap_prefix

# Two different phone models: distinct IE sets, hence distinct fingerprints.
CAL_PHONE = bytes.fromhex("000001080c1218243048606c2d1a2d4017ff00000000000000000000000000000000000000000000")
OTHER = bytes.fromhex("0000010402040b16")


def walk(path, mean_rssi, *, cal_frames=200, others=60, seed=1):
    rng = random.Random(seed)
    rt = radiotap_prefix(6, 2)
    frames = []
    t = 1_700_000_000.0
    for i in range(cal_frames):
        mac = bytes([0x02 | rng.randrange(256) & 0xFC]) + rng.randbytes(5)  # a new random MAC each scan
        rssi = max(-95, min(-20, round(rng.gauss(mean_rssi, 5))))
        frames.append((t + i * 0.5, probe_request(rt, rssi, mac, i, CAL_PHONE)))
    for i in range(others):  # bystanders: fewer frames, any strength
        mac = bytes([0x02]) + rng.randbytes(5)
        frames.append((t + i * 1.7, probe_request(rt, rng.randrange(-90, -40), mac, i, OTHER)))
    frames.sort(key=lambda f: f[0])
    write_pcap(path, frames)
    return path


def test_threshold_separates_the_two_walks(tmp_path):
    inside = rssi_by_fingerprint(PcapSource(walk(tmp_path / "in.pcap", -55)))
    outside = rssi_by_fingerprint(PcapSource(walk(tmp_path / "out.pcap", -82, seed=2)))
    cal = propose(inside, outside)
    assert -75 <= cal.inside_rssi <= -62
    assert cal.misclassified_share < 0.05
    assert cal.inside_frames == 200


def test_cli_prints_a_config_section(tmp_path):
    a, b = walk(tmp_path / "in.pcap", -50), walk(tmp_path / "out.pcap", -85, seed=3)
    out = subprocess.run(
        [sys.executable, "-m", "footfall", "calibrate", "--inside", str(a), "--outside", str(b)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "[visits]\ninside_rssi = " in out
    assert "good" in out


def test_clear_errors():
    with pytest.raises(CalibrationError, match="no probe requests"):
        propose({}, {})
    with pytest.raises(CalibrationError, match="outside"):
        propose({"fp": [-50] * 100}, {})
    proc = subprocess.run([sys.executable, "-m", "footfall", "calibrate"], capture_output=True, text=True)
    assert proc.returncode != 0 and "--source" in proc.stderr
