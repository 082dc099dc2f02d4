"""How a phone scans, and what the sensors hear of it: the probe behaviour of one phone.

The truth model (``store.TRUTH_MODEL``, 3) covers this behaviour; every value and its source, or
"no source found", is in docs/device-estimation.md, "The simulator's phone behaviour and its
sources"; "the captures" are the labelled real captures of the public Probe Requests Open Dataset,
Baccichet et al., in ../shared/data/probe-captures:

* Screen: a phone alternates screen-on sessions (exponential, mean 2 min, ``SCREEN_SESSION_MEAN_S``)
  and screen-off periods sized so that the screen is on for ``screen_share`` of the time, drawn
  per person from U(0.05, 0.20) for passers-by and visitors (``SCREEN_SHARE``; mean 0.125 = 117
  min/day of use, Hintze et al. 2014, over a ~16 h waking day; no figure for people walking or
  shopping was found) and 0.1 for staff (no source).
* Scan intervals: screen on, every U(15, 45) s (Shi et al., on data of Hu et al. 2015: Android
  every 15 s unconnected, iOS peaks at 30 and 45 s; a weak source), except that with probability
  ``CLUSTER_SHARE`` (0.244: 80 of the 328 gaps between scans in the captures are 1.5-10 s) the
  next scan follows after U(2, 10) s (the captures do not label screen state: keeping these
  clusters to screen-on time is an assumption); screen off, every U(90, 300) s (no source
  found). Fixed devices scan every 55-65 s all day.
* Scans: a full sweep of channels 1-13 (70 % of scans with the screen on, 40 % off: no source
  found), 45 ms per channel (captures: 44-47 ms), or a partial ("social") scan of 1, 6, 11 at
  ``PARTIAL_DWELL_S`` per channel: 45 ms on iOS (captures: 46 ms median), 230 ms on Android
  (Galaxy S21: 231 ms). iOS partial scans add channel 13 (32 %) or 12 (8 %) (captures, 50 and 12
  of 156 iOS partial scans). iPhones send a single frame per channel, 25 ms per channel, in 13 %
  of full sweeps and 34 % of partial scans (captures, scans whose channel steps are ~25 ms).
* Bursts: otherwise on each channel the phone sends ``PhoneModel.burst`` rounds, 15-25 ms apart
  (captures: 2 per channel, 20-21 ms apart, for the iPhones and the Galaxy S21; no closer
  measurement for the other models' ranges); phones that probe remembered networks send the
  wildcard and one per SSID, 2 ms apart, in each round. Every frame, on any channel, takes the
  next sequence number (mod 4096), so a sniffer on one channel sees gaps; the MAC policy
  (``devices``) decides when the MAC and the counter change: per channel burst, per scan, or
  never.

:func:`emit_scans` sends all the scans of one person's phone, frame by frame, to every sensor in
range and records them in a :class:`DayCapture` (the day's frames and per-MAC captures);
``store.simulate_day`` calls it for everybody of the day.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from footfall.tools.simulator import radio
from footfall.tools.simulator.devices import Device
from footfall.tools.simulator.frames import probe_request, radiotap_prefix
from footfall.tools.simulator.people import Person
from footfall.tools.simulator.radio import Sensor

FULL_SCAN = tuple(range(1, 14))
SOCIAL_SCAN = (1, 6, 11)
SOCIAL_SCAN_13 = (1, 6, 11, 13)
SOCIAL_SCAN_12 = (1, 6, 11, 12)
# Screen use (Hintze et al. 2014: 117 min/day in 57 sessions of ~2 min).
SCREEN_SHARE = (0.05, 0.20)  # passers-by and visitors, U(lo, hi)
STAFF_SCREEN_SHARE = 0.1  # no source found
SCREEN_SESSION_MEAN_S = 120.0
# Time from one scan's start to the next.
SCAN_INTERVAL_ON_S = (15.0, 45.0)
SCAN_INTERVAL_OFF_S = (90.0, 300.0)  # no source found
CLUSTER_SHARE = 0.244  # captures: 80 of 328 inter-scan gaps are 1.5-10 s
CLUSTER_GAP_S = (2.0, 10.0)
FIXED_INTERVAL_S = (55.0, 65.0)
# Scan kinds (no source found for the shares; the captures do not label screen state).
FULL_SHARE_ON = 0.7
FULL_SHARE_OFF = 0.4
CHANNEL_DWELL_S = 0.045  # per channel in full sweeps (captures: 44-47 ms)
# Per channel in partial scans (captures: iOS 46 ms, Galaxy S21 231 ms; "other" never scans partially).
PARTIAL_DWELL_S = {"ios": 0.045, "android": 0.23, "other": 0.2}
IOS_PARTIAL_13 = 0.32  # captures: 50 of 156 iOS partial scans add channel 13
IOS_PARTIAL_12 = 0.077  # and 12 of 156 add channel 12
IOS_SINGLE_FRAME = {True: 0.13, False: 0.34}  # full / partial iOS scans with 1 frame per channel
SINGLE_DWELL_S = 0.025  # per channel in those (captures: 25 ms median)


class DayCapture:
    """Frames and per-MAC captures of one day, for all sensors."""

    def __init__(self, sensors: list[Sensor]) -> None:
        self.sensors = sensors
        self.frames: list[list[tuple[int, bytes]]] = [[] for _ in sensors]
        # per sensor: mac -> [person id, first_us, last_us, frames, rssi_max, rssi_sum]
        self.expected: list[dict[bytes, list]] = [{} for _ in sensors]
        self._prefix: dict[tuple[int, int], bytes] = {}
        self.shadows: dict[str, radio.Shadow] = {}  # per person appearance

    def prefix(self, si: int, rate: int) -> bytes:
        key = (si, rate)
        p = self._prefix.get(key)
        if p is None:
            p = self._prefix[key] = radiotap_prefix(self.sensors[si].channel, rate)
        return p


def _scan(day: DayCapture, p: Person, dev: Device, rng: random.Random, t0: float, full: bool, win: tuple) -> None:
    x, y = p.position(t0)
    outside = y < 0
    model = dev.model
    tx = model.tx_dbm_offset
    sensors = day.sensors
    shadow = day.shadows.get(p.id)
    if shadow is None:
        shadow = day.shadows[p.id] = radio.Shadow(rng, len(sensors), x, y)
    bases = [radio.mean_rssi(s, x, y, outside, tx) + n for s, n in zip(sensors, shadow.draw(rng, x, y), strict=True)]
    audible = max(bases) > radio.SENSITIVITY_DBM - 4 * radio.FAST_SIGMA
    if full:
        channels, dwell = FULL_SCAN, CHANNEL_DWELL_S
    else:
        channels, dwell = SOCIAL_SCAN, PARTIAL_DWELL_S[model.os]
    k = 0
    if model.os == "ios":
        if not full:
            r = rng.random()
            if r < IOS_PARTIAL_13:
                channels = SOCIAL_SCAN_13
            elif r < IOS_PARTIAL_13 + IOS_PARTIAL_12:
                channels = SOCIAL_SCAN_12
        if rng.random() < IOS_SINGLE_FRAME[full]:
            k, dwell = 1, SINGLE_DWELL_S
    if not k:
        k = rng.randint(*model.burst)
    dev.begin_scan(t0)
    per_burst = dev.policy == "ios_per_burst"
    mac = dev.mac
    ssids = (b"", *dev.ssids)
    rate = model.rate
    t_ch = t0
    last = t0
    gauss = rng.gauss
    for ch in channels:
        if per_burst:
            dev.begin_burst(t_ch)
            mac = dev.mac
        tf = t_ch
        for _ in range(k):
            for ssid in ssids:
                seq = dev.seq
                dev.seq = (seq + 1) & 0xFFF
                last = tf
                if audible and win[0] <= tf < win[1]:
                    for si, s in enumerate(sensors):
                        dch = abs(ch - s.channel)
                        if dch > radio.MAX_LEAK:
                            continue
                        r = bases[si] - radio.LEAK_DB[dch] + gauss(0.0, radio.FAST_SIGMA)
                        if not radio.captured(rng, r):
                            continue
                        rssi = int(round(r))
                        ts_us = int(round(tf * 1_000_000))
                        day.frames[si].append(
                            (ts_us, probe_request(day.prefix(si, rate), rssi, mac, seq, dev.body(ch, ssid)))
                        )
                        e = day.expected[si].get(mac)
                        if e is None:
                            day.expected[si][mac] = [p.id, ts_us, ts_us, 1, rssi, rssi]
                        else:
                            e[2] = ts_us
                            e[3] += 1
                            e[5] += rssi
                            if rssi > e[4]:
                                e[4] = rssi
                tf += 0.002
            tf += rng.uniform(0.013, 0.023)
        if per_burst:
            dev.note_sent(last)
        t_ch = max(t_ch + dwell, tf)
    dev.note_sent(last)


def scan_schedule(rng: random.Random, arrive: float, leave: float, share: float) -> Iterator[tuple[float, bool]]:
    """Scan start times of a phone present from ``arrive`` to ``leave``, with its screen state.

    ``share``: fraction of the time the screen is on. Yields ``(t, screen_on)``; the caller may
    draw from ``rng`` between items (the order of draws is fixed, so output stays reproducible).
    """
    active = rng.random() < share
    mean_off = max(1.0, SCREEN_SESSION_MEAN_S * (1 - share) / max(share, 1e-3))

    def period(on: bool) -> float:
        return rng.expovariate(1.0 / (SCREEN_SESSION_MEAN_S if on else mean_off))

    state_end = arrive + period(active)
    t = arrive + rng.uniform(0.0, 30.0 if active else 150.0)
    while t < leave:
        while t >= state_end:
            active = not active
            state_end += period(active)
        yield t, active
        if not active:
            t += rng.uniform(*SCAN_INTERVAL_OFF_S)
        elif rng.random() < CLUSTER_SHARE:
            t += rng.uniform(*CLUSTER_GAP_S)
        else:
            t += rng.uniform(*SCAN_INTERVAL_ON_S)


def emit_scans(day: DayCapture, p: Person, rng: random.Random, win: tuple[float, float]) -> None:
    """All scans of one person's phone while around the shop."""
    dev = p.device
    if dev is None:
        return
    dev.macs = []
    start, end = max(p.arrive, win[0]), min(p.leave, win[1])
    if p.kind == "fixed":
        t = start + rng.uniform(0.0, 60.0)
        while t < end:
            _scan(day, p, dev, rng, t, True, win)
            t += rng.uniform(*FIXED_INTERVAL_S)
        return
    for t, active in scan_schedule(rng, p.arrive, p.leave, p.screen_share):
        if start <= t < end:
            full = rng.random() < (FULL_SHARE_ON if active else FULL_SHARE_OFF)
            _scan(day, p, dev, rng, t, full, win)
