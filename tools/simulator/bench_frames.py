"""Frames for benchmarks: :func:`make_frames`, a long time-ordered stream from many concurrent
phones around one sensor, with the day simulator's MAC policies but without its people, schedule
or ground truth (``footfall simulate --out DIR --frames 1000000 --devices 50000``).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator

from footfall.tools.simulator import radio
from footfall.tools.simulator.devices import Device, draw_randomized, pick_policy
from footfall.tools.simulator.frames import probe_request, radiotap_prefix
from footfall.tools.simulator.macs import global_mac
from footfall.tools.simulator.people import pick_model
from footfall.tools.simulator.phones import PHONE_MODELS
from footfall.tools.simulator.radio import Sensor
from footfall.tools.simulator.scanning import FULL_SCAN


def make_frames(
    n: int,
    seed: int = 1,
    devices: int = 50_000,
    randomized_share: float = 0.8,
    channel: int = 6,
    start: float = 1_793_606_400.0,  # 2026-11-02 10:00 UTC
) -> Iterator[tuple[float, bytes]]:
    """Yield ``n`` (timestamp, frame) pairs, time-ordered, from ``devices`` concurrent phones.

    For benchmarks: every device stays in range of one sensor on ``channel`` (1-30 m away) and
    keeps scanning (full sweeps) every 15-120 s with the same MAC policies as :func:`simulate_day`
    (``pick_policy``: per channel burst, per scan, or global), so the number of concurrently active
    devices is ``devices``; an ``ios_per_burst`` phone shows a new MAC on every channel the sensor
    hears. Frames are full radiotap + probe + FCS.
    """
    rng = random.Random(f"{seed}:bench")
    sensor = Sensor("bench", 0.0, 0.0, channel)
    prefixes: dict[int, bytes] = {}
    devs: list[tuple[Device, float, radio.Shadow]] = []
    scans: list[tuple[float, int]] = []
    for i in range(devices):
        model = pick_model(rng, PHONE_MODELS)
        policy = pick_policy(rng, model, draw_randomized(rng, model, randomized_share))
        # One shared generator: seeding 50,000 of them would dominate the setup time.
        dev = Device(model, policy, rng, global_mac(rng, model.vendor))
        d = rng.uniform(1.0, 30.0)
        devs.append((dev, radio.mean_rssi(sensor, d, 0.0, False, model.tx_dbm_offset), radio.Shadow(rng, 1, d, 0.0)))
        scans.append((start + rng.uniform(0.0, 60.0), i))
    heapq.heapify(scans)
    pending: list[tuple[int, int, bytes]] = []  # (ts_us, tiebreak, frame)
    counter = 0
    emitted = 0
    gauss, rand, push, pop = rng.gauss, rng.random, heapq.heappush, heapq.heappop
    leak, sens, soft, loss = radio.LEAK_DB, radio.SENSITIVITY_DBM, radio.SOFT_DBM, radio.LOSS
    while emitted < n:
        t0, i = pop(scans)
        horizon = int(t0 * 1_000_000)
        while pending and pending[0][0] <= horizon:
            ts_us, _, frame = pop(pending)
            yield ts_us / 1e6, frame
            emitted += 1
            if emitted >= n:
                return
        dev, base, shadow = devs[i]
        dev.begin_scan(t0)
        per_burst = dev.policy == "ios_per_burst"
        base += shadow.draw(rng, shadow.x, shadow.y)[0]
        k = rng.randint(*dev.model.burst)
        prefix = prefixes.get(dev.model.rate)
        if prefix is None:
            prefix = prefixes[dev.model.rate] = radiotap_prefix(channel, dev.model.rate)
        mac = dev.mac
        t = t0
        for ch in FULL_SCAN:
            dch = abs(ch - channel)
            if dch > radio.MAX_LEAK:  # not heard: the sequence counter still moves on
                dev.seq = (dev.seq + k) & 0xFFF
                t += 0.018 * k + 0.03
                continue
            if per_burst:  # (a burst nobody hears needs no MAC of its own: skipped above)
                dev.begin_burst(t)
                mac = dev.mac
            body = dev.body(ch, b"")
            for _ in range(k):
                seq = dev.seq
                dev.seq = (seq + 1) & 0xFFF
                r = base - leak[dch] + gauss(0.0, radio.FAST_SIGMA)
                # radio.captured(), inlined: this loop makes a million frames
                if r >= sens and (r >= soft or rand() <= (r - sens) / (soft - sens)) and rand() >= loss:
                    counter += 1
                    push(pending, (int(t * 1_000_000), counter, probe_request(prefix, round(r), mac, seq, body)))
                t += 0.018
            t += 0.03
        dev.macs.clear()  # ground truth is not kept here: memory must stay flat
        heapq.heappush(scans, (t0 + rng.uniform(15.0, 120.0), i))
