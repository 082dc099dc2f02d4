"""Versioned JSON payloads on the MQTT topic tree (see ``footfall.topics``).

Every payload is a JSON object with ``v`` (schema version) and ``type`` (the topic kind).
Messages that the hub must not double-count carry ``id``: a deterministic message id derived
from the content's identity (site, sensor, device, visit start), so that a message replayed
after a crash or a broker reconnect has the same id and the hub drops it.

The agent builds payloads with the ``*_payload`` helpers; the hub checks every incoming
payload with :func:`validate`, which raises :class:`SchemaError` with a reason a person can
read. Nothing here ever sees a raw MAC address: ``device`` is already a keyed hash.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re

try:  # CPython's own SHA-256: for short inputs it beats the OpenSSL call overhead
    from _sha256 import sha256 as _sha256
except ImportError:  # pragma: no cover - other interpreters
    _sha256 = hashlib.sha256
import math
from collections.abc import Iterable
from typing import Any

try:  # optional (the hub's extra): decodes and type-checks a visit in C, see _fast_visit
    import msgspec as _msgspec
except ImportError:  # pragma: no cover - stdlib only
    _msgspec = None  # type: ignore[assignment]

VERSION = 1
MAX_PAYLOAD_BYTES = 64 * 1024
VISIT_CLASSES = ("visitor", "passerby")
STATUS_STATES = ("online", "offline")


class SchemaError(ValueError):
    """A payload that is not a valid Footfall message; ``str()`` says why."""


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


OPTOUT_PREFIX_BYTES = 8
_HEX_ID = re.compile(r"^[0-9a-fA-F]{16,}$")


def pack_optout_prefixes(device_ids: Iterable[str]) -> str:
    """The config message's ``optout_prefixes``: the first 8 bytes of each device id, base64.

    11 characters per device instead of 35 for the full id in a JSON list, so about 6,000
    opt-outs fit in one config message instead of 1,800. A device that did not opt out is
    dropped by mistake only if its 64-bit prefix equals one of them: n / 2**64.
    """
    raw = b"".join(bytes.fromhex(d[: 2 * OPTOUT_PREFIX_BYTES]) for d in device_ids if _HEX_ID.match(d))
    return base64.b64encode(raw).decode()


def unpack_optout_prefixes(text: str) -> list[bytes]:
    """Inverse of :func:`pack_optout_prefixes`; ValueError for anything else."""
    raw = base64.b64decode(text, validate=True)
    if len(raw) % OPTOUT_PREFIX_BYTES:
        raise ValueError("optout_prefixes: not a whole number of 8-byte prefixes")
    return [raw[i : i + OPTOUT_PREFIX_BYTES] for i in range(0, len(raw), OPTOUT_PREFIX_BYTES)]


def dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


# Field specs: name -> (types, required). bool is checked before int on purpose.
_NUM = (int, float)
_VISIT_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "id": ((str,), True),
    "site": ((str,), True),
    "sensor": ((str,), True),
    "device": ((str,), True),
    "randomized": ((bool,), True),
    "partner_hash": ((str, type(None)), False),
    "first_seen": (_NUM, True),
    "last_seen": (_NUM, True),
    "dwell_s": (_NUM, True),
    "inside_s": (_NUM, True),
    "sightings": ((int,), True),
    "rssi_max": ((int, type(None)), True),
    "rssi_mean": ((int, float, type(None)), True),
    "class": ((str,), True),
    "long_stay": ((bool,), True),
    "fingerprint": ((str,), True),
    "ie_ids": ((list,), True),
    "seq_first": ((int, type(None)), False),
    "seq_last": ((int, type(None)), False),
    "channels": ((list,), False),
    "closed_by": ((str,), False),
    # Linking evidence for the hub's device estimator (randomized MACs): keyed hashes of the
    # SSIDs the device asked for by name, and its typical gap between probe bursts.
    "ssid_hashes": ((list,), False),
    "burst_gap_s": ((int, float, type(None)), False),
}
_PRESENCE_FIELDS = {
    "id": ((str,), True),
    "site": ((str,), True),
    "sensor": ((str,), True),
    "ts": (_NUM, True),
    "window_s": (_NUM, True),
    "devices": ((int,), True),
    "inside": ((int,), True),
}
_STATUS_FIELDS = {
    "site": ((str,), True),
    "sensor": ((str,), True),
    "state": ((str,), True),
    "ts": (_NUM, True),
    "version": ((str,), False),
    "started": (_NUM, False),
}
_HEALTH_FIELDS = {
    "id": ((str,), True),
    "site": ((str,), True),
    "sensor": ((str,), True),
    "ts": (_NUM, True),
    "version": ((str,), True),
    "uptime_s": (_NUM, True),
    "frames": ((int,), True),
    "frames_per_s": (_NUM, True),
    "rejected": ((int,), True),
    "devices_tracked": ((int,), True),
    "backlog": ((int,), True),
    "dropped": ((int,), True),
    "cpu_temp_c": ((int, float, type(None)), False),
}
_CONFIG_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    # Every key optional: the hub sends only what it changes. The agent knows the rest.
}
SPECS = {
    "visit": _VISIT_FIELDS,
    "presence": _PRESENCE_FIELDS,
    "status": _STATUS_FIELDS,
    "health": _HEALTH_FIELDS,
    "config": _CONFIG_FIELDS,
}


def _check_fields(payload: dict[str, Any], spec: dict[str, tuple[tuple[type, ...], bool]]) -> None:
    for name, (types, required) in spec.items():
        if name not in payload:
            if required:
                raise SchemaError(f"missing field {name!r}")
            continue
        value = payload[name]
        if isinstance(value, bool) and bool not in types:
            raise SchemaError(f"field {name!r} must not be a boolean")
        if not isinstance(value, types):
            names = "/".join("null" if t is type(None) else t.__name__ for t in types)
            raise SchemaError(f"field {name!r} must be {names}, got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise SchemaError(f"field {name!r} must be finite")


_scan_once = json.JSONDecoder().scan_once


class _Missing:
    """Stands in for an absent field in the type signature below."""


_MISSING = _Missing()
# json.loads makes only exact str/int/float/bool/list/dict/None objects, so a payload's tuple of
# field types says everything _check_fields asks except finiteness. Every signature it accepts
# for a visit is listed ahead (96 required x 864 optional), making the hot-path check one set
# lookup each instead of a loop of isinstance calls: a sensor closes thousands of visits a minute.
_VISIT_REQUIRED = tuple(name for name, (_, required) in _VISIT_FIELDS.items() if required)
_VISIT_OPTIONAL = tuple(name for name, (_, required) in _VISIT_FIELDS.items() if not required)
_VISIT_REQUIRED_TYPES = frozenset(itertools.product(*(_VISIT_FIELDS[n][0] for n in _VISIT_REQUIRED)))
_VISIT_OPTIONAL_TYPES = frozenset(itertools.product(*((*_VISIT_FIELDS[n][0], _Missing) for n in _VISIT_OPTIONAL)))
_VISIT_FLOATS = tuple(name for name, (types, _) in _VISIT_FIELDS.items() if float in types)
_REPEAT_MISSING = itertools.repeat(_MISSING)


def _visit_fields_ok(payload: dict[str, Any]) -> bool:
    """True if :func:`_check_fields` would accept this visit; False means run it for the error."""
    get = payload.get
    if tuple(map(type, map(get, _VISIT_REQUIRED, _REPEAT_MISSING))) not in _VISIT_REQUIRED_TYPES:
        return False
    if tuple(map(type, map(get, _VISIT_OPTIONAL, _REPEAT_MISSING))) not in _VISIT_OPTIONAL_TYPES:
        return False
    # inf or nan anywhere makes the sum inf or nan (an overflow to inf just takes the slow path).
    total = sum([v for v in map(get, _VISIT_FLOATS) if type(v) is float])
    return total - total == 0.0


def _loads(raw: bytes | str) -> Any:
    # A compact JSON object straight through the C scanner; anything else (whitespace, BOM,
    # UTF-16, NaN, errors) goes through json.loads, so results and error messages are json's.
    try:
        text = raw if isinstance(raw, str) else raw.decode()
        if text[:1] == "{":
            value, end = _scan_once(text, 0)
            if end == len(text):
                return value
    except (UnicodeDecodeError, ValueError, RecursionError, StopIteration):
        pass
    return json.loads(raw)


def _visit_decoder() -> Any:
    """A msgspec decoder that accepts exactly the visits :func:`validate` accepts, or None.

    Its types are _VISIT_FIELDS' (msgspec, like the schema, tells bool from int, and keeps
    integers of any size as json does); the value checks that need two fields stay in Python.
    It is stricter in two places only, where it answers "no" and the exact path decides:
    bools among ``ie_ids`` and JSON that json.loads reads but msgspec refuses (lone
    surrogates, numbers beyond float range). Fields outside the schema are dropped: nothing
    reads them.
    """
    if _msgspec is None:
        return None
    from typing import Annotated, Literal, NotRequired, TypedDict, Union

    def hint(types: tuple[type, ...]) -> Any:
        return Union[tuple(types)] if len(types) > 1 else types[0]  # noqa: UP007 - built at runtime

    fields: dict[str, Any] = {"v": Literal[VERSION], "type": Literal["visit"]}
    for name, (types, required) in _VISIT_FIELDS.items():
        t = hint(types)
        if name == "class":
            t = Literal[VISIT_CLASSES]
        elif name == "ie_ids":
            t = list[Annotated[int, _msgspec.Meta(ge=0, le=255)]]
        elif name == "channels":
            t = list[int]
        elif name == "ssid_hashes":
            t = list[str]
        fields[name] = t if required else NotRequired[t]
    return _msgspec.json.Decoder(TypedDict("VisitPayload", fields))  # type: ignore[operator]


_VISIT_DECODER = _visit_decoder()


def _fast_visit(raw: bytes | str) -> dict[str, Any] | None:
    """The visit if it is valid, else None (then the exact path runs and says why)."""
    try:
        payload: dict[str, Any] = _VISIT_DECODER.decode(raw)
    except (_msgspec.ValidationError, _msgspec.DecodeError):
        return None
    if (
        payload["first_seen"] <= payload["last_seen"]
        and payload["dwell_s"] >= 0
        and payload["inside_s"] >= 0
        and payload["sightings"] >= 1
    ):
        return payload
    return None


def validate(raw: bytes | str, kind: str | None = None) -> dict[str, Any]:
    """Parse and check one payload; return it as a dict or raise SchemaError.

    ``kind`` is the topic's last level; the payload's ``type`` must agree with it.
    """
    if isinstance(raw, (bytes, bytearray)) and len(raw) > MAX_PAYLOAD_BYTES:
        raise SchemaError(f"payload of {len(raw)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    if _VISIT_DECODER is not None and kind in ("visit", None):
        # The hot path: a sensor closes thousands of visits a minute (see _visit_decoder).
        fast = _fast_visit(raw)
        if fast is not None:
            return fast
    try:
        payload = _loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SchemaError(f"not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise SchemaError("payload must be a JSON object")
    version = payload.get("v")
    if type(version) is not int or version != VERSION:  # not true, not 1.0
        raise SchemaError(f"unsupported schema version {version!r} (this build reads {VERSION})")
    ptype = payload.get("type")
    if type(ptype) is not str or ptype not in SPECS:
        raise SchemaError(f"unknown message type {ptype!r}")
    if kind is not None and ptype != kind:
        raise SchemaError(f"message type {ptype!r} on a {kind!r} topic")
    if ptype != "visit" or not _visit_fields_ok(payload):
        _check_fields(payload, SPECS[ptype])
    if ptype == "visit":
        if payload["class"] not in VISIT_CLASSES:
            raise SchemaError(f"class must be one of {VISIT_CLASSES}")
        if payload["last_seen"] < payload["first_seen"]:
            raise SchemaError("last_seen is before first_seen")
        if payload["dwell_s"] < 0 or payload["inside_s"] < 0 or payload["sightings"] < 1:
            raise SchemaError("dwell_s, inside_s must be >= 0 and sightings >= 1")
        for i in payload["ie_ids"]:
            if not isinstance(i, int) or not 0 <= i <= 255:
                raise SchemaError("ie_ids must be element ids 0-255")
    elif ptype == "status" and payload["state"] not in STATUS_STATES:
        raise SchemaError(f"state must be one of {STATUS_STATES}")
    return payload


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
) -> dict[str, Any]:
    return {
        "v": VERSION,
        "type": "visit",
        "id": visit_id(site, sensor, device, first_seen),
        "site": site,
        "sensor": sensor,
        "device": device,
        "randomized": randomized,
        "partner_hash": partner_hash,
        "first_seen": _fixed(first_seen, 1000.0),
        "last_seen": _fixed(last_seen, 1000.0),
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
