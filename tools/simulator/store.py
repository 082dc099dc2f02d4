"""The simulated day(s): who is around (passers-by, visitors, staff, fixed devices, returning
visitors across days), the sensors, and the output files (one pcap per sensor, ``groundtruth.json``).

How each phone scans and what the sensors hear of it is in ``scanning``; the frames for benchmarks
(:func:`make_frames`) are in ``bench_frames``.

Sensors listen on a fixed channel (default 6 for all: that is how the edge agent is deployed;
a sensor on channel 6 hears channels 2-10 through adjacent-channel leakage, see ``radio``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import date as Date
from datetime import datetime, timedelta
from operator import itemgetter
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from footfall.settings import parse_hours
from footfall.tools.simulator.devices import KNOWN_SSIDS, Device, draw_randomized, pick_policy
from footfall.tools.simulator.frames import PcapWriter
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
from footfall.tools.simulator.scanning import SCREEN_SHARE, STAFF_SCREEN_SHARE, DayCapture, emit_scans

TRUTH_MODEL = 3  # recorded in groundtruth.json as params.truth_model
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

            day = DayCapture(sensor_list)
            for p in todays:
                emit_scans(day, p, random.Random(f"{seed}:radio:{p.id}"), win)
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
