"""Probe-request decoding on the hot path: radiotap + 802.11 management header + elements.

Plain ``struct``, no scapy: the agent has to keep up with a busy mall on one router core.
Caches make the common frame cheap:

* radiotap layouts are compiled once per distinct tuple of present words into one
  ``struct.Struct`` (with pad bytes for the fields we skip) plus a tiny generated extractor;
* for each exact radiotap prefix (version, length, present words) a whole-frame decoder is
  generated: one ``unpack_from`` reads the kept radiotap fields and the management header
  together, and the Probe is filled without branching on which fields exist. It makes the
  same checks in the same order as the general path (tests run both on real, synthetic and
  mutated frames) and hands anything unusual (short frames) back to it;
* the element list (everything after the 24-byte header, FCS stripped) is decoded once per
  distinct list *after its SSID element*: a device repeats the same few lists, so decoding and
  the fingerprint hash are paid once per list, not per frame. The SSID is left out of the key
  because it is what differs most between devices of one model (each asks for its own
  networks): keyed with it, a crowd's directed probes made every phone's lists distinct. The
  frame's SSID is ``Probe.ssid``. Bounded in bytes (``IE_CACHE_BYTES``), not entries;
* ``Probe`` keeps the shared decoded :class:`Elements` by reference and exposes its fields as
  read-only properties, so a frame costs one small object.

Counters (``Parser.stats``, a snapshot dict): every frame given to ``parse``/``parse_80211``
ends in exactly one.

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

Radiotap: extended present bitmaps are followed (bit 31), radiotap-namespace resets (bit 29)
restart the bit numbering as the spec says, vendor namespaces (bit 30) are skipped with their
``skip_length``; fields are aligned to their natural size relative to the header start. An
unknown field stops field decoding (its size is unknowable) but keeps what was read. ``rssi`` is
the first dBm antenna signal; ``chain_rssi`` holds the dBm antenna signals of the 2nd+ present
words (per-chain values as Linux mac80211 writes them).

Fingerprint (``Elements.fingerprint``, 16 hex chars, blake2b-64): what identifies the device
model/configuration across MAC rotation. It hashes the ordered element list (id; extension id
for 255; OUI and type for 221) and the content of every element except the ones that change
from probe to probe:

* SSID (0) - which network is asked for; DS parameter set (3) - the channel being scanned;
* FILS request parameters (255/2) - counts up per probe on the Android captures;
* the current operating class byte of Supported Operating Classes (59) - follows the channel;
* the UUID-E attribute of the WPS element (OUI 00:50:f2 type 4) and the whole Wi-Fi P2P
  element (50:6f:9a type 9): both can embed a (randomised) MAC address.

On the 11 real captures this gives 1-3 distinct fingerprints per device file (Oppo 3, S21 2,
iPhone 11 B/C/F/M 2/1/1/3, iPhone 12 2, 12 Pro 1, iPhone 7 1, XR A/L 1/2; printed by
``tests/test_parse.py``), and within a file every MAC but one keeps a single fingerprint: the
variants are modes (band, power save), not per-frame noise. Same-model phones on the same OS share a
fingerprint (all iPhone 11/12 on iOS 16.4 do): it narrows who a device can be, it is not an
identity. Elements that vary by mode but not per frame (HT capabilities in power-save, extended
capabilities bits) are kept: they separate models more than they split one device.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from hashlib import blake2b
from operator import attrgetter

from footfall.edge_agent.bands import freq_to_channel

__all__ = ["Elements", "MAX_MPDU", "Parser", "Probe", "decode_elements", "freq_to_channel"]

MAX_MPDU = 2346
# What the element caches may hold, in key octets plus a per-entry charge for the decoded
# objects: the field's element lists are a few hundred bytes and a few hundred distinct ones an
# hour, while someone in radio range can send 2.3 KB of fresh elements with every frame (a count
# bound of 65,536 entries let such a flood take the agent to 400 MB).
IE_CACHE_BYTES = 2 * 1024 * 1024
IE_ENTRY_COST = 600
LAYOUT_CACHE_MAX = 1024

LINKTYPE_IEEE802_11 = 105
LINKTYPE_RADIOTAP = 127

_RT_HDR = struct.Struct("<BxHI").unpack_from
# frame control byte 1, addr1 (DA), addr2 (SA/TA), addr3 (BSSID), sequence control
_MGMT_HDR = struct.Struct("<xBxx6s6s6sH").unpack_from
_U16 = struct.Struct("<H").unpack_from

_PROBE_REQ_FC0 = 0x40  # version 0, type management, subtype 4
_FLAG_FCS = 0x10
_FLAG_BAD_FCS = 0x40

# radiotap field bit -> (alignment, size): radiotap.org's defined fields (Linux radiotap.c agrees)
_RT_FIELDS: dict[int, tuple[int, int]] = {
    0: (8, 8),  # TSFT
    1: (1, 1),  # Flags
    2: (1, 1),  # Rate
    3: (2, 4),  # Channel: u16 freq, u16 flags
    4: (2, 2),  # FHSS: u8 hop set, u8 hop pattern, aligned as one u16
    5: (1, 1),  # dBm antenna signal
    6: (1, 1),  # dBm antenna noise
    7: (2, 2),  # lock quality
    8: (2, 2),  # TX attenuation
    9: (2, 2),  # dB TX attenuation
    10: (1, 1),  # dBm TX power
    11: (1, 1),  # antenna
    12: (1, 1),  # dB antenna signal
    13: (1, 1),  # dB antenna noise
    14: (2, 2),  # RX flags
    15: (2, 2),  # TX flags
    16: (1, 1),  # RTS retries
    17: (1, 1),  # data retries
    18: (4, 8),  # XChannel
    19: (1, 3),  # MCS
    20: (4, 8),  # A-MPDU status
    21: (2, 12),  # VHT
    22: (8, 12),  # timestamp
    23: (2, 12),  # HE
    24: (2, 12),  # HE-MU
    25: (2, 6),  # HE-MU-other-user
    26: (1, 1),  # 0-length PSDU
    27: (2, 4),  # L-SIG
}
# fields we keep: bit -> (slot, struct code)
_RT_WANTED = {0: ("tsft", "Q"), 1: ("flags", "B"), 2: ("rate", "B"), 3: ("chan", "HH"), 5: ("sig", "b")}
_BIT_RT_NS = 1 << 29
_BIT_VENDOR_NS = 1 << 30
_BIT_EXT = 1 << 31

_EMPTY: tuple = ()


class _Layout:
    """Compiled radiotap layout: bytes needed, an extractor of the 7 values we keep, and (when
    the layout depends on the present words alone) what a fast decoder is generated from."""

    __slots__ = ("min_len", "extract", "items", "words_end")

    def __init__(
        self,
        min_len: int,
        extract: Callable[[bytes], tuple],
        items: list[tuple[str, int, str]] | None = None,
        words_end: int = 8,
    ) -> None:
        self.min_len = min_len
        self.extract = extract
        self.items = items
        self.words_end = words_end


def _present_words(buf: bytes, rtlen: int) -> list[int] | None:
    """The chain of present words, or None when it runs past the header."""
    words = []
    off = 4
    while True:
        if off + 4 > rtlen:
            return None
        (w,) = struct.unpack_from("<I", buf, off)
        words.append(w)
        off += 4
        if not w & _BIT_EXT:
            return words


def _plan(words: list[int], buf: bytes, rtlen: int) -> tuple[list[tuple[str, int, str]], int, bool] | None:
    """Walk the fields: ([(slot, offset, code)], bytes needed, uses vendor namespace).

    None when a vendor namespace header runs past the radiotap header."""
    off = 4 + 4 * len(words)
    need = off
    items: list[tuple[str, int, str]] = []
    seen: set[str] = set()
    in_vendor = False
    vendor_skip = 0
    has_vendor = False
    base = 0  # bit numbering offset within the current namespace
    for k, w in enumerate(words):
        if in_vendor:
            # the vendor's data is opaque: skip_length covers all of it
            off += vendor_skip
            vendor_skip = 0
            need = max(need, off)
        else:
            bits = w & 0x1FFFFFFF
            b = 0
            while bits:
                if bits & 1:
                    spec = _RT_FIELDS.get(base + b)
                    if spec is None:
                        # unknown size: nothing after it can be located, keep what we have
                        return items, need, has_vendor
                    align, size = spec
                    off = (off + align - 1) & ~(align - 1)
                    want = _RT_WANTED.get(base + b)
                    if want is not None:
                        slot, code = want
                        if slot == "sig":
                            items.append(("rssi" if k == 0 else "chain", off, code))
                        elif slot not in seen:
                            seen.add(slot)
                            items.append((slot, off, code))
                    off += size
                    need = off
                bits >>= 1
                b += 1
        if w & _BIT_VENDOR_NS and not w & _BIT_RT_NS:
            off = (off + 1) & ~1
            if off + 6 > rtlen:
                return None
            (vendor_skip,) = _U16(buf, off + 4)
            off += 6
            need = off
            in_vendor = True
            has_vendor = True
            base = 0
        elif w & _BIT_RT_NS:
            in_vendor = False
            base = 0
        else:
            base += 32
    return items, need, has_vendor


def _struct_plan(items: list[tuple[str, int, str]]) -> tuple[str, int, list[str], list[str]]:
    """Struct format (pad bytes for the skipped fields), its size, value names, and the source
    expressions of the 7 kept values (tsft, flags, rate, freq, chan_flags, rssi, chains)."""
    fmt = ["<"]
    cur = 0
    names: list[str] = []
    slots: dict[str, list[str]] = {}
    for slot, off, code in items:
        if off > cur:
            fmt.append(f"{off - cur}x")
        fmt.append(code)
        cur = off + struct.calcsize("<" + code)
        for _ in code:
            name = f"v{len(names)}"
            names.append(name)
            slots.setdefault(slot, []).append(name)
    chains = slots.get("chain", [])
    rssi = slots["rssi"][0] if "rssi" in slots else (chains[0] if chains else "None")
    chan = slots.get("chan", ["None", "None"])
    exprs = [
        slots.get("tsft", ["None"])[0],
        slots.get("flags", ["None"])[0],
        slots.get("rate", ["None"])[0],
        chan[0],
        chan[1],
        rssi,
        "(" + "".join(c + ", " for c in chains) + ")" if chains else "_EMPTY",
    ]
    return "".join(fmt), cur, names, exprs


def _exec(src: str, ns: dict) -> Callable:
    # Generated code because it is the cheapest way to map one struct result onto fixed
    # fields: no per-frame dicts, lookups or branches on which fields a layout has.
    exec(compile(src, "<radiotap-layout>", "exec"), ns)  # noqa: S102 - source built from constants here
    return ns["fn"]


def _compile(items: list[tuple[str, int, str]], need: int) -> _Layout:
    """Radiotap-only extractor for a layout (the general path)."""
    fmt, _, names, exprs = _struct_plan(items)
    if not names:
        const = (None, None, None, None, None, None, _EMPTY)
        return _Layout(need, lambda buf: const)
    src = f"def fn(buf):\n    {', '.join(names)}, = _unpack(buf, 0)\n    return {', '.join(exprs)}\n"
    return _Layout(need, _exec(src, {"_unpack": struct.Struct(fmt).unpack_from, "_EMPTY": _EMPTY}))


def _one_off(items: list[tuple[str, int, str]], need: int) -> _Layout:
    """Extractor for a layout that cannot be cached (vendor namespace lengths live in the data):
    interpreted, so a vendor-namespace stream does not pay a code generation per frame."""
    fmt, _, names, exprs = _struct_plan(items)
    unpack = struct.Struct(fmt).unpack_from
    index = {name: i for i, name in enumerate(names)}

    def value(expr: str, vals: tuple) -> object:
        if expr == "None":
            return None
        if expr == "_EMPTY":
            return _EMPTY
        if expr.startswith("("):
            return tuple(vals[index[x]] for x in expr.strip("(), ").split(", "))
        return vals[index[expr]]

    def extract(buf: bytes) -> tuple:
        vals = unpack(buf, 0)
        return tuple(value(e, vals) for e in exprs)

    return _Layout(need, extract)


_FAST_SRC = """def fn(buf, ts):
    n = len(buf)
    if n < {need}{tail_check}:
        return slow(buf, ts)
    {names}fc0, fc1, da, sa, bssid, sc = _unpack(buf, 0)
{flags_block}
    if n > {max_n}:
        cnt.oversized += 1
        return None
    if fc0 != 64:
        cnt.not_probe += 1
        return None
    if end < {need}:
        cnt.truncated += 1
        return None
    b = {body} if not fc1 & 128 else {body_htc}
    if end > b + 1 and buf[b] == 0 and b + 2 + buf[b + 1] <= end:
        s = b + 2 + buf[b + 1]
        ssid = buf[b + 2:s]
        el = ies_get(buf[s:end])
        if el is None:
            el = decode(buf[b:end], s - b)
    else:
        el = decode(buf[b:end], 0)
        ssid = el.ssid
    p = new(Probe)
    p.ssid = ssid
    p.ts = ts
    p.sa = sa
    p.da = da
    p.bssid = bssid
    p.seq = sc >> 4
    p.frag = sc & 15
    p.rssi = {rssi}
    p.chain_rssi = {chains}
    p.freq = {freq}
    p.chan_flags = {chan_flags}
    p.flags = {flags}
    p.tsft = {tsft}
    p.rate = {rate}
    p.fcs = fcs
    p.elements = el
    if el.complete:
        cnt.ok += 1
    else:
        cnt.bad_ie += 1
    return p
"""

_FLAGS_BLOCK = """    if {flags} & 64:
        cnt.bad_fcs += 1
        return None
    if {flags} & 16:
        end = n - 4
        fcs = True
    else:
        end = n
        fcs = False"""


def _gen_fast(
    items: list[tuple[str, int, str]],
    rtlen: int,
    tail: bytes,
    cnt: _Counts,
    ies_get: Callable,
    decode: Callable,
    slow: Callable,
) -> Callable:
    """Whole-frame decoder for one exact radiotap prefix (version, length, present words): one
    struct call reads the kept radiotap fields and the management header together.

    Mirrors ``Parser._slow`` check for check (same counter for every frame) and hands it
    what it does not handle: short frames, other present-word tails."""
    fmt, _, names, exprs = _struct_plan(items)
    tsft, flags, rate, freq, chan_flags, rssi, chains = exprs
    fmt += f"{rtlen - struct.calcsize(fmt)}xBB2x6s6s6sH"
    need = rtlen + 24
    src = _FAST_SRC.format(
        need=need,
        tail_check=f" or buf[8:{8 + len(tail)}] != _TAIL" if tail else "",
        names="".join(x + ", " for x in names),
        flags_block=_FLAGS_BLOCK.format(flags=flags) if flags != "None" else "    end = n\n    fcs = False",
        max_n=rtlen + MAX_MPDU,
        body=rtlen + 24,
        body_htc=rtlen + 28,
        rssi=rssi,
        chains=chains,
        freq=freq,
        chan_flags=chan_flags,
        flags=flags,
        tsft=tsft,
        rate=rate,
    )
    ns = {
        "_unpack": struct.Struct(fmt).unpack_from,
        "_EMPTY": _EMPTY,
        "slow": slow,
        "_TAIL": tail,
        "cnt": cnt,
        "ies_get": ies_get,
        "decode": decode,
        "new": object.__new__,
        "Probe": Probe,
    }
    return _exec(src, ns)


# ---------------------------------------------------------------------------------------------
# elements


class BoundedCache(dict):
    """A dict that forgets everything once its entries cost more than ``budget`` bytes.

    Forgetting all at once, not the least recently used, keeps a hit the plain ``dict.get``
    (the hot path's one call); a miss after a clear costs one decode, and in the field's
    traffic the cache fills again within seconds."""

    __slots__ = ("budget", "used")

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget
        self.used = 0

    def put(self, key: bytes, value: object, size: int) -> None:
        cost = size + IE_ENTRY_COST
        if self.used + cost > self.budget:
            self.clear()
        self[key] = value
        self.used += cost

    def clear(self) -> None:
        super().clear()
        self.used = 0


class Elements:
    """The decoded element list of one probe request, shared by every frame whose elements after
    the SSID are the same. ``ssid`` is the SSID of the list it was decoded from: a frame's own
    SSID is :attr:`Probe.ssid`."""

    __slots__ = (
        "ssid",
        "ie_ids",
        "ext_ids",
        "ds_channel",
        "rates",
        "ext_rates",
        "ht_cap",
        "vht_cap",
        "he_cap",
        "ext_cap",
        "vendors",
        "fingerprint",
        "complete",
    )

    def __init__(
        self,
        ssid: bytes = b"",
        ie_ids: tuple[int, ...] = (),
        ext_ids: tuple[int, ...] = (),
        ds_channel: int | None = None,
        rates: bytes = b"",
        ext_rates: bytes = b"",
        ht_cap: bytes | None = None,
        vht_cap: bytes | None = None,
        he_cap: bytes | None = None,
        ext_cap: bytes | None = None,
        vendors: tuple[tuple[int, int], ...] = (),
        fingerprint: str = "",
        complete: bool = True,
    ) -> None:
        self.ssid = ssid
        self.ie_ids = ie_ids
        self.ext_ids = ext_ids
        self.ds_channel = ds_channel
        self.rates = rates
        self.ext_rates = ext_rates
        self.ht_cap = ht_cap
        self.vht_cap = vht_cap
        self.he_cap = he_cap
        self.ext_cap = ext_cap
        self.vendors = vendors
        self.fingerprint = fingerprint
        self.complete = complete


_OUI_WPS = b"\x00\x50\xf2\x04"  # OUI + type
_OUI_P2P = b"\x50\x6f\x9a\x09"
_EXT_FILS_REQ = 2
_EXT_HE_CAP = 35
_CUT = b"\xff\xff\xff"  # ends the key of a cut element list: a different shape from a whole one


def _wps_without_uuid(body: bytes) -> bytes:
    """WPS TLVs minus UUID-E (0x1047), which some stacks derive from the current MAC."""
    out = [body[:4]]
    i = 4
    n = len(body)
    while i + 4 <= n:
        t, ln = struct.unpack_from(">HH", body, i)
        if t != 0x1047:
            out.append(body[i : i + 4 + ln])
        i += 4 + ln
    return b"".join(out)


def _stable_key(blob: bytes) -> tuple[bytes, bytes, int | None, bool]:
    """(fingerprint key, ssid, ds channel, complete) of an element list.

    The key is the element list itself with the volatile contents emptied (SSID, DS channel,
    FILS request parameters, the current operating class, WPS UUID-E, P2P): still a valid
    element list, equal for every probe of one device configuration."""
    parts = []
    ssid = b""
    ds = None
    seen_ssid = False
    i = 0
    run = 0  # start of the elements not yet copied: kept elements are copied a run at a time
    n = len(blob)
    while i + 2 <= n:
        eid = blob[i]
        j = i + 2
        k = j + blob[i + 1]
        if k > n:
            break
        if eid in _VOLATILE:  # one test for the common element (this runs on every cache miss)
            repl = None
            if eid == 0:
                if not seen_ssid:
                    ssid = blob[j:k]
                    seen_ssid = True
                repl = b"\x00\x00"
            elif eid == 3:
                if ds is None and k > j:
                    ds = blob[j]
                repl = b"\x03\x00"
            elif eid == 255:
                if k > j and blob[j] == _EXT_FILS_REQ:
                    repl = b"\xff\x01\x02"
            elif eid == 59:
                if k > j:
                    repl = bytes((59, k - j - 1)) + blob[j + 1 : k]
            elif k - j >= 4 and blob[j : j + 4] in (_OUI_WPS, _OUI_P2P):  # 221
                body = _wps_without_uuid(blob[j:k]) if blob[j : j + 4] == _OUI_WPS else blob[j : j + 4]
                repl = bytes((221, len(body))) + body
            if repl is not None:
                if run < i:
                    parts.append(blob[run:i])
                parts.append(repl)
                run = k
        i = k
    if run < i:
        parts.append(blob[run:i])
    complete = i == n
    if not complete:
        parts.append(_CUT)
    return b"".join(parts), ssid, ds, complete


_VOLATILE = frozenset((0, 3, 59, 221, 255))  # elements _stable_key may rewrite


_IE_IDS: dict[tuple[int, ...], tuple[int, ...]] = {}
_IE_IDS_MAX = 4096


def _decode_stable(key: bytes) -> tuple:
    """The fields of an element list that the fingerprint covers (decoded from the key)."""
    ids: list[int] = []
    exts: list[int] = []
    vendors: list[tuple[int, int]] = []
    first: dict[int, bytes] = {}
    he = None
    i = 0
    n = len(key)
    while i + 2 <= n:
        eid = key[i]
        j = i + 2
        k = j + key[i + 1]
        if k > n:
            break  # the _CUT trailer
        ids.append(eid)
        if eid not in first:
            first[eid] = key[j:k]
        if eid == 255 and k > j:
            exts.append(key[j])
            if key[j] == _EXT_HE_CAP and he is None:
                he = key[j + 1 : k]
        elif eid == 221 and k - j >= 3:
            vendors.append((int.from_bytes(key[j : j + 3], "big"), key[j + 3] if k - j >= 4 else -1))
        i = k
    ie_ids = tuple(ids)
    # One tuple per distinct id sequence: visits keep it for minutes, and a flood of distinct
    # element contents still repeats a few id sequences.
    shared = _IE_IDS.get(ie_ids)
    if shared is None:
        if len(_IE_IDS) >= _IE_IDS_MAX:
            _IE_IDS.clear()
        shared = _IE_IDS[ie_ids] = ie_ids
    return (
        shared,
        tuple(exts),
        first.get(1, b""),
        first.get(50, b""),
        first.get(45),
        first.get(191),
        he,
        first.get(127),
        tuple(vendors),
        blake2b(key, digest_size=8).hexdigest(),
    )


def decode_elements(blob: bytes, stable_cache: dict[bytes, tuple] | None = None) -> Elements:
    """Decode an element list (the slow path: once per distinct blob).

    ``stable_cache`` maps fingerprint keys to their decoded fields, so a device whose blobs
    differ only in SSID, channel or FILS counter pays the walk but not the decode and hash."""
    key, ssid, ds, complete = _stable_key(blob)
    stable = None if stable_cache is None else stable_cache.get(key)
    if stable is None:
        stable = _decode_stable(key)
        if isinstance(stable_cache, BoundedCache):
            stable_cache.put(key, stable, len(key))
        elif stable_cache is not None:
            stable_cache[key] = stable
    ids, exts, rates, ext_rates, ht, vht, he, ext_cap, vendors, digest = stable
    return Elements(ssid, ids, exts, ds, rates, ext_rates, ht, vht, he, ext_cap, vendors, digest, complete)


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

_COUNTERS = ("ok", "bad_ie", "not_probe", "truncated", "bad_radiotap", "bad_fcs", "oversized", "garbage")


class _Counts:
    __slots__ = _COUNTERS

    def __init__(self) -> None:
        for k in _COUNTERS:
            setattr(self, k, 0)


class Parser:
    """Stateful (caches + counters) probe-request parser; one per capture stream/thread.

    ``parse``/``parse_80211`` never raise: they return a :class:`Probe` (counted ``ok``, or
    ``bad_ie`` when its element list is damaged) or None with the reason counted.
    ``fast=False`` disables the generated per-layout decoders (tests compare both paths)."""

    def __init__(self, fast: bool = True) -> None:
        self._cnt = _Counts()
        self._layouts: dict[int | bytes, _Layout] = {}
        self._ies = BoundedCache(IE_CACHE_BYTES)
        self._stable = BoundedCache(IE_CACHE_BYTES)
        self._fast: dict[bytes, Callable] = {}
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

    def _elements(self, blob: bytes, ssid_end: int) -> Elements:
        """Decode ``blob`` (a miss) and cache it under the elements after its SSID element.

        ``ssid_end``: where the leading SSID element ends (0: the list does not start with a
        whole SSID element; such a list, malformed for a probe request, is not cached, since
        its key could equal another list's tail)."""
        el = decode_elements(blob, self._stable)
        if ssid_end:
            self._ies.put(blob[ssid_end:], el, len(blob) - ssid_end)
        return el

    def _lookup(self, buf: bytes, b: int, end: int) -> tuple[Elements, bytes]:
        """(elements, ssid) of the element list ``buf[b:end]``: the general paths' version of
        what the generated decoders inline."""
        if end > b + 1 and buf[b] == 0 and b + 2 + buf[b + 1] <= end:
            s = b + 2 + buf[b + 1]
            el = self._ies.get(buf[s:end])
            if el is None:
                el = self._elements(buf[b:end], s - b)
            return el, buf[b + 2 : s]
        el = self._elements(buf[b:end], 0)
        return el, el.ssid

    def _layout(self, buf: bytes, rtlen: int, present: int) -> _Layout | None:
        """Layout for this header; cached per present-word chain unless a vendor namespace
        makes it depend on the data. None: the present words or vendor header are broken."""
        if present & _BIT_EXT:
            words = _present_words(buf, rtlen)
            if words is None:
                return None
            key: int | bytes = buf[4 : 4 + 4 * len(words)]
        else:
            words = [present]
            key = present
        lay = self._layouts.get(key)
        if lay is not None:
            return lay
        plan = _plan(words, buf, rtlen)
        if plan is None:
            return None
        items, need, has_vendor = plan
        if has_vendor:
            return _one_off(items, need)
        if len(self._layouts) >= LAYOUT_CACHE_MAX:
            self._layouts.clear()
        lay = self._layouts[key] = _compile(items, need)
        lay.items = items
        lay.words_end = 4 + 4 * len(words)
        return lay

    def _add_fast(self, buf: bytes, rtlen: int, lay: _Layout) -> None:
        """Generate the fast decoder for this exact radiotap prefix (first sight of it)."""
        if len(self._fast) >= LAYOUT_CACHE_MAX:
            self._fast.clear()
        assert lay.items is not None
        self._fast[buf[:8]] = _gen_fast(
            lay.items, rtlen, buf[8 : lay.words_end], self._cnt, self._ies.get, self._elements, self._slow
        )

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
        ver, rtlen, present = _RT_HDR(buf, 0)
        if ver or rtlen < 8:
            cnt.bad_radiotap += 1
            return None
        if rtlen > n:
            cnt.truncated += 1
            return None
        lay = self._layout(buf, rtlen, present)
        if lay is None or rtlen < lay.min_len:
            cnt.bad_radiotap += 1
            return None
        if self._use_fast and lay.items is not None and buf[:8] not in self._fast:
            self._add_fast(buf, rtlen, lay)
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
