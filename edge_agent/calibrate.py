"""Calibrate the inside/outside signal threshold on site.

The walk: the installer opens the Wi-Fi settings page on a phone (it then scans every few
seconds, far more often than any phone in a pocket) and

1. walks along the inside edges of the shop floor for a minute or two, then
2. stands and walks on the pavement outside the shop window for the same time.

Modern phones probe from a new random MAC every few scans, so the calibration phone is
recognised by its IE fingerprint, not its address: the fingerprint group with the most
frames during the inside walk is the phone (everybody else's phones probe far less often),
and the same fingerprint is followed outside. The proposed ``inside_rssi`` is the level that
best separates the two RSSI samples (fewest inside frames below plus outside frames above),
kept where a few dB of body shadowing still lands on the right side; the tool reports how
well the two samples separate so a bad sensor placement shows up at once.

Either live (``footfall calibrate --source iface:mon0``, prompting the installer through the
two walks) or from two capture files (``--inside a.pcap --outside b.pcap``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from footfall.edge_agent.parse import Parser


class CalibrationError(ValueError):
    pass


@dataclass
class Calibration:
    inside_rssi: int
    fingerprint: str
    inside_frames: int
    outside_frames: int
    inside_p10: float
    inside_median: float
    outside_median: float
    outside_p90: float
    misclassified_share: float

    def report(self) -> str:
        verdict = (
            "good"
            if self.misclassified_share <= 0.05
            else ("usable" if self.misclassified_share <= 0.15 else "poor: move the sensor further from the window")
        )
        return (
            f"calibration phone: fingerprint {self.fingerprint}, {self.inside_frames} frames inside, "
            f"{self.outside_frames} outside\n"
            f"inside RSSI: median {self.inside_median:.0f} dBm, 10th percentile {self.inside_p10:.0f} dBm\n"
            f"outside RSSI: median {self.outside_median:.0f} dBm, 90th percentile {self.outside_p90:.0f} dBm\n"
            f"separation: {self.misclassified_share:.1%} of frames on the wrong side ({verdict})\n\n"
            f"[visits]\ninside_rssi = {self.inside_rssi}\n"
        )


def _percentile(values: list[int], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def rssi_by_fingerprint(frames: Iterable[tuple[float, bytes]], parser: Parser | None = None) -> dict[str, list[int]]:
    parser = parser or Parser()
    groups: dict[str, list[int]] = defaultdict(list)
    for ts, frame in frames:
        p = parser.parse(frame, ts)
        if p is not None and p.rssi is not None:
            groups[p.elements.fingerprint].append(p.rssi)
    return groups


def propose(inside: dict[str, list[int]], outside: dict[str, list[int]], min_frames: int = 20) -> Calibration:
    """Pick the calibration phone and the threshold that best separates its two walks."""
    if not inside:
        raise CalibrationError("no probe requests heard during the inside walk: is the sensor capturing?")
    fingerprint, inside_rssi = max(inside.items(), key=lambda kv: len(kv[1]))
    outside_rssi = outside.get(fingerprint, [])
    if len(inside_rssi) < min_frames:
        raise CalibrationError(
            f"only {len(inside_rssi)} frames from the calibration phone inside: keep its Wi-Fi settings page open"
        )
    if len(outside_rssi) < min_frames // 2:
        raise CalibrationError(
            f"the calibration phone was heard only {len(outside_rssi)} times outside: "
            "walk closer to the shop window, with the Wi-Fi settings page open"
        )
    best: tuple[float, int] | None = None
    total = len(inside_rssi) + len(outside_rssi)
    for threshold in range(-95, -29):
        wrong = sum(r < threshold for r in inside_rssi) + sum(r >= threshold for r in outside_rssi)
        # Ties: prefer the threshold in the middle of the gap (the sum of distances decides).
        margin = -abs(threshold - (_percentile(inside_rssi, 0.1) + _percentile(outside_rssi, 0.9)) / 2)
        key = (wrong / total, -margin)
        if best is None or key < (best[0], best[1]):
            best = (key[0], key[1])
            chosen = threshold
    assert best is not None
    return Calibration(
        inside_rssi=chosen,
        fingerprint=fingerprint,
        inside_frames=len(inside_rssi),
        outside_frames=len(outside_rssi),
        inside_p10=_percentile(inside_rssi, 0.1),
        inside_median=_percentile(inside_rssi, 0.5),
        outside_median=_percentile(outside_rssi, 0.5),
        outside_p90=_percentile(outside_rssi, 0.9),
        misclassified_share=best[0],
    )


def timed(frames: Iterable[tuple[float, bytes]], seconds: float, clock: Callable[[], float] = time.monotonic):
    """Frames from a live source for ``seconds`` of wall time."""
    end = clock() + seconds
    for item in frames:
        yield item
        if clock() >= end:
            return
