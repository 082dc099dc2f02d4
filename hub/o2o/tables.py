"""Tables of the ad-platform segment and the privacy bookkeeping, created on first use.

They live here rather than in ``hub/store.py``'s numbered migrations so that this module can
ship without racing other changes for the next schema number; every statement is idempotent
(``IF NOT EXISTS``) and none commits, so :func:`ensure` is safe inside a caller's transaction
(the sync pushback applies opt-outs inside its own). Moving them into ``store.MIGRATIONS``
later changes nothing for the code that uses them.

- ``o2o_snapshots``: one row per full segment file set of a scenario (``files``: JSON list of
  ``{"path", "rows", "bytes", "sha256"}``, paths absolute), with totals, the expiry of the
  newest live share link when it was written, when a newer one superseded it and when its
  files were deleted. The rows carry no hashes, so they stay for the register's lifetime.
- ``o2o_share_links``: guest links to a scenario's current snapshot, by SHA-256 of the token
  (the token itself is shown once, when the link is made).
- ``o2o_privacy``: the subject key's fingerprint and how far the raw-hash purge has got.
"""

from __future__ import annotations

import sqlite3

DDL = (
    """CREATE TABLE IF NOT EXISTS o2o_snapshots (
        id INTEGER PRIMARY KEY,
        scenario_id INTEGER NOT NULL,
        run_id INTEGER,
        created REAL NOT NULL,
        rows INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        files TEXT NOT NULL,
        link_expires REAL,
        superseded REAL,
        deleted REAL,
        purged_rows INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS o2o_snapshots_scenario ON o2o_snapshots(scenario_id, id)",
    """CREATE TABLE IF NOT EXISTS o2o_share_links (
        link_hash TEXT PRIMARY KEY,
        scenario_id INTEGER NOT NULL,
        created REAL NOT NULL,
        expires REAL NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS o2o_share_links_scenario ON o2o_share_links(scenario_id, expires)",
    "CREATE TABLE IF NOT EXISTS o2o_privacy (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
)
NAMES = ("o2o_snapshots", "o2o_share_links", "o2o_privacy")


def ensure(conn: sqlite3.Connection) -> None:
    have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'o2o_%'")}
    if not set(NAMES) <= have:
        for stmt in DDL:
            conn.execute(stmt)


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def get_state(conn: sqlite3.Connection, name: str) -> str | None:
    row = conn.execute("SELECT value FROM o2o_privacy WHERE name = ?", (name,)).fetchone()
    return None if row is None else row[0]


def set_state(conn: sqlite3.Connection, name: str, value: str) -> None:
    conn.execute(
        "INSERT INTO o2o_privacy (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, value),
    )
