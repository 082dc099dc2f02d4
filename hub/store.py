"""The hub's SQLite database: schema, versioned migrations, and opening it right.

One file per store (``hub.db``), WAL mode so the dashboard reads while ingest writes.
Times are UNIX seconds (REAL, UTC); ``day``/``hour`` columns are in the store's local time
zone, computed once at write time, because every footfall report is by local day and hour.

Tables (the contract between ingest, metrics, the dashboard and sync):

- ``sensor_visits``: one row per visit message as a sensor published it (unique key: start
  time and message id, which makes replays and QoS-1 duplicates harmless).
- ``visits``: store visits. One device seen by several sensors in overlapping or adjacent
  visits is one store visit; ``best_sensor``/``best_rssi`` say which sensor (zone) saw it
  strongest. ``device_key`` is the device estimator's id (see ``hub/devices.py``): every
  metric counts ``device_key``, never raw hashes, because MAC randomization inflates
  distinct-hash counts many times over.
- ``devices``: one row per ``device_key``: first/last seen, visit count, total dwell,
  ``excluded`` (staff and fixed equipment: left out of every metric by default).
- ``sensors``: health from status/last-will messages, heartbeats and health reports.
- ``presence``: the sensors' periodic live counts.
- ``hourly``: aggregates by local day, hour and zone; raw visits older than the retention
  window are rolled up here before deletion, so totals survive retention.
- ``ingest_rejects``: counts of rejected messages by reason (garbage, schema, unknown sensor).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

from footfall.hub.migrations_1_5 import MIGRATIONS_1_5
from footfall.hub.migrations_6_on import MIGRATIONS_6_ON

# Each entry migrates from version i to i+1. Never edit a released entry: append a new one
# (in hub/migrations_6_on.py).
MIGRATIONS: list[str] = [*MIGRATIONS_1_5, *MIGRATIONS_6_ON]


# The sqlite3 module binds only exact int/float/str/bytearray directly; anything else, None
# included, first goes through its adapter protocol, which raises and catches two
# AttributeErrors when no adapter is registered: ~3,000 instructions per NULL, a tenth of an
# ingested message's SQL. A registered adapter is one dict lookup. Same values bound either way.
sqlite3.register_adapter(type(None), lambda value: value)


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection, *, to: int | None = None) -> int:
    """Bring the database to the newest schema (or version ``to``); returns the version it is at."""
    version = schema_version(conn)
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {version} is newer than this build knows ({len(MIGRATIONS)}); upgrade footfall"
        )
    for target in range(version, len(MIGRATIONS) if to is None else to):
        with conn:
            conn.executescript("BEGIN;" + MIGRATIONS[target] + f"; PRAGMA user_version = {target + 1};")
    return schema_version(conn)


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open (and migrate) the hub database with the pragmas every user of it needs."""
    path = Path(path)
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 5000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode is durable against process crashes (kill -9); only an OS crash
        # can lose the last transactions, which the agents' QoS-1 redelivery then restores.
        conn.execute("PRAGMA synchronous = NORMAL")
        migrate(conn)
    return conn


def open_db(path: str | Path) -> sqlite_utils.Database:
    """The same database through sqlite-utils, for code that prefers its table API."""
    return sqlite_utils.Database(connect(path))
