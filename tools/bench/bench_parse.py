"""Hot-path decoding speed: pcap read + radiotap/802.11/element parse, against scapy and tshark.

Builds (or takes with ``--pcap``) a capture of N probe requests: the 11 real captures merged on
their relative time and cycled, each cycle with fresh source addresses (FCS recomputed), at
2,000 frames/s of capture time; without the shared captures, synthetic frames of the same
layout. Then measures, in one process:

- read: ``PcapSource`` iteration alone;
- read+parse: ``PcapSource`` -> ``Parser.parse`` (what the agent's loop pays before hashing);
- parse: ``Parser.parse`` over frames already in memory (the parser alone);
- scapy: ``PcapReader`` dissecting the first ``--scapy-sample`` frames (rate extrapolated);
- tshark: ``tshark -r FILE -T fields -e wlan.sa -e radiotap.dbm_antsignal -e wlan.seq`` on the
  whole file, when installed;

and prints the ratios of read+parse to scapy and tshark. Wall-clock rates on a shared machine
measure the neighbours too, so CPU-second rates are printed as well (tshark counted as a
waited-for child) and the ratios are given on both. Usage::

    .venv/bin/python -m footfall.tools.bench.bench_parse [--frames 1000000] [--pcap FILE]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

from footfall.edge_agent.parse import Parser
from footfall.edge_agent.pcapfile import PcapSource, read_frames, write_pcap

REPO = Path(__file__).resolve().parents[2]
CAPTURES = Path(os.environ.get("FOOTFALL_SHARED", REPO.parent / "shared")) / "data" / "probe-captures"
T0 = 1_700_000_000.0
INTERVAL = 0.0005  # 2,000 probe requests a second: a busy mall's air on three channels


def _real_cycle() -> list[bytes]:
    """The real frames, each file on its own relative clock, merged into one mixed stream."""
    merged: list[tuple[float, int, bytes]] = []
    for k, path in enumerate(sorted(CAPTURES.glob("*.pcap"))):
        frames = list(read_frames(path))
        if frames:
            start = frames[0][0]
            merged += [(ts - start, k, fr) for ts, fr in frames]
    merged.sort(key=lambda x: (x[0], x[1]))
    # the anonymisation rewrote addresses but not the FCS: make every FCS right again
    parser = Parser()
    out = []
    for _, _, fr in merged:
        p = parser.parse(fr, 0.0)
        if p is not None and p.fcs:
            rtlen = fr[2] | (fr[3] << 8)
            fr = fr[:-4] + struct.pack("<I", zlib.crc32(fr[rtlen:-4]))
        out.append(fr)
    return out


def _ie(eid: int, body: bytes) -> bytes:
    return bytes((eid, len(body))) + body


def _synthetic_cycle(n: int = 7000, seed: int = 7) -> list[bytes]:
    """Frames in the real captures' layout (flags, rate, channel, signal; FCS) from 11 made-up
    device profiles, for clones without the shared captures."""
    rnd = random.Random(seed)
    profiles = []
    for d in range(11):
        ht = _ie(45, bytes([0x2D, 0x40 | d, 0x1B, 0xFF]) + bytes(22))
        ext = _ie(127, bytes([0, 0, 8, 4 | (d & 1), 0, 0, 0, 0x40]))
        he = _ie(255, bytes([35, 1, 8, 8, 0x18, d]) + bytes(20)) if d % 3 else b""
        vendor = _ie(221, bytes([0x00, 0x17, 0xF2, 0x0A, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00])) if d < 8 else b""
        rates = _ie(1, b"\x02\x04\x0b\x16") + _ie(50, b"\x0c\x12\x18\x24\x30\x48\x60\x6c")
        profiles.append((rates, ht, ext, he, vendor, bytes([0x02 | (d << 2)]) + rnd.randbytes(5)))
    out = []
    seq = [0] * 11
    for _ in range(n):
        d = rnd.randrange(11)
        rates, ht, ext, he, vendor, sa = profiles[d]
        ssid = _ie(0, b"" if rnd.random() < 0.8 else rnd.choice([b"home", b"office-wifi", b"cafe"]))
        chan = rnd.choice((1, 6, 11))
        ies = ssid + rates + _ie(3, bytes([chan])) + ht + ext + he + vendor
        seq[d] = (seq[d] + 1) & 0xFFF
        mpdu = struct.pack("<BBH6s6s6sH", 0x40, 0, 0, b"\xff" * 6, sa, b"\xff" * 6, seq[d] << 4) + ies
        freq = 2407 + 5 * rnd.choice((1, 6, 11))
        rt = struct.pack("<BBHIBBHHb", 0, 0, 15, 0x2E, 0x10, 2, freq, 0xA0, -30 - rnd.randrange(60))
        out.append(rt + mpdu + struct.pack("<I", zlib.crc32(mpdu)))
    return out


def _frames(total: int, base: list[bytes]) -> Iterator[tuple[float, bytes]]:
    n = len(base)
    for i in range(total):
        frame = base[i % n]
        cycle = i // n
        if cycle:
            # a new crowd each cycle: same devices' behaviour, fresh (rotated) addresses; the
            # first octet keeps the locally-administered/multicast bits of the original
            rtlen = frame[2] | (frame[3] << 8)
            sa = frame[rtlen + 10 : rtlen + 16]
            tail = (int.from_bytes(sa[1:], "big") ^ (cycle * 0x9E3779B1)) & 0xFFFFFFFFFF
            mpdu = frame[rtlen : rtlen + 10] + sa[:1] + tail.to_bytes(5, "big") + frame[rtlen + 16 : -4]
            frame = frame[:rtlen] + mpdu + struct.pack("<I", zlib.crc32(mpdu))
        yield T0 + i * INTERVAL, frame


def make_bench_pcap(path: str | os.PathLike[str], frames: int = 1_000_000) -> int:
    """Write the benchmark capture (link type 127); returns the number of frames written."""
    base = _real_cycle() if CAPTURES.is_dir() and any(CAPTURES.glob("*.pcap")) else []
    if not base:
        base = _synthetic_cycle()
    return write_pcap(path, _frames(frames, base), linktype=127)


class Timer:
    """Wall and CPU seconds of a block; CPU includes waited-for children (tshark).

    The machine is shared: wall rates measure the neighbours too, CPU rates are what one
    dedicated core would sustain. Both are printed; the ratios use CPU time."""

    def __enter__(self) -> Timer:
        self.wall0 = time.perf_counter()
        self.cpu0 = self._cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = self._cpu() - self.cpu0

    @staticmethod
    def _cpu() -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Rate:
    def __init__(self, n: int, t: Timer) -> None:
        self.n = n
        self.wall = n / t.wall if t.wall > 0 else float("inf")
        self.cpu = n / t.cpu if t.cpu > 0 else float("inf")

    def __str__(self) -> str:
        return f"{self.cpu:11,.0f} frames/CPU-s {self.wall:11,.0f} frames/s wall"


def bench_read(pcap: Path) -> Rate:
    n = 0
    with Timer() as t:
        for _ in PcapSource(pcap):
            n += 1
    return Rate(n, t)


def bench_read_parse(pcap: Path) -> tuple[Rate, dict[str, int]]:
    src = PcapSource(pcap)
    parser = Parser()
    parse = parser.decoder(src.linktype or 127)
    n = 0
    with Timer() as t:
        for ts, frame in src:
            parse(frame, ts)
            n += 1
    return Rate(n, t), parser.stats


def bench_parse_only(pcap: Path, limit: int) -> Rate:
    frames = []
    for item in PcapSource(pcap):
        frames.append(item)
        if len(frames) >= limit:
            break
    parser = Parser()
    parse = parser.parse
    best = None
    for _ in range(3):  # best of three: the least disturbed by the neighbours
        with Timer() as t:
            for ts, frame in frames:
                parse(frame, ts)
        r = Rate(len(frames), t)
        best = r if best is None or r.cpu > best.cpu else best
    assert best is not None
    return best


def bench_scapy(pcap: Path, sample: int) -> Rate | None:
    try:
        from scapy.layers.dot11 import Dot11Elt  # noqa: F401 - registers the 802.11 layers
        from scapy.utils import PcapReader
    except ImportError:
        return None
    n = 0
    with Timer() as t, PcapReader(str(pcap)) as reader:
        for pkt in reader:
            # what the parser delivers: address, sequence, signal, elements (dissected anyway)
            pkt.addr2, pkt.SC, pkt.dBm_AntSignal  # noqa: B018
            n += 1
            if n >= sample:
                break
    return Rate(n, t)


def bench_tshark(pcap: Path, frames: int, limit: int = 0) -> Rate | None:
    """tshark extracting what the agent needs; ``limit``: only the first N frames (``-c``)."""
    exe = shutil.which("tshark")
    if not exe:
        return None
    cmd = [exe, "-r", str(pcap), "-T", "fields", "-e", "wlan.sa", "-e", "radiotap.dbm_antsignal", "-e", "wlan.seq"]
    if limit and limit < frames:
        cmd += ["-c", str(limit)]
        frames = limit
    with Timer() as t:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Rate(frames, t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1_000_000, help="frames in the built capture")
    ap.add_argument("--pcap", type=Path, help="measure this capture instead of building one")
    ap.add_argument("--scapy-sample", type=int, default=20_000)
    ap.add_argument("--parse-sample", type=int, default=200_000, help="frames held in memory for parse-only")
    ap.add_argument("--no-tshark", action="store_true")
    ap.add_argument("--tshark-frames", type=int, default=0, help="tshark on the first N frames only (0: all)")
    args = ap.parse_args(argv)

    tmp = None
    pcap = args.pcap
    try:
        if pcap is None:
            tmp = tempfile.TemporaryDirectory(prefix="footfall-bench-")
            pcap = Path(tmp.name) / "bench.pcap"
            with Timer() as t:
                n = make_bench_pcap(pcap, args.frames)
            print(f"built {pcap.name}: {n:,} frames, {pcap.stat().st_size / 1e6:.0f} MB in {t.wall:.1f}s")
        read = bench_read(pcap)
        print(f"read only        {read}")
        rp, stats = bench_read_parse(pcap)
        print(f"read+parse       {rp}   ({rp.n:,} frames)")
        print(f"                 counters {stats}")
        po = bench_parse_only(pcap, args.parse_sample)
        print(f"parse only       {po}   (best of 3 over {po.n:,} frames in memory)")
        sc = bench_scapy(pcap, args.scapy_sample)
        if sc is None:
            print("scapy: not installed")
        else:
            print(f"scapy dissect    {sc}   (first {sc.n:,} frames)")
            print(f"    read+parse / scapy  = {rp.cpu / sc.cpu:8.1f}x  (CPU)  {rp.wall / sc.wall:8.1f}x (wall)")
        ts = None if args.no_tshark else bench_tshark(pcap, rp.n, args.tshark_frames)
        if ts is None:
            print("tshark: skipped" if args.no_tshark else "tshark: not installed")
        else:
            print(f"tshark -T fields {ts}   (sa, signal, seq; {ts.n:,} frames)")
            print(f"    read+parse / tshark = {rp.cpu / ts.cpu:8.1f}x  (CPU)  {rp.wall / ts.wall:8.1f}x (wall)")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
