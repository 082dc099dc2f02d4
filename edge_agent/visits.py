"""Sightings become visits, on the sensor.

A visit of a device opens with its first sighting and closes after ``gap_s`` without one.
It carries first/last seen, dwell, sighting count, RSSI max/mean, the time spent "inside"
(see below), the randomized flag, the IE fingerprint and sequence numbers (the hub's
device estimator links randomized MACs with them), and the channels it was heard on.

Classification and its defaults: ``visit_settings``.

Memory is bounded: an open visit is no Python object at all (``visit_columns``: typed-array
columns by slot, found through ``device_table.DeviceTable``, about 110 bytes a device in all).
Slots are reused after a visit closes, state expires after the gap, and past ``max_devices``
the oldest visits are closed early (``closed_by = "evicted"``). Visits that close together
(expiry, eviction ties, flush) close in the order they opened.

Per-burst and per-minute evidence (visit payload version 2, see ``docs/mqtt.md``): the burst
count and start offsets (the first 64) and the max RSSI of each UTC minute. Most devices are
per-scan random MACs heard in one burst within one minute, which need nothing beyond the
visit's own fields. The rest is kept in 7 bytes of columns (6 more than before: ``_rssi_max``
shrank to one byte) and side tables keyed by slot that only longer visits get:

- ``_minute_rssi`` (int8): max RSSI of the visit's current minute, -128 for none yet; a frame
  updates only this maximum, ``_rssi_max`` takes each minute's when the minute ends;
- ``_minutes01`` (uint16): the two first completed minutes, one byte code each;
- ``_minute_table`` (``bytearray`` per slot): codes of the completed minutes from the third on;
- ``_offset2`` (float32): start of the second burst, seconds since the first;
- ``_offset_table`` (``array("f")`` per slot): starts of bursts 3 to 64.

A minute's code is 0 when not heard, else its max RSSI + 129 (1 = heard without a signal
reading, which the payload writes as -128). The small columns cover visits of up to three
minutes and two bursts (a passer-by, the benchmark's crowd): a side table costs ~120 bytes of
objects and dict entry, more than half of a device's whole state, so a table for every
two-burst visit would grow a crowd's memory by half. A visit closes as ``max_duration`` rather
than grow its minute list past what the payload may carry (24 h).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from typing import Any

from footfall import payloads, schema
from footfall.edge_agent.bands import channel_bit, channels_of, freq_to_channel
from footfall.edge_agent.device_table import KEY_BYTES
from footfall.edge_agent.visit_columns import (
    _CHANNELS,
    _COUNT,
    _FIRST,
    _FREE,
    _LAST,
    _LAST_INSIDE,
    _MINUTE_RSSI,
    _NO_RSSI,
    _NONE,
    _RSSI_N,
    _RSSI_SUM,
    _SEQ,
    _SLOT,
    Model,
    VisitColumns,
)
from footfall.edge_agent.visit_settings import VisitSettings

__all__ = ["VisitSettings", "VisitTracker", "channel_mask", "freq_to_channel"]


def channel_mask(channel: int | None) -> int:
    """The bit of a channel identifier (:func:`freq_to_channel`) in a visit's channel set; 0 if unknown.

    2.4 GHz and most 5 GHz channels have bits below 64 (the tracker's column); 6 GHz ones have
    higher bits (a side table): see :mod:`footfall.edge_agent.bands`."""
    bit = channel_bit(channel)
    return 1 << bit if bit else 0


# Minute codes (see the module docstring) back to payload values.
_MINUTE_VALUE: list[int | None] = [None, *range(-128, 127)]
# A raw minute list one shorter than the payload's bound: rounding the times to the
# millisecond may add one minute at the end (payloads.visit_payload realigns).
_MAX_MINUTE_INDEX = schema.MAX_RSSI_MINUTES - 2
_MAX_OFFSETS = schema.MAX_BURST_OFFSETS
_ONE_BURST = (0.0,)
_MAX_SSIDS = 16  # SSID hashes kept per visit
_CHANNEL_LISTS_MAX = 1024  # channel sets remembered with their channel lists


def _minute_code(rssi: int) -> int:
    return min(rssi + 129, 255)


class VisitTracker(VisitColumns):
    """Feed sightings in time order with :meth:`observe`; closed visits go to ``emit``.

    ``device`` is the keyed device digest (bytes; a str is accepted too): it becomes the
    payload's hex device id only when a visit closes.
    """

    # Slots: past 30 attributes CPython 3.11 stops sharing instance dict keys, and every
    # ``self._x`` in observe() falls off its fast path (measured: ~3% more instructions a frame).
    __slots__ = (
        "site",
        "sensor",
        "emit",
        "settings",
        "closed",
        "evicted",
        "duplicates",
        "now",
        "_next_expire",
        "_minute_start",
        "_minute_end",
        "_next_timer",
    )

    def __init__(
        self,
        site: str,
        sensor: str,
        emit: Callable[[dict[str, Any]], None],
        settings: VisitSettings | None = None,
    ) -> None:
        self.site = site
        self.sensor = sensor
        self.emit = emit
        self.settings = settings or VisitSettings()
        self.closed = 0
        self.evicted = 0
        self.duplicates = 0  # frames that repeated the device's last sequence number (see observe)
        self.now = 0.0
        self._next_expire = 0.0
        # The UTC minute of ``now``: a frame of a device whose last frame is before its start
        # begins a new minute of that visit (one comparison a frame, no float modulo).
        self._minute_start = 0.0
        self._minute_end = 0.0
        self._next_timer = 0.0  # the earlier of _next_expire and _minute_end
        super().__init__()

    def _close_all(self, slots: list[int], reason: str) -> None:
        """Close these visits, in this order. Past a sixth of the visits that stay open, the
        table is rebuilt once after them rather than each taken out of it (an end of capture,
        a long silence: see ``DeviceTable.removed_many``)."""
        index = self._index
        if len(slots) * 6 <= index.n - len(slots):
            for i in slots:
                self._close(i, reason)
            return
        free = len(self._free)
        try:
            for i in slots:
                self._close(i, reason, False)
        finally:  # also when emit() raised: the visits closed so far are out of the table
            index.removed_many(len(self._free) - free)

    def observe(
        self,
        ts: float,
        ident: tuple[bytes | str, bool, str | None],
        rssi: int | None,
        seq: int | None,
        model: Model,
        channel_mask: int = 0,
        ssid: str | None = None,
    ) -> None:
        """One sighting of ``ident`` = (device, randomized, partner hash).

        ``model`` is what identifies the phone model (the parser's shared ``Elements``: its
        ``fingerprint`` and ``ie_ids``); ``channel_mask`` is :func:`channel_mask` of the channel;
        ``rssi`` is dBm in -128..127 (radiotap's signed byte) or None. A repeat of the device's
        last ``seq`` within ``duplicate_s`` counts in ``duplicates``, not in ``sightings``.
        Positional and flat on purpose: this runs for every frame.
        """
        s = self.settings
        if ts > self.now:
            self.now = ts
            if ts >= self._next_timer:
                self._timers(ts)
        if seq is None:
            seq = _NONE
        device = ident[0]
        dup = False
        # The open visit of this device: its record in the small dict of recently heard devices
        # (a probe burst hits it: 93-95 % of frames of the benchmark's crowds), else from the table.
        r = self._hot.get(device)
        if r is not None or (r := self._lookup(device)) is not None:
            last = r[_LAST]
            gap = ts - last
            if seq == r[_SEQ] and -s.duplicate_s <= gap <= s.duplicate_s and seq != _NONE:
                # The same transmission again (another radio heard it, a retry, the interface
                # delivered it twice): not a new sighting, but its reading still counts below.
                dup = True
            if gap > s.gap_s or ts - r[_FIRST] > s.max_visit_s:
                self._close(r[_SLOT], "gap" if gap > s.gap_s else "max_duration")
                r = None
            elif gap > 0:
                # A later UTC minute than the last frame's: ts in now's minute and the last frame
                # before it, or (a frame older than now's minute) a boundary between the two.
                minute = self._minute_start
                if last < minute and (ts >= minute or ts % 60.0 < gap) and not self._new_minute(r, ts):
                    self._close(r[_SLOT], "max_duration")
                    r = None
                else:
                    if gap > s.burst_s:
                        i = r[_SLOT]
                        bursts = self._bursts[i] = self._bursts[i] + 1
                        self._gap_sum[i] += gap
                        if bursts == 2:
                            self._offset2[i] = ts - r[_FIRST]
                        elif bursts <= _MAX_OFFSETS:
                            offsets = self._offset_table.get(i)
                            if offsets is None:
                                self._offset_table[i] = array("f", (ts - r[_FIRST],))
                            else:
                                offsets.append(ts - r[_FIRST])
                    r[_LAST] = ts
        if r is None:
            dup = False  # the first frame of a visit (one closed for its length just above)
            if self._index.n >= s.max_devices:
                self._evict()
            key = device if device.__class__ is bytes and len(device) == KEY_BYTES else self._index.key_of(device)
            r = self._open_slot(key, ts, ident[1], seq, model, rssi)
            self._remember(device, r)
            if ident[2] is not None:
                self._phash[r[_SLOT]] = ident[2]
        if dup:
            self.duplicates += 1
        else:
            r[_COUNT] += 1
        r[_SEQ] = seq
        # A device stays on a few channels: a bit is new for few of its frames. Bits from 64 up
        # (6 GHz) do not fit the 64-bit column: a side table (rare).
        if channel_mask and not r[_CHANNELS] & channel_mask:
            if channel_mask >> 64:
                self._wide_channels[r[_SLOT]] = self._wide_channels.get(r[_SLOT], 0) | channel_mask
            else:
                r[_CHANNELS] |= channel_mask
        if ssid is not None:
            i = r[_SLOT]
            m = self._model[i]
            if m[-1] is None:  # (fingerprint, element ids, None): the first SSID
                self._model[i] = (ssid, m)
            elif ssid not in m and len(m) <= _MAX_SSIDS:  # (SSID hashes..., model): no str last
                self._model[i] = (ssid, *m)
        if rssi is not None:
            r[_RSSI_SUM] += rssi
            r[_RSSI_N] += 1
            if rssi > r[_MINUTE_RSSI]:
                r[_MINUTE_RSSI] = rssi
            if rssi >= s.inside_rssi:
                li = r[_LAST_INSIDE]
                if li >= 0 and ts - li <= s.inside_gap_s:
                    self._inside[r[_SLOT]] += ts - li
                r[_LAST_INSIDE] = ts

    def _timers(self, now: float) -> None:
        """``now`` reached the next minute or the next expiry (observe's clock only)."""
        if now >= self._minute_end:
            self._minute_start = now // 60.0 * 60.0
            self._minute_end = self._minute_start + 60.0
        if now >= self._next_expire:
            self.expire(now)
        else:
            self._next_timer = min(self._next_expire, self._minute_end)

    def _new_minute(self, r: list[Any], ts: float) -> bool:
        """A frame at ``ts`` starts a later minute of the visit of record ``r``: file the one
        that ended.

        False (nothing changed) when the visit's minute list would outgrow the payload's bound.
        Runs at most once a minute per device.
        """
        first_minute = r[_FIRST] // 60.0
        new = int(ts // 60.0 - first_minute)
        ended = int(r[_LAST] // 60.0 - first_minute)
        if new <= ended:  # float rounding at a boundary: the same minute after all
            return True
        if new > _MAX_MINUTE_INDEX:
            return False
        i = r[_SLOT]
        minute_max = r[_MINUTE_RSSI]
        code = _minute_code(minute_max)
        if ended == 0:  # the first minute ended
            self._rssi_max[i] = minute_max
            self._minutes01[i] = code
        elif ended == 1:
            self._minutes01[i] |= code << 8
        else:
            table = self._minute_table.get(i)
            if table is None:
                table = self._minute_table[i] = bytearray()
            if len(table) < ended - 2:  # minutes not heard in between
                table.extend(bytes(ended - 2 - len(table)))
            table.append(code)
        if ended and minute_max > self._rssi_max[i]:
            self._rssi_max[i] = minute_max
        r[_MINUTE_RSSI] = _NO_RSSI
        return True

    def _minutes(self, i: int, first: float, last: float) -> list[int | None]:
        """The payload's ``rssi_minutes`` of visit ``i`` (UTC minutes of first..last); pops its table.

        Only for visits of more than one minute: ``_minutes01`` is never 0 after a first one
        ended (a heard minute's code is at least 1), and [``_minute_rssi``] is the list otherwise.
        """
        n = int(last // 60.0 - first // 60.0)  # completed minutes before the current one
        current = self._minute_rssi[i]
        w = self._minutes01[i]
        codes = bytearray((w & 255, w >> 8))
        if n > 2:
            table = self._minute_table.pop(i, None)
            if table is not None:
                codes += table
        del codes[n:]
        if len(codes) < n:
            codes.extend(bytes(n - len(codes)))
        out = list(map(_MINUTE_VALUE.__getitem__, codes))
        out.append(current)
        return out

    def tick(self, now: float) -> None:
        """Expire when due (every ``gap_s / 4``, at most 30 s): a full scan is not for every second."""
        if now >= self._next_expire:
            self.expire(now)

    def expire(self, now: float) -> int:
        """Close every visit silent for longer than the gap; returns how many closed."""
        s = self.settings
        self._next_expire = now + min(s.gap_s / 4, 30.0)
        self._next_timer = min(self._next_expire, self._minute_end)
        limit = now - s.gap_s
        self._store_all()
        # A closed visit's slot holds NaN in _last: never less than the limit.
        stale = sorted([i for i, t in enumerate(self._last) if t < limit], key=self._order.__getitem__)
        if stale:
            self._close_all(stale, "gap")
        return len(stale)

    def flush(self, reason: str = "shutdown") -> int:
        """Close everything (agent stopping, end of a replayed file)."""
        slots = self._open_slots()
        self._close_all(slots, reason)
        return len(slots)

    def presence(self, now: float, window_s: float = 60.0) -> tuple[int, int]:
        """(devices heard within the window, of which inside) for the live count."""
        since = now - window_s
        devices = inside = 0
        self._store_all()
        last_inside = self._last_inside
        for i, t in enumerate(self._last):  # NaN in a closed visit's slot: never >= since
            if t >= since:
                devices += 1
                if last_inside[i] >= since:
                    inside += 1
        return devices, inside

    def _evict(self) -> None:
        # Rare by design (max_devices is far above a store's crowd): close the oldest tenth.
        # The n heard longest ago, ties in the order they opened (what sorting every open visit
        # by its last sighting, stably in opening order, gives), without sorting them all by key.
        n = max(1, self._index.n // 10)
        self._store_all()
        last = self._last
        cut = sorted([t for t in last if t == t])[n - 1]  # NaN != NaN: a closed visit's slot
        order = self._order.__getitem__
        oldest = sorted([i for i, t in enumerate(last) if t < cut], key=order)
        oldest.sort(key=last.__getitem__)
        oldest += sorted([i for i, t in enumerate(last) if t == cut], key=order)[: n - len(oldest)]
        self._close_all(oldest, "evicted")
        self.evicted += n

    def _close(self, i: int, reason: str, unlink: bool = True) -> None:
        """Close the visit in slot ``i`` and emit it; ``unlink=False``: leave the table (and
        the open count) to the caller, which rebuilds it (:meth:`_close_all`)."""
        index = self._index
        device = index.release(index.remove(i) if unlink else index.key(i))
        r = self._hot.pop(device, None)
        if r is not None:
            self._store(r)
        s = self.settings
        first, last = self._first[i], self._last[i]
        dwell = last - first
        rssi_n = self._rssi_n[i]
        rssi_max = self._minute_rssi[i]
        if self._minutes01[i]:  # more than one minute
            rssi_minutes = self._minutes(i, first, last)
            self._minutes01[i] = 0
            if self._rssi_max[i] > rssi_max:
                rssi_max = self._rssi_max[i]
        else:
            rssi_minutes = [rssi_max]
        seq_first, seq_last = self._seq_first[i], self._seq_last[i]
        bursts = self._bursts[i]
        mask = self._channels[i]
        if self._wide_channels:
            mask |= self._wide_channels.pop(i, 0)
        channels = self._channel_lists.get(mask)
        if channels is None:  # a crowd's visits share a few channel sets: decoded once each
            if len(self._channel_lists) >= _CHANNEL_LISTS_MAX:
                self._channel_lists.clear()
            channels = self._channel_lists[mask] = tuple(channels_of(mask))
        model = self._model[i]
        ssids = None
        if model is not None and model[-1] is not None:
            ssids = model[:-1]
            model = model[-1]
        if bursts == 1:
            offsets: Sequence[float] = _ONE_BURST
        else:
            offsets = [0.0, self._offset2[i]]
            if bursts > 2:
                offsets += self._offset_table.pop(i)
        payload = payloads.visit_payload(
            site=self.site,
            sensor=self.sensor,
            device=device.hex() if isinstance(device, bytes) else device,
            randomized=bool(self._randomized[i]),
            partner_hash=self._phash.pop(i, None) if self._phash else None,
            first_seen=first,
            last_seen=last,
            inside_s=self._inside[i],
            sightings=self._count[i],
            rssi_max=rssi_max if rssi_n else None,
            rssi_mean=(self._rssi_sum[i] / rssi_n) if rssi_n else None,
            visit_class="visitor" if self._inside[i] >= s.min_inside_s else "passerby",
            long_stay=dwell >= s.long_stay_s,
            fingerprint=model[0] if model is not None else "",
            ie_ids=list(model[1]) if model is not None else [],
            seq_first=None if seq_first == _NONE else seq_first,
            seq_last=None if seq_last == _NONE else seq_last,
            channels=list(channels),
            closed_by=reason,
            ssid_hashes=sorted(ssids) if ssids else None,
            burst_gap_s=(self._gap_sum[i] / (bursts - 1)) if bursts > 1 else None,
            bursts=bursts,
            burst_offsets=offsets,
            rssi_minutes=rssi_minutes,
        )
        self._model[i] = None
        self._last[i] = _FREE  # expire(), presence() and the table's rebuild pass over the slot
        self._free.append(i)
        self.closed += 1
        self.emit(payload)
