"""Where the visit tracker (``visits.VisitTracker``) keeps its open visits.

A sensor on an OpenWrt router tracks tens of thousands of devices in a few megabytes, so an
open visit is no Python object at all: its state lives in parallel typed arrays (``array``)
indexed by a slot number, found through ``device_table.DeviceTable`` (about 110 bytes a
device in all, see there). Slots are reused after a visit closes (a free slot holds NaN in
``_last``: expiry, the presence count and the table's rebuild pass over it), new ones come 64
at a time, and visits that close together close in the order they opened, as they did from a
dict: a 4-byte opening number per slot.

A dict of the 1,024 devices heard last (cleared when full) sits in front of the table: 93-95 %
of the benchmark crowds' frames find their visit there, with one dict lookup. Its values are
the devices' records: a list of the slot and the fields every frame reads or writes (last
sighting, sequence number, counts, RSSI sum, channels, the minute's RSSI, last inside
sighting). A list item costs a quarter of an array item to read or write (about 80 machine
instructions against 280-450, and 1,000 for ``+=`` on an ``array("i")``: its stores parse their
argument like a function call), and a frame reads or writes a dozen of them: the records took
a fifth off the tracker's instructions a frame. The records are where those fields are while
remembered; the columns get them back (``_store``) when a record leaves the dict, when its
visit closes, and before anything reads the columns of every slot (expiry, presence,
eviction). About 0.2 MB for the 1,024 records.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator
from typing import Any, Protocol

from footfall import schema
from footfall.edge_agent.device_table import DeviceTable

__all__ = ["Model", "VisitColumns"]


class Model(Protocol):
    """What a visit keeps of the phone model: the parser's ``Elements`` satisfies it."""

    fingerprint: str
    ie_ids: tuple[int, ...]


_NONE = -32768  # "no value" in the sequence number arrays
_NO_RSSI = schema.RSSI_NO_READING  # "no reading yet" in the RSSI arrays (int8: their lowest value)
_MODELS_MAX = 4096  # distinct fingerprints remembered for sharing; the field has hundreds
_HOT_MAX = 1024  # entries of the recent-device dict in front of the table
# The items of a recently heard device's record (see the module docstring and _store).
_SLOT, _FIRST, _LAST, _SEQ, _COUNT, _RSSI_SUM, _RSSI_N, _CHANNELS, _MINUTE_RSSI, _LAST_INSIDE = range(10)
_FREE = math.nan  # _last of a slot with no open visit
_GROW = 64  # slots added at once when none is free
# What new slots hold, column by column (_columns): a free slot's _last is NaN;
# the rest is overwritten when it opens or not read before it is set.
_CHUNKS = tuple(
    array(code, [fill]) * _GROW
    for code, fill in (
        ("d", _FREE),  # _first
        ("d", _FREE),  # _last
        ("d", _FREE),  # _last_inside
        ("f", 0.0),  # _inside
        ("f", 0.0),  # _gap_sum
        ("i", 0),  # _rssi_sum
        ("i", 0),  # _count
        ("i", 0),  # _rssi_n
        ("b", _NO_RSSI),  # _rssi_max
        ("h", _NONE),  # _seq_first
        ("h", _NONE),  # _seq_last
        ("i", 0),  # _bursts
        ("Q", 0),  # _channels
        ("b", 0),  # _randomized
        ("b", _NO_RSSI),  # _minute_rssi
        ("H", 0),  # _minutes01
        ("f", 0.0),  # _offset2
        ("I", 0),  # _order
    )
)
_NONE_CHUNK = [None] * _GROW


class _Open:
    """The devices of a tracker's open visits (``VisitTracker.open``): a read-only view."""

    __slots__ = ("_t",)

    def __init__(self, tracker: VisitColumns) -> None:
        self._t = tracker

    def __len__(self) -> int:
        return self._t._index.n

    def __contains__(self, device: object) -> bool:
        return self._t._index.find(device) is not None

    def __iter__(self) -> Iterator[bytes | object]:
        t = self._t
        index = t._index
        for i in t._open_slots():
            yield index.device(index.key(i))


class VisitColumns:
    """The open visits' state: typed-array columns by slot, the device table, the records of
    the devices heard last (see the module docstring). ``visits.VisitTracker`` builds on it."""

    __slots__ = (
        "_free",
        "_index",
        "_order",
        "_next_order",
        "_hot",
        "_first",
        "_last",
        "_last_inside",
        "_inside",
        "_gap_sum",
        "_rssi_sum",
        "_count",
        "_rssi_n",
        "_rssi_max",
        "_seq_first",
        "_seq_last",
        "_bursts",
        "_channels",
        "_randomized",
        "_minute_rssi",
        "_minutes01",
        "_offset2",
        "_model",
        "_models",
        "_phash",
        "_wide_channels",
        "_channel_lists",
        "_minute_table",
        "_offset_table",
    )

    def __init__(self) -> None:
        self._free = array("i")  # slots of closed visits, reused first
        # Opening numbers: visits that close at once close in this order (renumbered from 0 in
        # the unlikely event that 2**32 visits have opened).
        self._order = array("I")
        self._next_order = 0
        # Recently heard devices -> their visit's record (slot and hot fields, see _store),
        # cleared when full: most frames find their visit here.
        self._hot: dict[object, list[Any]] = {}
        # One array per field, indexed by slot.
        self._first = array("d")
        self._last = array("d")
        self._index = DeviceTable(self._last)
        self._last_inside = array("d")  # -1.0: no inside sighting yet
        # Durations fit single precision (milliseconds over days); RSSI sums fit 32 bits.
        self._inside = array("f")
        self._gap_sum = array("f")
        self._rssi_sum = array("i")
        self._count = array("i")
        self._rssi_n = array("i")
        # Max RSSI of the visit's completed minutes, valid once one has ended (_minutes01 != 0);
        # the current minute's is in _minute_rssi, so a frame updates one maximum, not two.
        self._rssi_max = array("b")
        self._seq_first = array("h")
        self._seq_last = array("h")
        self._bursts = array("i")
        self._channels = array("Q")
        self._randomized = array("b")
        # Evidence per minute and per burst (see the module docstring).
        self._minute_rssi = array("b")
        self._minutes01 = array("H")
        self._offset2 = array("f")
        # (fingerprint, element ids) of the visit's first frame, one tuple per fingerprint: not
        # the parser's decoded elements, whose vendor and capability fields a visit never reads
        # and which an element flood makes unique per device (1.5 KB each, kept for 10 minutes).
        # The tuple is (fingerprint, element ids, None); once the device asks for a network by
        # name, the visit's own (SSID hash, ..., that tuple): a phone asks for one to three
        # networks (a tuple, not a set, which costs 216 bytes with one element against a tuple's
        # 48; and no column of its own for every slot). A repeated SSID is found before the
        # model tuple is compared with it.
        self._model: list[tuple[Any, ...] | None] = []
        self._models: dict[str, tuple[str, tuple[int, ...], None]] = {}
        # Rare extras live in side tables keyed by slot, not in a column for every device.
        self._phash: dict[int, str] = {}
        self._wide_channels: dict[int, int] = {}  # channel bits from 64 up (6 GHz): rare
        self._channel_lists: dict[int, tuple[int, ...]] = {}  # channel set -> its channels
        self._minute_table: dict[int, bytearray] = {}
        self._offset_table: dict[int, array[float]] = {}

    def _kept(self, model: Model) -> tuple[str, tuple[int, ...], None]:
        fingerprint = model.fingerprint
        kept = self._models.get(fingerprint)
        if kept is None:
            if len(self._models) >= _MODELS_MAX:
                self._models.clear()  # open visits keep their own tuples
            kept = self._models[fingerprint] = (fingerprint, model.ie_ids, None)
        return kept

    def _open_slot(
        self, key: bytes, ts: float, randomized: bool, seq: int, model: Model, rssi: int | None
    ) -> list[Any]:
        """A slot for a new visit of the device with this 16-octet ``key``, entered in the
        table; returns its record (see ``_store``)."""
        model_kept = self._kept(model)
        if not self._free:
            self._grow()
        i = self._free.pop()
        self._first[i] = self._last[i] = ts
        self._inside[i] = self._gap_sum[i] = 0.0
        self._last_inside[i] = -1.0
        self._count[i] = self._rssi_n[i] = self._rssi_sum[i] = self._channels[i] = 0
        self._seq_first[i] = seq
        self._bursts[i] = 1
        self._randomized[i] = randomized
        self._model[i] = model_kept
        self._minute_rssi[i] = _NO_RSSI if rssi is None else rssi
        n = self._next_order
        try:
            self._order[i] = n
        except OverflowError:  # 2**32 visits opened: number the open ones afresh
            self._renumber(i)
            n = self._next_order
            self._order[i] = n
        self._next_order = n + 1
        self._index.insert(key, i)
        return [i, ts, ts, seq, 0, 0, 0, 0, self._minute_rssi[i], -1.0]

    def _grow(self) -> None:
        """Room for ``_GROW`` more visits: every column extended at once (a slot opened by
        appending to each cost twice the bytecodes of filling one), the new slots free, the
        lowest first. A slot's fields are all set when it opens but these, which the open
        visit sets before it reads them: ``_seq_last``, ``_rssi_max`` (read once a minute has
        ended), ``_minutes01`` (0 here and again at close), ``_offset2`` (set at the second
        burst), ``_order``."""
        base = len(self._first)
        for column, chunk in zip(self._columns(), _CHUNKS, strict=True):
            column.extend(chunk)
        self._model.extend(_NONE_CHUNK)
        self._index.grow(_GROW)
        self._free.extend(range(base + _GROW - 1, base - 1, -1))

    def _columns(self) -> tuple[array[Any], ...]:
        """The typed-array columns, in the order of ``_CHUNKS``."""
        return (
            self._first,
            self._last,
            self._last_inside,
            self._inside,
            self._gap_sum,
            self._rssi_sum,
            self._count,
            self._rssi_n,
            self._rssi_max,
            self._seq_first,
            self._seq_last,
            self._bursts,
            self._channels,
            self._randomized,
            self._minute_rssi,
            self._minutes01,
            self._offset2,
            self._order,
        )

    def _lookup(self, device: object) -> list[Any] | None:
        """The record of ``device``'s open visit, from the table and the columns (None: not
        open); remembered in the recent-device dict, which observe() asks first."""
        i = self._index.find(device)
        if i is None:
            return None
        r = [
            i,
            self._first[i],
            self._last[i],
            self._seq_last[i],
            self._count[i],
            self._rssi_sum[i],
            self._rssi_n[i],
            self._channels[i],
            self._minute_rssi[i],
            self._last_inside[i],
        ]
        self._remember(device, r)
        return r

    def _remember(self, device: object, r: list[Any]) -> None:
        hot = self._hot
        if len(hot) >= _HOT_MAX:
            self._store_all()
            hot.clear()
        hot[device] = r

    def _store(self, r: list[Any]) -> None:
        """The columns of a record's slot get its fields (``_first`` never changes)."""
        i = r[_SLOT]
        self._last[i] = r[_LAST]
        self._seq_last[i] = r[_SEQ]
        self._count[i] = r[_COUNT]
        self._rssi_sum[i] = r[_RSSI_SUM]
        self._rssi_n[i] = r[_RSSI_N]
        self._channels[i] = r[_CHANNELS]
        self._minute_rssi[i] = r[_MINUTE_RSSI]
        self._last_inside[i] = r[_LAST_INSIDE]

    def _store_all(self) -> None:
        """Every record's fields to the columns: before a pass over them (expiry, presence,
        eviction) or the dict's clearing. The records stay the fields' place while remembered."""
        store = self._store
        for r in self._hot.values():
            store(r)

    def _renumber(self, opening: int) -> None:
        """Opening numbers 0..n-1 for the open visits but slot ``opening`` (the one being
        opened), in their order: after 2**32 visits opened."""
        order = self._order
        slots = [i for i in self._open_slots() if i != opening]
        for n, i in enumerate(slots):
            order[i] = n
        self._next_order = len(slots)

    def _open_slots(self) -> list[int]:
        """Slots of the open visits, in the order they opened."""
        last = self._last
        return sorted([i for i, t in enumerate(last) if t == t], key=self._order.__getitem__)

    @property
    def open(self) -> _Open:
        """The open visits' devices: ``len()``, iteration (in opening order), ``in``."""
        return _Open(self)
