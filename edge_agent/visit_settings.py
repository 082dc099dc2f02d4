"""How the sensor classifies a visit, and why the defaults are what they are.

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
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

__all__ = ["VisitSettings"]


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
