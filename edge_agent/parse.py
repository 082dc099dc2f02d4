"""Probe-request decoding on the hot path: radiotap + 802.11 management header + elements.

Plain ``struct``, no scapy: the agent has to keep up with a busy mall on one router core.
Caches make the common frame cheap:

* radiotap layouts are compiled once per chain of present words, and for each exact radiotap
  prefix a whole-frame decoder is generated (``radiotap.py``);
* the element list (everything after the 24-byte header, FCS stripped) is decoded once per
  distinct list after its SSID element, and a list that differs from one decoded before only
  in the octets that change from probe to probe (the DS channel, the FILS counter...) costs a
  lookup, not a walk (``elements.py``, where the fingerprint is described too);
* ``Probe`` keeps the shared decoded :class:`Elements` by reference and exposes its fields as
  read-only properties, so a frame costs one small object; the agent's loop takes a tuple of
  the six fields it reads instead (:meth:`Parser.sighting_decoders`).

Counters (``Parser.stats``, a snapshot dict): every frame given to ``parse``/``parse_80211``
(or a sighting decoder) ends in exactly one.

* ``ok``: a probe request, returned.
* ``bad_ie``: a probe request whose element list is malformed (an element runs past the end of
  the frame, e.g. FCS present but not flagged): it IS returned, with the elements that parsed
  before the damage and ``Probe.ies_complete`` False. The header fields (addresses, sequence
  number, signal) are intact, and dropping the frame would lose a sighting.
* ``not_probe``: any other frame type/subtype (beacons, data, ACKs...).
* ``truncated``: shorter than its radiotap header says, or a probe request shorter than the
  24-byte management header.
* ``bad_radiotap``: radiotap version not 0, length below 8, present words running past the
  header, or fields running past the header length.
* ``bad_fcs``: the driver flagged a failed FCS check (radiotap flag 0x40): the bytes are corrupt.
* ``oversized``: 802.11 part longer than ``MAX_MPDU`` (2346 octets, FCS included).
* ``garbage``: an unexpected internal error on hostile input (should stay 0; never raised).

Returned frames are ``ok + bad_ie``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from operator import attrgetter

from footfall.edge_agent.bands import freq_to_channel
from footfall.edge_agent.elements import IE_CACHE_BYTES, IE_ENTRY_COST, ElementCache, Elements, decode_elements
from footfall.edge_agent.radiotap import LAYOUT_CACHE_MAX, RT_HDR, Layouts, gen_fast

__all__ = ["Elements", "MAX_MPDU", "Parser", "Probe", "Sighting", "decode_elements", "freq_to_channel"]
__all__ += ["IE_CACHE_BYTES", "IE_ENTRY_COST"]  # the element caches' bound, read by tests and docs

MAX_MPDU = 2346

LINKTYPE_IEEE802_11 = 105
LINKTYPE_RADIOTAP = 127

# frame control byte 1, addr1 (DA), addr2 (SA/TA), addr3 (BSSID), sequence control
_MGMT_HDR = struct.Struct("<xBxx6s6s6sH").unpack_from

_PROBE_REQ_FC0 = 0x40  # version 0, type management, subtype 4
_FLAG_FCS = 0x10
_FLAG_BAD_FCS = 0x40

# (sa, rssi, seq, freq, elements, ssid): a probe request as the agent's loop reads it
Sighting = tuple[bytes, int | None, int, int | None, Elements, bytes]


# ---------------------------------------------------------------------------------------------
# the probe


class Probe:
    """One received probe request.

    ``sa`` is the raw transmitter MAC: only the parsing/identity step may look at it; the
    repr leaves the addresses out so a logged probe cannot leak them. ``ssid`` is this frame's;
    the other element fields (``ie_ids``, ``fingerprint``...) are read through the shared
    :class:`Elements`."""

    __slots__ = (
        "ts",
        "sa",
        "da",
        "bssid",
        "seq",
        "frag",
        "rssi",
        "chain_rssi",
        "freq",
        "chan_flags",
        "flags",
        "tsft",
        "rate",
        "fcs",
        "elements",
        "ssid",
    )

    def __init__(
        self,
        ts: float,
        sa: bytes,
        da: bytes = b"\xff" * 6,
        bssid: bytes = b"\xff" * 6,
        seq: int = 0,
        frag: int = 0,
        rssi: int | None = None,
        chain_rssi: tuple[int, ...] = (),
        freq: int | None = None,
        chan_flags: int | None = None,
        flags: int | None = None,
        tsft: int | None = None,
        rate: int | None = None,
        fcs: bool = False,
        elements: Elements | None = None,
        ssid: bytes | None = None,
    ) -> None:
        self.ts = ts
        self.sa = sa
        self.da = da
        self.bssid = bssid
        self.seq = seq
        self.frag = frag
        self.rssi = rssi
        self.chain_rssi = chain_rssi
        self.freq = freq
        self.chan_flags = chan_flags
        self.flags = flags
        self.tsft = tsft
        self.rate = rate
        self.fcs = fcs
        self.elements = elements if elements is not None else Elements()
        self.ssid = self.elements.ssid if ssid is None else ssid

    ie_ids = property(attrgetter("elements.ie_ids"))
    ext_ids = property(attrgetter("elements.ext_ids"))
    ds_channel = property(attrgetter("elements.ds_channel"))
    rates = property(attrgetter("elements.rates"))
    ext_rates = property(attrgetter("elements.ext_rates"))
    ht_cap = property(attrgetter("elements.ht_cap"))
    vht_cap = property(attrgetter("elements.vht_cap"))
    he_cap = property(attrgetter("elements.he_cap"))
    ext_cap = property(attrgetter("elements.ext_cap"))
    vendors = property(attrgetter("elements.vendors"))
    fingerprint = property(attrgetter("elements.fingerprint"))
    ies_complete = property(attrgetter("elements.complete"))

    @property
    def channel(self) -> int | None:
        """Channel identifier of the radiotap frequency (the sniffer's): see :mod:`.bands`."""
        return freq_to_channel(self.freq)

    def __repr__(self) -> str:
        return (
            f"Probe(ts={self.ts:.6f}, seq={self.seq}, rssi={self.rssi}, freq={self.freq}, "
            f"fingerprint={self.fingerprint}, ies={len(self.ie_ids)})"
        )


# ---------------------------------------------------------------------------------------------
# the parser


# ---------------------------------------------------------------------------------------------
# the parser

_COUNTERS = ("ok", "bad_ie", "not_probe", "truncated", "bad_radiotap", "bad_fcs", "oversized", "garbage")


class _Counts:
    __slots__ = _COUNTERS

    def __init__(self) -> None:
        for k in _COUNTERS:
            setattr(self, k, 0)


def _sighting(p: Probe | None) -> Sighting | None:
    return None if p is None else (p.sa, p.rssi, p.seq, p.freq, p.elements, p.ssid)


class Parser:
    """Stateful (caches + counters) probe-request parser; one per capture stream/thread.

    ``parse``/``parse_80211`` never raise: they return a :class:`Probe` (counted ``ok``, or
    ``bad_ie`` when its element list is damaged) or None with the reason counted.
    ``fast=False`` disables the generated per-layout decoders (tests compare both paths)."""

    def __init__(self, fast: bool = True) -> None:
        self._cnt = _Counts()
        self._layouts = Layouts()
        self._elements = ElementCache()
        self._ies = self._elements.lists  # the caches by their old names (tests check the bounds)
        self._stable = self._elements.stable
        # radiotap prefix (first 8 octets) -> generated decoder of a Probe / of a Sighting
        self._fast: dict[bytes, Callable[[bytes, float], Probe | None]] = {}
        self._sight: dict[bytes, Callable[[bytes, float], Sighting | None]] = {}
        self._use_fast = fast

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the counters (kept as slots: a dict increment costs twice as much)."""
        cnt = self._cnt
        return {k: getattr(cnt, k) for k in _COUNTERS}

    @property
    def total(self) -> int:
        """Frames seen (every frame is in exactly one counter)."""
        return sum(self.stats.values())

    def reset_stats(self) -> None:
        self._cnt.__init__()  # in place: the generated decoders hold this object

    def decoder(self, linktype: int) -> Callable[[bytes, float], Probe | None]:
        """The parse method for a pcap link type (127 radiotap, 105 raw 802.11)."""
        if linktype == LINKTYPE_RADIOTAP:
            return self.parse
        if linktype == LINKTYPE_IEEE802_11:
            return self.parse_80211
        raise ValueError(f"unsupported link type {linktype}: expected 127 (radiotap) or 105 (802.11)")

    def sighting_decoders(
        self, linktype: int
    ) -> tuple[dict[bytes, Callable[[bytes, float], Sighting | None]], Callable[[bytes, float], Sighting | None]]:
        """(decoders by the frame's first 8 octets, the decoder of any other frame) for a pcap
        link type: ``table.get(frame[:8], other)(frame, ts)`` is :meth:`decoder`'s result as a
        :class:`Sighting` (the same counters, the same elements), and never raises.

        The agent's loop calls the generated decoder itself: a call a frame less than through
        :meth:`parse`, and no Probe object. The table fills as prefixes are first seen."""
        if linktype == LINKTYPE_RADIOTAP:
            return self._sight, self._slow_sighting
        if linktype == LINKTYPE_IEEE802_11:
            return {}, lambda buf, ts: _sighting(self.parse_80211(buf, ts))
        raise ValueError(f"unsupported link type {linktype}: expected 127 (radiotap) or 105 (802.11)")

    def _slow_sighting(self, buf: bytes, ts: float) -> Sighting | None:
        try:
            return _sighting(self._slow(buf, ts))
        except Exception:  # hostile bytes must not stop the capture loop
            self._cnt.garbage += 1
            return None

    def _lookup(self, buf: bytes, b: int, end: int) -> tuple[Elements, bytes]:
        """(elements, ssid) of the element list ``buf[b:end]``: the general paths' version of
        what the generated decoders inline."""
        if end > b + 1 and buf[b] == 0 and b + 2 + buf[b + 1] <= end:
            s = b + 2 + buf[b + 1]
            ssid = buf[b + 2 : s]
            tail = buf[s:end]
            el = self._ies.get(tail)
            if el is None:
                el = self._elements.miss(tail, ssid)
            return el, ssid
        el = self._elements.decode(buf[b:end])
        return el, el.ssid

    def _add_fast(self, buf: bytes, rtlen: int, items: list[tuple[str, int, str]], words_end: int) -> None:
        """Generate the fast decoders for this exact radiotap prefix (first sight of it)."""
        if len(self._fast) >= LAYOUT_CACHE_MAX:
            self._fast.clear()
            self._sight.clear()
        cache = self._elements
        ns = {"cnt": self._cnt, "ies_get": cache.lists.get, "miss": cache.miss, "decode": cache.decode}
        tail = buf[8:words_end]
        prefix = buf[:8]
        self._fast[prefix] = gen_fast(items, rtlen, tail, MAX_MPDU, {**ns, "slow": self._slow, "Probe": Probe})
        self._sight[prefix] = gen_fast(items, rtlen, tail, MAX_MPDU, {**ns, "slow": self._slow_sighting}, sighting=True)

    def parse(self, buf: bytes, ts: float) -> Probe | None:
        """Decode one radiotap frame (link type 127); None (and a counter) when not a usable probe."""
        try:
            fast = self._fast.get(buf[:8])
            if fast is not None:
                return fast(buf, ts)
            return self._slow(buf, ts)
        except Exception:  # hostile bytes must not stop the capture loop
            self._cnt.garbage += 1
            return None

    def _slow(self, buf: bytes, ts: float) -> Probe | None:
        """The general radiotap path: every check, any layout; also compiles the fast decoders."""
        cnt = self._cnt
        n = len(buf)
        if n < 8:
            cnt.truncated += 1
            return None
        ver, rtlen, present = RT_HDR(buf, 0)
        if ver or rtlen < 8:
            cnt.bad_radiotap += 1
            return None
        if rtlen > n:
            cnt.truncated += 1
            return None
        lay = self._layouts.get(buf, rtlen, present)
        if lay is None or rtlen < lay.min_len:
            cnt.bad_radiotap += 1
            return None
        if self._use_fast and lay.items is not None and buf[:8] not in self._fast:
            self._add_fast(buf, rtlen, lay.items, lay.words_end)
        tsft, flags, rate, freq, chan_flags, rssi, chains = lay.extract(buf)
        end = n
        fcs = False
        if flags is not None:
            if flags & _FLAG_BAD_FCS:
                cnt.bad_fcs += 1
                return None
            if flags & _FLAG_FCS:
                end -= 4
                fcs = True
        if n - rtlen > MAX_MPDU:
            cnt.oversized += 1
            return None
        if end <= rtlen:
            cnt.truncated += 1
            return None
        if buf[rtlen] != _PROBE_REQ_FC0:
            cnt.not_probe += 1
            return None
        if end - rtlen < 24:
            cnt.truncated += 1
            return None
        fc1, da, sa, bssid, sc = _MGMT_HDR(buf, rtlen)
        start = rtlen + 28 if fc1 & 0x80 else rtlen + 24  # +HTC: 4 bytes of HT control first
        el, ssid = self._lookup(buf, start, end)
        p = Probe(ts, sa, da, bssid, sc >> 4, sc & 15, rssi, chains, freq, chan_flags, flags, tsft, rate, fcs, el, ssid)
        if el.complete:
            cnt.ok += 1
        else:
            cnt.bad_ie += 1
        return p

    def parse_80211(self, buf: bytes, ts: float, fcs: bool = False) -> Probe | None:
        """Decode one bare 802.11 frame (link type 105); ``fcs``: the last 4 bytes are the FCS."""
        cnt = self._cnt
        try:
            n = len(buf)
            if n > MAX_MPDU:
                cnt.oversized += 1
                return None
            end = n - 4 if fcs else n
            if end <= 0:
                cnt.truncated += 1
                return None
            if buf[0] != _PROBE_REQ_FC0:
                cnt.not_probe += 1
                return None
            if end < 24:
                cnt.truncated += 1
                return None
            fc1, da, sa, bssid, sc = _MGMT_HDR(buf, 0)
            el, ssid = self._lookup(buf, 28 if fc1 & 0x80 else 24, end)
            p = Probe(ts, sa, da, bssid, sc >> 4, sc & 15, fcs=fcs, elements=el, ssid=ssid)
            if el.complete:
                cnt.ok += 1
            else:
                cnt.bad_ie += 1
            return p
        except Exception:  # hostile bytes must not stop the capture loop
            cnt.garbage += 1
            return None
