"""Received signal strength: log-distance path loss, walls, shadowing, channel leakage.

    RSSI = P0 + tx_offset - 10 * n * log10(d) - walls + X_shadow + X_fast - leak(|ch - ch_sensor|)

* ``P0`` = -40 dBm at 1 m (a phone radiating ~15 dBm EIRP, 2.4 GHz free-space loss at 1 m),
  ``n`` = 3.0 (indoor retail with shelving; 2.7-3.5 is the usual range in the literature).
* The shop front (glass and frame) costs ``FACADE_DB`` when the phone is outside and the
  sensor inside; that is what makes the street weaker than the shop floor.
* ``X_shadow`` (truth model 3, :class:`Shadow`): slow fading of one phone towards one sensor,
  N(0, 4 dB), that a phone keeps while it stays put. It decorrelates with the distance walked
  (Gudmundson's exponential model, ``exp(-d / 6 m)``; 6 m is the shadow-fading correlation
  distance of 3GPP TR 38.901's indoor office, NLOS), and even at rest it moves to a new level in
  5 % of scans (a body turned, someone in between) and is off by N(0, 12 dB) for one scan in 6 %:
  fitted to the real captures, phones lying still, where 55 % of consecutive scans agree within
  1 dB on a sniffer, 10 % differ by 5 dB or more and 40 % of those come back at the next scan
  (``captures.rssi_steps``; docs/device-estimation.md). Truth model 2 drew it afresh for every scan,
  so a shopper standing at a shelf jumped by 5.7 dB (RMS) from scan to scan.
  ``X_fast`` ~ N(0, 1.5 dB) per frame (multipath).
* A sniffer on channel 6 also hears probes sent on channels 2-10: 2.4 GHz channels are 5 MHz
  apart and 22 MHz wide, so a frame on an adjacent channel arrives attenuated by ``LEAK_DB``
  (the real captures show exactly this: frames with DS channel 9 on a channel-11 sniffer).
* Below ``SENSITIVITY_DBM`` (-92 dBm) nothing is decoded, between it and -88 dBm a frame is
  decoded with falling probability, and ``LOSS`` of the rest is lost to collisions.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

P0_DBM = -40.0
PATH_LOSS_EXPONENT = 3.0
FACADE_DB = 8.0
SHADOW_SIGMA = 4.0
SHADOW_DECORRELATION_M = 6.0
SHADOW_SHIFT = 0.05  # per scan, at rest: a new level
SHADOW_TRANSIENT = 0.06  # per scan: one scan off by N(0, SHADOW_TRANSIENT_SIGMA)
SHADOW_TRANSIENT_SIGMA = 12.0
FAST_SIGMA = 1.5
SENSITIVITY_DBM = -92.0
SOFT_DBM = -88.0
LOSS = 0.02
# Extra attenuation by channel distance: channels 5 MHz apart overlap for |delta| <= 4.
LEAK_DB = {0: 0.0, 1: 3.0, 2: 9.0, 3: 18.0, 4: 28.0}
MAX_LEAK = max(LEAK_DB)


def channel_freq(channel: int) -> int:
    if channel == 14:
        return 2484
    if not 1 <= channel <= 13:
        raise ValueError(f"2.4 GHz channel must be 1-14, got {channel}")
    return 2407 + 5 * channel


@dataclass(frozen=True)
class Sensor:
    id: str
    x: float
    y: float
    channel: int = 6
    inside: bool = True

    def as_dict(self) -> dict:
        return {"id": self.id, "position": [self.x, self.y], "channel": self.channel, "inside": self.inside}


def mean_rssi(sensor: Sensor, x: float, y: float, outside: bool, tx_offset: float = 0.0) -> float:
    """Mean RSSI (dBm) before shadowing, for a phone at (x, y)."""
    d = max(0.5, math.hypot(x - sensor.x, y - sensor.y))
    r = P0_DBM + tx_offset - 10.0 * PATH_LOSS_EXPONENT * math.log10(d)
    if outside and sensor.inside:
        r -= FACADE_DB
    return r


class Shadow:
    """The slow fading of one phone towards each sensor, scan by scan (see the module doc)."""

    __slots__ = ("levels", "x", "y")

    def __init__(self, rng: random.Random, sensors: int, x: float, y: float) -> None:
        self.levels = [rng.gauss(0.0, SHADOW_SIGMA) for _ in range(sensors)]
        self.x, self.y = x, y

    def draw(self, rng: random.Random, x: float, y: float) -> list[float]:
        """The shadowing (dB) of one scan sent from (x, y), per sensor."""
        moved = math.hypot(x - self.x, y - self.y)
        self.x, self.y = x, y
        rho = math.exp(-moved / SHADOW_DECORRELATION_M)
        fresh = SHADOW_SIGMA * math.sqrt(1.0 - rho * rho)
        gauss, rand = rng.gauss, rng.random
        out = []
        for i, level in enumerate(self.levels):
            if rand() < SHADOW_SHIFT:
                level = gauss(0.0, SHADOW_SIGMA)
            elif moved > 0.0:
                level = rho * level + gauss(0.0, fresh)
            self.levels[i] = level
            out.append(level + gauss(0.0, SHADOW_TRANSIENT_SIGMA) if rand() < SHADOW_TRANSIENT else level)
        return out


def captured(rng: random.Random, rssi: float) -> bool:
    """Whether a frame at ``rssi`` makes it into the sniffer's capture."""
    if rssi < SENSITIVITY_DBM:
        return False
    if rssi < SOFT_DBM and rng.random() > (rssi - SENSITIVITY_DBM) / (SOFT_DBM - SENSITIVITY_DBM):
        return False
    return rng.random() >= LOSS
