"""Writes to the profile tables: per-store profile rows and profile events in bulk (a batch's
worth in a few statements), identifiers, and the erasure of a person's personal data.

:func:`write_lock` orders them: batches write in parallel, an erasure alone.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from footfall.cloud_sync.central.db import KEY_POSTGRES, Connection

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
