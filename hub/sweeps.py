"""What the radio tells about one phone at one moment: MAC *nodes* and probe *sweeps*.

The hub receives one visit per MAC address and sensor. Before anything is linked, visits are
grouped twice:

1. A **node** is every visit of one device hash (one MAC) until a silence of ``max_gap_s``:
   the same MAC is the same phone, whatever the sensor. A globally administered MAC is a
   phone's identity; a random one lives one scan (Android, iPhone XR, iPhone 7), one channel
   burst of a scan (iPhone 11-15: the real captures change MAC every ~45 ms while sweeping the
   channels), or, with other OSes, a few minutes.
2. A **sweep** is one scan of one phone as the store heard it: consecutive short nodes of the
   same fingerprint that follow each other within ``sweep_gap_s`` (one phone sweeping the
   channels; a burst on channel 1, 45 ms later one on channel 2, ...), never spanning more than
   ``sweep_max_s``, with RSSI that agrees per sensor and channel (two phones of one model
   sweeping at the same moment are told apart by their signal). Sniffers' clocks differ by
   up to a few hundred milliseconds, so nodes may start up to ``sweep_skew_s`` before the
   sweep's last one ended.

A sweep is the unit the tracker (``hub/derandomize.py``) links across time and the unit the
estimators count (``hub/estimate.py``: a passer-by is heard in a sweep or two). Its RSSI is
kept per sensor (``s1``) and per sensor and sniffer channel (``s1/6``: a sensor's radios on
different channels differ by several dB), with the peak per sensor for the inside/outside
model.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from footfall.schema import MAX_BURST_OFFSETS


@dataclass
class Node:
    """All visits of one device hash until a silence longer than ``max_gap_s``."""

    device: str
    fp: str
    ie: tuple[int, ...]
    first: float
    last: float
    seq_first: int | None
    seq_last: int | None
    rssi: dict[str, float]  # sensor and sensor/channel -> mean RSSI
    peak: dict[str, int]  # sensor -> max RSSI
    ssids: frozenset[str]
    randomized: bool
    visit_ids: list[str]


@dataclass
class Sweep:
    """One scan of one phone: one or more short nodes of one fingerprint within a second or so."""

    fp: str
    ie: tuple[int, ...]
    first: float
    last: float
    seq_first: int | None
    seq_last: int | None
    randomized: bool
    nodes: list[Node] = field(default_factory=list)
    ssids: set[str] = field(default_factory=set)
    _sums: dict[str, list[float]] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, node: Node) -> Sweep:
        s = cls(node.fp, node.ie, node.first, node.last, node.seq_first, node.seq_last, node.randomized)
        s.add(node)
        return s

    def add(self, node: Node) -> None:
        if self.nodes:
            self.last = max(self.last, node.last)
            if node.seq_last is not None:
                self.seq_last = node.seq_last
        self.nodes.append(node)
        self.ssids |= node.ssids
        for k, v in node.rssi.items():
            acc = self._sums.get(k)
            if acc is None:
                self._sums[k] = [v, 1.0]
            else:
                acc[0] += v
                acc[1] += 1.0
        for k, v in node.peak.items():
            if v > self.peak.get(k, -999):
                self.peak[k] = v

    @property
    def rssi(self) -> dict[str, float]:
        return {k: s / n for k, (s, n) in self._sums.items()}

    @property
    def device(self) -> str:
        """The device hash that names the sweep: its first MAC's."""
        return self.nodes[0].device

    @property
    def visit_ids(self) -> list[str]:
        return [vid for n in self.nodes for vid in n.visit_ids]


def json_list(value: Any) -> list[Any]:
    """A list column that may arrive as a list or as compact JSON text (sensor_visits rows)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return []
    return value if isinstance(value, list) else []


def rssi_difference(a: Mapping[str, float], b: Mapping[str, float]) -> float | None:
    """Mean absolute RSSI difference over the most specific keys both have (sensor/channel
    before sensor): a sensor's sniffers on different channels differ by several dB."""
    shared = [k for k in a if k in b]
    if not shared:
        return None
    specific = [k for k in shared if "/" in k]
    use = specific or shared
    return sum(abs(a[k] - b[k]) for k in use) / len(use)


def make_node(device: str, group: list[Mapping[str, Any]], trust_la_bit: bool = True) -> Node:
    head = group[0]
    sums: dict[str, list[float]] = defaultdict(list)
    peak: dict[str, int] = {}
    ssids: set[str] = set()
    seq_last_t = float("-inf")
    seq_last = None
    last = float(head["last_seen"])
    for v in group:
        last = max(last, float(v["last_seen"]))
        sensor = v.get("sensor", "")
        rmax = v.get("rssi_max")
        if v.get("rssi_mean") is not None:
            chans = json_list(v.get("channels"))
            if len(chans) == 1:
                sums[sensor].append(float(v["rssi_mean"]))
                sums[f"{sensor}/{chans[0]}"].append(float(v["rssi_mean"]))
            else:
                # Heard by radios on several channels: the copies off the phone's channel come
                # through the neighbour channel's filter 10-25 dB weaker, so their mean says how
                # far the channels are apart, not the phone; the strongest copy is the one on
                # its channel.
                sums[sensor].append(float(rmax if rmax is not None else v["rssi_mean"]))
        if rmax is not None and rmax > peak.get(sensor, -999):
            peak[sensor] = int(rmax)
        ssids.update(s for s in json_list(v.get("ssid_hashes")) if isinstance(s, str))
        if v.get("seq_last") is not None and float(v["last_seen"]) >= seq_last_t:
            seq_last_t = float(v["last_seen"])
            seq_last = v["seq_last"]
    randomized = bool(head.get("randomized", True)) or not trust_la_bit
    return Node(
        device=device,
        fp=head.get("fingerprint") or "",
        ie=tuple(json_list(head.get("ie_ids"))),
        first=float(head["first_seen"]),
        last=last,
        seq_first=head.get("seq_first"),
        seq_last=seq_last,
        rssi={k: sum(x) / len(x) for k, x in sums.items()},
        peak=peak,
        ssids=frozenset(ssids),
        randomized=randomized,
        visit_ids=[v["id"] for v in group],
    )


def nodes_of(visits: Iterable[Mapping[str, Any]], max_gap_s: float, trust_la_bit: bool = True) -> list[Node]:
    """Visits grouped by device hash, split by silences longer than ``max_gap_s``, by start."""
    by_dev: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for v in visits:
        by_dev[v["device"]].append(v)
    nodes: list[Node] = []
    for device, vs in by_dev.items():
        vs.sort(key=lambda v: v["first_seen"])
        group: list[Mapping[str, Any]] = []
        end = float("-inf")
        for v in vs:
            if group and v["first_seen"] - end > max_gap_s:
                nodes.append(make_node(device, group, trust_la_bit))
                group = []
            group.append(v)
            end = max(end, v["last_seen"]) if len(group) > 1 else v["last_seen"]
        nodes.append(make_node(device, group, trust_la_bit))
    nodes.sort(key=lambda n: (n.first, n.device))
    return nodes


@dataclass
class SweepSettings:
    sweep_gap_s: float = 0.35  # next channel of a sweep: 45 ms (iOS) to 230 ms (Android partial scans)
    sweep_max_s: float = 3.0  # a full 13-channel sweep takes 0.3-0.8 s; several seconds is two scans
    sweep_skew_s: float = 0.3  # sniffer clocks disagree by this much
    sweep_rssi_db: float = 12.0  # a phone's sweep does not jump this much from channel to channel


def fits_sweep(sweep: Sweep, node: Node, s: SweepSettings) -> float | None:
    """How well ``node`` continues ``sweep`` (lower is better), or None if it cannot."""
    if node.fp != sweep.fp or not node.randomized or not sweep.randomized:
        return None
    gap = node.first - sweep.last
    if gap < -s.sweep_skew_s or gap > s.sweep_gap_s or node.last - sweep.first > s.sweep_max_s:
        return None
    if node.last - node.first > s.sweep_max_s:
        return None  # a long-lived MAC is not one burst of a sweep
    d = rssi_difference(sweep.rssi, node.rssi)
    if d is not None and d > s.sweep_rssi_db:
        return None
    return max(gap, 0.0) / s.sweep_gap_s + (0.0 if d is None else d / s.sweep_rssi_db)


def scans_of(visits: Iterable[Mapping[str, Any]], join_s: float = 1.0) -> list[tuple[float, dict[str, float]]]:
    """The scans of one device (all its visits, every sensor), from per-burst evidence.

    A version 2 visit lists its bursts' start offsets (the first 64) and its max RSSI per UTC
    minute; a burst takes the RSSI of its minute. Version 1 visits give one scan at their start.
    Bursts that sensors heard within ``join_s`` of each other are one scan. RSSI keys are the
    sensor and sensor/channel, as in a node's RSSI.
    """
    events: list[tuple[float, str, float | None, list[Any]]] = []
    for v in visits:
        first = float(v["first_seen"])
        offsets = json_list(v.get("burst_offsets")) or [0.0]
        minutes = json_list(v.get("rssi_minutes"))
        chans = json_list(v.get("channels"))
        m0 = int(first // 60)
        for off in offsets:
            t = first + float(off)
            i = int(t // 60) - m0
            r = minutes[i] if 0 <= i < len(minutes) else None
            if r is None or r == -128:
                r = v.get("rssi_max") if not minutes else None
            events.append((t, v.get("sensor", ""), None if r is None else float(r), chans))
        if len(offsets) >= MAX_BURST_OFFSETS and minutes:
            # A long stay lists only its first bursts; after them, every minute it was heard
            # (null: not heard; -128: heard without a reading) is one scan, and the last sighting
            # closes it: cut at the 64th burst, a staff phone looked like a 2-hour visitor and a
            # long visit lost its end.
            last = events[-1][0]
            end = float(v.get("last_seen", last))
            for i in range(int(last // 60) - m0 + 1, len(minutes)):
                r = minutes[i]
                if r is not None:
                    t = min((m0 + i) * 60.0 + 30.0, end)
                    events.append((t, v.get("sensor", ""), None if r == -128 else float(r), chans))
                    last = t
            if end > last + join_s:
                r = minutes[-1]
                events.append((end, v.get("sensor", ""), None if r in (None, -128) else float(r), chans))
    events.sort(key=lambda e: e[0])
    scans: list[tuple[float, dict[str, float]]] = []
    for t, sensor, r, chans in events:
        if not scans or t - scans[-1][0] > join_s:
            scans.append((t, {}))
        if r is not None:
            rssi = scans[-1][1]
            rssi[sensor] = max(rssi.get(sensor, -999.0), r)
            if len(chans) == 1:
                key = f"{sensor}/{chans[0]}"
                rssi[key] = max(rssi.get(key, -999.0), r)
    return scans
