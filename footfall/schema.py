"""Versioned JSON payloads on the MQTT topic tree (see ``footfall.topics``).

Every payload is a JSON object with ``v`` (schema version) and ``type`` (the topic kind).
Messages that the hub must not double-count carry ``id``: a deterministic message id derived
from the content's identity (site, sensor, device, visit start), so that a message replayed
after a crash or a broker reconnect has the same id and the hub drops it.

The agent builds payloads with the ``*_payload`` helpers of ``footfall.payloads``; the hub
checks every incoming payload with :func:`validate`, which raises :class:`SchemaError` with a
reason a person can read; each type's fields are in ``footfall.schema_fields``. Nothing here
ever sees a raw MAC address: ``device`` is already a keyed hash.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import re
from collections.abc import Iterable
from typing import Any

from footfall.schema_fields import _NUM, _VISIT_FIELDS, _VISIT_V2_FIELDS, _VISIT_V2_ONLY, SPECS, VISIT_SPECS

try:  # optional (the hub's extra): decodes and type-checks a visit in C, see _fast_visit
    import msgspec as _msgspec
except ImportError:  # pragma: no cover - stdlib only
    _msgspec = None  # type: ignore[assignment]

# Which payload versions this build reads, per message type: the one place that says so. The
# agent publishes visits as the newest version (``VISIT_VERSION``) and everything else as
# ``VERSION``; the hub keeps reading version 1 visits from sensors not yet upgraded.
VERSION = 1
VERSIONS: dict[str, tuple[int, ...]] = {
    "visit": (1, 2),
    "presence": (1,),
    "status": (1,),
    "health": (1,),
    "config": (1,),
}
VISIT_VERSIONS = VERSIONS["visit"]
VISIT_VERSION = VISIT_VERSIONS[-1]
_ALL_VERSIONS = tuple(sorted({v for versions in VERSIONS.values() for v in versions}))
MAX_PAYLOAD_BYTES = 64 * 1024
# Visit version 2 bounds: burst start offsets kept, UTC minutes of per-minute RSSI (24 h + 1).
MAX_BURST_OFFSETS = 64
MAX_RSSI_MINUTES = 1441
RSSI_NO_READING = -128
VISIT_CLASSES = ("visitor", "passerby")
# Presence bounds. An agent counts at most its tracker's open visits (``max_devices``, 100,000)
# and reports every ``presence_interval_s`` (60 s by default): anything beyond is a broken or
# hostile sender, and stored it would reach the dashboard as "Now in store" as it is.
MAX_PRESENCE_DEVICES = 100_000
MAX_PRESENCE_WINDOW_S = 86400.0
STATUS_STATES = ("online", "offline")


# A hub keeps raw visits this many days unless its hub.toml says otherwise (retention.raw_days)
# and rejects older ones as expired; an agent replaying an old capture warns about them.
DEFAULT_RAW_RETENTION_DAYS = 400


def retention_cutoff(now: float, raw_days: int = DEFAULT_RAW_RETENTION_DAYS) -> float:
    """Visits that started before this (UNIX seconds) are outside the hub's raw retention."""
    return now - (raw_days + 1) * 86400.0


class SchemaError(ValueError):
    """A payload that is not a valid Footfall message; ``str()`` says why."""


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
_VISIT_V2_TYPES = tuple(_VISIT_V2_FIELDS[n][0][0] for n in _VISIT_V2_ONLY)  # (int, list, list)


def _visit_fields_ok(payload: dict[str, Any], version: int) -> bool:
    """True if :func:`_check_fields` would accept this visit; False means run it for the error."""
    get = payload.get
    if tuple(map(type, map(get, _VISIT_REQUIRED, _REPEAT_MISSING))) not in _VISIT_REQUIRED_TYPES:
        return False
    if tuple(map(type, map(get, _VISIT_OPTIONAL, _REPEAT_MISSING))) not in _VISIT_OPTIONAL_TYPES:
        return False
    if version >= 2 and tuple(map(type, map(get, _VISIT_V2_ONLY, _REPEAT_MISSING))) != _VISIT_V2_TYPES:
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

    Its types are the visit specs' (msgspec, like the schema, tells bool from int, and keeps
    integers of any size as json does), for versions 1 and 2 at once: the version 2 fields are
    optional to the decoder and :func:`_fast_visit` asks for them by version. msgspec also
    checks their element types, ranges and list lengths in C; the value checks that need two
    fields stay in Python (:func:`_visit_v2_problem`). It is stricter in three places only,
    where it answers "no" and the exact path decides: bools among ``ie_ids``, mistyped version 2
    fields in a version 1 visit (which the schema ignores), and JSON that json.loads reads but
    msgspec refuses (lone surrogates, numbers beyond float range). Fields outside the schema
    are dropped: nothing reads them.
    """
    if _msgspec is None:
        return None
    from typing import Annotated, Literal, NotRequired, TypedDict, Union

    def hint(types: tuple[type, ...]) -> Any:
        return Union[tuple(types)] if len(types) > 1 else types[0]  # noqa: UP007 - built at runtime

    meta = _msgspec.Meta
    offset = Union[Annotated[int, meta(ge=0)], Annotated[float, meta(ge=0)]]  # noqa: UP007
    minute = Union[Annotated[int, meta(ge=-128, le=127)], None]  # noqa: UP007
    fields: dict[str, Any] = {"v": Literal[VISIT_VERSIONS], "type": Literal["visit"]}
    for name, (types, required) in _VISIT_V2_FIELDS.items():
        t = hint(types)
        if name == "class":
            t = Literal[VISIT_CLASSES]
        elif name == "ie_ids":
            t = list[Annotated[int, meta(ge=0, le=255)]]
        elif name == "channels":
            t = list[int]
        elif name == "ssid_hashes":
            t = list[str]
        elif name == "bursts":
            t = Annotated[int, meta(ge=1)]
        elif name == "burst_offsets":
            t = Annotated[list[offset], meta(max_length=MAX_BURST_OFFSETS)]
        elif name == "rssi_minutes":
            t = Annotated[list[minute], meta(max_length=MAX_RSSI_MINUTES)]
        fields[name] = t if required and name not in _VISIT_V2_ONLY else NotRequired[t]
    return _msgspec.json.Decoder(TypedDict("VisitPayload", fields))  # type: ignore[operator]


_VISIT_DECODER = _visit_decoder()


def _visit_v2_problem(payload: dict[str, Any]) -> str | None:
    """What is wrong with a version 2 visit's evidence fields, or None.

    Runs after the types are known good: ``bursts`` an int >= 1, ``burst_offsets`` at most 64
    non-negative finite numbers, ``rssi_minutes`` at most 1441 ints in -128..127 or nulls. No
    loop over ``rssi_minutes`` here: this is the hot path too.
    """
    bursts = payload["bursts"]
    offsets = payload["burst_offsets"]
    if bursts > payload["sightings"]:
        return "bursts must be at most sightings (a burst is at least one frame)"
    if len(offsets) != (bursts if bursts < MAX_BURST_OFFSETS else MAX_BURST_OFFSETS):
        return f"burst_offsets must hold the first min(bursts, {MAX_BURST_OFFSETS}) burst starts"
    if offsets[0] != 0:
        return "burst_offsets must start with 0 (the first burst starts at first_seen)"
    if offsets[-1] > payload["dwell_s"] or offsets != sorted(offsets):
        return "burst_offsets must be sorted and at most dwell_s"
    minutes = len(payload["rssi_minutes"])
    try:
        span = int(payload["last_seen"] // 60 - payload["first_seen"] // 60) + 1
    except OverflowError:  # an integer beyond float range against a float
        return "first_seen/last_seen out of range"
    if minutes != span:
        return (
            f"rssi_minutes has {minutes} entries but first_seen..last_seen span {span} UTC minutes "
            "(floor(last_seen/60) - floor(first_seen/60) + 1)"
        )
    return None


def _fast_visit(raw: bytes | str) -> dict[str, Any] | None:
    """The visit if it is valid, else None (then the exact path runs and says why)."""
    try:
        payload: dict[str, Any] = _VISIT_DECODER.decode(raw)
    except (_msgspec.ValidationError, _msgspec.DecodeError):
        return None
    if not (
        payload["first_seen"] <= payload["last_seen"]
        and payload["dwell_s"] >= 0
        and payload["inside_s"] >= 0
        and payload["sightings"] >= 1
    ):
        return None
    if payload["v"] == 1:
        # Version 1 has no evidence fields: a sender's stray ones are ignored, as validate does.
        if "rssi_minutes" in payload or "burst_offsets" in payload or "bursts" in payload:
            for name in _VISIT_V2_ONLY:
                payload.pop(name, None)
        return payload
    if "rssi_minutes" not in payload or "burst_offsets" not in payload or "bursts" not in payload:
        return None
    return payload if _visit_v2_problem(payload) is None else None


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
    if type(version) is not int or version not in _ALL_VERSIONS:  # not true, not 1.0
        raise SchemaError(f"unsupported schema version {version!r} (this build reads {_versions(_ALL_VERSIONS)})")
    ptype = payload.get("type")
    if type(ptype) is not str or ptype not in SPECS:
        raise SchemaError(f"unknown message type {ptype!r}")
    if kind is not None and ptype != kind:
        raise SchemaError(f"message type {ptype!r} on a {kind!r} topic")
    if version not in VERSIONS[ptype]:
        raise SchemaError(
            f"unsupported schema version {version} for {ptype!r} (this build reads {_versions(VERSIONS[ptype])})"
        )
    if ptype != "visit":
        _check_fields(payload, SPECS[ptype])
    elif not _visit_fields_ok(payload, version):
        _check_fields(payload, VISIT_SPECS[version])
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
        if version == 1:
            for name in _VISIT_V2_ONLY:  # not version 1 fields: ignored, like any unknown field
                payload.pop(name, None)
        else:
            _check_visit_v2(payload)
    elif ptype == "status" and payload["state"] not in STATUS_STATES:
        raise SchemaError(f"state must be one of {STATUS_STATES}")
    elif ptype == "presence":
        _check_presence(payload)
    return payload


def _check_presence(payload: dict[str, Any]) -> None:
    """Counts a sensor can have heard: ``0 <= inside <= devices <= MAX_PRESENCE_DEVICES`` and
    ``0 < window_s <= MAX_PRESENCE_WINDOW_S`` (``inside`` is the part of ``devices`` inside)."""
    devices, inside, window = payload["devices"], payload["inside"], payload["window_s"]
    if not 0 <= devices <= MAX_PRESENCE_DEVICES:
        raise SchemaError(f"devices must be a count 0..{MAX_PRESENCE_DEVICES}, got {devices}")
    if not 0 <= inside <= devices:
        raise SchemaError(f"inside must be a count 0..devices ({devices}), got {inside}")
    if not 0 < window <= MAX_PRESENCE_WINDOW_S:
        raise SchemaError(f"window_s must be seconds in (0, {MAX_PRESENCE_WINDOW_S:g}], got {window}")


def _versions(versions: tuple[int, ...]) -> str:
    return ", ".join(map(str, versions))


def _check_visit_v2(payload: dict[str, Any]) -> None:
    """The exact path's checks of the version 2 fields (the fast path's are msgspec's)."""
    if payload["bursts"] < 1:
        raise SchemaError("bursts must be >= 1")
    offsets = payload["burst_offsets"]
    if len(offsets) > MAX_BURST_OFFSETS:
        raise SchemaError(f"burst_offsets holds at most {MAX_BURST_OFFSETS} entries")
    for x in offsets:
        if type(x) not in _NUM or not x >= 0:  # not bool, nan or negative
            raise SchemaError("burst_offsets must be non-negative numbers (seconds since first_seen)")
    minutes = payload["rssi_minutes"]
    if len(minutes) > MAX_RSSI_MINUTES:
        raise SchemaError(f"rssi_minutes holds at most {MAX_RSSI_MINUTES} entries (24 h)")
    for x in minutes:
        if x is not None and (type(x) is not int or not -128 <= x <= 127):
            raise SchemaError("rssi_minutes entries must be null or dBm integers -128..127")
    problem = _visit_v2_problem(payload)
    if problem is not None:
        raise SchemaError(problem)


def supported_version(payload: dict[str, Any]) -> bool:
    """Whether this build reads the payload's ``v`` for its ``type`` (any type's, if unknown)."""
    version, ptype = payload.get("v"), payload.get("type")
    versions = VERSIONS.get(ptype, _ALL_VERSIONS) if type(ptype) is str else _ALL_VERSIONS
    return type(version) is int and version in versions
