"""Benchmark frames with the properties of a busy shop front's air, built from real frames.

A benchmark whose frames repeat one element list from a few addresses measures the parser's
caches, not the agent. These frames keep what makes real traffic expensive:

- **Real frames.** Every frame is a frame of the real captures (``../shared/data/probe-captures``,
  eleven phones, iOS 15-16 and Android 13): its radiotap header, element list and the
  variation of that list from probe to probe (the Oppo's FILS/extended capabilities and
  directed probes change from frame to frame: 261 distinct element tails in 1,185 frames),
  its sequence counter, its burst timing and its MAC rotation (a fresh address per channel
  burst on the iPhone 11/12, per scan on the others), on the capture's own clock.
- **Many devices, coming and going.** Devices arrive as a Poisson stream and stay a drawn time
  (70 % passers-by, 20-90 s; 30 % visitors, exponential, mean 12 minutes), each replaying a
  window of one phone's capture under addresses of its own, so visits open and close all the
  time and the address tables never stop growing and expiring.
- **Their own SSIDs.** A directed probe carries one of the device's own networks (one to
  three, drawn from a pool with a Zipf head: a few hotspots are common, most home networks
  unique), so per-SSID work (the keyed SSID hash) is not served from a cache of a handful.
- **Many models.** Each device is one of ``MODELS`` models of its phone's chipset family
  (Zipf: the captured phone most often): a model's element lists are the phone's with its own
  HT capabilities and extended-capabilities bits, so the element cache meets hundreds of
  distinct lists, not eleven phones' worth.
- **OS mix.** Android on 60 % of devices (StatCounter, mobile OS share in Russia 2024: Android
  about two thirds), split between the two Android phones; iOS on the rest, over the nine
  iPhones. The Oppo probes for its networks in most scans, so about two thirds of all frames
  carry an SSID (65 % measured; the issue's field traffic had half).

:func:`describe` prints these properties of a generated file, so a reader can check them.
Without the captures (a user's clone) the simulator's frames stand in (same element layouts,
no captured variation), and the output says so.
"""

from __future__ import annotations

import bisect
import heapq
import math
import os
import random
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from footfall.edge_agent.parse import Parser
from footfall.edge_agent.pcapfile import read_frames, write_pcap

REPO = Path(__file__).resolve().parents[2]
CAPTURES = Path(os.environ.get("FOOTFALL_SHARED", REPO.parent / "shared")) / "data" / "probe-captures"
T0 = 1_700_000_000.0
ANDROID_SHARE = 0.6
# Phone models per OS family in the air, Zipf-distributed (rank 1 = the captured phone
# itself): a mall hears hundreds of models; each has its own element lists, so the parser's
# element cache sees as many distinct lists as the field gives it, not eleven phones' worth.
MODELS = 300
# A capture's silence longer than this starts a new piece: iPhone 11-M was recorded twice,
# weeks apart, and a device replaying it must not sit silent for weeks.
PIECE_GAP_S = 3600.0


@dataclass
class _Frame:
    rel: float  # seconds since the start of its piece
    rt: bytes  # radiotap header
    head: bytes  # 802.11 header up to the source address (frame control, duration, DA)
    mid: bytes  # BSSID + sequence control
    mac_index: int  # which of the capture's addresses (in order of first use)
    la: bool  # the original address was locally administered
    ssid: int  # index of the SSID among the capture's (-1: wildcard probe)
    tail: bytes  # the elements after the SSID element
    fcs: bool


@dataclass
class _Template:
    name: str
    android: bool
    frames: list[_Frame]
    times: list[float]
    span: float


def _templates() -> list[_Template]:
    parser = Parser()
    out = []
    for path in sorted(CAPTURES.glob("*.pcap")):
        raw = list(read_frames(path))
        pieces: list[list[tuple[float, bytes]]] = []
        for ts, fr in raw:
            if not pieces or ts - pieces[-1][-1][0] > PIECE_GAP_S:
                pieces.append([])
            pieces[-1].append((ts, fr))
        for piece in pieces:
            macs: dict[bytes, int] = {}
            ssids: dict[bytes, int] = {}
            frames = []
            start = piece[0][0]
            for ts, fr in piece:
                p = parser.parse(fr, ts)
                if p is None:
                    continue
                rtlen = fr[2] | (fr[3] << 8)
                end = len(fr) - 4 if p.fcs else len(fr)
                mpdu = fr[rtlen:end]
                body = mpdu[24:]
                if len(body) < 2 or body[0] != 0:
                    continue
                ssid = body[2 : 2 + body[1]]
                sa = mpdu[10:16]
                frames.append(
                    _Frame(
                        ts - start,
                        fr[:rtlen],
                        mpdu[:10],
                        mpdu[16:24],
                        macs.setdefault(sa, len(macs)),
                        bool(sa[0] & 0x02),
                        ssids.setdefault(ssid, len(ssids)) if ssid else -1,
                        body[2 + body[1] :],
                        p.fcs,
                    )
                )
            if len(frames) > 20:
                name = path.stem.split("_")[0]
                android = not name.startswith("iPhone")
                out.append(_Template(name, android, frames, [f.rel for f in frames], frames[-1].rel))
    return out


class _Zipf:
    """Ranks 1..n drawn with weight 1/rank (approximately: rank = exp(u * H_n))."""

    def __init__(self, rnd: random.Random, n: int) -> None:
        self.rnd = rnd
        self.n = n
        self.h = math.log(n) + 0.5772

    def draw(self) -> int:
        return min(self.n, int(math.exp(self.rnd.random() * self.h)))


class _Pool(_Zipf):
    """SSIDs: a few hotspots common, most home networks unique."""

    def __init__(self, rnd: random.Random, n: int = 200_000) -> None:
        super().__init__(rnd, n)

    def draw_ssid(self) -> bytes:
        rank = self.draw()
        return b"net-%06d" % rank if rank > 50 else b"Free_WiFi_%02d" % rank


def _address(rnd: random.Random, la: bool) -> bytes:
    if la:
        return bytes([(rnd.randrange(256) & 0xFC) | 0x02]) + rnd.randbytes(5)
    # a globally administered address: a real-looking OUI (unicast, universal) and a random NIC part
    return bytes([rnd.randrange(256) & 0xFC]) + rnd.randbytes(5)


def _variant(tail: bytes, model: int, cache: dict[tuple[bytes, int], bytes]) -> bytes:
    """The element list as another model of the same chipset family would send it: the HT
    capabilities info and the last extended-capabilities octet carry the model number (model 0
    is the captured phone itself). Lengths and element order stay, so parsing costs the same."""
    if not model:
        return tail
    out = cache.get((tail, model))
    if out is None:
        buf = bytearray(tail)
        i = 0
        while i + 2 <= len(buf):
            eid, ln = buf[i], buf[i + 1]
            if eid == 45 and ln >= 2:
                buf[i + 2 : i + 4] = (model * 40503 & 0xFFFF).to_bytes(2, "little")
            elif eid == 127 and ln >= 1:
                buf[i + 1 + ln] = model & 0xFF
            i += 2 + ln
        out = cache[(tail, model)] = bytes(buf)
    return out


def _device(
    rnd: random.Random,
    tpl: _Template,
    pool: _Pool,
    arrive: float,
    stay: float,
    model: int = 0,
    variants: dict[tuple[bytes, int], bytes] | None = None,
) -> Iterator[tuple[float, bytes]]:
    variants = {} if variants is None else variants
    offset = rnd.uniform(0, tpl.span)
    k = bisect.bisect_left(tpl.times, offset)
    n = len(tpl.frames)
    own_ssids = [pool.draw_ssid() for _ in range(rnd.randint(1, 3))]
    macs: dict[int, bytes] = {}
    elapsed = 0.0
    lap = 0.0
    while True:
        if k >= n:  # wrap around: the capture played again, its first frame right after its last
            k = 0
            lap += tpl.span + 1.0
        f = tpl.frames[k]
        t = f.rel + lap - offset
        if t < elapsed:  # only on the first wrap, when the offset fell after the last frame
            t = elapsed
        if t > stay:
            return
        elapsed = t
        sa = macs.get(f.mac_index)
        if sa is None:
            sa = macs[f.mac_index] = _address(rnd, f.la)
        ssid = b"" if f.ssid < 0 else own_ssids[f.ssid % len(own_ssids)]
        mpdu = f.head + sa + f.mid + bytes((0, len(ssid))) + ssid + _variant(f.tail, model, variants)
        yield arrive + t, f.rt + mpdu + (struct.pack("<I", zlib.crc32(mpdu)) if f.fcs else b"")
        k += 1


def mix_frames(frames: int, at_once: int = 3000, seed: int = 1) -> Iterator[tuple[float, bytes]]:
    """``frames`` frames in time order, about ``at_once`` devices in range at a time."""
    templates = _templates()
    if not templates:
        from footfall.tools.simulator import make_frames

        yield from make_frames(frames, seed=seed, devices=at_once)
        return
    rnd = random.Random(seed)
    pool = _Pool(rnd)
    models = _Zipf(rnd, MODELS)
    variants: dict[tuple[bytes, int], bytes] = {}
    android = [t for t in templates if t.android]
    ios = [t for t in templates if not t.android]
    mean_stay = 0.7 * 55 + 0.3 * 720
    rate = at_once / mean_stay  # arrivals per second that keep ``at_once`` in range
    heap: list[tuple[float, int, bytes, Iterator[tuple[float, bytes]]]] = []
    arrive = T0
    uid = 0
    # Start with the steady state: ``at_once`` devices already in range, part-way through.
    warm = [(T0 - rnd.uniform(0, mean_stay), True) for _ in range(at_once)]
    made = 0
    next_arrival = T0

    def start(when: float) -> None:
        nonlocal uid
        tpl = rnd.choice(android if android and rnd.random() < ANDROID_SHARE else ios or android)
        stay = rnd.uniform(20, 90) if rnd.random() < 0.7 else rnd.expovariate(1 / 720)
        it = _device(rnd, tpl, pool, when, stay, models.draw() - 1, variants)
        first = next(it, None)
        if first is not None:
            uid += 1
            heapq.heappush(heap, (first[0], uid, first[1], it))

    for when, _ in warm:
        start(when)
    while made < frames:
        while next_arrival <= (heap[0][0] if heap else next_arrival):
            start(next_arrival)
            next_arrival += rnd.expovariate(rate)
        ts, u, fr, it = heapq.heappop(heap)
        if ts >= arrive:  # frames of warm-start devices from before T0 are skipped
            arrive = ts
            made += 1
            yield ts, fr
        nxt = next(it, None)
        if nxt is not None:
            heapq.heappush(heap, (nxt[0], u, nxt[1], it))


def make_mix_pcap(path: str | os.PathLike[str], frames: int = 1_000_000, at_once: int = 3000, seed: int = 1) -> int:
    return write_pcap(path, mix_frames(frames, at_once, seed), linktype=127)


def describe(path: str | os.PathLike[str]) -> dict[str, float]:
    """The properties the module docstring promises, measured on a written file."""
    parser = Parser()
    n = with_ssid = 0
    macs: set[bytes] = set()
    tails: set[bytes] = set()
    ssids: set[bytes] = set()
    first = last = None
    for ts, fr in read_frames(path):
        p = parser.parse(fr, ts)
        if p is None:
            continue
        n += 1
        first = ts if first is None else first
        last = ts
        macs.add(p.sa)
        rtlen = fr[2] | (fr[3] << 8)
        body = fr[rtlen + 24 : len(fr) - 4 if p.fcs else len(fr)]
        if body[:1] == b"\x00" and body[1]:
            with_ssid += 1
            ssids.add(body[2 : 2 + body[1]])
        tails.add(body[2 + body[1] :])
    span = (last or 0) - (first or 0)
    return {
        "frames": n,
        "seconds": span,
        "frames_per_s": n / span if span else 0.0,
        "addresses": len(macs),
        "ssid_share": with_ssid / n if n else 0.0,
        "distinct_ssids": len(ssids),
        "distinct_element_lists": len(tails),
    }
