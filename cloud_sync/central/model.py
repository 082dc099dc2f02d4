"""The central schema and the idempotent application of hub batches.

Modelled on the CDPs of seed 003:

- **profile**: one per chain-wide device id (the keyed MAC hash is the same in every store,
  so the same phone seen by three hubs is one profile). ``profile_stores`` keeps per-store
  stats, one row per (device, store); ``profiles`` is a view rolling them up per device.
  A view rather than a table kept in step: the merged profile is always exact, nothing has to
  re-read and re-write it on every sync (half the write cost), and two hubs' batches touching
  the same device never race on a shared row.
- **identifiers**: ``(type, value, active, added)``. ``mac_hash`` is informational (never a
  contact channel); ``phone_md5`` exists only while a personal-data processing consent is
  recorded. As in the CDP, a new identifier of a type deactivates the older ones of that type.
- **profile events**: visit, segment entry/exit, coupon issued, redemption, consent withdrawn;
  keyed by an event key so a replayed batch adds nothing.
- **segments** are versioned (``segment_versions``: count, delta, CSV of members), see
  ``segments.py``.

Idempotency works at two levels: ``applied_batches`` remembers every batch id (a resent batch
answers ``duplicate`` and touches nothing), and each record is an upsert keyed by
(device, store) with last-writer-wins on the hub's ``updated`` timestamp, so even a batch
re-cut with a different id cannot move data backwards.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from footfall.cloud_sync.central import fleet, wire
from footfall.cloud_sync.central.db import KEY_POSTGRES, Connection, Database

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hubs (
    hub_id {key} PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    secret TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    last_sync DOUBLE PRECISION,
    last_seq BIGINT NOT NULL DEFAULT 0,
    batches BIGINT NOT NULL DEFAULT 0,
    records BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS applied_batches (
    batch_id {key} PRIMARY KEY,
    hub_id {key} NOT NULL,
    seq BIGINT NOT NULL,
    received DOUBLE PRECISION NOT NULL,
    records INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS nonces (
    hub_id {key} NOT NULL,
    nonce {key} NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (hub_id, nonce)
);
CREATE TABLE IF NOT EXISTS profile_stores (
    device {key} NOT NULL,
    store {key} NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL,
    visits BIGINT NOT NULL,
    dwell_s DOUBLE PRECISION NOT NULL,
    dwell_median_s DOUBLE PRECISION,
    cluster TEXT,
    segments TEXT NOT NULL DEFAULT '[]',
    updated DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device, store)
);
CREATE TABLE IF NOT EXISTS identifiers (
    device {key} NOT NULL,
    type {key} NOT NULL,
    value {key} NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    added DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device, type, value)
);
{create_view} profiles AS
    SELECT device, MIN(first_seen) AS first_seen, MAX(last_seen) AS last_seen,
           CAST(SUM(visits) AS BIGINT) AS visits, SUM(dwell_s) AS dwell_s, COUNT(*) AS stores,
           MAX(updated) AS updated
    FROM profile_stores GROUP BY device;
CREATE INDEX IF NOT EXISTS identifiers_value ON identifiers (type, value) WHERE type <> 'mac_hash';
CREATE TABLE IF NOT EXISTS consents (
    device {key} PRIMARY KEY,
    pd_consent INTEGER NOT NULL,
    given DOUBLE PRECISION,
    withdrawn DOUBLE PRECISION,
    source TEXT
);
CREATE TABLE IF NOT EXISTS optouts (
    device {key} PRIMARY KEY,
    ts DOUBLE PRECISION NOT NULL,
    source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS profile_events (
    id {serial},
    event_key {key} NOT NULL UNIQUE,
    device {key} NOT NULL,
    store {key},
    kind TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS profile_events_device ON profile_events (device, ts);
CREATE INDEX IF NOT EXISTS profile_events_ts ON profile_events (ts);
CREATE TABLE IF NOT EXISTS daily_aggregates (
    store {key} NOT NULL,
    day TEXT NOT NULL,
    visitors BIGINT,
    passersby BIGINT,
    capture_rate DOUBLE PRECISION,
    dwell_median_s DOUBLE PRECISION,
    data TEXT NOT NULL,
    updated DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (store, day)
);
CREATE TABLE IF NOT EXISTS store_health (
    store {key} PRIMARY KEY,
    sensors_total INTEGER,
    sensors_stale INTEGER,
    sensors_failing INTEGER,
    data TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS scenario_results (
    store {key} NOT NULL,
    scenario TEXT NOT NULL,
    period TEXT NOT NULL,
    data TEXT NOT NULL,
    updated DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (store, scenario, period)
);
CREATE TABLE IF NOT EXISTS segments (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    rule TEXT NOT NULL,
    stores TEXT,
    created DOUBLE PRECISION NOT NULL,
    created_by TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS segment_versions (
    segment_id {key} NOT NULL,
    version INTEGER NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    size BIGINT NOT NULL,
    delta BIGINT NOT NULL,
    members_csv TEXT NOT NULL,
    PRIMARY KEY (segment_id, version)
);
CREATE TABLE IF NOT EXISTS export_items (
    id {serial},
    export_id {key} NOT NULL,
    device {key} NOT NULL,
    payload TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS export_items_export ON export_items (export_id, id);
CREATE INDEX IF NOT EXISTS export_items_device ON export_items (device);
CREATE TABLE IF NOT EXISTS pushback (
    id {serial},
    store {key},
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id {serial},
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    stores TEXT NOT NULL DEFAULT '*',
    disabled INTEGER NOT NULL DEFAULT 0,
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    expires DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY,
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    stores TEXT NOT NULL DEFAULT '*',
    created DOUBLE PRECISION NOT NULL,
    revoked DOUBLE PRECISION
);
-- Versions of what the team sends to the stores, and the version each store runs
-- (definitions.py).
CREATE TABLE IF NOT EXISTS definitions (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT NOT NULL,
    store TEXT,
    created DOUBLE PRECISION NOT NULL,
    created_by TEXT,
    PRIMARY KEY (kind, id, version)
);
CREATE TABLE IF NOT EXISTS definition_status (
    store TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER,
    status TEXT NOT NULL,
    error TEXT,
    applied DOUBLE PRECISION,
    received DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (store, kind, id)
);
-- Every export the centre makes of a segment (o2o.py).
CREATE TABLE IF NOT EXISTS central_exports (
    id {serial},
    ts DOUBLE PRECISION NOT NULL,
    who TEXT NOT NULL,
    segment TEXT NOT NULL,
    version INTEGER,
    format TEXT NOT NULL,
    rows BIGINT NOT NULL,
    bytes BIGINT,
    sha256 TEXT,
    files INTEGER NOT NULL,
    warning TEXT
)
"""

# Temp tables of the bulk paths (per connection): profiles and profile events.
_TEMP = {
    "in_profiles": """
CREATE TEMP TABLE IF NOT EXISTS in_profiles (
    device {key} NOT NULL,
    store {key} NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL,
    visits BIGINT NOT NULL,
    dwell_s DOUBLE PRECISION NOT NULL,
    dwell_median_s DOUBLE PRECISION,
    cluster TEXT,
    segments TEXT NOT NULL,
    updated DOUBLE PRECISION NOT NULL
)""",
    "in_events": """
CREATE TEMP TABLE IF NOT EXISTS in_events (
    event_key {key} NOT NULL,
    device {key} NOT NULL,
    store {key},
    kind TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    data TEXT NOT NULL
)""",
}

PROFILE_COLUMNS = (
    "device",
    "store",
    "first_seen",
    "last_seen",
    "visits",
    "dwell_s",
    "dwell_median_s",
    "cluster",
    "segments",
    "updated",
)
# Their PostgreSQL types, for the binary COPY (db.Connection.load_rows).
PROFILE_TYPES = ("text", "text", "float8", "float8", "int8", "float8", "float8", "text", "text", "float8")
EVENT_COLUMNS = ("event_key", "device", "store", "kind", "ts", "data")
EVENT_TYPES = ("text", "text", "text", "text", "float8", "text")
# Personal data in a profile record: a phone MD5 (from partner matching) and the partner's
# MD5 of the MAC (an unkeyed hash, trivially reversible); plus the consent that allows them.
PERSONAL_IDENTIFIERS = {"phone_md5": "phone_md5", "partner_hash": "mac_md5"}
PERSONAL_FIELDS = (*PERSONAL_IDENTIFIERS, "consent", "consent_granted", "consent_withdrawn")
RECORD_KINDS = ("profile", "segment_change", "scenario_result", "daily_aggregate", "event", "health", "definitions")
EVENT_KINDS = ("visit", "segment_entry", "segment_exit", "coupon_issued", "redemption")
_ID_RE = re.compile(r"^[0-9A-Za-z_.:-]{1,128}$")
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")


def init(db: Database) -> None:
    """Create the schema (idempotent)."""
    with db.connect() as conn, conn.transaction():
        if conn.postgres:
            # Two processes initialising at once must not race on CREATE TABLE IF NOT EXISTS.
            conn.execute("SELECT pg_advisory_xact_lock(4242)")
        conn.executescript(db.ddl(SCHEMA))
        if conn.postgres:
            # Room in each page for the new version of an updated row (HOT updates): profiles
            # are rewritten at every sync, and no index covers the columns that change.
            conn.execute("ALTER TABLE profile_stores SET (fillfactor = 80)")
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO NOTHING",
            (str(SCHEMA_VERSION),),
        )
        migrate(conn, db)


# Changes after version 1, in order: (version, DDL with the same slots as SCHEMA). Each runs once,
# in init()'s transaction together with the version it brings meta.schema_version to, so a
# database of any age (or one two processes start at once) ends up at the latest version.
MIGRATIONS: tuple[tuple[int, str], ...] = ((2, fleet.SCHEMA),)


def migrate(conn: Connection, db: Database) -> int:
    """Apply the migrations newer than the database's schema version; returns the version."""
    current = int(conn.scalar("SELECT value FROM meta WHERE key = 'schema_version'", default=SCHEMA_VERSION))
    for version, ddl in MIGRATIONS:
        if version > current:
            conn.executescript(db.ddl(ddl))
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
            current = version
    return current


WRITE_LOCK = 7_342_001  # PostgreSQL advisory lock id: profile writers vs erasures


def write_lock(conn: Connection, *, exclusive: bool = False) -> None:
    """Order profile writers against erasures until the end of the transaction.

    Batches take the lock shared (they run in parallel: each writes its own (device, store)
    rows); an opt-out or consent withdrawal takes it exclusive, so no batch that checked the
    opt-out list before the erasure committed can re-create the profile after it. SQLite's
    ``BEGIN IMMEDIATE`` already serialises every writer."""
    if conn.postgres:
        fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        conn.execute(f"SELECT {fn}(?)", (WRITE_LOCK,))


def _ensure_temp(conn: Connection, table: str = "in_profiles") -> None:
    # PostgreSQL never vacuums temp tables, so rows deleted there would pile up as dead tuples
    # for the life of the connection; ON COMMIT DELETE ROWS truncates instead. SQLite's
    # unqualified DELETE is a truncate too.
    temp = _TEMP[table].replace("{key}", KEY_POSTGRES if conn.postgres else "TEXT")
    conn.execute(temp + (" ON COMMIT DELETE ROWS" if conn.postgres else ""))


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


def upsert_profiles(conn: Connection, rows: Sequence[tuple], *, now: float | None = None) -> int:
    """Bulk upsert of ``profile_stores`` rows (see :data:`PROFILE_COLUMNS`): load into a temp
    table, then one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``. Opted-out devices are
    skipped. Returns the rows loaded."""
    if not rows:
        return 0
    now = time.time() if now is None else now
    # One row per (device, store), the newest: PostgreSQL refuses an upsert that touches the
    # same row twice in one statement.
    newest: dict[tuple[str, str], tuple] = {}
    for row in rows:
        seen = newest.get((row[0], row[1]))
        if seen is None or row[9] >= seen[9]:
            newest[(row[0], row[1])] = row
    if len(newest) < len(rows):
        rows = list(newest.values())
    with conn.transaction():
        write_lock(conn)
        _ensure_temp(conn)
        conn.load_rows("in_profiles", PROFILE_COLUMNS, rows, types=PROFILE_TYPES)
        n = len(rows) - conn.execute("DELETE FROM in_profiles WHERE device IN (SELECT device FROM optouts)").rowcount
        # The hashed MAC is the profile's informational identifier (never a contact channel),
        # written once, when the device is new (an anti-join is cheaper than failed inserts).
        conn.execute(
            "INSERT INTO identifiers (device, type, value, active, added) "
            "SELECT DISTINCT i.device, 'mac_hash', i.device, 1, ? FROM in_profiles i "
            "WHERE NOT EXISTS (SELECT 1 FROM profile_stores p WHERE p.device = i.device) "
            # Key order: concurrent batches naming the same new devices then wait for each
            # other instead of deadlocking on each other's uncommitted index entries.
            "ORDER BY i.device "
            "ON CONFLICT (device, type, value) DO NOTHING",
            (now,),
        )
        cols = ", ".join(PROFILE_COLUMNS)
        sets = ", ".join(f"{c} = excluded.{c}" for c in PROFILE_COLUMNS[2:])
        conn.execute(
            f"INSERT INTO profile_stores ({cols}) SELECT {cols} FROM in_profiles WHERE true ORDER BY device, store "
            f"ON CONFLICT (device, store) DO UPDATE SET {sets} WHERE excluded.updated >= profile_stores.updated"
        )
        if not conn.postgres:
            conn.execute("DELETE FROM in_profiles")
    return n


def add_identifier(conn: Connection, device: str, type_: str, value: str, *, now: float | None = None) -> None:
    """Add (or re-activate) an identifier; the others of its type become inactive (seed 003:
    at most one active identifier per type)."""
    now = time.time() if now is None else now
    with conn.transaction():
        conn.execute(
            "UPDATE identifiers SET active = 0 WHERE device = ? AND type = ? AND value <> ?", (device, type_, value)
        )
        conn.execute(
            "INSERT INTO identifiers (device, type, value, active, added) VALUES (?, ?, ?, 1, ?) "
            "ON CONFLICT (device, type, value) DO UPDATE SET active = 1",
            (device, type_, value, now),
        )


def erase_personal(conn: Connection, devices: Sequence[str], ts: float) -> int:
    """Withdraw the devices' personal-data consent at ``ts`` and delete their phone and MAC
    hashes, and the same phone hashes wherever else they sit: one phone reached the centre
    under several device ids (stores that could not link its MACs), and a withdrawal is the
    person's, not one id's. Returns the identifiers deleted."""
    devices = sorted(set(devices))
    if not devices:
        return 0
    phones = _devices_in(
        conn, "SELECT value FROM identifiers WHERE type = 'phone_md5' AND device IN ({marks})", devices
    )
    holders = set(devices) | (
        _devices_in(conn, "SELECT device FROM identifiers WHERE type = 'phone_md5' AND value IN ({marks})", phones)
        if phones
        else set()
    )
    gone = 0
    for device in sorted(holders):
        given = conn.scalar("SELECT given FROM consents WHERE device = ? AND pd_consent <> 0", (device,))
        if given is not None and float(given) > ts:
            continue  # consented again after this withdrawal (a late batch): the consent stands
        gone += conn.execute(
            "DELETE FROM identifiers WHERE device = ? AND type IN ('phone_md5', 'mac_md5')", (device,)
        ).rowcount
        conn.execute(
            "INSERT INTO consents (device, pd_consent, given, withdrawn, source) VALUES (?, 0, NULL, ?, 'withdrawal') "
            "ON CONFLICT (device) DO UPDATE SET pd_consent = 0, given = NULL, withdrawn = excluded.withdrawn, "
            "source = excluded.source WHERE consents.given IS NULL OR consents.given <= excluded.withdrawn",
            (device, ts),
        )
    return gone


def has_consent(conn: Connection, device: str) -> bool:
    return bool(conn.scalar("SELECT pd_consent FROM consents WHERE device = ?", (device,), default=0))


def event_key(store: str, device: str, kind: str, ts: float, extra: str = "") -> str:
    raw = f"{store}\x00{device}\x00{kind}\x00{ts!r}\x00{extra}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def add_event(
    conn: Connection,
    device: str,
    kind: str,
    ts: float,
    *,
    store: str | None = None,
    data: Mapping[str, Any] | None = None,
    key: str | None = None,
) -> bool:
    """Record a profile event once (the key dedups replays); True when it was new."""
    row = event_row(device, kind, ts, store=store, data=data, key=key)
    cur = conn.execute(
        "INSERT INTO profile_events (event_key, device, store, kind, ts, data) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (event_key) DO NOTHING",
        row,
    )
    return cur.rowcount > 0


def event_row(
    device: str,
    kind: str,
    ts: float,
    *,
    store: str | None = None,
    data: Mapping[str, Any] | None = None,
    key: str | None = None,
) -> tuple:
    """A ``profile_events`` row (:data:`EVENT_COLUMNS`) as :func:`add_event` writes it."""
    body = json.dumps(dict(data or {}), sort_keys=True)
    return (key or event_key(store or "", device, kind, ts, body), device, store, kind, float(ts), body)


def add_events(conn: Connection, rows: Sequence[tuple]) -> None:
    """:func:`add_event` for many rows (from :func:`event_row`) at once: one bulk load and one
    ``INSERT ... ON CONFLICT DO NOTHING``. Of rows sharing a key the first wins, as it would
    one by one."""
    if not rows:
        return
    first: dict[str, tuple] = {}
    for row in rows:
        first.setdefault(row[0], row)
    with conn.transaction():
        _ensure_temp(conn, "in_events")
        conn.load_rows("in_events", EVENT_COLUMNS, list(first.values()), types=EVENT_TYPES)
        cols = ", ".join(EVENT_COLUMNS)
        conn.execute(
            f"INSERT INTO profile_events ({cols}) SELECT {cols} FROM in_events WHERE true ORDER BY event_key "
            "ON CONFLICT (event_key) DO NOTHING"
        )
        if not conn.postgres:
            conn.execute("DELETE FROM in_events")


def _devices_in(conn: Connection, sql: str, devices: Iterable[str]) -> set[str]:
    """Which of ``devices`` the query ``sql`` returns; it ends in ``device IN ({marks})``.

    On PostgreSQL the list is one array parameter (``device = ANY(?)``): a batch's 5,000
    devices as 5,000 placeholders cost more to send and plan than the lookup itself. SQLite
    gets the placeholders, 500 at a time (builds before 3.32 allow 999 parameters)."""
    devices = sorted(set(devices))
    if not devices:
        return set()
    if conn.postgres:
        return {r[0] for r in conn.all(sql.replace("IN ({marks})", "= ANY(?)"), (devices,))}
    out: set[str] = set()
    for i in range(0, len(devices), 500):
        chunk = devices[i : i + 500]
        out |= {r[0] for r in conn.all(sql.format(marks=", ".join("?" * len(chunk))), chunk)}
    return out


def _optout_set(conn: Connection, devices: Iterable[str]) -> set[str]:
    return _devices_in(conn, "SELECT device FROM optouts WHERE device IN ({marks})", devices)


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


def run_plan(conn: Connection, plan: Plan, *, now: float | None = None) -> ApplyResult:
    """Apply a plan inside the caller's transaction (which holds :func:`write_lock`)."""
    now = time.time() if now is None else now
    result = plan.result
    out = _optout_set(conn, plan.devices.values())
    dropped = {i for i, d in plan.devices.items() if d in out}
    result.dropped_optout += len(dropped)
    for i, op in plan.ops:
        if i not in dropped:
            op(conn)
            result.accepted += 1
    events = [row for i, row in plan.events if i not in dropped]
    add_events(conn, events)
    result.accepted += len(events)
    rows = [row for i, row in plan.profiles if i not in dropped]
    upsert_profiles(conn, rows, now=now)
    result.accepted += len(rows)
    result.dropped_no_consent += _apply_personal(conn, [p for i, p in plan.personal if i not in dropped], now)
    return result


def apply_records(conn: Connection, store: str, records: Sequence[Any], *, now: float | None = None) -> ApplyResult:
    """Validate and apply one batch's records inside the caller's transaction."""
    return run_plan(conn, plan_records(store, records, now=now), now=now)


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
    :func:`_apply_personal` writes them.

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


def _apply_personal(conn: Connection, items: Sequence[Personal], now: float) -> int:
    """Record the consents, then the identifiers of the devices that have a consent on record,
    in a few statements for the whole batch. Returns how many records carried identifiers but
    no consent (dropped). As record by record: a device named twice in one batch is done one
    record at a time, so a consent in a later record never covers an earlier one."""
    if len({p.device for p in items}) < len(items):
        return sum(_apply_personal(conn, [p], now) for p in items)
    for p in items:
        if p.withdrawn is not None:
            erase_personal(conn, [p.device], p.withdrawn)
    items = [p for p in items if p.withdrawn is None]
    consents = [(p.device, p.given, p.source) for p in items if p.given is not None]
    if consents:
        conn.executemany(
            "INSERT INTO consents (device, pd_consent, given, withdrawn, source) VALUES (?, 1, ?, NULL, ?) "
            "ON CONFLICT (device) DO UPDATE SET pd_consent = 1, given = excluded.given, withdrawn = NULL, "
            "source = excluded.source WHERE consents.withdrawn IS NULL OR consents.withdrawn < excluded.given",
            consents,
        )
    wanted = [p for p in items if p.found]
    if not wanted:
        return 0
    ok = _devices_in(
        conn, "SELECT device FROM consents WHERE pd_consent <> 0 AND device IN ({marks})", [p.device for p in wanted]
    )
    # add_identifier() for each, in key order (concurrent batches then never deadlock on them):
    # the other identifiers of the type become inactive, this one is added or re-activated.
    ids = sorted((p.device, id_type, value) for p in wanted if p.device in ok for id_type, value in p.found)
    if ids:
        conn.executemany("UPDATE identifiers SET active = 0 WHERE device = ? AND type = ? AND value <> ?", ids)
        conn.executemany(
            "INSERT INTO identifiers (device, type, value, active, added) VALUES (?, ?, ?, 1, ?) "
            "ON CONFLICT (device, type, value) DO UPDATE SET active = 1",
            [(*i, now) for i in ids],
        )
    return sum(p.device not in ok for p in wanted)


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


def apply_batch(db: Database, hub: str, batch: Mapping[str, Any], *, now: float | None = None) -> ApplyResult:
    """Apply a validated batch exactly once: the batch id is claimed first in the same
    transaction, so a concurrent or later replay finds it taken and changes nothing.
    Records are validated before the transaction starts."""
    now = time.time() if now is None else now
    plan = plan_records(hub, batch["records"], now=now)
    for attempt in range(4):
        try:
            return _apply_planned(db, hub, batch, plan, now)
        except Exception as exc:
            # PostgreSQL may still pick a victim among concurrent batches (deadlock 40P01,
            # serialization 40001): the transaction rolled back whole, so running it again is safe.
            if getattr(exc, "sqlstate", None) not in ("40P01", "40001") or attempt == 3:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _apply_planned(db: Database, hub: str, batch: Mapping[str, Any], plan: Plan, now: float) -> ApplyResult:
    with db.connect() as conn, conn.transaction():
        write_lock(conn)
        claimed = conn.execute(
            "INSERT INTO applied_batches (batch_id, hub_id, seq, received, records) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (batch_id) DO NOTHING",
            (batch["batch_id"], hub, int(batch["seq"]), now, len(batch["records"])),
        ).rowcount
        if not claimed:
            conn.execute("UPDATE hubs SET last_sync = ? WHERE hub_id = ?", (now, hub))
            return ApplyResult(duplicate=True)
        result = run_plan(conn, plan, now=now)
        conn.execute(
            "UPDATE hubs SET last_sync = ?, last_seq = CASE WHEN last_seq > ? THEN last_seq ELSE ? END, "
            "batches = batches + 1, records = records + ? WHERE hub_id = ?",
            (now, int(batch["seq"]), int(batch["seq"]), result.accepted, hub),
        )
        return result


PUSHBACK_LOCK = 7_342_002


def add_pushback(conn: Connection, kind: str, payload: Mapping[str, Any], *, store: str | None = None) -> int:
    """Queue an item for the hubs. On PostgreSQL ids are handed out under a lock held until
    commit, and readers take it shared: a reader never sees id 12 committed while id 11 is
    still in flight (it would move its cursor past 11 and never see it)."""
    with conn.transaction():
        if conn.postgres:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (PUSHBACK_LOCK,))
        return _insert_pushback(conn, kind, payload, store)


def _insert_pushback(conn: Connection, kind: str, payload: Mapping[str, Any], store: str | None) -> int:
    cur = conn.execute(
        "INSERT INTO pushback (store, kind, payload, ts) VALUES (?, ?, ?, ?) RETURNING id",
        (store, kind, json.dumps(dict(payload), sort_keys=True), time.time()),
    )
    return int(cur.fetchone()[0])


def pushback_since(conn: Connection, store: str, since: int, *, limit: int = 1000) -> tuple[int, list[dict]]:
    """Items after ``since`` for this store or the chain, and the cursor to ask from next."""
    with conn.transaction():
        if conn.postgres:
            conn.execute("SELECT pg_advisory_xact_lock_shared(?)", (PUSHBACK_LOCK,))
        # Fix the upper bound first, so a row committed between the two queries is not skipped.
        top = int(conn.scalar("SELECT MAX(id) FROM pushback", default=0))
        rows = conn.all(
            "SELECT id, kind, payload, ts FROM pushback WHERE id > ? AND id <= ? AND (store IS NULL OR store = ?) "
            "ORDER BY id LIMIT ?",
            (since, top, store, limit),
        )
    items = [{"kind": kind, **json.loads(payload), "ts": ts} for _, kind, payload, ts in rows]
    # The cursor moves past rows addressed to other stores too, so nobody re-scans them.
    cursor = rows[-1][0] if len(rows) == limit else max(top, since)
    return int(cursor), items
