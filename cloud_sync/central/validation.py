"""A hub batch's records validated into a :class:`Plan` of database work, before any lock is taken.

Every record is checked in pure Python: a bad one is counted and skipped with its index and
reason, never costing the good records their place. Profile records the typed decoder took
(``wire.py``) are checked by :func:`_typed_profile_row`, anything else field by field
(:func:`profile_row` and the other kinds' checks), with the same verdict either way.
Personal data is taken only as 152-FZ allows (:func:`_personal`). ``apply.py`` runs the plan.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from footfall.cloud_sync.central import wire
from footfall.cloud_sync.central.db import Connection
from footfall.cloud_sync.central.profiles import event_row

# Personal data in a profile record: a phone MD5 (from partner matching) and the partner's
# MD5 of the MAC (an unkeyed hash, trivially reversible); plus the consent that allows them.
PERSONAL_IDENTIFIERS = {"phone_md5": "phone_md5", "partner_hash": "mac_md5"}
PERSONAL_FIELDS = (*PERSONAL_IDENTIFIERS, "consent", "consent_granted", "consent_withdrawn")
RECORD_KINDS = ("profile", "segment_change", "scenario_result", "daily_aggregate", "event", "health", "definitions")
EVENT_KINDS = ("visit", "segment_entry", "segment_exit", "coupon_issued", "redemption")
_ID_RE = re.compile(r"^[0-9A-Za-z_.:-]{1,128}$")
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")


class RecordError(ValueError):
    """One record of a batch is malformed; the rest of the batch still applies."""


@dataclass
class ApplyResult:
    accepted: int = 0
    duplicate: bool = False
    rejected: int = 0
    dropped_optout: int = 0
    dropped_no_consent: int = 0
    errors: list[str] = field(default_factory=list)


def _num(data: Mapping[str, Any], name: str, default: float | None = None, *, required: bool = False) -> float | None:
    value = data.get(name, default)
    if value is None:
        if required:
            raise RecordError(f"{name} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise RecordError(f"{name} must be a number")
    try:
        return float(value)
    except OverflowError:  # an integer beyond any float
        raise RecordError(f"{name} must be a number") from None


def _ident(value: Any, name: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise RecordError(f"{name} must be 1-128 characters of [0-9A-Za-z_.:-]")
    return value


def profile_row(store: str, key: Any, data: Mapping[str, Any]) -> tuple:
    """Validate a ``profile`` record into a ``profile_stores`` row."""
    device = _ident(data.get("device", key), "device")
    first = _num(data, "first_seen", required=True)
    last = _num(data, "last_seen", required=True)
    if last < first:
        raise RecordError("last_seen is before first_seen")
    visits = _num(data, "visits", 0)
    if visits is None or not math.isfinite(visits):
        raise RecordError("visits must be a number")
    dwell = _num(data, "dwell_s", _num(data, "dwell_total_s", 0.0))
    if dwell is None:
        raise RecordError("dwell_total_s must be a number")
    median = _num(data, "dwell_median_s")
    cluster = data.get("cluster")
    if cluster is not None and not isinstance(cluster, str | int):
        raise RecordError("cluster must be a string")
    segments = data.get("segments", [])
    if not isinstance(segments, list):
        raise RecordError("segments must be a list")
    # The hub sends {"name", "kind", "since"} objects; bare names are accepted too.
    segments = [s.get("name") if isinstance(s, dict) else s for s in segments]
    if not all(isinstance(s, str | int) for s in segments):
        raise RecordError("segments must be names or objects with a name")
    updated = _num(data, "updated", last)
    if updated is None:
        raise RecordError("updated must be a number")
    return (
        device,
        store,
        first,
        last,
        int(visits),
        dwell,
        median,
        None if cluster is None else str(cluster),
        _segments_text([str(s) for s in segments]),
        updated,
    )


_SEGMENTS_TEXT: dict[tuple, str] = {}


def _segments_text(names: list) -> str:
    """The stored form of a profile's segment names (str, or int; never bool, which would
    share a key with 1): a sorted JSON list. A chain has a few dozen distinct combinations, so
    they are remembered rather than encoded per profile."""
    key = tuple(names)
    text = _SEGMENTS_TEXT.get(key)
    if text is None:
        text = json.dumps(sorted(str(s) for s in names))
        if len(_SEGMENTS_TEXT) > 4096:
            _SEGMENTS_TEXT.clear()
        _SEGMENTS_TEXT[key] = text
    return text


def _typed_profile_row(store: str, key: Any, p: wire.Profile) -> tuple | None:
    """:func:`profile_row` for a record the typed decoder took (``wire.Profile``: the types are
    checked already); None when a rule fails, and :func:`profile_row` then says which."""
    device = key if p.device is wire.UNSET else p.device
    if not isinstance(device, str) or not _ID_RE.match(device):
        return None
    first, last = p.first_seen, p.last_seen
    if last < first:
        return None
    visits = float(p.visits)
    if not math.isfinite(visits):
        return None
    cluster = p.cluster
    names = [s.name if type(s) is wire.Segment else s for s in p.segments]
    return (
        device,
        store,
        first,
        last,
        int(visits),
        p.dwell_total_s if p.dwell_s is wire.UNSET else p.dwell_s,
        p.dwell_median_s,
        None if cluster is None else str(cluster),
        _segments_text(names),
        last if p.updated is wire.UNSET else p.updated,
    )


Op = Callable[[Connection], None]


@dataclass
class Plan:
    """A batch's records validated and turned into database work, before any lock is taken."""

    result: ApplyResult
    devices: dict[int, str]  # record index -> device, for the opt-out filter
    profiles: list[tuple[int, tuple]] = field(default_factory=list)
    personal: list[tuple[int, Personal]] = field(default_factory=list)
    events: list[tuple[int, tuple]] = field(default_factory=list)  # event_row()s, bulk-inserted
    ops: list[tuple[int, Op]] = field(default_factory=list)


def plan_records(store: str, records: Sequence[Any], *, now: float | None = None) -> Plan:
    """Validate every record (pure Python, no database). A bad record is counted and skipped
    with its index and reason; it never costs the good records their place."""
    now = time.time() if now is None else now
    plan = Plan(ApplyResult(), {})
    for i, rec in enumerate(records):
        try:
            if isinstance(rec, wire.Record):
                # Decoded by wire.decode_envelope: a profile goes the typed way when the typed
                # decoder and the remaining rules take it; anything else (other kinds, or a
                # profile with something wrong) is plain JSON below and gets its reason there.
                if rec.kind == "profile" and (p := wire.decode_profile(rec.data)) is not None:
                    row = _typed_profile_row(store, rec.key, p)
                    if row is not None:
                        if (
                            p.phone_md5 is not None
                            or p.partner_hash is not None
                            or p.consent is not None
                            or p.consent_granted is not None
                            or p.consent_withdrawn is not None
                        ):
                            fields = {k: getattr(p, k) for k in (*PERSONAL_FIELDS, "consent_source")}
                            plan.personal.append((i, _personal(row[0], fields, now)))
                        plan.devices[i] = row[0]
                        plan.profiles.append((i, row))
                        continue
                rec = {"kind": rec.kind, "key": rec.key, "data": wire.loads(rec.data)}
            if not isinstance(rec, dict) or not isinstance(rec.get("data"), dict):
                raise RecordError("a record is an object with kind, key and data")
            kind, key, data = rec.get("kind"), rec.get("key"), rec["data"]
            if kind not in RECORD_KINDS:
                raise RecordError(f"unknown kind {kind!r}")
            if kind in ("profile", "segment_change", "event"):
                plan.devices[i] = _ident(data.get("device", key), "device")
            if kind == "profile":
                row = profile_row(store, key, data)
                # Personal data first: a record refused for it is refused whole, profile too.
                if any(data.get(k) is not None for k in PERSONAL_FIELDS):
                    plan.personal.append((i, _personal(row[0], data, now)))
                plan.profiles.append((i, row))
            elif kind == "segment_change":
                plan.events.append((i, _segment_change(store, plan.devices[i], data)))
            elif kind == "event":
                plan.events.append((i, _event(store, plan.devices[i], key, data)))
            elif kind == "daily_aggregate":
                plan.ops.append((i, _daily(store, key, data, now)))
            elif kind == "scenario_result":
                plan.ops.append((i, _scenario(store, key, data, now)))
            elif kind == "health":
                plan.ops.append((i, _health(store, data, now)))
            elif kind == "definitions":
                from footfall.cloud_sync.central import definitions  # it builds on this module

                plan.ops.append((i, definitions.status_op(store, data, now)))
        except RecordError as exc:
            plan.devices.pop(i, None)
            plan.result.rejected += 1
            if len(plan.result.errors) < 20:
                plan.result.errors.append(f"record {i}: {exc}")
    return plan


@dataclass
class Personal:
    """A profile record's consent and personal identifiers, validated (see :func:`_personal`)."""

    device: str
    given: float | None  # a consent given at this time, or None
    source: str
    found: list[tuple[str, str]]  # (identifier type, value)
    withdrawn: float | None = None  # the hub recorded a withdrawal (or an opt-out of O2O) then


def _personal(device: str, data: Mapping[str, Any], now: float) -> Personal:
    """Consent first, then the personal identifiers only if a consent is on record (152-FZ);
    ``apply._apply_personal`` writes them.

    A consent arrives as ``"consent": {"pd": true, "ts": <granted>}`` or ``"consent_granted":
    <ts>``; a withdrawal recorded here after that time stands (the hub may not have heard of
    it yet when it cut the batch)."""
    consent = data.get("consent")
    given = None
    if isinstance(consent, dict) and consent.get("pd") is True:
        given = _num(consent, "ts", now)
    elif data.get("consent_granted") is not None:
        given = _num(data, "consent_granted")
    # A phone hash the telecom partner shared comes with the subscriber's consent to share it
    # (the partner answers with one only then); the register says where each consent came from.
    source = "partner" if data.get("consent_source") == "partner" else "hub"
    withdrawn = _num(data, "consent_withdrawn") if data.get("consent_withdrawn") is not None else None
    if withdrawn is not None:
        # Withdrawn at the store: nothing personal of it is taken, whatever else it carries.
        return Personal(device, None, source, [], withdrawn)
    found = []
    for name, id_type in PERSONAL_IDENTIFIERS.items():
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not _MD5_RE.match(value.lower()):
            raise RecordError(f"{name} must be 32 hex digits")
        found.append((id_type, value.lower()))
    return Personal(device, given, source, found)


def _segment_change(store: str, device: str, data: Mapping[str, Any]) -> tuple:
    change = {"enter": "entry", "entry": "entry", "exit": "exit"}.get(data.get("change"))
    if change is None:
        raise RecordError("change must be 'enter' or 'exit'")
    segment = data.get("segment")
    if not isinstance(segment, str | int):
        raise RecordError("segment is required")
    ts = _num(data, "ts", required=True)
    return event_row(device, f"segment_{change}", ts, store=store, data={"segment": str(segment)})


def _event(store: str, device: str, key: Any, data: Mapping[str, Any]) -> tuple:
    kind = data.get("type", data.get("kind"))
    if kind not in EVENT_KINDS:
        raise RecordError(f"event type must be one of {', '.join(EVENT_KINDS)}")
    ts = _num(data, "ts", required=True)
    extra = {k: v for k, v in data.items() if k not in ("type", "kind", "ts", "device", "phone_md5")}
    ekey = f"{store}:{key}" if isinstance(key, str) and key else None
    return event_row(device, kind, ts, store=store, data=extra, key=ekey)


def _daily(store: str, key: Any, data: Mapping[str, Any], now: float) -> Op:
    day = data.get("day", key)
    if not isinstance(day, str) or not re.match(r"^\d{4}-\d{2}-\d{2}$", day):
        raise RecordError("day must be YYYY-MM-DD")
    visitors = _num(data, "visitors")
    passersby = _num(data, "passersby")
    params = (
        store,
        day,
        None if visitors is None else int(visitors),
        None if passersby is None else int(passersby),
        _num(data, "capture_rate"),
        _num(data, "dwell_median_s"),
        json.dumps(dict(data), sort_keys=True, default=str),
        now,
    )
    health = data.get("sensor_health")

    def op(conn: Connection) -> None:
        conn.execute(
            "INSERT INTO daily_aggregates (store, day, visitors, passersby, capture_rate, dwell_median_s, data, "
            "updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (store, day) DO UPDATE SET "
            "visitors = excluded.visitors, passersby = excluded.passersby, capture_rate = excluded.capture_rate, "
            "dwell_median_s = excluded.dwell_median_s, data = excluded.data, updated = excluded.updated",
            params,
        )
        if isinstance(health, dict) and isinstance(health.get("sensors"), dict):
            _daily_health(conn, store, day, health, now)

    return op


def _daily_health(conn: Connection, store: str, day: str, health: Mapping[str, Any], now: float) -> None:
    """Sensor health from the newest day: a sensor that reported in the two weeks before but
    not on this day is stale; explicit ``sensors_stale``/``sensors_failing`` counts win."""
    newest = conn.scalar("SELECT MAX(day) FROM daily_aggregates WHERE store = ?", (store,))
    if newest is not None and day < newest:
        return
    reporting = set(health["sensors"])
    known = set(reporting)
    for (text,) in conn.all(
        "SELECT data FROM daily_aggregates WHERE store = ? AND day < ? ORDER BY day DESC LIMIT 14", (store, day)
    ):
        sensors = json.loads(text).get("sensor_health", {}).get("sensors", {})
        if isinstance(sensors, dict):
            known |= set(sensors)
    failing = [
        name for name, s in health["sensors"].items() if isinstance(s, dict) and s.get("state") in ("failing", "error")
    ]
    try:
        op = _health(
            store,
            {
                "sensors_total": health.get("sensors_total", len(known)),
                "sensors_stale": health.get("sensors_stale", len(known - reporting)),
                "sensors_failing": health.get("sensors_failing", len(failing)),
                "stale": sorted(known - reporting),
                "day": day,
            },
            now,
        )
    except RecordError:
        return  # the day itself is stored; a malformed health summary only leaves health as it was
    op(conn)


def _scenario(store: str, key: Any, data: Mapping[str, Any], now: float) -> Op:
    scenario = data.get("scenario")
    period = data.get("period", key)
    if not isinstance(scenario, str | int) or not isinstance(period, str):
        raise RecordError("scenario and period are required")
    params = (store, str(scenario), period, json.dumps(dict(data), sort_keys=True, default=str), now)
    return lambda conn: conn.execute(
        "INSERT INTO scenario_results (store, scenario, period, data, updated) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (store, scenario, period) DO UPDATE SET data = excluded.data, updated = excluded.updated",
        params,
    )


def _health(store: str, data: Mapping[str, Any], now: float) -> Op:
    def count(name: str) -> int | None:
        # "sensors_stale" or the short "stale"
        v = _num(data, name) if name in data else _num(data, name.split("_", 1)[-1])
        return None if v is None else int(v)

    ts = _num(data, "ts", now)
    params = (
        store,
        count("sensors_total"),
        count("sensors_stale"),
        count("sensors_failing"),
        json.dumps(dict(data), sort_keys=True, default=str),
        ts,
    )
    return lambda conn: conn.execute(
        "INSERT INTO store_health (store, sensors_total, sensors_stale, sensors_failing, data, ts) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (store) DO UPDATE SET sensors_total = excluded.sensors_total, "
        "sensors_stale = excluded.sensors_stale, sensors_failing = excluded.sensors_failing, data = excluded.data, "
        "ts = excluded.ts WHERE excluded.ts >= store_health.ts",
        params,
    )
