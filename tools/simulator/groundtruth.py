"""The ground-truth document written next to the pcaps (schema in the package docstring).

Schema 1 still: truth model 2 (``params.truth_model``) only added keys (``params.truth_model``,
``rules.mac_policies``) and policy names, truth model 3 the shadowing keys of ``radio``; an
``ios_per_burst`` phone has one ``macs`` entry per channel burst (a scale-1 day: ~10,000 entries,
groundtruth.json ~3 MB).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from footfall.tools.simulator import radio
from footfall.tools.simulator.people import DWELL_CLASSES, Layout, Person
from footfall.tools.simulator.radio import Sensor

SCHEMA_VERSION = 1

RULES = {
    "inside": "a person is inside while y >= 0 in shop coordinates (shop front at y = 0, street y < 0)",
    "passerby": "walks along the street for 10-60 s and never enters; inside is null, dwell_s is 0",
    "visitor": "enters through the door; inside = [enter, exit], dwell_s = exit - enter (>= 60 s)",
    "staff": "inside for a shift of 8-10 h; phones keep their globally administered MAC",
    "fixed": "a device at one indoor spot probing every ~60 s for the whole capture window",
    "dwell_classes": {name: [lo, hi] for name, _, lo, hi in DWELL_CLASSES},
    "mac_window": "macs[].from_ts/to_ts: first and last frame the device sent with that MAC (any channel)",
    "mac_policies": {
        "global": "burned-in globally administered MAC, never changes",
        "ios_per_burst": "new random MAC and random sequence number for every channel burst of a scan",
        "ios_per_scan": "new random MAC per scan, random sequence number",
        "ios_per_scan_seq": "new random MAC per scan, the sequence counter continues across MACs",
        "android_per_scan": "new random MAC per scan, random sequence number",
    },
    "expected": "per sensor and MAC: first/last timestamp and count of frames that sensor captured",
}


def _r(t: float) -> float:
    return round(t, 6)


def person_record(p: Person) -> dict:
    dev = p.device
    return {
        "id": p.id,
        "person": p.person,
        "kind": p.kind,
        "day": p.day,
        "model": p.model.name,
        "os": p.model.os,
        "wifi": dev is not None,
        "randomized": bool(dev and dev.randomized),
        "mac_policy": dev.policy if dev else None,
        "probes_ssids": bool(dev and dev.ssids),
        "returning": p.returning,
        "arrive": _r(p.arrive),
        "leave": _r(p.leave),
        "inside": [_r(p.inside[0]), _r(p.inside[1])] if p.inside else None,
        "dwell_s": round(p.inside[1] - p.inside[0], 3) if p.inside else 0.0,
        "dwell_class": p.dwell_class,
        "macs": [{"mac": m.hex(":"), "from_ts": _r(a), "to_ts": _r(b)} for m, a, b in (dev.macs if dev else [])],
    }


def build_groundtruth(
    *,
    site: str,
    seed: int,
    tz: str,
    hours: tuple[float, float],
    sensors: list[Sensor],
    windows: list[dict],
    people: list[Person],
    expected: dict[str, list[dict]],
    frames: dict[str, int],
    params: dict,
    layout: Layout,
) -> dict:
    records = [person_record(p) for p in people]
    kinds = ("passerby", "visitor", "staff", "fixed")
    all_macs = {m["mac"] for r in records for m in r["macs"]}
    summary = {
        "unique_people": len({r["person"] for r in records}),
        "appearances": len(records),
        **{f"{k}_appearances": sum(1 for r in records if r["kind"] == k) for k in kinds},
        "visitors": len({r["person"] for r in records if r["kind"] == "visitor"}),
        "passersby": len({r["person"] for r in records if r["kind"] == "passerby"}),
        "staff": len({r["person"] for r in records if r["kind"] == "staff"}),
        "fixed": len({r["person"] for r in records if r["kind"] == "fixed"}),
        "returning_visits": sum(1 for r in records if r["kind"] == "visitor" and r["returning"]),
        "wifi_off": sum(1 for r in records if not r["wifi"]),
        "randomized": sum(1 for r in records if r["randomized"]),
        "distinct_macs": len(all_macs),
        "frames": dict(frames),
        "distinct_macs_captured": {sid: len({e["mac"] for e in ex}) for sid, ex in expected.items()},
        "people_captured": {sid: len({e["person"] for e in ex}) for sid, ex in expected.items()},
    }
    return {
        "schema": SCHEMA_VERSION,
        "generator": "footfall simulate",
        "site": site,
        "seed": seed,
        "timezone": tz,
        "hours": list(hours),
        "days": windows,
        "sensors": [s.as_dict() for s in sensors],
        "layout": asdict(layout),
        "radio": {
            "p0_dbm": radio.P0_DBM,
            "path_loss_exponent": radio.PATH_LOSS_EXPONENT,
            "facade_db": radio.FACADE_DB,
            "shadow_sigma_db": radio.SHADOW_SIGMA,
            "shadow_decorrelation_m": radio.SHADOW_DECORRELATION_M,
            "shadow_shift_per_scan": radio.SHADOW_SHIFT,
            "shadow_transient_per_scan": radio.SHADOW_TRANSIENT,
            "shadow_transient_sigma_db": radio.SHADOW_TRANSIENT_SIGMA,
            "fast_sigma_db": radio.FAST_SIGMA,
            "sensitivity_dbm": radio.SENSITIVITY_DBM,
            "loss": radio.LOSS,
            "leak_db": {str(k): v for k, v in radio.LEAK_DB.items()},
        },
        "params": params,
        "rules": RULES,
        "summary": summary,
        "people": records,
        "expected": expected,
    }


def load(path: str | Path) -> dict:
    """Read a ``groundtruth.json`` (a file or the directory holding it)."""
    p = Path(path)
    if p.is_dir():
        p = p / "groundtruth.json"
    return json.loads(p.read_text())
