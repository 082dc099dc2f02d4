"""The simulated day(s): population, probe schedules, reception by each sensor, output files.

Probe behaviour of a phone (truth model 3, ``TRUTH_MODEL``; every value and its source, or "no
source found", is in docs/device-estimation.md, "The simulator's phone behaviour and its sources";
"the captures" are the labelled real captures of the public Probe Requests Open Dataset,
Baccichet et al., in ../shared/data/probe-captures):

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

Sensors listen on a fixed channel (default 6 for all: that is how the edge agent is deployed;
a sensor on channel 6 hears channels 2-10 through adjacent-channel leakage, see ``radio``).
"""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Iterator, Sequence
from datetime import date as Date
from datetime import datetime, timedelta
from operator import itemgetter
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from footfall.settings import parse_hours
from footfall.tools.simulator import radio
from footfall.tools.simulator.devices import KNOWN_SSIDS, Device, draw_randomized, pick_policy
from footfall.tools.simulator.frames import PcapWriter, probe_request, radiotap_prefix
from footfall.tools.simulator.groundtruth import build_groundtruth
from footfall.tools.simulator.macs import global_mac
from footfall.tools.simulator.people import (
    DWELL_SHAPES,
    Layout,
    Person,
    pick_dwell,
    pick_model,
    sample_time,
    shop_weight,
    staff_path,
    street_weight,
    visit_path,
    walk_past,
)
from footfall.tools.simulator.phones import MODELS, PHONE_MODELS, STAFF_MODELS
from footfall.tools.simulator.radio import Sensor

TRUTH_MODEL = 3  # recorded in groundtruth.json as params.truth_model

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
CAPTURE_MARGIN_S = 3600.0  # sensors record from an hour before opening to an hour after closing
DEFAULT_SENSOR_SPOTS = ((5.0, 1.5), (5.0, 18.5), (1.0, 10.0), (9.0, 10.0), (5.0, 10.0))


def default_sensors(n: int, channels: Sequence[int] | None = None) -> list[Sensor]:
    if n < 1:
        raise ValueError("at least one sensor is needed")
    out = []
    for i in range(n):
        if i < len(DEFAULT_SENSOR_SPOTS):
            x, y = DEFAULT_SENSOR_SPOTS[i]
        else:  # more sensors: spread along the depth of the shop
            x, y = (2.5 if i % 2 else 7.5), round(2.0 + (i * 3.7) % 16, 2)
        ch = channels[i % len(channels)] if channels else 6
        out.append(Sensor(f"s{i + 1}", x, y, ch))
    return out


class _Day:
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


def _scan(day: _Day, p: Person, dev: Device, rng: random.Random, t0: float, full: bool, win: tuple) -> None:
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


def _emit(day: _Day, p: Person, rng: random.Random, win: tuple[float, float]) -> None:
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


def _local(d: Date, hours: float, tz: ZoneInfo) -> float:
    return (datetime(d.year, d.month, d.day, tzinfo=tz) + timedelta(hours=hours)).timestamp()


class _Profile:
    """What stays the same about a person across days: phone, MAC policy, remembered SSIDs."""

    __slots__ = ("person", "model", "policy", "base_mac", "ssids", "wifi")

    def __init__(self, person: str, rng: random.Random, models, randomized_share: float, wifi_off: float) -> None:
        self.person = person
        self.model = pick_model(rng, models)
        self.policy = pick_policy(rng, self.model, draw_randomized(rng, self.model, randomized_share))
        self.base_mac = global_mac(rng, self.model.vendor)
        self.ssids: tuple[bytes, ...] = ()
        if rng.random() < self.model.directed_share:
            self.ssids = tuple(s.encode() for s in rng.sample(KNOWN_SSIDS, rng.randint(1, 5)))
        self.wifi = rng.random() >= wifi_off

    def device(self, seed: int, pid: str) -> Device | None:
        if not self.wifi:
            return None
        return Device(self.model, self.policy, random.Random(f"{seed}:mac:{pid}"), self.base_mac, self.ssids)


def check_dwell_shape(dwell_shape: str) -> str:
    """A mix of dwell classes the simulator knows (``people.DWELL_SHAPES``)."""
    if dwell_shape not in DWELL_SHAPES:
        raise ValueError(f"dwell_shape must be one of {', '.join(DWELL_SHAPES)}, not {dwell_shape!r}")
    return dwell_shape


def check_dwell_scale(dwell_scale: float) -> float:
    """A stretch of the visits the simulator walks: a tenth to ten times its shop's dwell."""
    if not 0.1 <= dwell_scale <= 10.0:
        raise ValueError(f"dwell_scale must be between 0.1 and 10, not {dwell_scale:g}")
    return dwell_scale


def simulate_day(
    out_dir: str | Path,
    seed: int = 1,
    sensors: int = 2,
    date: str = "2026-11-02",
    hours: str | Sequence[float] = "10-21",
    scale: float = 1.0,
    randomized_share: float = 0.8,
    days: int = 1,
    site: str = "demo",
    tz: str = "UTC",
    *,
    passersby: int | None = None,
    visitors: int | None = None,
    staff: int | None = None,
    fixed: bool = True,
    wifi_off_share: float = 0.1,
    returning_share: float = 0.25,
    channels: Sequence[int] | None = None,
    dwell_scale: float = 1.0,
    dwell_shape: str = "shop",
) -> dict:
    """Simulate ``days`` days at one shop; write ``<sensor>.pcap`` files and ``groundtruth.json``.

    Returns the ground truth (the same dict that is written, see the package docstring).
    Identical arguments produce identical bytes.

    ``dwell_scale`` stretches every visitor's time inside (the classes of ``people.DWELL_CLASSES``
    times it): shops differ in dwell by several times, from a kiosk's few minutes to a
    dealership's hour, and a figure checked at one shop's dwell alone is not checked at all (a
    fixed guess of the median would pass). Visits still end by closing time. ``dwell_shape``
    mixes the classes otherwise (``people.DWELL_SHAPES``).
    """
    from footfall.topics import check_id

    check_id(site, "site")
    if not 0.0 <= randomized_share <= 1.0:
        raise ValueError("randomized_share must be between 0 and 1")
    if scale < 0 or days < 1:
        raise ValueError("scale must be >= 0 and days >= 1")
    check_dwell_scale(dwell_scale)
    check_dwell_shape(dwell_shape)
    open_h, close_h = parse_hours(hours)
    try:
        start_date = Date.fromisoformat(date)
    except ValueError as exc:
        raise ValueError(f"date must be YYYY-MM-DD, got {date!r} ({exc})") from exc
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r} (an IANA name such as Europe/Rome)") from exc
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lay = Layout()
    sensor_list = default_sensors(sensors, channels)
    n_pass = round(1500 * scale) if passersby is None else passersby
    n_vis = round(300 * scale) if visitors is None else visitors
    n_staff = max(1, round(5 * scale)) if staff is None else staff

    staff_rng = random.Random(f"{seed}:staff")
    staff_profiles = [
        _Profile(f"staff-{i + 1:02d}", staff_rng, STAFF_MODELS, 0.0, 0.0) for i in range(n_staff)
    ]  # staff phones: globally administered MACs (per the brief: identifiable all day)
    fixed_profiles = []
    if fixed:
        for name, model, pos in (
            ("fixed-printer", "HP OfficeJet printer (Wi-Fi Direct)", (8.5, 18.5)),
            ("fixed-pos", "Ingenico Move/5000 POS", (6.5, 3.0)),
        ):
            prof = _Profile(name, staff_rng, STAFF_MODELS, 0.0, 0.0)
            prof.model = MODELS[model]
            prof.base_mac = global_mac(staff_rng, prof.model.vendor)
            prof.ssids = (b"DIRECT-",) if "printer" in model else ()
            fixed_profiles.append((prof, pos))
    pool: list[_Profile] = []
    people: list[Person] = []
    expected: dict[str, list[dict]] = {s.id: [] for s in sensor_list}
    windows = []
    writers = {s.id: PcapWriter(out / f"{s.id}.pcap") for s in sensor_list}
    try:
        for d in range(days):
            the_day = start_date + timedelta(days=d)
            day0 = _local(the_day, 0.0, zone)
            open_t, close_t = _local(the_day, open_h, zone), _local(the_day, close_h, zone)
            win = (open_t - CAPTURE_MARGIN_S, close_t + CAPTURE_MARGIN_S)
            windows.append({"date": the_day.isoformat(), "open": open_t, "close": close_t, "capture": list(win)})
            rng = random.Random(f"{seed}:day:{d}")

            def pid(person: str, the_day=the_day) -> str:
                return person if days == 1 else f"{person}@{the_day.isoformat()}"

            todays: list[Person] = []
            for i in range(n_pass):
                prof = _Profile(f"p{d + 1}-{i + 1:05d}", rng, PHONE_MODELS, randomized_share, wifi_off_share)
                arrive = sample_time(rng, win[0], win[1] - 60.0, day0, street_weight)
                p = Person(
                    pid(prof.person), prof.person, "passerby", d, prof.model, prof.device(seed, pid(prof.person)),
                    arrive, arrive + rng.uniform(10.0, 60.0), None, rng.uniform(*SCREEN_SHARE),
                )  # fmt: skip
                walk_past(p, rng, lay)
                todays.append(p)
            n_ret = min(len(pool), round(returning_share * n_vis)) if d else 0
            profiles = [(prof, True) for prof in rng.sample(pool, n_ret)]
            for i in range(n_vis - n_ret):
                prof = _Profile(f"v{d + 1}-{i + 1:04d}", rng, PHONE_MODELS, randomized_share, wifi_off_share)
                pool.append(prof)
                profiles.append((prof, False))
            for prof, returning in profiles:
                enter = sample_time(rng, open_t, close_t - 120.0, day0, shop_weight)
                dwell_class, dwell = pick_dwell(rng, dwell_shape)
                dwell *= dwell_scale
                exit_ = min(enter + dwell, close_t + 600.0)
                approach, depart = rng.uniform(5.0, 20.0), rng.uniform(5.0, 20.0)
                p = Person(
                    pid(prof.person), prof.person, "visitor", d, prof.model, prof.device(seed, pid(prof.person)),
                    enter - approach, exit_ + depart, (enter, exit_), rng.uniform(*SCREEN_SHARE),
                    dwell_class=dwell_class, returning=returning,
                )  # fmt: skip
                visit_path(p, rng, lay, approach, depart)
                todays.append(p)
            for i, prof in enumerate(staff_profiles):
                length = rng.uniform(8.0, 10.0) * 3600
                if i % 2 == 0:  # opening shift
                    enter = open_t - rng.uniform(900.0, 2700.0)
                    exit_ = min(enter + length, win[1] - 300.0)
                else:  # closing shift
                    exit_ = close_t + rng.uniform(600.0, 2400.0)
                    enter = max(exit_ - length, win[0] + 300.0)
                p = Person(
                    pid(prof.person), prof.person, "staff", d, prof.model, prof.device(seed, pid(prof.person)),
                    enter - 20.0, exit_ + 20.0, (enter, exit_), STAFF_SCREEN_SHARE, returning=d > 0,
                )  # fmt: skip
                staff_path(p, rng, lay)
                todays.append(p)
            for prof, (x, y) in fixed_profiles:
                p = Person(
                    pid(prof.person), prof.person, "fixed", d, prof.model, prof.device(seed, pid(prof.person)),
                    win[0], win[1], (win[0], win[1]), 1.0, returning=d > 0,
                )  # fmt: skip
                p.add(win[0], x, y)
                todays.append(p)

            day = _Day(sensor_list)
            for p in todays:
                _emit(day, p, random.Random(f"{seed}:radio:{p.id}"), win)
            for si, s in enumerate(sensor_list):
                frames = day.frames[si]
                frames.sort(key=itemgetter(0))
                writers[s.id].write_all(frames)
                for mac, (person_id, first, last, n, rmax, rsum) in day.expected[si].items():
                    expected[s.id].append(
                        {
                            "mac": mac.hex(":"),
                            "person": person_id,
                            "day": d,
                            "first_ts": first / 1e6,
                            "last_ts": last / 1e6,
                            "frames": n,
                            "rssi_max": rmax,
                            "rssi_mean": round(rsum / n, 2),
                        }
                    )
            people.extend(todays)
            del day
    finally:
        for w in writers.values():
            w.close()
    for entries in expected.values():
        entries.sort(key=lambda e: (e["first_ts"], e["mac"]))
    gt = build_groundtruth(
        site=site,
        seed=seed,
        tz=tz,
        hours=(open_h, close_h),
        sensors=sensor_list,
        windows=windows,
        people=people,
        expected=expected,
        frames={s.id: writers[s.id].count for s in sensor_list},
        params={
            "truth_model": TRUTH_MODEL,
            "scale": scale,
            "randomized_share": randomized_share,
            "days": days,
            "passersby": n_pass,
            "visitors": n_vis,
            "staff": n_staff,
            "fixed": bool(fixed),
            "wifi_off_share": wifi_off_share,
            "returning_share": returning_share,
            # Only when stretched: the ground truth of every run before the knob stays byte for byte.
            **({"dwell_scale": dwell_scale} if dwell_scale != 1.0 else {}),
            **({"dwell_shape": dwell_shape} if dwell_shape != "shop" else {}),
        },
        layout=lay,
    )
    (out / "groundtruth.json").write_text(json.dumps(gt, separators=(",", ":"), sort_keys=True))
    return gt


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
