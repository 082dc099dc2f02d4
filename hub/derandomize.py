"""Link the randomized MAC addresses of one phone into one device.

A phone that is not connected probes from a fresh locally administered MAC every scan (iOS 16,
Android 10+) or every few minutes (iOS 17, Android sessions). The hub sees one sensor visit per
MAC and has to decide which of them belong together. What it has, per visit (see
``footfall.schema.visit_payload``): the IE fingerprint, first/last seen, the 802.11 sequence
numbers at both ends, RSSI, the channels, keyed hashes of the SSIDs asked for by name, the
typical burst gap.

How (Vanhoef et al. 2016, Martin et al. 2017, "Espresso" 2021 use the same evidence):

1. All visits of one device hash are one *node* (one MAC is one device, whatever the sensor).
   A node of a globally administered MAC is its own device: a burned-in address is an identity.
2. Randomized nodes are processed in time order, per fingerprint (a phone does not change its
   element set between scans; models that do are joined through SSIDs or sequence numbers
   instead, see below). Each fingerprint keeps its *chains*: the devices seen in the last
   ``max_gap_s``. A new node may continue a chain only if it starts after the chain's last
   node ended (``overlap_tol_s`` of slack for sniffer clocks): **two MACs heard at the same
   time are never one device**, so a crowd of identical iPhones cannot collapse into one.
3. Among the chains it may continue, the node takes the cheapest by :func:`link_cost`:

   - time since the chain was last heard (a rotation is "one MAC stops, the next starts");
   - sequence-number continuity: iOS 17 and older iOS keep their 12-bit counter across MAC
     changes, so ``seq_first`` of the new MAC a few counts after ``seq_last`` of the old one
     is near-proof (chance 64/4096 for a random counter);
   - a counter restarting at 0 right after a MAC change (Android session MACs);
   - SSID hashes in common (a device asks for the networks it remembers);
   - RSSI at the same sensor (a phone does not jump 20 dB between two scans a minute apart).

   A node whose best cost is above ``max_cost`` starts a new device. The decision is
   *ambiguous* when the runner-up chain is within ``ambiguity_margin``: :attr:`Linker.stats`
   counts those and :func:`estimate_unique` turns them into its confidence.
4. Nodes of a *different* fingerprint may join a chain only on strong evidence: an SSID in
   common, or sequence continuity within a few seconds (Android phones alternate between a
   broadcast and a directed element set).

The linker is causal: a node's device depends only on nodes that started before it, so
feeding visits in batches (:meth:`Linker.feed`, what the hub does as visits arrive) gives the
same keys as one offline pass over the same visits in the same order, and device keys never
change once given. A device's key is the device hash of its first MAC, so a phone that never
rotates keeps the key the naive counter gives it.

Honest limits: same-model phones that rotate per scan (random sequence number, no SSIDs) leave
only timing and RSSI. Two such phones that come and go minutes apart are joined; one that stays
silent longer than ``max_gap_s`` is split. Both errors are counted in ``footfall evaluate``.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from footfall.hub.devices import MAX_VISIT_S, UniqueEstimate, distinct_keys, visit_filter

SEQ_MOD = 4096
SEQ_SHIFT = 6  # the counter index groups chains by seq_last in buckets of 64
LONG_STAY_S = 4 * 3600.0  # as the agent's long_stay_s: no shopping trip lasts that long


@dataclass
class LinkSettings:
    max_gap_s: float = 600.0  # same as the agent's visit gap: a phone in a pocket probes at least that often
    overlap_tol_s: float = 1.0  # MACs of one scan interleave within a second across sniffers
    gap_scale_s: float = 100.0  # cost 1 per this much silence
    burst_s: float = 2.0  # one scan: MACs of a per-scan phone follow each other within this
    max_cost: float = 3.0
    seq_window: int = 32  # counts a counter may advance between two MACs, plus 0.5 per second
    seq_bonus: float = 4.0
    ssid_bonus: float = 4.0
    ssid_mismatch: float = 1.0
    restart_bonus: float = 1.0
    # A MAC heard across several scans (lived at least ``multi_scan_s``) belongs to a phone that
    # rotates by time (iOS 17: counter kept; Android session: counter from 0). Its successor
    # shows one of those signs; one without them is more likely somebody else.
    multi_scan_s: float = 5.0
    rotation_penalty: float = 2.0
    # A per-scan phone's MACs each live one scan; a long-lived MAC rarely continues such a chain.
    lifetime_penalty: float = 1.0
    rssi_scale_db: float = 2.5
    rssi_max_cost: float = 3.0
    rssi_smooth: float = 0.3  # weight of the newest MAC in the chain's running RSSI
    ambiguity_margin: float = 0.5
    # Same-fingerprint chains looked at per MAC, latest heard first (a mall's crowd of one model
    # must not make linking quadratic); counter and SSID matches are looked up on top of these.
    max_candidates: int = 64
    # How long a MAC's device key is remembered after it was last heard (re-aggregation of
    # recent store visits must find the same key; older MACs are dropped to bound memory).
    mac_memory_s: float = 2 * 86400.0
    # When a single device of this fingerprint has been heard lately, a new MAC of it is far
    # more likely that device rotating than a new arrival of the same model: allow more cost.
    alone_extra_cost: float = 2.0
    # A different fingerprint joins only with SSIDs in common or counter continuity this fast.
    cross_fp_max_gap_s: float = 60.0
    cross_fp_seq_window: int = 16
    # Trust the locally administered bit. Off only for data whose MACs were re-written without
    # preserving it (the anonymized public captures).
    trust_la_bit: bool = True


@dataclass
class _Node:
    """All visits of one device hash (until a silence longer than max_gap_s)."""

    device: str
    fp: str
    first: float
    last: float
    seq_first: int | None
    seq_last: int | None
    rssi: dict[str, float]  # sensor -> mean RSSI
    ssids: frozenset[str]
    randomized: bool


@dataclass
class _Chain:
    key: str
    fps: set[str]
    last: float
    seq_last: int | None
    rssi: dict[str, float]
    ssids: set[str]
    nodes: int = 1
    multi: bool = False  # the latest MAC lived across several scans


@dataclass
class LinkStats:
    nodes: int = 0
    stable: int = 0
    links: int = 0
    seq_links: int = 0
    ssid_links: int = 0
    cross_fp_links: int = 0
    ambiguous: int = 0
    new_devices: int = 0

    @property
    def confidence(self) -> float:
        """Share of randomized MACs whose device was decided without a close runner-up."""
        decided = self.links + self.new_devices
        return 1.0 if decided == 0 else round(1.0 - self.ambiguous / decided, 3)


def _ssid_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return []
    return [s for s in value if isinstance(s, str)] if isinstance(value, list) else []


def seq_continues(prev: int | None, new: int | None, dt: float, window: int) -> bool:
    """The new MAC's counter a few counts after the old one (modulo 4096)."""
    if prev is None or new is None:
        return False
    d = (new - prev) % SEQ_MOD
    return 0 < d <= window + 0.5 * max(dt, 0.0)


def link_cost(chain: _Chain, node: _Node, s: LinkSettings) -> tuple[float, bool, bool]:
    """(cost, sequence continuity, ssid match) of continuing ``chain`` with ``node``."""
    dt = max(node.first - chain.last, 0.0)
    cost = dt / s.gap_scale_s
    seq = seq_continues(chain.seq_last, node.seq_first, dt, s.seq_window)
    restart = False
    if seq:
        cost -= s.seq_bonus
    elif node.seq_first is not None and node.seq_first < 16 and dt < s.max_gap_s:
        cost -= s.restart_bonus
        restart = True
    if chain.multi and not (seq or restart):
        cost += s.rotation_penalty
    elif not chain.multi and chain.nodes > 1 and node.last - node.first >= s.multi_scan_s:
        cost += s.lifetime_penalty
    ssid = False
    if node.ssids and chain.ssids:
        if node.ssids & chain.ssids:
            ssid = True
            cost -= s.ssid_bonus
        else:
            cost += s.ssid_mismatch
    best_key = None
    for k in node.rssi:
        if k in chain.rssi and (best_key is None or "/" in k):
            best_key = k
    if best_key is not None:
        # Capped: a phone taken out of a pocket jumps 20-30 dB; that alone must not split it.
        cost += min(abs(node.rssi[best_key] - chain.rssi[best_key]) / s.rssi_scale_db, s.rssi_max_cost)
    return cost, seq, ssid


class Linker:
    """Causal, incremental linker: :meth:`feed` visits (dicts) in roughly first-seen order."""

    def __init__(self, settings: LinkSettings | None = None) -> None:
        self.s = settings or LinkSettings()
        self.stats = LinkStats()
        self.mac_key: dict[str, str] = {}  # device hash -> device key
        self._mac_last: dict[str, float] = {}
        self._by_key: dict[str, _Chain] = {}
        # Live chains (heard within max_gap_s). Dicts keep insertion order and a chain is
        # re-inserted when extended, so iterating one backwards goes from the latest heard.
        self._chains: dict[str, dict[str, _Chain]] = {}  # fingerprint -> chains
        self._recent: dict[str, _Chain] = {}
        self._seq_index: dict[int, dict[str, _Chain]] = defaultdict(dict)  # seq_last >> SEQ_SHIFT
        self._ssid_chains: dict[str, dict[str, _Chain]] = defaultdict(dict)
        self._expiry: list[tuple[float, str]] = []  # (last seen, key): retire silent chains
        self.now = float("-inf")
        self._next_forget = float("-inf")

    # -- public ------------------------------------------------------------------------------
    def feed(self, visits: Iterable[Mapping[str, Any]]) -> dict[str, str]:
        """Link a batch of visits; returns ``{visit id: device key}`` for the batch."""
        out: dict[str, str] = {}
        for node, ids in self._nodes(visits):
            key = self._place(node)
            for vid in ids:
                out[vid] = key
        return out

    def restore(self, visits: Iterable[Mapping[str, Any]], keys: Mapping[str, str]) -> None:
        """Warm up from visits already linked (hub restart): ``keys`` maps visit id -> device key."""
        for node, ids in self._nodes(visits):
            key = next((keys[i] for i in ids if i in keys), node.device)
            self.mac_key[node.device] = key
            self._mac_last[node.device] = node.last
            ch = self._by_key.get(key)
            if ch is None:
                if node.randomized:
                    self._new_chain(node, key)
            else:
                self._extend(ch, node)

    # -- internals ---------------------------------------------------------------------------
    def _nodes(self, visits: Iterable[Mapping[str, Any]]) -> list[tuple[_Node, list[str]]]:
        by_dev: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for v in visits:
            by_dev[v["device"]].append(v)
        gap = self.s.max_gap_s
        nodes: list[tuple[_Node, list[str]]] = []
        for device, vs in by_dev.items():
            vs.sort(key=lambda v: v["first_seen"])
            group: list[Mapping[str, Any]] = []
            end = float("-inf")
            for v in vs:
                if group and v["first_seen"] - end > gap:
                    nodes.append((self._node(device, group), [g["id"] for g in group]))
                    group = []
                group.append(v)
                end = max(end, v["last_seen"]) if len(group) > 1 else v["last_seen"]
            nodes.append((self._node(device, group), [g["id"] for g in group]))
        nodes.sort(key=lambda n: (n[0].first, n[0].device))
        return nodes

    def _node(self, device: str, group: list[Mapping[str, Any]]) -> _Node:
        head = group[0]
        tail = max(group, key=lambda v: v["last_seen"])
        rssi: dict[str, list[float]] = defaultdict(list)
        ssids: set[str] = set()
        for v in group:
            if v.get("rssi_mean") is not None:
                # Per sensor and, when the visit stayed on one channel, per channel too: a
                # sensor's radios (or sniffers) on different channels differ by several dB.
                sensor = v.get("sensor", "")
                rssi[sensor].append(float(v["rssi_mean"]))
                chans = v.get("channels")
                if isinstance(chans, str):
                    chans = json.loads(chans or "[]")
                if chans and len(chans) == 1:
                    rssi[f"{sensor}/{chans[0]}"].append(float(v["rssi_mean"]))
            ssids.update(_ssid_list(v.get("ssid_hashes")))
        randomized = bool(head.get("randomized", True)) or not self.s.trust_la_bit
        return _Node(
            device=device,
            fp=head.get("fingerprint") or "",
            first=float(head["first_seen"]),
            last=float(tail["last_seen"]),
            seq_first=head.get("seq_first"),
            seq_last=tail.get("seq_last"),
            rssi={k: sum(x) / len(x) for k, x in rssi.items()},
            ssids=frozenset(ssids),
            randomized=randomized,
        )

    def _retire(self, now: float) -> None:
        limit = now - self.s.max_gap_s
        while self._expiry and self._expiry[0][0] < limit:
            last, key = heapq.heappop(self._expiry)
            ch = self._by_key.get(key)
            if ch is None or ch.last != last:
                continue  # extended since: a newer entry is in the heap
            del self._by_key[key]
            del self._recent[key]
            for fp in ch.fps:
                chains = self._chains[fp]
                del chains[key]
                if not chains:
                    del self._chains[fp]
            self._unindex_seq(ch)
            for sid in ch.ssids:
                d = self._ssid_chains.get(sid)
                if d is not None:
                    d.pop(key, None)
                    if not d:
                        del self._ssid_chains[sid]

    def _forget(self, now: float) -> None:
        # Bounded memory on a hub that runs for months: MACs silent for mac_memory_s are
        # dropped (a random MAC does not come back; a global one gets its own hash as key anyway).
        limit = now - self.s.mac_memory_s
        for mac in [m for m, t in self._mac_last.items() if t < limit]:
            del self._mac_last[mac]
            self.mac_key.pop(mac, None)
        self._next_forget = now + self.s.mac_memory_s / 4

    def _unindex_seq(self, ch: _Chain) -> None:
        if ch.seq_last is not None:
            bucket = self._seq_index.get(ch.seq_last >> SEQ_SHIFT)
            if bucket is not None:
                bucket.pop(ch.key, None)

    def _touch(self, ch: _Chain) -> None:
        key = ch.key
        self._recent.pop(key, None)
        self._recent[key] = ch
        for fp in ch.fps:
            chains = self._chains.setdefault(fp, {})
            chains.pop(key, None)
            chains[key] = ch
        if ch.seq_last is not None:
            self._seq_index[ch.seq_last >> SEQ_SHIFT][key] = ch
        heapq.heappush(self._expiry, (ch.last, key))

    def _new_chain(self, node: _Node, key: str) -> _Chain:
        ch = _Chain(key, {node.fp}, node.last, node.seq_last, dict(node.rssi), set(node.ssids))
        ch.multi = node.last - node.first >= self.s.multi_scan_s
        self._by_key[key] = ch
        for sid in node.ssids:
            self._ssid_chains[sid][key] = ch
        self._touch(ch)
        return ch

    def _extend(self, ch: _Chain, node: _Node) -> None:
        if node.last >= ch.last:
            self._unindex_seq(ch)
            ch.last = node.last
            ch.seq_last = node.seq_last
            ch.multi = node.last - node.first >= self.s.multi_scan_s
        a = self.s.rssi_smooth
        for k, r in node.rssi.items():
            old = ch.rssi.get(k)
            ch.rssi[k] = r if old is None else old + a * (r - old)
        for sid in node.ssids - ch.ssids:
            ch.ssids.add(sid)
            self._ssid_chains[sid][ch.key] = ch
        ch.nodes += 1
        self._touch(ch)

    def _seq_candidates(self, node: _Node) -> list[_Chain]:
        """Chains whose counter continues into the node's (checked here: a crowd fills every bucket)."""
        out: list[_Chain] = []
        seq = node.seq_first
        if seq is None:
            return out
        s = self.s
        lo = seq - int(s.seq_window + 0.5 * s.max_gap_s) - 1
        first = node.first
        for b in range(lo >> SEQ_SHIFT, ((seq - 1) >> SEQ_SHIFT) + 1):
            bucket = self._seq_index.get(b % (SEQ_MOD >> SEQ_SHIFT))
            if not bucket:
                continue
            for ch in bucket.values():
                d = (seq - ch.seq_last) % SEQ_MOD  # type: ignore[operator]
                if 0 < d <= s.seq_window + 0.5 * max(first - ch.last, 0.0):
                    out.append(ch)
        return out

    def _place(self, node: _Node) -> str:
        s = self.s
        st = self.stats
        st.nodes += 1
        if node.first > self.now:
            self.now = node.first
            self._retire(node.first)
            if node.first >= self._next_forget:
                self._forget(node.first)
        known = self.mac_key.get(node.device)
        self._mac_last[node.device] = max(self._mac_last.get(node.device, node.last), node.last)
        if known is not None:
            # The same MAC again: same device, whatever the evidence.
            ch = self._by_key.get(known)
            if ch is not None:
                self._extend(ch, node)
            elif node.randomized:
                self._new_chain(node, known)
            return known
        if not node.randomized:
            st.stable += 1
            self.mac_key[node.device] = node.device
            return node.device
        best: tuple[float, _Chain, bool, bool] | None = None
        second = float("inf")
        start = node.first + s.overlap_tol_s
        same = self._chains.get(node.fp, {})
        live = len(same)  # retired above: every chain left was heard within max_gap_s
        seen: set[str] = set()
        cross = False

        def consider(ch: _Chain, other_fp: bool) -> None:
            nonlocal best, second, cross
            if ch.key in seen or ch.last > start or node.first - ch.last > s.max_gap_s:
                return
            seen.add(ch.key)
            cost, seq, ssid = link_cost(ch, node, s)
            # Other fingerprints only on strong evidence (SSID in common, fast counter continuity).
            if other_fp and not (
                ssid
                or (
                    node.first - ch.last <= s.cross_fp_max_gap_s
                    and seq_continues(ch.seq_last, node.seq_first, 0.0, s.cross_fp_seq_window)
                )
            ):
                return
            if best is None or cost < best[0]:
                if best is not None:
                    second = min(second, best[0])
                best = (cost, ch, seq, ssid)
                cross = other_fp
            elif cost < second:
                second = cost

        # The latest heard chains of this fingerprint first; a crowd is cut at max_candidates.
        n = 0
        # Bonuses a chain could earn besides counter continuity (whose chains are looked up
        # below anyway): once silence alone costs more than the best so far, older chains lose.
        bonus = (s.restart_bonus if node.seq_first is not None and node.seq_first < 16 else 0.0) + (
            s.ssid_bonus if node.ssids else 0.0
        )
        for ch in reversed(same.values()):
            if ch.last > start:
                continue
            if best is not None and (node.first - ch.last) / s.gap_scale_s - bonus > second:
                break
            consider(ch, False)
            n += 1
            if n >= s.max_candidates:
                break
        for ch in self._seq_candidates(node):
            consider(ch, node.fp not in ch.fps)
        for sid in node.ssids:
            for ch in list(self._ssid_chains.get(sid, {}).values()):
                consider(ch, node.fp not in ch.fps)
        max_cost = s.max_cost + (s.alone_extra_cost if live == 1 else 0.0)
        alone = False
        if (best is None or best[0] > max_cost) and not live:
            # A fingerprint nobody shows right now, from a phone that changes element sets
            # between scans (Android directed/broadcast, iOS after a setting change)? Only when
            # the node falls inside one other device's scan burst, or that device is the only
            # one heard lately: in a crowd this never fires, alone it keeps a phone whole.
            near: list[_Chain] = []
            burst = 0
            for ch in reversed(self._recent.values()):
                dt = node.first - ch.last
                if dt > s.cross_fp_max_gap_s or (len(near) >= 2 and dt > s.burst_s):
                    break
                if ch.last > start:
                    continue
                near.append(ch)
                burst += dt <= s.burst_s
            pick = near[0] if burst == 1 else near[0] if len(near) == 1 else None
            if pick is not None:
                alone = True
                cost, _, _ = link_cost(pick, node, s)
                best = (min(cost, max_cost), pick, False, False)
                second = float("inf")
                cross = True
        if best is not None and second - best[0] < s.ambiguity_margin:
            st.ambiguous += 1
        if best is None or best[0] > max_cost:
            st.new_devices += 1
            ch = self._new_chain(node, node.device)
            self.mac_key[node.device] = ch.key
            return ch.key
        cost, ch, seq, ssid = best
        st.links += 1
        st.seq_links += seq
        st.ssid_links += ssid
        st.cross_fp_links += cross
        if cross and (ssid or alone):
            # An SSID in common, or the only device around, makes the chain answer to the other
            # element set for good. A counter coincidence across fingerprints does not: in a
            # crowd, registered, it would snowball into chains that swallow every model.
            ch.fps.add(node.fp)
        self._extend(ch, node)
        self.mac_key[node.device] = ch.key
        return ch.key


def peak_concurrency(intervals: Iterable[tuple[float, float]], tol: float = 0.0) -> int:
    """Most MACs heard at once (overlapping by more than ``tol``): no fewer devices can explain them.

    Unlike a per-fingerprint bound it stays valid for phones that switch element sets.
    """
    peak = 0
    ends: list[float] = []
    for first, last in sorted(intervals):
        while ends and ends[0] <= first + tol:
            heapq.heappop(ends)
        heapq.heappush(ends, last)
        peak = max(peak, len(ends))
    return peak


def link(visits: Iterable[Mapping[str, Any]], settings: LinkSettings | None = None) -> dict[str, str]:
    """Offline: ``{visit id: device key}`` for a list of visit dicts (any order)."""
    vs = sorted(visits, key=lambda v: v["first_seen"])
    return Linker(settings).feed(vs)


def link_with_stats(
    visits: Iterable[Mapping[str, Any]], settings: LinkSettings | None = None
) -> tuple[dict[str, str], LinkStats]:
    vs = sorted(visits, key=lambda v: v["first_seen"])
    linker = Linker(settings)
    return linker.feed(vs), linker.stats


def estimate_unique(
    visits: Iterable[Mapping[str, Any]],
    start: float,
    end: float,
    settings: LinkSettings | None = None,
    keys: Mapping[str, str] | None = None,
    stats: LinkStats | None = None,
) -> UniqueEstimate:
    """Unique devices among visits overlapping ``[start, end)``.

    ``count`` from the linker; ``low``: the fingerprint concurrency bound (visits heard at the
    same time with the same fingerprint must be different devices); ``high``: distinct hashes.
    ``confidence``: share of the linker's decisions in the range without a close runner-up.
    """
    settings = settings or LinkSettings()
    vs = sorted(visits, key=lambda v: v["first_seen"])
    if keys is None:
        keys, stats = link_with_stats(vs, settings)
    inside = [v for v in vs if v["first_seen"] < end and v["last_seen"] >= start]
    stable = {v["device"] for v in inside if v.get("randomized", True) in (False, 0) and settings.trust_la_bit}
    rand = [v for v in inside if v["device"] not in stable]
    low = peak_concurrency([(v["first_seen"], v["last_seen"]) for v in rand], settings.overlap_tol_s)
    high = len({v["device"] for v in rand})
    count = len({keys[v["id"]] for v in rand})
    count = max(low, min(count, high))
    confidence = stats.confidence if stats is not None else 1.0
    return UniqueEstimate(
        count=len(stable) + count,
        low=len(stable) + low,
        high=len(stable) + high,
        confidence=confidence,
        stable=len(stable),
        randomized=count,
    )


class LinkingEstimator:
    """The hub's :class:`footfall.hub.devices.DeviceEstimator` backed by :class:`Linker`.

    ``device_key`` links each sensor visit as ingest hands it over (arrival order is close to
    first-seen order: an agent publishes a visit when it closes). A MAC seen before keeps its
    key, so re-aggregating a store visit is stable. When the row handed over lacks the linking
    evidence (``hub/merge.py`` passes a subset of columns), the full ``sensor_visits`` row is
    read through ``conn``. :meth:`warm` rebuilds the live chains after a restart.
    """

    name = "linker-v1"
    EVIDENCE = ("seq_first", "seq_last", "rssi_mean", "ssid_hashes", "channels", "fingerprint")

    def __init__(self, settings: LinkSettings | None = None, conn: sqlite3.Connection | None = None) -> None:
        self.linker = Linker(settings)
        self.conn = conn

    def device_key(self, sensor_visit: Mapping[str, Any]) -> str:
        known = self.linker.mac_key.get(sensor_visit["device"])
        if known is not None:
            return known
        visit: Mapping[str, Any] = sensor_visit
        if self.conn is not None and any(k not in sensor_visit for k in self.EVIDENCE):
            cur = self.conn.execute(
                "SELECT * FROM sensor_visits WHERE first_seen = ? AND id = ?",
                (sensor_visit["first_seen"], sensor_visit["id"]),
            )
            row = cur.fetchone()
            if row is not None:
                names = [d[0] for d in cur.description]
                visit = {**dict(zip(names, row, strict=True)), **dict(sensor_visit)}
        return self.linker.feed([visit])[sensor_visit["id"]]

    def warm(self, conn: sqlite3.Connection, now: float) -> int:
        """Reload the sensor visits of the last ``max_gap_s`` with the keys they were given."""
        since = now - self.linker.s.max_gap_s - MAX_VISIT_S / 24
        cur = conn.execute(
            """SELECT s.*, v.device_key FROM sensor_visits s JOIN visits v ON v.id = s.visit_id
               WHERE s.first_seen >= ? AND s.last_seen >= ? ORDER BY s.first_seen""",
            (since - MAX_VISIT_S, since),
        )
        names = [d[0] for d in cur.description]
        visits = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        self.linker.restore(visits, {v["id"]: v["device_key"] for v in visits})
        return len(visits)

    def estimate_unique(
        self,
        conn: sqlite3.Connection,
        start: float,
        end: float,
        *,
        visitors_only: bool = False,
        include_excluded: bool = False,
        zone: str | None = None,
    ) -> UniqueEstimate:
        cond, args = visit_filter(start, end, visitors_only=visitors_only, include_excluded=include_excluded, zone=zone)
        stable = distinct_keys(conn, cond, args, randomized=False)
        linked = distinct_keys(conn, cond, args, randomized=True)
        rows = conn.execute(
            f"SELECT v.first_seen, v.last_seen FROM visits v WHERE v.randomized = 1 AND {cond}", args
        ).fetchall()
        low = peak_concurrency([(r[0], r[1]) for r in rows], self.linker.s.overlap_tol_s)
        high = conn.execute(
            f"SELECT count(DISTINCT v.device) FROM visits v WHERE v.randomized = 1 AND {cond}", args
        ).fetchone()[0]
        count = max(low, min(linked, high))
        return UniqueEstimate(
            count=stable + count,
            low=stable + low,
            high=stable + high,
            confidence=self.linker.stats.confidence,
            stable=stable,
            randomized=count,
        )


@dataclass
class DeviceSession:
    """One device's presence, re-built from the visits of all its MACs (the store visit of a person)."""

    device_key: str
    first_seen: float
    last_seen: float
    inside_s: float
    visits: int
    visitor: bool
    long_stay: bool = False  # staff or fixed equipment: the hub leaves these out of footfall

    @property
    def dwell_s(self) -> float:
        return self.last_seen - self.first_seen


def device_sessions(
    visits: Iterable[Mapping[str, Any]],
    keys: Mapping[str, str],
    *,
    gap_s: float = 600.0,
    inside_rssi: int = -70,
    inside_gap_s: float = 180.0,
    min_inside_s: float = 60.0,
) -> list[DeviceSession]:
    """Visits of one device key (all its MACs, all sensors) -> sessions split by ``gap_s`` silences.

    The visitor/passer-by line has to be drawn again here: a phone that rotates its MAC every
    scan sends each MAC for a fraction of a second, so no single MAC visit has inside time.
    Same rule as the agent (``edge_agent/visits.py``): strong sightings (``rssi_max`` at least
    ``inside_rssi``) at most ``inside_gap_s`` apart chain into inside time.
    """
    by_key: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for v in visits:
        by_key[keys.get(v["id"], v["device"])].append(v)
    out: list[DeviceSession] = []
    for key, vs in by_key.items():
        vs.sort(key=lambda v: v["first_seen"])
        group: list[Mapping[str, Any]] = []
        end = float("-inf")
        for v in vs:
            if group and v["first_seen"] - end > gap_s:
                out.append(_session(key, group, inside_rssi, inside_gap_s, min_inside_s))
                group = []
            group.append(v)
            end = max(end, v["last_seen"]) if len(group) > 1 else v["last_seen"]
        if group:
            out.append(_session(key, group, inside_rssi, inside_gap_s, min_inside_s))
    return out


def _session(
    key: str, group: list[Mapping[str, Any]], inside_rssi: int, inside_gap_s: float, min_inside_s: float
) -> DeviceSession:
    # Inside time: the agent's own figure for MACs that lived long enough to have one (per
    # sensor summed, the best sensor taken: sensors hear the same minutes), or the strong short
    # MACs chained with gaps of at most inside_gap_s, whichever is larger.
    per_sensor: dict[str, float] = defaultdict(float)
    spans: list[tuple[float, float]] = []
    for v in group:
        per_sensor[v.get("sensor", "")] += float(v.get("inside_s") or 0.0)
        rmax = v.get("rssi_max")
        if rmax is not None and rmax >= inside_rssi and v["last_seen"] - v["first_seen"] <= inside_gap_s:
            spans.append((float(v["first_seen"]), float(v["last_seen"])))
    chained = 0.0
    if spans:
        spans.sort()
        lo, hi = spans[0]
        for a, b in spans[1:]:
            if a - hi <= inside_gap_s:
                hi = max(hi, b)
            else:
                chained += hi - lo
                lo, hi = a, b
        chained += hi - lo
    inside = max(chained, max(per_sensor.values(), default=0.0))
    return DeviceSession(
        device_key=key,
        first_seen=float(group[0]["first_seen"]),
        last_seen=max(float(v["last_seen"]) for v in group),
        inside_s=inside,
        visits=len(group),
        visitor=inside >= min_inside_s,
        long_stay=any(v.get("long_stay") for v in group)
        or max(float(v["last_seen"]) for v in group) - float(group[0]["first_seen"]) >= LONG_STAY_S,
    )
