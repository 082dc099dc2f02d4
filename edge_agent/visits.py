"""Sightings become visits, on the sensor.

A visit of a device opens with its first sighting and closes after ``gap_s`` without one.
It carries first/last seen, dwell, sighting count, RSSI max/mean, the time spent "inside"
(see below), the randomized flag, the IE fingerprint and sequence numbers (the hub's
device estimator links randomized MACs with them), and the channels it was heard on.

Classification, per visit (defaults tunable per site; ``footfall calibrate`` measures them):

- **inside time**: consecutive sightings at or above ``inside_rssi`` chain into inside time
  when they are at most ``inside_gap_s`` apart; a weaker frame in between does not break the
  chain, because one faded frame says nothing about where the phone is.
- **visitor**: inside time of at least ``min_inside_s``. **passer-by**: everyone else.
- **long stay**: a visit of at least ``long_stay_s`` (staff, fixed equipment); flagged, and
  the hub leaves such devices out of the footfall metrics.

Why these defaults (``VisitSettings``):

- ``inside_rssi = -70`` dBm. Commercial systems draw the inside/outside line with an RSSI
  threshold set per site (Cisco Meraki Location Analytics: the "visitor" signal threshold;
  Purple and Cloud4Wi: a presence RSSI threshold calibrated at the door). At 2.4 GHz with
  free-space-like loss indoors, -70 dBm is roughly 10-15 m from a sensor and a shop-window
  wall costs 5-10 dB, which puts a person on the pavement below it for a sensor placed a few
  metres inside. Site calibration beats any default.
- ``min_inside_s = 60``. Meraki counts a visitor after several minutes of presence by
  default; we go lower on purpose: the O2O scenario of the seeds retargets visitors who stayed
  *under* 5 minutes, so the visitor line must sit well below 5 minutes. Under a minute inside
  range is walking through the door zone, not a visit.
- ``inside_gap_s = 600``: an idle phone in a pocket probes only every few minutes, so two
  strong sightings minutes apart are one stay inside, not two glimpses. Measured on simulated
  store days (``/tmp`` runs of ``footfall simulate --scale 1``): chaining over 180 s found 78%
  of true visitors, over 600 s 88%, both with every passer-by classified right.
- ``gap_s = 600``. Idle phones probe every one to several minutes (screen off, in a pocket);
  a 10-minute gap survives two missed probe cycles, while a customer who leaves and comes back
  after lunch is two visits. The hub also merges adjacent visits across sensors.
- ``long_stay_s = 4 h``: no shopping trip in one store lasts that long; a shift does.
- ``max_visit_s = 12 h``: an all-day device is reported at least twice a day, not never.
- ``duplicate_s = 1``: a frame with the device's last sequence number within a second of its
  last frame is the same transmission again, not a new sighting. A sensor's radios on
  neighbouring channels hear one transmission each (the real captures: 3 sniffers on 1/6/11,
  up to 44 % of a phone's frames are such copies, microseconds apart), a unicast probe is
  retried with the same number, and a monitor interface can deliver a frame twice. A phone's
  next probe has the next number (12 bits, wrapping after 4096 frames), so a second is
  far from both. The copy does not count in ``sightings`` (``VisitTracker.duplicates`` counts
  it), but its reading is still a reading: it goes into the RSSI figures, inside time and the
  channel set as before (another radio heard the phone, at its own level). Probe requests are
  never fragmented, so the fragment number is not compared.

Memory is bounded: a sensor on an OpenWrt router tracks tens of thousands of devices in a
few megabytes, so per-device state lives in parallel typed arrays (``array``) indexed by a
slot number, about 220 bytes a device instead of the ~600 of a Python object per device;
slots are reused after a visit closes, state expires after the gap, and past
``max_devices`` the oldest visits are closed early (``closed_by = "evicted"``).

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
from dataclasses import dataclass, fields
from typing import Any, Protocol

from footfall import schema
from footfall.edge_agent.bands import channel_bit, channels_of, freq_to_channel

__all__ = ["VisitSettings", "VisitTracker", "channel_mask", "freq_to_channel"]


@dataclass
class VisitSettings:
    inside_rssi: int = -70
    min_inside_s: float = 60.0
    inside_gap_s: float = 600.0
    gap_s: float = 600.0
    long_stay_s: float = 4 * 3600.0
    max_visit_s: float = 12 * 3600.0
    max_devices: int = 100_000
    burst_s: float = 1.0
    duplicate_s: float = 1.0

    def update(self, values: dict[str, Any]) -> list[str]:
        """Apply known keys (from a config message); return the names that changed."""
        changed = []
        for f in fields(self):
            if f.name in values:
                new = type(getattr(self, f.name))(values[f.name])
                if new != getattr(self, f.name):
                    setattr(self, f.name, new)
                    changed.append(f.name)
        return changed


def channel_mask(channel: int | None) -> int:
    """The bit of a channel identifier (:func:`freq_to_channel`) in a visit's channel set; 0 if unknown.

    2.4 GHz and most 5 GHz channels have bits below 64 (the tracker's column); 6 GHz ones have
    higher bits (a side table): see :mod:`footfall.edge_agent.bands`."""
    bit = channel_bit(channel)
    return 1 << bit if bit else 0


class Model(Protocol):
    """What a visit keeps of the phone model: the parser's ``Elements`` satisfies it."""

    fingerprint: str
    ie_ids: tuple[int, ...]


_NONE = -32768  # "no value" in the sequence number arrays
_NO_RSSI = schema.RSSI_NO_READING  # "no reading yet" in the RSSI arrays (int8: their lowest value)
# Minute codes (see the module docstring) back to payload values.
_MINUTE_VALUE: list[int | None] = [None, *range(-128, 127)]
# A raw minute list one shorter than the payload's bound: rounding the times to the
# millisecond may add one minute at the end (schema.visit_payload realigns).
_MAX_MINUTE_INDEX = schema.MAX_RSSI_MINUTES - 2
_MAX_OFFSETS = schema.MAX_BURST_OFFSETS
_ONE_BURST = (0.0,)
_MODELS_MAX = 4096  # distinct fingerprints remembered for sharing; the field has hundreds


def _minute_code(rssi: int) -> int:
    return min(rssi + 129, 255)


class VisitTracker:
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
        "open",
        "closed",
        "evicted",
        "duplicates",
        "now",
        "_next_expire",
        "_minute_start",
        "_minute_end",
        "_next_timer",
        "_free",
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
        "_ssids",
        "_wide_channels",
        "_minute_table",
        "_offset_table",
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
        self.open: dict[bytes | str, int] = {}  # device -> slot
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
        self._free: list[int] = []
        # One array per field, indexed by slot.
        self._first = array("d")
        self._last = array("d")
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
        self._model: list[tuple[str, tuple[int, ...]] | None] = []
        self._models: dict[str, tuple[str, tuple[int, ...]]] = {}
        # Rare extras live in side tables keyed by slot, not in a column for every device.
        self._phash: dict[int, str] = {}
        self._ssids: dict[int, tuple[str, ...]] = {}
        self._wide_channels: dict[int, int] = {}  # channel bits from 64 up (6 GHz): rare
        self._minute_table: dict[int, bytearray] = {}
        self._offset_table: dict[int, array[float]] = {}

    def _kept(self, model: Model) -> tuple[str, tuple[int, ...]]:
        fingerprint = model.fingerprint
        kept = self._models.get(fingerprint)
        if kept is None:
            if len(self._models) >= _MODELS_MAX:
                self._models.clear()  # open visits keep their own tuples
            kept = self._models[fingerprint] = (fingerprint, model.ie_ids)
        return kept

    def _open_slot(self, ts: float, randomized: bool, seq: int, model: Model, rssi: int | None) -> int:
        model_kept = self._kept(model)
        if self._free:
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
            return i
        self._first.append(ts)
        self._last.append(ts)
        self._inside.append(0.0)
        self._gap_sum.append(0.0)
        self._last_inside.append(-1.0)
        self._count.append(0)
        self._rssi_n.append(0)
        self._rssi_sum.append(0)
        self._channels.append(0)
        self._rssi_max.append(_NO_RSSI)
        self._seq_first.append(seq)
        self._seq_last.append(seq)
        self._bursts.append(1)
        self._randomized.append(randomized)
        self._model.append(model_kept)
        self._minute_rssi.append(_NO_RSSI if rssi is None else rssi)
        self._minutes01.append(0)
        self._offset2.append(0.0)
        return len(self._first) - 1

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
        i = self.open.get(device)
        if i is not None:
            last = self._last[i]
            gap = ts - last
            if seq == self._seq_last[i] and -s.duplicate_s <= gap <= s.duplicate_s and seq != _NONE:
                # The same transmission again (another radio heard it, a retry, the interface
                # delivered it twice): not a new sighting, but its reading still counts below.
                dup = True
            if gap > s.gap_s or ts - self._first[i] > s.max_visit_s:
                self._close(device, "gap" if gap > s.gap_s else "max_duration")
                i = None
            elif gap > 0:
                # A later UTC minute than the last frame's: ts in now's minute and the last frame
                # before it, or (a frame older than now's minute) a boundary between the two.
                minute = self._minute_start
                if last < minute and (ts >= minute or ts % 60.0 < gap) and not self._new_minute(i, ts):
                    self._close(device, "max_duration")
                    i = None
                else:
                    if gap > s.burst_s:
                        bursts = self._bursts[i] = self._bursts[i] + 1
                        self._gap_sum[i] += gap
                        if bursts == 2:
                            self._offset2[i] = ts - self._first[i]
                        elif bursts <= _MAX_OFFSETS:
                            offsets = self._offset_table.get(i)
                            if offsets is None:
                                self._offset_table[i] = array("f", (ts - self._first[i],))
                            else:
                                offsets.append(ts - self._first[i])
                    self._last[i] = ts
        if i is None:
            dup = False  # the first frame of a visit (one closed for its length just above)
            if len(self.open) >= s.max_devices:
                self._evict()
            i = self.open[device] = self._open_slot(ts, ident[1], seq, model, rssi)
            if ident[2] is not None:
                self._phash[i] = ident[2]
        if dup:
            self.duplicates += 1
        else:
            self._count[i] += 1
        self._seq_last[i] = seq
        if channel_mask:
            try:
                self._channels[i] |= channel_mask
            except OverflowError:  # a bit past the 64-bit column (6 GHz): free when not raised
                self._wide_channels[i] = self._wide_channels.get(i, 0) | channel_mask
        if ssid is not None:
            # A tuple: a phone asks for one to three networks, and a one-element set costs 216
            # bytes against a tuple's 48 (a tenth of a crowd's open visits carry SSIDs).
            ssids = self._ssids.get(i)
            if ssids is None:
                self._ssids[i] = (ssid,)
            elif ssid not in ssids and len(ssids) < 16:
                self._ssids[i] = (*ssids, ssid)
        if rssi is not None:
            self._rssi_sum[i] += rssi
            self._rssi_n[i] += 1
            if rssi > self._minute_rssi[i]:
                self._minute_rssi[i] = rssi
            if rssi >= s.inside_rssi:
                li = self._last_inside[i]
                if li >= 0 and ts - li <= s.inside_gap_s:
                    self._inside[i] += ts - li
                self._last_inside[i] = ts

    def _timers(self, now: float) -> None:
        """``now`` reached the next minute or the next expiry (observe's clock only)."""
        if now >= self._minute_end:
            self._minute_start = now // 60.0 * 60.0
            self._minute_end = self._minute_start + 60.0
        if now >= self._next_expire:
            self.expire(now)
        else:
            self._next_timer = min(self._next_expire, self._minute_end)

    def _new_minute(self, i: int, ts: float) -> bool:
        """A frame at ``ts`` starts a later minute of visit ``i``: file the one that ended.

        False (nothing changed) when the visit's minute list would outgrow the payload's bound.
        Runs at most once a minute per device.
        """
        first_minute = self._first[i] // 60.0
        new = int(ts // 60.0 - first_minute)
        ended = int(self._last[i] // 60.0 - first_minute)
        if new <= ended:  # float rounding at a boundary: the same minute after all
            return True
        if new > _MAX_MINUTE_INDEX:
            return False
        minute_max = self._minute_rssi[i]
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
        self._minute_rssi[i] = _NO_RSSI
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
        last = self._last
        stale = [d for d, i in self.open.items() if last[i] < limit]
        for device in stale:
            self._close(device, "gap")
        return len(stale)

    def flush(self, reason: str = "shutdown") -> int:
        """Close everything (agent stopping, end of a replayed file)."""
        devices = list(self.open)
        for device in devices:
            self._close(device, reason)
        return len(devices)

    def presence(self, now: float, window_s: float = 60.0) -> tuple[int, int]:
        """(devices heard within the window, of which inside) for the live count."""
        since = now - window_s
        devices = inside = 0
        last, last_inside = self._last, self._last_inside
        for i in self.open.values():
            if last[i] >= since:
                devices += 1
                if last_inside[i] >= since:
                    inside += 1
        return devices, inside

    def _evict(self) -> None:
        # Rare by design (max_devices is far above a store's crowd): close the oldest tenth.
        n = max(1, len(self.open) // 10)
        last = self._last
        oldest = sorted(self.open, key=lambda d: last[self.open[d]])[:n]
        for device in oldest:
            self._close(device, "evicted")
        self.evicted += n

    def _close(self, device: bytes | str, reason: str) -> None:
        i = self.open.pop(device)
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
        mask = self._channels[i] | self._wide_channels.pop(i, 0)
        ssids = self._ssids.pop(i, None)
        model = self._model[i]
        if bursts == 1:
            offsets: Sequence[float] = _ONE_BURST
        else:
            offsets = [0.0, self._offset2[i]]
            if bursts > 2:
                offsets += self._offset_table.pop(i)
        payload = schema.visit_payload(
            site=self.site,
            sensor=self.sensor,
            device=device.hex() if isinstance(device, bytes) else device,
            randomized=bool(self._randomized[i]),
            partner_hash=self._phash.pop(i, None),
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
            channels=channels_of(mask),
            closed_by=reason,
            ssid_hashes=sorted(ssids) if ssids else None,
            burst_gap_s=(self._gap_sum[i] / (bursts - 1)) if bursts > 1 else None,
            bursts=bursts,
            burst_offsets=offsets,
            rssi_minutes=rssi_minutes,
        )
        self._model[i] = None
        self._free.append(i)
        self.closed += 1
        self.emit(payload)
