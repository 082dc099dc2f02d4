"""Which slot holds a device's open visit: the visit tracker's index (``visits.VisitTracker``).

A sensor on an OpenWrt router tracks tens of thousands of devices, so an open visit is no
Python object at all: its state lives in the tracker's typed-array columns, indexed by a slot
number, and this table finds the slot of a device. It is an open-addressing hash table
(linear probing, at most half full, backward-shift deletion) of slot numbers in an
``array("i")``, keyed by the 16-octet device digests kept in one ``bytearray`` (16 bytes a
slot). About 110 bytes a device with the tracker's columns (16 key, 10 table, 73 columns, 8
for the model tuple's reference) and the SSID tuples of the visits that have some: 125
measured with 50,000 devices of the benchmark's real mix, against 235 when a dict mapped
digest objects to int slot objects (its entry 52, the digest 56, the int 32) and ~600 for a
Python object per device (docs/agent.md, "Measured").

A slot is open exactly when the tracker's ``last`` column holds a number there (a free slot
holds NaN): that is how a rebuild finds the slots to enter without a list of its own.

Devices that are not 16-octet digests (a str id, as the tests and old callers pass) get a
random 16-octet key of their own, an alias kept until their visit closes.
"""

from __future__ import annotations

import os
from array import array
from itertools import compress, starmap
from operator import eq
from struct import Struct

__all__ = ["KEY_BYTES", "DeviceTable"]

KEY_BYTES = 16  # a device digest (identity.DEVICE_ID_BYTES)
_MIN_SIZE = 1024  # positions to start with (a power of two)
_KEYS = Struct("16s").iter_unpack  # the keys bytearray -> (key,) per slot


class DeviceTable:
    """Open visits by device key: slot numbers in a hash table, keys in one ``bytearray``.

    ``last`` is the tracker's column of last sightings (NaN in a free slot); the table reads it
    only to rebuild. ``n`` is the number of open visits.
    """

    __slots__ = ("n", "_table", "_mask", "_keys", "_last", "_alias", "_named")

    def __init__(self, last: array[float]) -> None:
        self.n = 0
        self._table = array("i", bytes(4 * _MIN_SIZE))  # slot + 1 per position, 0: empty
        self._mask = _MIN_SIZE - 1
        self._keys = bytearray()
        self._last = last
        self._alias: dict[object, bytes] = {}
        self._named: dict[bytes, object] = {}

    def grow(self, slots: int) -> None:
        """Room for the keys of ``slots`` more slots (the tracker adds slots in chunks)."""
        self._keys += bytes(KEY_BYTES * slots)

    def slots(self) -> list[int]:
        """The slots in the table, in table order (tests check it against the columns)."""
        return [s - 1 for s in self._table if s]

    def key(self, i: int) -> bytes:
        return bytes(self._keys[i << 4 : (i + 1) << 4])

    def key_of(self, device: object) -> bytes:
        """The key of a device: the digest itself, or the alias of any other id (made here)."""
        if device.__class__ is bytes and len(device) == KEY_BYTES:  # type: ignore[arg-type]
            return device  # type: ignore[return-value]
        key = self._alias.get(device)
        if key is None:
            # Random, not derived from the id: nothing else is keyed by it (a collision with a
            # real digest or another alias is a 2**-128 chance).
            while True:
                key = os.urandom(KEY_BYTES)
                if key not in self._named:
                    break
            self._alias[device] = key
            self._named[key] = device
        return key

    def device(self, key: bytes) -> object:
        """The device a key stands for: the id an alias was made for, else the key itself."""
        return self._named.get(key, key)

    def release(self, key: bytes) -> object:
        """The device of a closing visit's key; its alias, if any, is forgotten."""
        device = self._named.pop(key, None) if self._named else None
        if device is None:
            return key
        del self._alias[device]
        return device

    def find(self, device: object) -> int | None:
        """Slot of ``device``'s open visit (None: not open)."""
        if device.__class__ is bytes and len(device) == KEY_BYTES:  # type: ignore[arg-type]
            key: bytes | None = device  # type: ignore[assignment]
        else:
            key = self._alias.get(device)
            if key is None:
                return None
        table, mask, keys = self._table, self._mask, self._keys
        j = hash(key) & mask
        while s := table[j]:
            if keys.startswith(key, (s - 1) << 4):  # key: 16 octets, so the slot's exactly
                return s - 1
            j = (j + 1) & mask
        return None

    def insert(self, key: bytes, i: int) -> None:
        """Enter slot ``i`` (whose ``last`` is already set) under ``key``."""
        self._keys[i << 4 : (i + 1) << 4] = key
        self.n += 1
        table = self._table
        if self.n * 2 > len(table):  # at most half full: short probe runs
            self._rebuild(len(table) * 2)  # with slot i: its last is set
            return
        mask = self._mask
        j = hash(key) & mask
        while table[j]:
            j = (j + 1) & mask
        table[j] = i + 1

    def remove(self, i: int) -> bytes:
        """Take slot ``i`` out of the table; returns its key."""
        keys = self._keys
        key = bytes(keys[i << 4 : (i + 1) << 4])
        table, mask = self._table, self._mask
        j = hash(key) & mask
        s = i + 1
        while table[j] != s:
            j = (j + 1) & mask
        # Backward shift: move each later entry of the cluster whose home position is not
        # between the hole and it into the hole, so lookups need no tombstones.
        k = j
        while True:
            k = (k + 1) & mask
            s = table[k]
            if not s:
                break
            home = hash(bytes(keys[(s - 1) << 4 : s << 4])) & mask
            if (k - home) & mask >= (k - j) & mask:
                table[j] = s
                j = k
        table[j] = 0
        self.n -= 1
        return key

    def removed_many(self, count: int) -> None:
        """``count`` slots were freed (their ``last`` set to NaN) without :meth:`remove`: the
        table anew from the open slots. Past a sixth of the visits that stay open this beats
        taking each out (about 90 bytecodes a visit taken out, 15 a visit rebuilt)."""
        self.n -= count
        if self.n:
            self._rebuild(len(self._table))
        else:  # all closed (a flush): an empty table of the same size
            self._table = array("i", bytes(4 * len(self._table)))

    def _rebuild(self, size: int) -> None:
        """The table anew with ``size`` positions (a power of two), from the open slots (those
        whose ``last`` is not NaN): the keys' hashes in C, one short loop a visit."""
        table = self._table = array("i", bytes(4 * size))
        mask = self._mask = size - 1
        last = self._last
        hashes = starmap(hash, _KEYS(self._keys))  # hash(key) of every slot's 16 octets
        for i, h in compress(enumerate(hashes), map(eq, last, last)):  # NaN != NaN: free
            j = h & mask
            while table[j]:
                j = (j + 1) & mask
            table[j] = i + 1
