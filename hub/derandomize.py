"""Link the randomized MAC addresses of one phone into one device.

A phone that is not connected probes from random, locally administered MACs: a new one for
every scan (Android, iPhone XR) or for every channel burst of a scan (iPhone 11 to 15 in the
real captures: ~13 MACs in half a second). The hub sees one visit per MAC and sensor and has to
decide which belong together. ``hub/sweeps.py`` first groups them into *nodes* (one MAC) and
*sweeps* (one scan of one phone); this module links sweeps across time into devices.

**The tracker.** Sweeps are taken in time order. Each live *track* (a device heard within
``max_gap_s``) may continue with the new sweep; so may nobody, and then the sweep is a new
device. The choice is a likelihood ratio, continuation against a new arrival:

    cost = -log f(dt) - log S(dt | track) - log g(dRSSI) + log(lambda_new * q(RSSI))
           + fingerprint, sequence-counter and SSID terms

- ``f(dt)``: how likely the track's next scan comes ``dt`` after its last (heavy-tailed: a
  phone in use scans every few seconds to a minute, an idle one every few minutes);
- ``S(dt | track)``: how likely the phone is still in range. Someone inside a shop stays: the
  longer a track has been heard, the longer it is expected to stay (``stay_d0_s``); someone
  walking past leaves within ``outside_stay_s``. Which of the two a track is comes from the
  hub's inside/outside model (``inside``), when there is one;
- ``g(dRSSI)``: the sweep's RSSI against the track's recent RSSI per sensor and sniffer
  channel: Laplace with ``rssi_sigma_db`` plus a share of outliers (a phone taken out of a
  pocket jumps 20 dB);
- ``lambda_new * q``: the rate of new devices of this fingerprint (estimated online from the
  births the tracker made in the last ``birth_window_s``, separately for sweeps inside and
  outside), times the density of a new device's RSSI: in a busy street a new sweep is more
  likely a new passer-by; in a quiet shop it is more likely the phone that was there.

Fingerprints: a sweep continues a track of another fingerprint only within
``cross_fp_max_gap_s`` and when its element ids are the same list (the real iPhone 12 and 11-M
alternate between two fingerprints with the same elements; Android phones between directed and
wildcard probes). Strong evidence on top: the 12-bit sequence counter continuing within
``seq_window`` counts (iPhone 7 / iOS 15 keeps it across MACs), SSIDs asked for by name in
common (or none in common when both ask).

**Where in doubt.** A track that has been heard for ``rekey_after_s`` (30 min) and whose best
continuation holds less than ``rekey_below`` of the posterior (over every candidate track and
"a new device") goes on under a new key: the tracker still follows the phone, but does not bet
one person's key on a coin toss. Only the identity pass does this (``identity_rekey_below``,
0.7); the estimation pass joins and its figures correct for it. Why long tracks only: on the
simulated stores the tracks in doubt whose best continuation was the wrong phone had been heard
for 35 to 57 minutes (medians over seeds 14, 17 and 26, 32 to 64 scans), the right ones for
40 s to 2 minutes: a chain of shoppers of one model, grown by the stay term (a track heard
longer is expected to stay longer), not one shopper. A random-MAC phone heard for half an hour
in a shop is rarer than such a chain; a cut costs completeness, a wrong join homogeneity and
gives one person another's visits. Chosen on the tuning seeds (0.5 to 0.9, 900 to 3,600 s),
with the real captures' aligned clock (phones lying still for up to two hours, where doubts are
about the right track as often as not) as the bound that ruled out 0.8 and 900 s:
docs/device-estimation.md.

Causal and incremental: a sweep's device depends only on what started before it (plus the
sweep's own nodes, decided when the sweep closes or the batch ends), so feeding visits in
batches gives the same keys as one pass, and a key never changes once given. A device's key
is the device hash of its first MAC. What the keys give (unique devices over a time range, the
hub's device estimator, the sessions of one device) is in ``hub/linked_devices.py``.

Honest limits: two phones of one model inside at the same time are told apart by their signal
only; with signal that varies by several dB from scan to scan (bodies, pockets) their tracks
can swap. A swap keeps the number of devices right; a departure followed by an arrival of the
same model within minutes can merge two people. ``footfall evaluate`` measures both.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from footfall.hub.link_settings import LinkSettings, LinkStats
from footfall.hub.linkmodel import LinkModel
from footfall.hub.sweeps import Node, Sweep, fits_sweep, nodes_of, rssi_difference

__all__ = ["LinkSettings", "LinkStats", "Linker", "SweepDecision", "link", "link_with_stats", "seq_continues"]

SEQ_MOD = 4096


@dataclass
class _Track:
    key: str
    fps: set[str]
    ie: tuple[int, ...]
    start: float
    last: float
    seq_last: int | None
    rssi: dict[str, float]
    ssids: set[str]
    inside: float = 1.0
    sweeps: int = 1


def seq_continues(prev: int | None, new: int | None, window: int) -> bool:
    """The new MAC's counter a few counts after the old one (modulo 4096)."""
    if prev is None or new is None:
        return False
    return 0 < (new - prev) % SEQ_MOD <= window


@dataclass
class _Pending:
    sweep: Sweep
    key: str | None = None  # decided track, None until the sweep closes


@dataclass
class _Births:
    times: deque = field(default_factory=deque)  # (time, p_inside)
    inside: float = 0.0
    outside: float = 0.0


@dataclass
class SweepDecision:
    """What the tracker decided for a sweep: its device, how likely it was inside, and how likely
    it was a device not heard before (``p_new``: the soft count of devices, unbiased where a hard
    decision has to guess)."""

    sweep: Sweep
    key: str
    p_inside: float
    p_new: float
    rekeyed: bool = False  # the first sweep under a key given to a long track in doubt


class Linker:
    """Causal, incremental tracker: :meth:`feed` visits (dicts) in roughly first-seen order.

    ``inside``, when given, says how likely a sweep was heard from inside the shop (0..1; the
    hub's inside/outside model, ``hub/estimate.py``); without it every sweep counts as inside,
    as for a room of phones.
    """

    def __init__(
        self,
        settings: LinkSettings | None = None,
        inside: Callable[[Sweep], float] | None = None,
        record: bool = False,
        model: LinkModel | None = None,
    ) -> None:
        self.s = settings or LinkSettings()
        # The site's measured link model (``hub/linkmodel.py``), or None for the default forms.
        self.model = model
        self.decisions: list[SweepDecision] | None = [] if record else None
        self.inside = inside
        self.stats = LinkStats()
        self.mac_key: dict[str, str] = {}  # device hash -> device key
        self._mac_last: dict[str, float] = {}
        self._tracks: dict[str, _Track] = {}
        # Live tracks by fingerprint, element ids and SSID; dicts keep insertion order and a
        # track is re-inserted when extended, so iterating backwards goes latest heard first.
        self._by_fp: dict[str, dict[str, _Track]] = {}
        self._by_ie: dict[tuple[int, ...], dict[str, _Track]] = {}
        self._by_ssid: dict[str, dict[str, _Track]] = {}
        self._expiry: list[tuple[float, str]] = []
        self._open: list[_Pending] = []
        self._births: dict[str, _Births] = {}
        self._inside_share = 0.5  # running share of sweeps heard inside (for the location term)
        self._out: dict[str, str] = {}
        self._rekeyed: dict[str, tuple[str, float]] = {}  # old key -> (new key, when)
        self.now = float("-inf")
        self._next_forget = float("-inf")

    # -- public ------------------------------------------------------------------------------
    def feed(self, visits: Iterable[Mapping[str, Any]]) -> dict[str, str]:
        """Link a batch of visits; returns ``{visit id: device key}`` for the batch."""
        self._out = out = {}
        for node in nodes_of(visits, self.s.max_gap_s, self.s.trust_la_bit):
            self._node(node)
        self._close_sweeps(float("inf"))
        self._out = {}
        return out

    def restore(self, visits: Iterable[Mapping[str, Any]], keys: Mapping[str, str]) -> None:
        """Warm up from visits already linked (hub restart): ``keys`` maps visit id -> device key."""
        for node in nodes_of(visits, self.s.max_gap_s, self.s.trust_la_bit):
            key = next((keys[i] for i in node.visit_ids if i in keys), node.device)
            self.mac_key[node.device] = key
            self._mac_last[node.device] = node.last
            if node.randomized:
                self._advance(node.first)
                self._attach(key, Sweep.of(node), self._inside_of(Sweep.of(node)))

    # -- internals ---------------------------------------------------------------------------
    def _advance(self, now: float) -> None:
        if now <= self.now:
            return
        self.now = now
        limit = now - self.s.max_gap_s
        while self._expiry and self._expiry[0][0] < limit:
            last, key = heapq.heappop(self._expiry)
            tr = self._tracks.get(key)
            if tr is None or tr.last != last:
                continue  # extended since: a newer entry is in the heap
            self._drop(tr)
        if now >= self._next_forget:
            limit = now - self.s.mac_memory_s
            for mac in [m for m, t in self._mac_last.items() if t < limit]:
                del self._mac_last[mac]
                self.mac_key.pop(mac, None)
            # No MAC of a key re-keyed this long ago is remembered any more.
            for old in [k for k, (_, t) in self._rekeyed.items() if t < limit]:
                del self._rekeyed[old]
            self._next_forget = now + self.s.mac_memory_s / 4

    def _drop(self, tr: _Track) -> None:
        del self._tracks[tr.key]
        for index, group in ((self._by_fp, fp) for fp in tr.fps):
            d = index.get(group)
            if d is not None:
                d.pop(tr.key, None)
                if not d:
                    del index[group]
        d = self._by_ie.get(tr.ie)
        if d is not None:
            d.pop(tr.key, None)
            if not d:
                del self._by_ie[tr.ie]
        for sid in tr.ssids:
            d = self._by_ssid.get(sid)
            if d is not None:
                d.pop(tr.key, None)
                if not d:
                    del self._by_ssid[sid]

    def _touch(self, tr: _Track) -> None:
        key = tr.key
        for index, group in [(self._by_fp, fp) for fp in tr.fps] + [(self._by_ie, tr.ie)]:
            d = index.setdefault(group, {})  # type: ignore[attr-defined]
            d.pop(key, None)
            d[key] = tr
        for sid in tr.ssids:
            self._by_ssid.setdefault(sid, {})[key] = tr
        heapq.heappush(self._expiry, (tr.last, key))

    def _node(self, node: Node) -> None:
        st = self.stats
        st.nodes += 1
        self._close_sweeps(node.first - self.s.sweep_gap_s)
        self._advance(node.first)
        known = self.mac_key.get(node.device)
        self._mac_last[node.device] = max(self._mac_last.get(node.device, node.last), node.last)
        if known is not None:
            while known in self._rekeyed:
                known = self._rekeyed[known][0]
            # The same MAC again: the same device, whatever the evidence.
            self._assign(node, known)
            if node.randomized:
                self._attach(known, Sweep.of(node), self._inside_of(Sweep.of(node)), extend_only=True)
            return
        if not node.randomized:
            st.stable += 1
            self._assign(node, node.device)
            return
        best: tuple[float, _Pending] | None = None
        for p in self._open:
            fit = fits_sweep(p.sweep, node, self.s)
            if fit is not None and (best is None or fit < best[0]):
                best = (fit, p)
        if best is None:
            st.sweeps += 1
            self._open.append(_Pending(Sweep.of(node)))
            return
        pending = best[1]
        pending.sweep.add(node)
        if pending.key is not None:
            self._assign(node, pending.key)
            tr = self._tracks.get(pending.key)
            if tr is not None:
                self._extend(tr, Sweep.of(node), tr.inside)

    def _close_sweeps(self, before: float) -> None:
        """Decide the open sweeps that ended before ``before``; forget decided ones past joining."""
        keep: list[_Pending] = []
        for p in sorted(self._open, key=lambda p: p.sweep.first):
            if p.sweep.last < before or before == float("inf"):
                if p.key is None:
                    p.key = self._decide(p.sweep)
                if before != float("inf") and p.sweep.last < before - self.s.sweep_gap_s:
                    continue  # no node can join any more
            keep.append(p)
        self._open = keep

    def _assign(self, node: Node, key: str) -> None:
        self.mac_key[node.device] = key
        for vid in node.visit_ids:
            self._out[vid] = key

    def _inside_of(self, sweep: Sweep) -> float:
        return 1.0 if self.inside is None else min(1.0, max(0.0, float(self.inside(sweep))))

    def _birth_rate(self, fp: str, p_in: float, now: float) -> float:
        b = self._births.get(fp)
        prior = self.s.prior_births_per_h / 3600.0
        if b is None:
            return prior
        limit = now - self.s.birth_window_s
        while b.times and b.times[0][0] < limit:
            _, p = b.times.popleft()
            b.inside -= p
            b.outside -= 1.0 - p
        w = self.s.birth_window_s
        # New devices per second: sweeps per second over the sweeps one device makes while here
        # (a visitor many, a passer-by about one). Counting the tracker's own births instead
        # feeds its mistakes back: splits raise the rate, which makes more splits.
        per_visit = self.s.sweeps_per_visitor if self.model is None else self.model.sweeps_per_visitor
        inside = max(b.inside, 0.0) / per_visit
        outside = max(b.outside, 0.0) / self.s.sweeps_per_passerby
        return prior + (p_in * inside + (1.0 - p_in) * outside) / w

    def _cost(self, tr: _Track, sw: Sweep, p_in: float, lam: float) -> tuple[float, bool, bool]:
        """-log of: P(the sweep is the track's next scan) / P(it is a new device); see the module doc."""
        s = self.s
        dt = max(sw.first - tr.last, 0.0)
        heard = tr.last - tr.start + s.stay_d0_s
        stay = tr.inside * heard / (heard + dt) + (1.0 - tr.inside) * math.exp(-dt / s.outside_stay_s)
        if self.model is not None:
            # The site's measured gap density, and the alternative that the phone is silent
            # (still here but not scanning yet, or gone) at dt.
            m = self.model
            silent = stay * (1.0 - m.gap_cdf(dt)) + (1.0 - stay)
            c = -math.log(m.gap_density(dt) * stay / max(silent, 1e-12))
        else:
            c = math.log1p(dt / s.gap_tau_s) + math.log(s.gap_tau_s) - math.log(max(stay, 1e-12))
        if self.inside is not None:
            # Where the sweep was heard from (inside or out) against where the track is: a phone
            # in the shop rarely sounds like the street from one scan to the next.
            pi = min(max(self._inside_share, 0.05), 0.95)
            agree = tr.inside * p_in / pi + (1.0 - tr.inside) * (1.0 - p_in) / (1.0 - pi)
            c -= math.log(max(agree, 1e-6))
        d = rssi_difference(tr.rssi, sw.rssi)
        if d is None:
            c += 0.5 * math.log(s.rssi_span_db)
        else:
            dens = s.rssi_outlier / s.rssi_span_db + (1.0 - s.rssi_outlier) * math.exp(-d / s.rssi_sigma_db) / (
                2.0 * s.rssi_sigma_db
            )
            c -= math.log(dens)
        c += math.log(lam) - math.log(s.rssi_span_db)
        if sw.fp not in tr.fps:
            c += s.cross_fp_cost
        seq = dt <= s.seq_max_gap_s and seq_continues(tr.seq_last, sw.seq_first, s.seq_window)
        if seq:
            c -= s.seq_bonus
        ssid = False
        if sw.ssids and tr.ssids:
            if sw.ssids & tr.ssids:
                ssid = True
                c -= s.ssid_bonus
            else:
                c += s.ssid_mismatch
        # The measured model's correction is for phones inside (it stops visits splitting); a
        # track on the pavement gets none: passers-by must not be joined into one another.
        return c + (s.bias if self.model is None else s.measured_bias * tr.inside), seq, ssid

    def _candidates(self, sw: Sweep) -> list[_Track]:
        s = self.s
        out: dict[str, _Track] = {}
        start = sw.first + s.sweep_skew_s
        n = 0
        for tr in reversed(list(self._by_fp.get(sw.fp, {}).values())):
            if tr.last <= start:
                out[tr.key] = tr
                n += 1
                if n >= s.max_candidates:
                    break
        for tr in reversed(list(self._by_ie.get(sw.ie, {}).values())):
            if sw.first - tr.last > s.cross_fp_max_gap_s:
                break
            if tr.last <= start:
                out.setdefault(tr.key, tr)
        for sid in sw.ssids:
            for tr in self._by_ssid.get(sid, {}).values():
                if tr.last <= start:
                    out.setdefault(tr.key, tr)
        return [tr for tr in out.values() if sw.first - tr.last <= s.max_gap_s]

    def _decide(self, sw: Sweep) -> str:
        st = self.stats
        p_in = self._inside_of(sw)
        lam = self._birth_rate(sw.fp, p_in, sw.first)
        self._inside_share += 0.01 * (p_in - self._inside_share)
        best: tuple[float, _Track, bool, bool] | None = None
        second = float("inf")
        odds = 0.0  # sum over tracks of P(continues that track) / P(new device)
        for tr in self._candidates(sw):
            if sw.fp not in tr.fps and tr.ie != sw.ie and not (sw.ssids & tr.ssids):
                continue
            cost, seq, ssid = self._cost(tr, sw, p_in, lam)
            odds += math.exp(-max(cost, -50.0))
            if best is None or cost < best[0]:
                if best is not None:
                    second = min(second, best[0])
                best = (cost, tr, seq, ssid)
            else:
                second = min(second, cost)
        if (
            best is not None
            and abs(min(second, 0.0) - min(best[0], 0.0)) < self.s.ambiguity_margin
            and (second < 0.0 or best[0] > -self.s.ambiguity_margin)
        ):
            st.ambiguous += 1
        b = self._births.setdefault(sw.fp, _Births())
        b.times.append((sw.first, p_in))
        b.inside += p_in
        b.outside += 1.0 - p_in
        rekeyed = best is not None and best[0] < 0.0 and self._in_doubt(best[0], best[1], odds)
        if rekeyed:
            tr = best[1]
            st.new_devices += 1
            st.rekeys += 1
            key = self._rekey(tr, sw.device)
            self._extend(tr, sw, p_in)
        elif best is None or best[0] >= 0.0:
            st.new_devices += 1
            key = sw.device
            self._attach(key, sw, p_in)
        else:
            _, tr, seq, ssid = best
            st.links += 1
            st.seq_links += seq
            st.ssid_links += ssid
            st.cross_fp_links += sw.fp not in tr.fps
            key = tr.key
            self._extend(tr, sw, p_in)
        for node in sw.nodes:
            self._assign(node, key)
        if self.decisions is not None:
            self.decisions.append(SweepDecision(sw, key, p_in, 1.0 / (1.0 + odds), rekeyed))
        return key

    def _in_doubt(self, cost: float, tr: _Track, odds: float) -> bool:
        """The best continuation of a long track holds less than ``rekey_below`` of the posterior."""
        s = self.s
        if s.rekey_below <= 0.0 or tr.last - tr.start < s.rekey_after_s:
            return False
        return math.exp(-max(cost, -50.0)) < s.rekey_below * (1.0 + odds)

    def _rekey(self, tr: _Track, key: str) -> str:
        """The track goes on under ``key``; its old key keeps what it was given. A MAC of the old
        key heard again follows the track (``_node``)."""
        self._drop(tr)
        self._rekeyed[tr.key] = (key, self.now)
        tr.key = key
        self._tracks[key] = tr
        return key

    def _attach(self, key: str, sw: Sweep, p_in: float, extend_only: bool = False) -> None:
        tr = self._tracks.get(key)
        if tr is not None:
            self._extend(tr, sw, p_in)
            return
        if extend_only and not sw.randomized:
            return
        tr = _Track(key, {sw.fp}, sw.ie, sw.first, sw.last, sw.seq_last, dict(sw.rssi), set(sw.ssids), p_in)
        self._tracks[key] = tr
        self._touch(tr)

    def _extend(self, tr: _Track, sw: Sweep, p_in: float) -> None:
        if sw.last >= tr.last:
            tr.last = sw.last
            if sw.seq_last is not None:
                tr.seq_last = sw.seq_last
        a = self.s.rssi_ema
        for k, r in sw.rssi.items():
            old = tr.rssi.get(k)
            tr.rssi[k] = r if old is None else old + a * (r - old)
        tr.inside += a * (p_in - tr.inside)
        tr.fps.add(sw.fp)
        tr.ssids |= sw.ssids
        tr.sweeps += 1
        self._touch(tr)


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
