"""Building payloads: deterministic message ids, the agent's ``*_payload`` helpers, ``dumps``.

What the agent publishes; ``footfall.schema`` says which versions and fields are valid and
checks them (the agent checks its own payloads with it before they go out).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Sequence
from typing import Any

from footfall.schema import MAX_BURST_OFFSETS, VERSION, VISIT_VERSION

try:  # CPython's own SHA-256: for short inputs it beats the OpenSSL call overhead
    from _sha256 import sha256 as _sha256
except ImportError:  # pragma: no cover - other interpreters
    _sha256 = hashlib.sha256


def message_id(*parts: object) -> str:
    """Deterministic id: the same logical message always gets the same id."""
    raw = "\x1f".join(str(p) for p in parts).encode()
    return _sha256(raw).hexdigest()[:32]


def visit_id(site: str, sensor: str, device: str, first_seen: float) -> str:
    # Millisecond resolution: the visit start is what identifies a visit of a device.
    # Same bytes as message_id("visit", ...), spelled out: a sensor closes thousands a minute.
    return _sha256(f"visit\x1f{site}\x1f{sensor}\x1f{device}\x1f{round(first_seen * 1000)}".encode()).hexdigest()[:32]


def _fixed(x: float, scale: float) -> float:
    # round(x, n) goes through a decimal string conversion; a sensor closes thousands of
    # visits a minute, and half-up at 1 ms (or 0.1 dB) is all the precision a payload needs.
    return math.floor(x * scale + 0.5) / scale


def dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def visit_payload(
    *,
    site: str,
    sensor: str,
    device: str,
    randomized: bool,
    first_seen: float,
    last_seen: float,
    inside_s: float,
    sightings: int,
    rssi_max: int | None,
    rssi_mean: float | None,
    visit_class: str,
    long_stay: bool,
    fingerprint: str,
    ie_ids: list[int],
    partner_hash: str | None = None,
    seq_first: int | None = None,
    seq_last: int | None = None,
    channels: list[int] | None = None,
    closed_by: str = "gap",
    ssid_hashes: list[str] | None = None,
    burst_gap_s: float | None = None,
    bursts: int | None = None,
    burst_offsets: Sequence[float] | None = None,
    rssi_minutes: Sequence[int | None] | None = None,
) -> dict[str, Any]:
    """A visit payload: version 2 with ``bursts``, ``burst_offsets`` and ``rssi_minutes`` (the
    agent always gives them), version 1 without them.

    ``burst_offsets`` are the burst starts in seconds since ``first_seen`` (the first is 0),
    kept to the first 64 and truncated to 0.1 s, so none is ever past ``dwell_s``.
    ``rssi_minutes`` has one entry per UTC minute of the unrounded ``first_seen`` ..
    ``last_seen``: the max RSSI heard in it, ``RSSI_NO_READING`` (-128) if heard without a
    signal reading, None if not heard. Rounding the times to the millisecond can move one of
    them across a minute boundary; the list is realigned to the rounded times then.
    """
    first_ms = math.floor(first_seen * 1000.0 + 0.5)  # _fixed(first_seen, 1000.0), in steps
    last_ms = math.floor(last_seen * 1000.0 + 0.5)
    payload = {
        "v": VERSION,
        "type": "visit",
        "id": visit_id(site, sensor, device, first_seen),
        "site": site,
        "sensor": sensor,
        "device": device,
        "randomized": randomized,
        "partner_hash": partner_hash,
        "first_seen": first_ms / 1000.0,
        "last_seen": last_ms / 1000.0,
        "dwell_s": _fixed(last_seen - first_seen, 1000.0),
        "inside_s": _fixed(inside_s, 1000.0),
        "sightings": sightings,
        "rssi_max": rssi_max,
        "rssi_mean": None if rssi_mean is None else _fixed(rssi_mean, 10.0),
        "class": visit_class,
        "long_stay": long_stay,
        "fingerprint": fingerprint,
        "ie_ids": list(ie_ids),
        "seq_first": seq_first,
        "seq_last": seq_last,
        "channels": sorted(channels or []),
        "closed_by": closed_by,
        "ssid_hashes": sorted(ssid_hashes or []),
        "burst_gap_s": None if burst_gap_s is None else _fixed(burst_gap_s, 100.0),
    }
    if rssi_minutes is None:
        if bursts is not None or burst_offsets is not None:
            raise TypeError(_V2_ARGUMENTS)
        return payload
    if bursts is None or burst_offsets is None:
        raise TypeError(_V2_ARGUMENTS)
    payload["v"] = VISIT_VERSION
    payload["bursts"] = bursts
    if bursts == 1:
        payload["burst_offsets"] = [0.0]
    else:
        dwell = payload["dwell_s"]
        payload["burst_offsets"] = [
            min(math.floor(x * 10.0) / 10.0, dwell) for x in itertools.islice(burst_offsets, MAX_BURST_OFFSETS)
        ]
    # Rounding crossed a minute boundary only if it landed on one (integer test: hot path).
    if (first_ms % 60000 == 0 and first_seen < first_ms / 1000.0) or (
        last_ms % 60000 == 0 and last_seen < last_ms / 1000.0
    ):
        payload["rssi_minutes"] = _realign_minutes(
            rssi_minutes, first_seen, last_seen, first_ms / 1000.0, last_ms / 1000.0
        )
    else:
        payload["rssi_minutes"] = list(rssi_minutes)
    return payload


_V2_ARGUMENTS = "visit_payload: give bursts, burst_offsets and rssi_minutes together (version 2) or none"


def _realign_minutes(
    minutes: Sequence[int | None], first: float, last: float, first_r: float, last_r: float
) -> list[int | None]:
    """``minutes`` of the UTC minutes of first..last, moved to those of the rounded times.

    Rounding to the millisecond moves a time by at most 0.5 ms, so at most across one minute
    boundary, forward: the first minute's frames join the next minute; the last minute's final
    frames are in a minute of their own, heard at (at most) the last minute's level.
    """
    out = list(minutes)
    if first_r // 60.0 != first // 60.0 and len(out) > 1:
        a, b = out[0], out[1]
        out[0:2] = [a if b is None else b if a is None else max(a, b)]
    want = int(last_r // 60.0 - first_r // 60.0) + 1
    while out and len(out) < want:
        out.append(out[-1])
    return out


def presence_payload(
    *, site: str, sensor: str, ts: float, window_s: float, devices: int, inside: int
) -> dict[str, Any]:
    return {
        "v": VERSION,
        "type": "presence",
        "id": message_id("presence", site, sensor, round(ts * 1000)),
        "site": site,
        "sensor": sensor,
        "ts": round(ts, 3),
        "window_s": window_s,
        "devices": devices,
        "inside": inside,
    }


def status_payload(
    *, site: str, sensor: str, state: str, ts: float, version: str = "", started: float | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "v": VERSION,
        "type": "status",
        "site": site,
        "sensor": sensor,
        "state": state,
        "ts": round(ts, 3),
    }
    if version:
        payload["version"] = version
    if started is not None:
        payload["started"] = round(started, 3)
    return payload
