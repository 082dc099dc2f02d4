"""The centre's pushback queue: opt-outs, consents and definitions the hubs pull, in order.

Each hub asks for the items after its cursor (``GET /api/v1/sync/pushback``, ``sync_web.py``);
the ids are handed out so that no reader can move its cursor past an item still being written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from footfall.cloud_sync.central.db import Connection

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
