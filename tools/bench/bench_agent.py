"""Agent throughput and memory: the issue's figures, measured side by side in one run.

1. Frames/s of the agent's whole sensor path (pcap read + radiotap/802.11/IE parse + keyed
   hash + sessionize into visits) on a 1-million-frame pcap of the real mix
   (``tools/bench/realmix.py``: real frames, thousands of devices coming and going, their own
   SSIDs, the captured element variation; its properties are printed), next to scapy
   dissecting the same file (a sample: scapy manages a few hundred frames/s) and ``tshark -T
   fields`` extracting source address, signal and sequence number, in the same run. The older
   file (the real frames cycled under fresh addresses) is measured beside it.
2. Peak RSS of an agent process (a child, so the figure is the agent's alone; it imports what
   the real agent imports: paho, sqlite3) fed (a) the real mix with 50,000 devices in range
   at once, (b) an element flood: 60,000 probe requests from random addresses, each with 2.3 KB
   of elements of its own.

    python -m footfall.tools.bench.bench_agent [--frames 1000000] [--pcap FILE] [--devices 50000]
    python -m footfall.tools.bench.bench_agent --memory-only     # part 2 alone (about a minute)
    # part 2 as on a router: the sensor tarball under the system Python, nothing else importable
    firmware_configs/openwrt/make-sensor-tarball.sh /tmp/fs.tgz && mkdir -p /tmp/fsx && tar -xzf /tmp/fs.tgz -C /tmp/fsx
    python -m footfall.tools.bench.bench_agent --memory-only --child-python /usr/bin/python3 --child-lib /tmp/fsx/lib

Targets (issue 13): >= 10x tshark on the real mix; RSS < 40 MB with 50,000 devices of the real
mix and < 64 MB under the element flood.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from footfall.edge_agent.agent import Agent
from footfall.edge_agent.config import AgentConfig
from footfall.edge_agent.pcapfile import PcapSource, write_pcap
from footfall.tools.bench.bench_parse import T0, Rate, Timer, bench_scapy, bench_tshark, make_bench_pcap
from footfall.tools.bench.realmix import describe, make_mix_pcap

KEY = "5f" * 32


def agent_rate(pcap: Path) -> tuple[Rate, int]:
    """The whole sensor path: read + parse + keyed hash + sessionize (+ building visit payloads)."""
    os.environ["FOOTFALL_HASH_KEY"] = KEY
    visits = 0

    def sink(kind: str, payload: dict) -> None:
        nonlocal visits
        visits += kind == "visit"

    agent = Agent(AgentConfig(site="bench", sensor="s1"), sink)
    with Timer() as t:
        agent.process(PcapSource(pcap))
        agent.finish("end_of_capture")
    return Rate(agent.frames, t), visits


RSS_CHILD = r"""
import json, os, sys
if len(sys.argv) > 3:  # --child-lib: the sensor tarball's code first (run with -S: nothing else)
    sys.path.insert(0, sys.argv[3])
os.environ["FOOTFALL_HASH_KEY"] = "5f" * 32
# A sensor installs without the hub's extra (pyproject.toml: msgspec is in [hub]); here the
# development venv has it, and its 2 MB would be counted against the sensor.
sys.modules["msgspec"] = None
import footfall.edge_agent.publish  # what the live agent also holds: paho, ssl, sqlite3
from footfall.edge_agent.agent import Agent
from footfall.edge_agent.config import AgentConfig
from footfall.edge_agent.pcapfile import PcapSource
def status(field):
    # VmHWM/VmRSS of this process image: ru_maxrss would carry the parent's peak across exec.
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
base = status("VmRSS")
agent = Agent(AgentConfig(site="bench", sensor="s1"), lambda k, p: None)
target = int(sys.argv[2])
def until_target(source):
    # Stop once ``target`` devices are open at once (0: read everything).
    for n, item in enumerate(source):
        if target and not n & 1023 and len(agent.tracker.open) >= target:
            return
        yield item
agent.process(until_target(PcapSource(sys.argv[1])))
print(json.dumps({"tracked": len(agent.tracker.open), "rss_kb": status("VmRSS"), "peak_kb": status("VmHWM"),
                  "base_kb": base, "frames": agent.frames}))
"""


def rss_of(pcap: Path, devices: int = 0, *, python: str | None = None, lib: Path | None = None) -> dict:
    """Peak RSS of a fresh agent process (what a sensor runs) fed this capture, up to the
    moment ``devices`` devices are open at once (0: the whole capture).

    ``python``, ``lib``: run it under that interpreter with ``-S`` and that directory first on
    its path (the unpacked sensor tarball), as on a router: no site-packages, no venv."""
    cmd = [python or sys.executable]
    if lib is not None:
        cmd.append("-S")
    cmd += ["-c", RSS_CHILD, str(pcap), str(devices)]
    if lib is not None:
        cmd.append(str(lib))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def flood_frames(n: int = 60_000, blob: int = 2300, seed: int = 5) -> Iterator[tuple[float, bytes]]:
    """Someone in radio range sending probe requests from random addresses, each with its own
    2.3 KB of vendor elements: every frame a new device and a new element list."""
    rnd = random.Random(seed)
    rt = bytes.fromhex("00000f002e00000010") + struct.pack("<BHH", 2, 2437, 0xA0)
    head = b"\x40\x00\x00\x00" + b"\xff" * 6
    for i in range(n):
        ies = b"\x00\x00" + b"\x01\x04\x02\x04\x0b\x16"
        while len(ies) < blob:  # vendor elements up to exactly ``blob`` octets (under MAX_MPDU)
            size = min(250, blob - len(ies) - 2)
            ies += bytes((221, size)) + rnd.randbytes(size)
        mpdu = head + bytes([(rnd.randrange(256) & 0xFC) | 0x02]) + rnd.randbytes(5) + b"\xff" * 6
        mpdu += struct.pack("<H", (i & 0xFFF) << 4) + ies
        yield T0 + i * 0.001, rt + bytes(((-40 - i % 50) & 0xFF,)) + mpdu + struct.pack("<I", zlib.crc32(mpdu))


def print_rss(label: str, mem: dict, target_mb: float) -> None:
    print(
        f"agent RSS, {label}: {mem['tracked']:,} devices open at the end of {mem['frames']:,} frames: "
        f"{mem['rss_kb'] / 1024:.1f} MB, peak {mem['peak_kb'] / 1024:.1f} MB (interpreter + imports alone: "
        f"{mem['base_kb'] / 1024:.1f} MB; target < {target_mb:.0f} MB)"
    )


def run(label: str, pcap: Path, scapy_sample: int, target: str = "") -> None:
    """``target``: what the tshark ratio must reach on this capture, printed beside it."""
    rate, visits = agent_rate(pcap)
    print(f"[{label}] agent parse+hash+sessionize {rate}  ({rate.n:,} frames -> {visits:,} visits)")
    sc = bench_scapy(pcap, scapy_sample)
    if sc is not None:
        print(f"[{label}] scapy dissect (first {sc.n:,})  {sc}   agent/scapy  = {rate.cpu / sc.cpu:6.1f}x (CPU)")
    ts = bench_tshark(pcap, rate.n)
    if ts is None:
        print(f"[{label}] tshark: not installed")
    else:
        print(
            f"[{label}] tshark -T fields sa,signal,seq {ts}   agent/tshark = {rate.cpu / ts.cpu:6.1f}x (CPU) "
            f"{rate.wall / ts.wall:6.1f}x (wall){target}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--pcap", type=Path, help="use this capture instead of building them")
    ap.add_argument("--scapy-sample", type=int, default=20_000)
    ap.add_argument("--at-once", type=int, default=4500, help="devices in range at once in the real-mix capture")
    ap.add_argument("--devices", type=int, default=50_000, help="devices in range at once for the memory figure")
    ap.add_argument("--memory-frames", type=int, default=1_200_000)
    ap.add_argument("--memory-only", action="store_true", help="only the RSS figures (no throughput)")
    ap.add_argument("--child-python", help="interpreter of the RSS child (default: this one)")
    ap.add_argument(
        "--child-lib",
        type=Path,
        help="run the RSS child with -S and this directory (the unpacked sensor tarball's lib) first on its path",
    )
    args = ap.parse_args(argv)
    child = {"python": args.child_python, "lib": args.child_lib}

    if args.child_lib is not None:
        print(f"RSS child: {args.child_python or sys.executable} -S, {args.child_lib} first on its path")
    with tempfile.TemporaryDirectory(prefix="footfall-bench-") as tmp:
        if args.memory_only:
            pass
        elif args.pcap is not None:
            run("given", args.pcap, args.scapy_sample)
        else:
            # The real mix (tools/bench/realmix.py): the properties of field traffic, printed.
            mix = Path(tmp) / "real-mix.pcap"
            make_mix_pcap(mix, args.frames, at_once=args.at_once)
            d = describe(mix)
            print(
                f"[real mix] {d['frames']:,} frames over {d['seconds']:.0f} s ({d['frames_per_s']:,.0f}/s), "
                f"{d['addresses']:,} addresses, {d['ssid_share']:.0%} with an SSID ({d['distinct_ssids']:,} "
                f"distinct), {d['distinct_element_lists']:,} distinct element lists"
            )
            run("real mix", mix, args.scapy_sample, "; target 10x (issue 13: real traffic)")
            mix.unlink()
            # The earlier benchmark file beside it: the real phones' frames cycled with fresh MACs.
            real = Path(tmp) / "real-cycled.pcap"
            make_bench_pcap(real, args.frames)
            # A stress case, not real traffic: a new visit every 4.4 frames (no target).
            run("real frames cycled, fresh MACs", real, args.scapy_sample)
            real.unlink()
        # As many devices in range as the figure asks for; read until that many are tracked.
        crowd = Path(tmp) / "crowd.pcap"
        make_mix_pcap(crowd, args.memory_frames, at_once=args.devices, seed=2)
        mem = rss_of(crowd, args.devices, **child)
        if mem["tracked"] < args.devices:
            print(f"(only {mem['tracked']:,} devices open by the end: raise --memory-frames)")
        print_rss(f"real mix, {args.devices:,} devices", mem, 40)
        crowd.unlink()
        flood = Path(tmp) / "flood.pcap"
        write_pcap(flood, flood_frames(), linktype=127)
        print_rss(
            "element flood (60,000 random addresses, 2.3 KB of distinct elements each)", rss_of(flood, **child), 64
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
