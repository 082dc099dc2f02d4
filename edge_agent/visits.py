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
- ``gap_s = 600``. Idle phones probe every one to several minutes (screen off, in a pocket);
  a 10-minute gap survives two missed probe cycles, while a customer who leaves and comes back
  after lunch is two visits. The hub also merges adjacent visits across sensors.
- ``long_stay_s = 4 h``: no shopping trip in one store lasts that long; a shift does.
- ``max_visit_s = 12 h``: an all-day device is reported at least twice a day, not never.

Memory is bounded: state is one small slotted object per device present, expired after the
gap; past ``max_devices`` the oldest are closed early (``closed_by = "evicted"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from footfall import schema


@dataclass
class VisitSettings:
    inside_rssi: int = -70
    min_inside_s: float = 60.0
    inside_gap_s: float = 180.0
    gap_s: float = 600.0
    long_stay_s: float = 4 * 3600.0
    max_visit_s: float = 12 * 3600.0
    max_devices: int = 100_000
    burst_s: float = 1.0

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


def freq_to_channel(freq: int | None) -> int:
    if not freq:
        return 0
    if freq == 2484:
        return 14
    if 2412 <= freq < 2484:
        return (freq - 2407) // 5
    if 5000 <= freq < 5950:
        return (freq - 5000) // 5
    if 5950 <= freq <= 7125:
        return (freq - 5950) // 5
    return 0


class _Open:
    """One device's open visit. Slotted: tens of thousands of these must fit in a few MB."""

    __slots__ = (
        "randomized",
        "phash",
        "first",
        "last",
        "count",
        "rssi_max",
        "rssi_sum",
        "rssi_n",
        "inside_s",
        "last_inside",
        "seq_first",
        "seq_last",
        "fingerprint",
        "ie_ids",
        "channels",
        "ssids",
        "bursts",
        "burst_gap_sum",
    )


class VisitTracker:
    """Feed sightings in time order with :meth:`observe`; closed visits go to ``emit``."""

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
        self.open: dict[str, _Open] = {}
        self.closed = 0
        self.evicted = 0
        self.now = 0.0
        self._next_expire = 0.0

    def observe(
        self,
        ts: float,
        device: str,
        randomized: bool,
        phash: str | None,
        rssi: int | None,
        seq: int | None,
        fingerprint: str,
        ie_ids: tuple[int, ...],
        channel: int = 0,
        ssid: str | None = None,
    ) -> None:
        s = self.settings
        if ts > self.now:
            self.now = ts
            if ts >= self._next_expire:
                self.expire(ts)
        v = self.open.get(device)
        if v is not None and (ts - v.last > s.gap_s or ts - v.first > s.max_visit_s):
            self._close(device, v, "gap" if ts - v.last > s.gap_s else "max_duration")
            v = None
        if v is None:
            if len(self.open) >= s.max_devices:
                self._evict()
            v = _Open()
            v.randomized = randomized
            v.phash = phash
            v.first = v.last = ts
            v.count = 0
            v.rssi_max = None
            v.rssi_sum = 0
            v.rssi_n = 0
            v.inside_s = 0.0
            v.last_inside = None
            v.seq_first = seq
            v.fingerprint = fingerprint
            v.ie_ids = ie_ids
            v.channels = 0
            v.ssids = None
            v.bursts = 1
            v.burst_gap_sum = 0.0
            self.open[device] = v
        else:
            gap = ts - v.last
            if gap > s.burst_s:
                v.bursts += 1
                v.burst_gap_sum += gap
            if ts > v.last:
                v.last = ts
        v.count += 1
        v.seq_last = seq
        if channel:
            v.channels |= 1 << channel
        if ssid is not None:
            if v.ssids is None:
                v.ssids = {ssid}
            elif len(v.ssids) < 16:
                v.ssids.add(ssid)
        if rssi is not None:
            v.rssi_sum += rssi
            v.rssi_n += 1
            if v.rssi_max is None or rssi > v.rssi_max:
                v.rssi_max = rssi
            if rssi >= s.inside_rssi:
                li = v.last_inside
                if li is not None and 0 <= ts - li <= s.inside_gap_s:
                    v.inside_s += ts - li
                v.last_inside = ts

    def expire(self, now: float) -> int:
        """Close every visit silent for longer than the gap; returns how many closed."""
        s = self.settings
        self._next_expire = now + min(s.gap_s / 4, 30.0)
        limit = now - s.gap_s
        stale = [d for d, v in self.open.items() if v.last < limit]
        for device in stale:
            self._close(device, self.open[device], "gap")
        return len(stale)

    def flush(self, reason: str = "shutdown") -> int:
        """Close everything (agent stopping, end of a replayed file)."""
        devices = list(self.open)
        for device in devices:
            self._close(device, self.open[device], reason)
        return len(devices)

    def presence(self, now: float, window_s: float = 60.0) -> tuple[int, int]:
        """(devices heard within the window, of which inside) for the live count."""
        since = now - window_s
        devices = inside = 0
        for v in self.open.values():
            if v.last >= since:
                devices += 1
                if v.last_inside is not None and v.last_inside >= since:
                    inside += 1
        return devices, inside

    def _evict(self) -> None:
        # Rare by design (max_devices is far above a store's crowd): close the oldest tenth.
        n = max(1, len(self.open) // 10)
        oldest = sorted(self.open.items(), key=lambda kv: kv[1].last)[:n]
        for device, v in oldest:
            self._close(device, v, "evicted")
        self.evicted += n

    def _close(self, device: str, v: _Open, reason: str) -> None:
        del self.open[device]
        s = self.settings
        dwell = v.last - v.first
        payload = schema.visit_payload(
            site=self.site,
            sensor=self.sensor,
            device=device,
            randomized=v.randomized,
            partner_hash=v.phash,
            first_seen=v.first,
            last_seen=v.last,
            inside_s=v.inside_s,
            sightings=v.count,
            rssi_max=v.rssi_max,
            rssi_mean=(v.rssi_sum / v.rssi_n) if v.rssi_n else None,
            visit_class="visitor" if v.inside_s >= s.min_inside_s else "passerby",
            long_stay=dwell >= s.long_stay_s,
            fingerprint=v.fingerprint,
            ie_ids=list(v.ie_ids),
            seq_first=v.seq_first,
            seq_last=v.seq_last,
            channels=[c for c in range(v.channels.bit_length()) if v.channels >> c & 1],
            closed_by=reason,
            ssid_hashes=sorted(v.ssids) if v.ssids else None,
            burst_gap_s=(v.burst_gap_sum / (v.bursts - 1)) if v.bursts > 1 else None,
        )
        self.closed += 1
        self.emit(payload)
