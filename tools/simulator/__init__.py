"""A seeded simulator of a shop's day as Footfall sensors capture it.

``footfall simulate --out DIR`` (or :func:`simulate_day`) writes one pcap per sensor (link type
127: radiotap with the FCS flag + 802.11 probe request + FCS, the same layout as the real
captures in ``../shared/data/probe-captures``) and ``groundtruth.json``. The same arguments
always give the same bytes: every random draw comes from ``random.Random`` seeded with a
string derived from ``seed`` and what is being drawn (day, person), so adding a person does
not shift everybody else's noise.

The model, and where the numbers come from:

* ``people``   who walks by or comes in, when (hourly profile with lunch and evening peaks),
               how long (dwell classes) and where (paths in shop coordinates).
* ``devices``  phone models with IE layouts taken from the real captures (iOS 15/16, Galaxy
               S21, Oppo Find X3 Neo; the others built alike), market shares, and the MAC
               randomization policies of iOS and Android (two each) plus global MACs with
               real vendor OUIs. ~80 % of phones (``randomized_share``) randomize.
* ``radio``    log-distance path loss, shop-front attenuation, shadowing and fast fading,
               adjacent-channel leakage, -92 dBm sensitivity, 2 % collision loss.
* ``store``    the day: probe schedules (screen on/off, full and social-channel scans,
               bursts of 1-4 frames per channel, per-frame sequence numbers), reception by
               each sensor, file output; also :func:`make_frames` for benchmarks
               (``footfall simulate --out DIR --frames 1000000 --devices 50000``).

Sensors sit on a fixed channel (6 by default; ``channels=`` per sensor in
:func:`simulate_day`), as the edge agent is deployed: each hears the part of every scan sent
on its own channel and, attenuated, on the overlapping channels up to 4 away, so the DS
channel in a captured frame is often not the sensor's channel, as in the real captures.
* ``frames``   the struct-built frames and a tiny pcap writer.

Ground-truth schema (``groundtruth.json``, schema 1; timestamps are Unix seconds, floats)::

    schema, generator, site, seed, timezone
    hours        [open, close] local hours, e.g. [10.0, 21.0]
    days         [{date, open, close, capture: [start, end]}]  (capture = open-1h .. close+1h)
    sensors      [{id, position: [x, y], channel, inside}]
    layout       {width, depth, door_x, backroom_y}  metres; street is y < 0
    radio        the path-loss parameters used
    params       scale, randomized_share, days, passersby, visitors, staff, fixed, ...
    rules        how kinds, inside intervals, dwell and mac windows are defined
    summary      unique_people, appearances, visitors, passersby, staff, fixed,
                 returning_visits, wifi_off, randomized, distinct_macs,
                 frames {sensor: n}, distinct_macs_captured {sensor: n},
                 people_captured {sensor: n}
    people       [{id (unique per appearance; equals person when days == 1), person (stable
                  across days), kind: passerby|visitor|staff|fixed, day, model, os,
                  wifi (false: Wi-Fi off, never probes), randomized, mac_policy,
                  probes_ssids, returning, arrive, leave, inside: [enter, exit] | null,
                  dwell_s, dwell_class, macs: [{mac: "aa:bb:..", from_ts, to_ts}]}]
    expected     {sensor: [{mac, person (people[].id), day, first_ts, last_ts, frames,
                  rssi_max, rssi_mean}]}  what that sensor actually captured, sorted by first_ts

MACs appear in clear only here: this is synthetic data, and this file is the answer key.
"""

from __future__ import annotations

from footfall.tools.simulator.groundtruth import load as load_groundtruth
from footfall.tools.simulator.store import make_frames, simulate_day

__all__ = ["load_groundtruth", "make_frames", "simulate_day"]
