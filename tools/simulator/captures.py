"""Measure the real captures the simulator's phone behaviour is taken from.

``python -m footfall.tools.simulator.captures [DIR]`` (default ``../shared/data/probe-captures``:
the eleven labelled phones of the public Probe Requests Open Dataset, Baccichet et al.,
GiovanniBaccichet/ProbingPatternsDataset; three sniffers on channels 1, 6 and 11) prints, per
phone and pooled, the figures that docs/device-estimation.md ("The simulator's phone behaviour and
its sources") cites and ``scanning``/``devices`` use.

Definitions: probe requests heard by several sniffers are counted once (same MAC and sequence
number); a *scan* is a run of frames less than 1 s apart; a *gap* is the time from one scan's
first frame to the next one's; a *burst* is a run of frames with the same DS channel; a scan is
*full* with 8 or more channels, *partial* when its channels are among 1, 6, 11, 12, 13; a scan
sends *one frame per channel* when the median time between its bursts is under 35 ms (two frames
take ~45 ms). The anonymization of the data set replaced every MAC consistently but did not keep
the locally administered bit, so distinct MACs are counted, never their bits.
"""

from __future__ import annotations

import statistics
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "probe-captures"
SCAN_SPLIT_S = 1.0
CLUSTER_GAP_S = (1.5, 10.0)
SINGLE_STEP_MS = 35.0
SEQ_CONTINUES = 64  # a counter step of at most this many across a MAC change counts as continuing
STEP_WITHIN_S = 120.0  # consecutive scans further apart are not compared (the phone may have moved)
JUMP_DB = 5.0


def read_frames(path: str | Path) -> list[tuple[float, bytes, int, int]]:
    """(time, MAC, sequence number, DS channel or 0) of the probe requests in a classic pcap
    (radiotap link type), in time order, each (MAC, sequence number) once."""
    data = Path(path).read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    scale = 1e-9 if magic in (0xA1B23C4D, 0x4D3CB2A1) else 1e-6
    rec = struct.Struct(endian + "IIII")
    out = []
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = rec.unpack_from(data, off)
        frame = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        w = frame[struct.unpack_from("<H", frame, 2)[0] :]
        if len(w) < 24 or w[0] != 0x40:  # probe requests only
            continue
        ds, i = 0, 24
        while i + 2 <= len(w):
            if w[i] == 3 and w[i + 1] == 1 and i + 2 < len(w):
                ds = w[i + 2]
                break
            i += 2 + w[i + 1]
        out.append((sec + frac * scale, w[10:16], struct.unpack_from("<H", w, 22)[0] >> 4, ds))
    out.sort()
    seen: set[tuple[bytes, int]] = set()
    unique = []
    for f in out:
        if (f[1], f[2]) not in seen:
            seen.add((f[1], f[2]))
            unique.append(f)
    return unique


def read_levels(path: str | Path) -> dict[int, list[tuple[float, float]]]:
    """Per sniffer (by its channel): (time, mean RSSI) of each scan's frames sent on the
    sniffer's own channel (frames leaking in from adjacent channels arrive attenuated and would
    mix two levels), read with the agent's own pcap reader and radiotap parser."""
    from footfall.edge_agent.parse import Parser
    from footfall.edge_agent.pcapfile import read_frames as read_pcap

    parser = Parser()
    heard: dict[int, list[tuple[float, int]]] = {}
    for ts, buf in read_pcap(path):
        probe = parser.parse(buf, ts)
        if probe is None or probe.rssi is None:
            continue
        channel = probe.channel
        if channel is not None and probe.ds_channel == channel:
            heard.setdefault(channel, []).append((ts, probe.rssi))
    levels = {}
    for channel, frames in heard.items():
        scans = split(sorted(frames), lambda a, b: b[0] - a[0] <= SCAN_SPLIT_S)
        levels[channel] = [(s[0][0], statistics.fmean(r for _, r in s)) for s in scans]
    return levels


def rssi_steps(levels: Iterable[list[tuple[float, float]]]) -> list[tuple[float, float | None]]:
    """(change, change at the next scan or None) between consecutive scans of one phone on one
    sniffer, at most ``STEP_WITHIN_S`` apart: how still a still phone's signal is."""
    out: list[tuple[float, float | None]] = []
    for scans in levels:
        steps = [
            (b[1] - a[1]) if b[0] - a[0] <= STEP_WITHIN_S else None for a, b in zip(scans, scans[1:], strict=False)
        ]
        for i, d in enumerate(steps):
            if d is not None:
                out.append((d, steps[i + 1] if i + 1 < len(steps) else None))
    return out


def step_figures(steps: list[tuple[float, float | None]]) -> dict[str, float]:
    """Share of steps within 1 dB, share of ``JUMP_DB`` or more, and the share of those jumps
    that come back at the next scan (undone by at least half)."""
    jumps = [(d, n) for d, n in steps if abs(d) >= JUMP_DB]
    followed = [(d, n) for d, n in jumps if n is not None]
    return {
        "rssi_steps": len(steps),
        "rssi_step_within_1db": sum(abs(d) <= 1.0 for d, _ in steps) / len(steps),
        "rssi_step_5db_or_more": len(jumps) / len(steps),
        "rssi_jump_comes_back": sum(abs(d + n) < abs(d) / 2 for d, n in followed) / max(1, len(followed)),
    }


def split(items: list, same) -> list[list]:
    groups: list[list] = []
    for x in items:
        if groups and same(groups[-1][-1], x):
            groups[-1].append(x)
        else:
            groups.append([x])
    return groups


@dataclass
class Phone:
    """The figures of one capture file."""

    name: str
    scans: int = 0
    gaps: list[float] = field(default_factory=list)
    full: int = 0
    partial: int = 0
    partial_13: int = 0
    partial_12: int = 0
    full_single: int = 0
    partial_single: int = 0
    partial_steps_ms: dict[str, list[float]] = field(default_factory=lambda: {"single": [], "double": []})
    full_steps_ms: list[float] = field(default_factory=list)
    transitions: int = 0  # channel-to-channel transitions inside scans
    transitions_new_mac: int = 0
    mac_changes: int = 0  # consecutive frames with different MACs
    mac_changes_seq_continues: int = 0
    macs: int = 0
    macs_in_two_scans: int = 0
    steps: list[tuple[float, float | None]] = field(default_factory=list)

    @property
    def cluster_gaps(self) -> int:
        lo, hi = CLUSTER_GAP_S
        return sum(lo <= g <= hi for g in self.gaps)


def measure_file(path: str | Path) -> Phone:
    frames = read_frames(path)
    ph = Phone(Path(path).name.split("_")[0])
    scans = split(frames, lambda a, b: b[0] - a[0] <= SCAN_SPLIT_S)
    ph.scans = len(scans)
    ph.gaps = [b[0][0] - a[0][0] for a, b in zip(scans, scans[1:], strict=False)]
    scan_of: dict[bytes, set[int]] = {}
    for i, scan in enumerate(scans):
        for f in scan:
            scan_of.setdefault(f[1], set()).add(i)
        bursts = split(scan, lambda a, b: a[3] == b[3])
        for a, b in zip(bursts, bursts[1:], strict=False):
            ph.transitions += 1
            ph.transitions_new_mac += a[-1][1] != b[0][1]
        steps = [(b[0][0] - a[0][0]) * 1000 for a, b in zip(bursts, bursts[1:], strict=False)]
        single = bool(steps) and statistics.median(steps) < SINGLE_STEP_MS
        channels = {f[3] for f in scan}
        if len(channels) >= 8:
            ph.full += 1
            ph.full_single += single
            if steps:
                ph.full_steps_ms.append(statistics.median(steps))
        elif channels <= {1, 6, 11, 12, 13}:
            ph.partial += 1
            ph.partial_13 += 13 in channels
            ph.partial_12 += 12 in channels and 13 not in channels
            ph.partial_single += single
            if steps:
                ph.partial_steps_ms["single" if single else "double"].append(statistics.median(steps))
    for a, b in zip(frames, frames[1:], strict=False):
        if a[1] != b[1]:
            ph.mac_changes += 1
            ph.mac_changes_seq_continues += (b[2] - a[2]) % 4096 <= SEQ_CONTINUES
    ph.macs = len(scan_of)
    ph.macs_in_two_scans = sum(len(s) > 1 for s in scan_of.values())
    ph.steps = rssi_steps(read_levels(path).values())
    return ph


def pooled(phones: Iterable[Phone]) -> dict[str, float]:
    """The pooled figures the simulator uses (all gaps or scans weigh the same)."""
    phones = list(phones)
    ios = [p for p in phones if p.name.startswith("iPhone")]
    gaps = sum(len(p.gaps) for p in phones)
    ios_partial = sum(p.partial for p in ios)
    ios_full = sum(p.full for p in ios)

    def med(xs: list[float]) -> float:
        return statistics.median(xs) if xs else float("nan")

    return {
        "gaps": gaps,
        "cluster_gaps": sum(p.cluster_gaps for p in phones),
        "cluster_share": sum(p.cluster_gaps for p in phones) / gaps,
        "cluster_share_mean_of_phones": statistics.mean(p.cluster_gaps / len(p.gaps) for p in phones if p.gaps),
        "ios_partial_scans": ios_partial,
        "ios_partial_13": sum(p.partial_13 for p in ios) / ios_partial,
        "ios_partial_12": sum(p.partial_12 for p in ios) / ios_partial,
        "ios_full_scans": ios_full,
        # among the scans with at least two bursts (a step to time)
        "ios_full_single": sum(p.full_single for p in ios) / sum(len(p.full_steps_ms) for p in ios),
        "ios_partial_single": sum(p.partial_single for p in ios)
        / sum(len(v) for p in ios for v in p.partial_steps_ms.values()),
        "ios_partial_step_ms_single": med([s for p in ios for s in p.partial_steps_ms["single"]]),
        "ios_partial_step_ms_double": med([s for p in ios for s in p.partial_steps_ms["double"]]),
        "ios_full_step_ms": med([s for p in ios for s in p.full_steps_ms if s >= SINGLE_STEP_MS]),
        "android_partial_step_ms": med(
            [s for p in phones if not p.name.startswith("iPhone") for v in p.partial_steps_ms.values() for s in v]
        ),
        **step_figures([s for p in phones for s in p.steps]),
    }


def measure(directory: str | Path = DEFAULT_DIR) -> tuple[list[Phone], dict[str, float]]:
    paths = sorted(Path(directory).glob("*.pcap"))
    if not paths:
        raise FileNotFoundError(f"no .pcap files in {directory}")
    phones = [measure_file(p) for p in paths]
    return phones, pooled(phones)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    phones, pool = measure(args[0] if args else DEFAULT_DIR)

    def pct(a: int, b: int) -> str:
        return f"{a}/{b}" + (f" ({100 * a / b:.0f} %)" if b else "")

    print(
        f"{'phone':16} {'scans':>5} {'gaps 1.5-10 s':>15} {'full':>5} {'partial':>7} {'+13':>4} {'+12':>4} "
        f"{'1-frame full/part':>17} {'new MAC at ch. change':>22} {'counter kept at MAC change':>27} "
        f"{'MACs in 2+ scans':>17}"
    )
    for p in phones:
        print(
            f"{p.name:16} {p.scans:5} {pct(p.cluster_gaps, len(p.gaps)):>15} {p.full:5} {p.partial:7} "
            f"{p.partial_13:4} {p.partial_12:4} {f'{p.full_single}/{p.partial_single}':>17} "
            f"{pct(p.transitions_new_mac, p.transitions):>22} {pct(p.mac_changes_seq_continues, p.mac_changes):>27} "
            f"{pct(p.macs_in_two_scans, p.macs):>17}"
        )
    for k, v in pool.items():
        print(f"{k:32} {v:.3f}" if isinstance(v, float) else f"{k:32} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
