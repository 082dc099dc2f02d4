"""A seeded simulator of a shop's day as Footfall sensors capture it.

``footfall simulate --out DIR`` (or :func:`simulate_day`) writes one pcap per sensor (link type
127: radiotap with the FCS flag + 802.11 probe request + FCS, the same layout as the real
captures in ``../shared/data/probe-captures``) and ``groundtruth.json``. The same arguments
always give the same bytes: every random draw comes from ``random.Random`` seeded with a
string derived from ``seed`` and what is being drawn (day, person), so adding a person does
not shift everybody else's noise.

The model, and where the numbers come from (truth model 3, recorded as ``params.truth_model``;
every phone-behaviour value with its source, or "no source found", and what changed from truth
model 1 and why: docs/device-estimation.md, "The simulator's phone behaviour and its sources").
"The captures" are the eleven labelled phones of the public Probe Requests Open Dataset
(Baccichet et al., GiovanniBaccichet/ProbingPatternsDataset) in ``../shared/data/probe-captures``:

* ``people``   who walks by or comes in, when (hourly profile with lunch and evening peaks),
               how long (dwell classes) and where (paths in shop coordinates; street walking
               speed U(1.0, 1.6) m/s, Finnis & Walton: site means 1.33-1.58 m/s).
* ``phones``   phone models with IE layouts (``elements``) taken from the captures (iOS 15/16,
               Galaxy S21, Oppo Find X3 Neo; the others built alike), market shares, and MAC
               policies by model (``macs``; ``devices`` applies them), as measured in the
               captures: ``ios_per_burst`` (new MAC and random sequence number per channel
               burst: iPhone 11/12 on iOS 16.4.1; also used for iOS 17, of which no measurement
               was found), ``ios_per_scan`` (iPhone XR),
               ``ios_per_scan_seq`` (one MAC per scan, counter continues: iPhone 7 on iOS 15.5),
               ``android_per_scan`` (Galaxy S21, Oppo; AOSP: Android 8+ randomizes probe MACs),
               and ``global`` MACs with real vendor OUIs. ~80 % of phones (``randomized_share``,
               no source found) randomize; 10 % have Wi-Fi off (``wifi_off_share``, no source).
* ``radio``    log-distance path loss, shop-front attenuation, shadowing that a phone keeps while
               it stays put (as the captures' phones at rest do) and loses as it walks, fast fading,
               adjacent-channel leakage, -92 dBm sensitivity, 2 % collision loss.
* ``scanning`` how each phone scans and what the sensors hear of it: probe schedules (screen on
               for U(0.05, 0.20) of the time, Hintze et al. 2014; scans every 15-45 s screen on
               with 24.4 % of gaps 2-10 s as in the captures, 90-300 s screen off; full sweeps at
               45 ms per channel and partial 1/6/11 scans at 45 ms (iOS, often + 13 or 12) or
               230 ms (Android) per channel; bursts of 1-4 frames per channel; per-frame sequence
               numbers), reception by each sensor.
* ``store``    the day: who is around on each day, the sensors, file output (:func:`simulate_day`).
* ``bench_frames`` :func:`make_frames` for benchmarks (``footfall simulate --out DIR --frames
               1000000 --devices 50000``), with the same MAC policies.
* ``frames``   the struct-built frames and a tiny pcap writer.
* ``captures`` measures the real captures (``python -m footfall.tools.simulator.captures``): the
               shares and timings above come from it, and tests check the constants against it.

Sensors sit on a fixed channel (6 by default; ``channels=`` per sensor in
:func:`simulate_day`), as the edge agent is deployed: each hears the part of every scan sent
on its own channel and, attenuated, on the overlapping channels up to 4 away, so the DS
channel in a captured frame is often not the sensor's channel, as in the real captures.

Ground-truth schema (``groundtruth.json``, schema 1; timestamps are Unix seconds, floats)::

    schema, generator, site, seed, timezone
    hours        [open, close] local hours, e.g. [10.0, 21.0]
    days         [{date, open, close, capture: [start, end]}]  (capture = open-1h .. close+1h)
    sensors      [{id, position: [x, y], channel, inside}]
    layout       {width, depth, door_x, backroom_y}  metres; street is y < 0
    radio        the path-loss parameters used
    params       truth_model (3; absent = 1), scale, randomized_share, days, passersby, visitors,
                 staff, fixed, wifi_off_share, returning_share
    rules        how kinds, inside intervals, dwell, mac windows and mac policies are defined
    summary      unique_people, appearances, visitors, passersby, staff, fixed,
                 returning_visits, wifi_off, randomized, distinct_macs,
                 frames {sensor: n}, distinct_macs_captured {sensor: n},
                 people_captured {sensor: n}
    people       [{id (unique per appearance; equals person when days == 1), person (stable
                  across days), kind: passerby|visitor|staff|fixed, day, model, os,
                  wifi (false: Wi-Fi off, never probes), randomized, mac_policy (global |
                  ios_per_burst | ios_per_scan | ios_per_scan_seq | android_per_scan),
                  probes_ssids, returning, arrive, leave, inside: [enter, exit] | null,
                  dwell_s, dwell_class, macs: [{mac: "aa:bb:..", from_ts, to_ts}]}]
                 (one macs entry per MAC used: per channel burst for ios_per_burst, per scan
                 for the other random policies; a scale-1 day has ~10,000 and is ~3 MB)
    expected     {sensor: [{mac, person (people[].id), day, first_ts, last_ts, frames,
                  rssi_max, rssi_mean}]}  what that sensor actually captured, sorted by first_ts

MACs appear in clear only here: this is synthetic data, and this file is the answer key.
"""

from __future__ import annotations

from footfall.tools.simulator.bench_frames import make_frames
from footfall.tools.simulator.groundtruth import load as load_groundtruth
from footfall.tools.simulator.store import simulate_day

__all__ = ["load_groundtruth", "make_frames", "simulate_day"]
