"""Information elements of a probe request: decoding, the fingerprint, and the caches that make
a repeated element list cheap (the parser, ``parse.py``, hands every list here).

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

Caches (:class:`ElementCache`), all bounded in bytes (``IE_CACHE_BYTES``), not entries:

* ``lists``: the element list *after its SSID element* -> its :class:`Elements`. The SSID is
  left out of the key because it is what differs most between devices of one model (each asks
  for its own networks); the frame's SSID is ``Probe.ssid``.
* ``variants``: the same list with its volatile contents cut out (the octets the fingerprint
  leaves out, the DS channel among them) -> the fields they decode to. The channel byte and the
  FILS counter change with every probe, so a crowd's lists are new far more often than its
  devices are (1,000,000 frames of ``tools/bench/realmix.py``: 58,171 distinct lists, 1,821
  without those octets; a ``lists`` of 2 MiB missed 27 % of frames, each a walk of the list).
  Where the octets to cut are is learnt from the last list decoded with the same length; a hit
  proves the structure (see :meth:`ElementCache.miss`), so the result is what decoding gives.
* ``stable``: the fingerprint key -> those fields, for lists that differ elsewhere too.
"""

from __future__ import annotations

import struct
from hashlib import blake2b
from operator import attrgetter, itemgetter

__all__ = ["BoundedCache", "ElementCache", "ElementFields", "Elements", "decode_elements"]

# What the element caches may hold, in key octets plus a per-entry charge for the decoded
# objects: the field's element lists are a few hundred bytes and a few hundred distinct ones an
# hour, while someone in radio range can send 2.3 KB of fresh elements with every frame (a count
# bound of 65,536 entries let such a flood take the agent to 400 MB).
IE_CACHE_BYTES = 2 * 1024 * 1024
IE_ENTRY_COST = 600
# A variant entry holds a 4-tuple of shared objects, not decoded objects of its own.
VARIANT_CACHE_BYTES = IE_CACHE_BYTES // 2
VARIANT_ENTRY_COST = 200
# The fingerprint keys' cache serves the variants' misses only (new lists, mostly): a quarter
# of the budget it had as the only cache behind ``lists`` keeps the agent's memory where it was.
STABLE_CACHE_BYTES = IE_CACHE_BYTES // 4
# List lengths whose cut positions are remembered (a list is at most 2,346 octets).
SHAPES_MAX = 1024


class BoundedCache(dict):
    """A dict that forgets everything once its entries cost more than ``budget`` bytes.

    Forgetting all at once, not the least recently used, keeps a hit the plain ``dict.get``
    (the hot path's one call); a miss after a clear costs one decode, and in the field's
    traffic the cache fills again within seconds."""

    __slots__ = ("budget", "used", "entry_cost")

    def __init__(self, budget: int, entry_cost: int = IE_ENTRY_COST) -> None:
        super().__init__()
        self.budget = budget
        self.used = 0
        self.entry_cost = entry_cost

    def put(self, key: bytes, value: object, size: int) -> None:
        cost = size + self.entry_cost
        if self.used + cost > self.budget:
            self.clear()
        self[key] = value
        self.used += cost

    def clear(self) -> None:
        super().clear()
        self.used = 0


class ElementFields:
    """The fields of an element list that the fingerprint covers, decoded from its key: one
    object per distinct key, shared by every list (and frame) that has it."""

    __slots__ = (
        "ie_ids",
        "ext_ids",
        "rates",
        "ext_rates",
        "ht_cap",
        "vht_cap",
        "he_cap",
        "ext_cap",
        "vendors",
        "fingerprint",
    )

    def __init__(
        self,
        ie_ids: tuple[int, ...] = (),
        ext_ids: tuple[int, ...] = (),
        rates: bytes = b"",
        ext_rates: bytes = b"",
        ht_cap: bytes | None = None,
        vht_cap: bytes | None = None,
        he_cap: bytes | None = None,
        ext_cap: bytes | None = None,
        vendors: tuple[tuple[int, int], ...] = (),
        fingerprint: str = "",
    ) -> None:
        self.ie_ids = ie_ids
        self.ext_ids = ext_ids
        self.rates = rates
        self.ext_rates = ext_rates
        self.ht_cap = ht_cap
        self.vht_cap = vht_cap
        self.he_cap = he_cap
        self.ext_cap = ext_cap
        self.vendors = vendors
        self.fingerprint = fingerprint


_NO_FIELDS = ElementFields()
_new = object.__new__


class Elements:
    """The decoded element list of one probe request, shared by every frame whose elements after
    the SSID are the same. ``ssid`` is the SSID of the list it was decoded from: a frame's own
    SSID is :attr:`Probe.ssid`. The fingerprint's fields are read through the shared
    :class:`ElementFields`; the list's own are its SSID, DS channel and completeness."""

    __slots__ = ("ssid", "ds_channel", "complete", "fields")

    def __init__(
        self,
        ssid: bytes = b"",
        ds_channel: int | None = None,
        complete: bool = True,
        fields: ElementFields = _NO_FIELDS,
    ) -> None:
        self.ssid = ssid
        self.ds_channel = ds_channel
        self.complete = complete
        self.fields = fields

    ie_ids = property(attrgetter("fields.ie_ids"))
    ext_ids = property(attrgetter("fields.ext_ids"))
    rates = property(attrgetter("fields.rates"))
    ext_rates = property(attrgetter("fields.ext_rates"))
    ht_cap = property(attrgetter("fields.ht_cap"))
    vht_cap = property(attrgetter("fields.vht_cap"))
    he_cap = property(attrgetter("fields.he_cap"))
    ext_cap = property(attrgetter("fields.ext_cap"))
    vendors = property(attrgetter("fields.vendors"))
    fingerprint = property(attrgetter("fields.fingerprint"))


_OUI_WPS = b"\x00\x50\xf2\x04"  # OUI + type
_OUI_P2P = b"\x50\x6f\x9a\x09"
_EXT_FILS_REQ = 2
_EXT_HE_CAP = 35
_CUT = b"\xff\xff\xff"  # ends the key of a cut element list: a different shape from a whole one


def _wps_without_uuid(body: bytes, cuts: list[tuple[int, int]], at: int) -> bytes:
    """WPS TLVs minus UUID-E (0x1047), which some stacks derive from the current MAC; the
    UUID-E values' octets (``at``: where ``body`` starts in the list) go to ``cuts``."""
    out = [body[:4]]
    i = 4
    n = len(body)
    while i + 4 <= n:
        t, ln = struct.unpack_from(">HH", body, i)
        if t != 0x1047:
            out.append(body[i : i + 4 + ln])
        elif ln and i + 4 < n:
            cuts.append((at + i + 4, at + min(i + 4 + ln, n)))
        i += 4 + ln
    return b"".join(out)


def _stable_key(blob: bytes) -> tuple[bytes, bytes, int | None, bool, list[tuple[int, int]], int]:
    """(fingerprint key, ssid, ds channel, complete, cuts, ds offset) of an element list.

    The key is the element list itself with the volatile contents emptied (SSID, DS channel,
    FILS request parameters, the current operating class, WPS UUID-E, P2P): still a valid
    element list, equal for every probe of one device configuration. ``cuts``: the (start,
    end) octet ranges of those contents in ``blob``, in order; nothing outside them reaches
    the key other than verbatim, so two lists of one structure that agree outside the cuts
    have one key. ``ds offset``: where the DS channel octet is (-1: no channel)."""
    parts = []
    cuts: list[tuple[int, int]] = []
    ssid = b""
    ds = None
    ds_at = -1
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
                if k > j:
                    cuts.append((j, k))
            elif eid == 3:
                if k > j:
                    if ds is None:
                        ds = blob[j]
                        ds_at = j
                    cuts.append((j, k))
                repl = b"\x03\x00"
            elif eid == 255:
                if k > j and blob[j] == _EXT_FILS_REQ:
                    repl = b"\xff\x01\x02"
                    if k > j + 1:
                        cuts.append((j + 1, k))
            elif eid == 59:
                if k > j:
                    repl = bytes((59, k - j - 1)) + blob[j + 1 : k]
                    cuts.append((j, j + 1))
            elif k - j >= 4 and blob[j : j + 4] in (_OUI_WPS, _OUI_P2P):  # 221
                if blob[j : j + 4] == _OUI_WPS:
                    body = _wps_without_uuid(blob[j:k], cuts, j)
                else:
                    body = blob[j : j + 4]
                    if k > j + 4:
                        cuts.append((j + 4, k))
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
    return b"".join(parts), ssid, ds, complete, cuts, ds_at


_VOLATILE = frozenset((0, 3, 59, 221, 255))  # elements _stable_key may rewrite


_IE_IDS: dict[tuple[int, ...], tuple[int, ...]] = {}
_IE_IDS_MAX = 4096


def _decode_stable(key: bytes) -> ElementFields:
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
    return ElementFields(
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


def _fields(key: bytes, stable_cache: dict[bytes, ElementFields] | None) -> ElementFields:
    fields = None if stable_cache is None else stable_cache.get(key)
    if fields is None:
        fields = _decode_stable(key)
        if isinstance(stable_cache, BoundedCache):
            stable_cache.put(key, fields, len(key))
        elif stable_cache is not None:
            stable_cache[key] = fields
    return fields


def decode_elements(blob: bytes, stable_cache: dict[bytes, ElementFields] | None = None) -> Elements:
    """Decode an element list (the slow path: once per distinct blob).

    ``stable_cache`` maps fingerprint keys to their decoded fields, so a device whose blobs
    differ only in SSID, channel or FILS counter pays the walk but not the decode and hash."""
    key, ssid, ds, complete, _, _ = _stable_key(blob)
    return Elements(ssid, ds, complete, _fields(key, stable_cache))


class ElementCache:
    """The parser's element caches (see the module docstring) and its ways into them."""

    __slots__ = ("lists", "variants", "stable", "_shapes")

    def __init__(self) -> None:
        self.lists = BoundedCache(IE_CACHE_BYTES)
        self.variants = BoundedCache(VARIANT_CACHE_BYTES, VARIANT_ENTRY_COST)
        self.stable = BoundedCache(STABLE_CACHE_BYTES)
        # list length -> (cuts of the last such list decoded, what joins the octets between them)
        self._shapes: dict[int, tuple[tuple[tuple[int, int], ...], itemgetter]] = {}

    def decode(self, blob: bytes) -> Elements:
        """A list that does not start with a whole SSID element: decoded, not cached (its key
        could equal another list's tail)."""
        return decode_elements(blob, self.stable)

    def miss(self, tail: bytes, ssid: bytes) -> Elements:
        """The elements of a list that ``lists`` does not have: ``tail`` the elements after its
        leading SSID element, whose content is ``ssid``; entered in ``lists``.

        The cuts learnt from the last list of this length decoded, applied to ``tail``, give a
        ``variants`` key; an entry made with the same cuts is this list's when the keys are
        equal. Its cuts cover only element contents of that list, so every octet that says
        where an element starts or how long it is lies outside them, equal in both: ``tail``
        has the same elements at the same offsets, differing only inside the cuts, which the
        fingerprint key leaves out; its DS channel is read at the entry's offset."""
        shape = self._shapes.get(len(tail))
        if shape is not None:
            cuts, between = shape
            hit = self.variants.get(b"".join(between(tail)))
            if hit is not None and hit[0] == cuts:
                ds_at = hit[1]
                el = _new(Elements)  # Elements(...) without its __init__ call: a quarter of frames
                el.ssid = ssid
                el.ds_channel = tail[ds_at] if ds_at >= 0 else None
                el.complete = hit[2]
                el.fields = hit[3]
                lists = self.lists  # lists.put(tail, el, len(tail)) without the call: a quarter of frames
                cost = len(tail) + IE_ENTRY_COST
                if lists.used + cost > lists.budget:
                    lists.clear()
                lists[tail] = el
                lists.used += cost
                return el
        s = 2 + len(ssid)
        key, _, ds, complete, cuts, ds_at = _stable_key(bytes((0, len(ssid))) + ssid + tail)
        el = Elements(ssid, ds, complete, _fields(key, self.stable))
        self.lists.put(tail, el, len(tail))
        own = tuple((a - s, b - s) for a, b in cuts if a >= s)  # not the leading SSID's
        if own:
            if shape is None or shape[0] != own:
                if len(self._shapes) >= SHAPES_MAX:
                    self._shapes.clear()
                ends = (0, *(b for _, b in own))
                starts = (*(a for a, _ in own), None)
                shape = self._shapes[len(tail)] = (own, itemgetter(*map(slice, ends, starts)))
            cuts_key = b"".join(shape[1](tail))
            self.variants.put(cuts_key, (shape[0], ds_at - s if ds_at >= s else -1, complete, el.fields), len(cuts_key))
        return el
