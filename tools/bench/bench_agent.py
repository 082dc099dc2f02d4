"""Agent throughput and memory: the issue's figures, measured side by side in one run.

1. Frames/s of the agent's whole sensor path (pcap read + radiotap/802.11/IE parse + keyed
   hash + sessionize into visits) on a 1-million-frame pcap, next to scapy dissecting the
   same file (a sample, extrapolated: scapy manages a few hundred frames/s) and, where
   installed, ``tshark -T fields`` extracting source address, signal and sequence number.
2. Peak RSS of an agent process tracking 50,000 concurrent devices (a child process, so the
   figure is the agent's alone; it imports what the real agent imports: paho, sqlite3).

    python -m footfall.tools.bench.bench_agent [--frames 1000000] [--pcap FILE] [--devices 50000]

Targets (issue 7): >= 10x tshark (about 140,000 frames/s) and RSS < 40 MB at 50k devices.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from footfall.edge_agent.agent import Agent
from footfall.edge_agent.config import AgentConfig
from footfall.edge_agent.pcapfile import PcapSource, write_pcap
from footfall.tools.bench.bench_parse import Rate, Timer, bench_scapy, bench_tshark, make_bench_pcap
from footfall.tools.simulator import make_frames

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
import json, os, struct, sys, time, zlib
os.environ["FOOTFALL_HASH_KEY"] = "5f" * 32
import paho.mqtt.client, sqlite3  # what the real agent process also holds
from footfall.edge_agent.agent import Agent
from footfall.edge_agent.config import AgentConfig
def status(field):
    # VmHWM/VmRSS of this process image: ru_maxrss would carry the parent's peak across exec.
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
base = status("VmRSS")
devices, rounds = int(sys.argv[1]), int(sys.argv[2])
rt = bytes.fromhex("00000f002e00000010") + struct.pack("<BHH", 2, 2437, 0xA0)
ies = bytes.fromhex(
    "000001040204 0b16 32080c1218243048606c 030106"
    "2d1a2d4017ff000000000000000000000000000000000000000000 7f080000080400000040".replace(" ", "")
)
def frames():
    t = 1_700_000_000.0
    for r in range(rounds):
        for i in range(devices):
            mac = bytes((0x02 | (i & 0xFC) & 0xFE,)) + i.to_bytes(5, "big")
            mpdu = b"\x40\x00\x00\x00" + b"\xff" * 6 + mac + b"\xff" * 6 + struct.pack("<H", (r & 0xFFF) << 4) + ies
            yield t, rt + bytes(((-60 - i % 30) & 0xFF,)) + mpdu + zlib.crc32(mpdu).to_bytes(4, "little")
            t += 0.002
sent = []
agent = Agent(AgentConfig(site="bench", sensor="s1"), lambda k, p: None)
agent.process(frames())
print(json.dumps({"tracked": len(agent.tracker.open), "rss_kb": status("VmRSS"), "peak_kb": status("VmHWM"),
                  "base_kb": base, "frames": agent.frames}))
"""


def rss_with_devices(devices: int) -> dict:
    # Two rounds of every device inside the visit gap: all of them open at once at the end.
    out = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, str(devices), "2"], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(label: str, pcap: Path, scapy_sample: int) -> None:
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
            f"{rate.wall / ts.wall:6.1f}x (wall); target 10x"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--pcap", type=Path, help="use this capture instead of building them")
    ap.add_argument("--scapy-sample", type=int, default=20_000)
    ap.add_argument("--devices", type=int, default=50_000)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="footfall-bench-") as tmp:
        if args.pcap is not None:
            run("given", args.pcap, args.scapy_sample)
        else:
            # Two captures of the same size: the real phones' frames cycled with fresh MACs
            # (a new device every few frames: the sessionizer's worst case), and a simulated
            # crowd of ``--devices`` phones in range at once (the realistic case).
            real = Path(tmp) / "real-cycled.pcap"
            make_bench_pcap(real, args.frames)
            run("real frames, fresh MACs", real, args.scapy_sample)
            real.unlink()
            crowd = Path(tmp) / "crowd.pcap"
            write_pcap(crowd, make_frames(args.frames, seed=1, devices=args.devices), linktype=127)
            run(f"simulated crowd of {args.devices:,}", crowd, args.scapy_sample)
        mem = rss_with_devices(args.devices)
        print(
            f"agent RSS tracking {mem['tracked']:,} concurrent devices: {mem['rss_kb'] / 1024:.1f} MB, "
            f"peak {mem['peak_kb'] / 1024:.1f} MB (interpreter + imports alone: {mem['base_kb'] / 1024:.1f} MB; "
            "target < 40 MB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
