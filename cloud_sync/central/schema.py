"""The central schema: its tables, created at start, and the migrations after version 1.

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
"""

from __future__ import annotations

from footfall.cloud_sync.central import fleet
from footfall.cloud_sync.central.db import Connection, Database

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
