"""Radiotap layouts and the whole-frame decoders generated from them (the parser's hot path).

* radiotap layouts are compiled once per distinct tuple of present words into one
  ``struct.Struct`` (with pad bytes for the fields we skip) plus a tiny generated extractor;
* for each exact radiotap prefix (version, length, present words) a whole-frame decoder is
  generated: one ``unpack_from`` reads the kept radiotap fields and the management header
  together, and the result is filled without branching on which fields exist. It makes the
  same checks in the same order as the general path (``Parser._slow``; tests run both on real,
  synthetic and mutated frames) and hands anything unusual (short frames) back to it.

Radiotap: extended present bitmaps are followed (bit 31), radiotap-namespace resets (bit 29)
restart the bit numbering as the spec says, vendor namespaces (bit 30) are skipped with their
``skip_length``; fields are aligned to their natural size relative to the header start. An
unknown field stops field decoding (its size is unknowable) but keeps what was read. ``rssi`` is
the first dBm antenna signal; ``chain_rssi`` holds the dBm antenna signals of the 2nd+ present
words (per-chain values as Linux mac80211 writes them).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

__all__ = ["LAYOUT_CACHE_MAX", "RT_HDR", "Layouts", "gen_fast"]

LAYOUT_CACHE_MAX = 1024

RT_HDR = struct.Struct("<BxHI").unpack_from  # version, length, first present word
_U16 = struct.Struct("<H").unpack_from

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
    chan = [*slots.get("chan", ()), "None", "None"]  # a sighting reads the frequency only
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


class Layouts:
    """Compiled layouts, one per chain of present words (the general path's cache)."""

    __slots__ = ("_layouts",)

    def __init__(self) -> None:
        self._layouts: dict[int | bytes, _Layout] = {}

    def get(self, buf: bytes, rtlen: int, present: int) -> _Layout | None:
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


_FAST_SRC = """n = len(buf)
if n < {need_fast}{tail_check}:
    return slow(buf, ts)
{names}{header}, e0, e1 = _unpack(buf, 0)
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
if not fc1 & 128:
    if end > {b1} and not e0 and (s := {b2} + e1) <= end:
        ssid = buf[{b2}:s]
        tail = buf[s:end]
        el = ies_get(tail)
        if el is None:
            el = miss(tail, ssid)
    else:
        el = decode(buf[{b}:end])
        ssid = el.ssid
else:
    b = {b_htc}
    if end > b + 1 and buf[b] == 0 and b + 2 + buf[b + 1] <= end:
        s = b + 2 + buf[b + 1]
        ssid = buf[b + 2:s]
        tail = buf[s:end]
        el = ies_get(tail)
        if el is None:
            el = miss(tail, ssid)
    else:
        el = decode(buf[b:end])
        ssid = el.ssid
if el.complete:
    cnt.ok += 1
else:
    cnt.bad_ie += 1
"""

# A Probe: every field.
_PROBE_END = """p = new(Probe)
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
return p
"""

# A sighting (``Parser.sighting_decoders``): what the agent's loop reads, in a tuple, and the
# exception handling of ``Parser.parse`` inside, since the loop calls this directly.
_SIGHTING_END = "return sa, {rssi}, sc >> 4, {freq}, el, ssid\n"
_GUARD = """try:
{body}except Exception:  # hostile bytes must not stop the capture loop
    cnt.garbage += 1
    return None
"""

_FLAGS_BLOCK = """if {flags} & 64:
    cnt.bad_fcs += 1
    return None
if {flags} & 16:
    end = n - 4{fcs_true}
else:
    end = n{fcs_false}"""

# Radiotap fields a sighting does not carry (nor the channel flags, DA, BSSID): pad bytes in
# its struct format, so no objects are built for them.
_NOT_IN_SIGHTING = ("tsft", "rate")


def gen_fast(
    items: list[tuple[str, int, str]],
    rtlen: int,
    tail: bytes,
    max_mpdu: int,
    ns: dict[str, Any],
    *,
    sighting: bool = False,
) -> Callable:
    """Whole-frame decoder for one exact radiotap prefix (version, length, present words): one
    struct call reads the kept radiotap fields and the management header together; it returns
    a Probe, or with ``sighting`` the tuple (sa, rssi, seq, freq, elements, ssid).

    Mirrors ``Parser._slow`` check for check (same counter for every frame) and hands it
    (``slow`` in ``ns``) what it does not handle: short frames, other present-word tails.
    ``ns`` also holds ``cnt`` (the counters), ``ies_get``, ``miss`` and ``decode`` (the element
    caches' ways in) and, for a Probe, ``Probe``."""
    if sighting:
        items = [
            (slot, off, "H" if slot == "chan" else code) for slot, off, code in items if slot not in _NOT_IN_SIGHTING
        ]
    fmt, _, names, exprs = _struct_plan(items)
    tsft, flags, rate, freq, chan_flags, rssi, chains = exprs
    # ...and the first element's id and length: the SSID element's, when the list has one.
    fmt += f"{rtlen - struct.calcsize(fmt)}x" + ("BB8x6s6xHBB" if sighting else "BB2x6s6s6sHBB")
    need = rtlen + 24
    fields = {"rssi": rssi, "chains": chains, "freq": freq, "chan_flags": chan_flags, "flags": flags}
    fcs = ("", "") if sighting else ("\n    fcs = True", "\n    fcs = False")  # a sighting has no fcs
    if flags != "None":
        flags_block = _FLAGS_BLOCK.format(flags=flags, fcs_true=fcs[0], fcs_false=fcs[1])
    else:
        flags_block = "end = n" + fcs[1].replace("\n    ", "\n")
    body = _FAST_SRC.format(
        need=need,
        need_fast=need + 2,  # shorter frames (no element at all) go the general way
        tail_check=f" or buf[8:{8 + len(tail)}] != _TAIL" if tail else "",
        names="".join(x + ", " for x in names),
        header="fc0, fc1, sa, sc" if sighting else "fc0, fc1, da, sa, bssid, sc",
        flags_block=flags_block,
        max_n=rtlen + max_mpdu,
        b=rtlen + 24,
        b1=rtlen + 25,
        b2=rtlen + 26,
        b_htc=rtlen + 28,
    ) + (_SIGHTING_END if sighting else _PROBE_END).format(tsft=tsft, rate=rate, **fields)
    if sighting:
        body = _GUARD.format(body=_indent(body))
    src = "def fn(buf, ts):\n" + _indent(body)
    return _exec(
        src, {**ns, "_unpack": struct.Struct(fmt).unpack_from, "_EMPTY": _EMPTY, "_TAIL": tail, "new": object.__new__}
    )


def _indent(text: str) -> str:
    return "".join("    " + line if line.strip() else line for line in text.splitlines(keepends=True))
