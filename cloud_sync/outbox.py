"""The outbox: records for the central service, kept in the hub database until acknowledged.

One pending row per ``(kind, key)``: enqueueing the same key again replaces the pending row's
data in place (the row keeps its place in the queue), so a device that changes ten times
between two sends is sent once, and re-running ``changes.enqueue_changes`` over unchanged data
adds nothing. Rows that belong to a formed batch (``batch_id`` set) are frozen: a newer
version of the same key becomes a new pending row behind them, so a resent batch is always
byte-identical to the first attempt (see ``sender.py``).

What is queued, and when, is ``changes.py``, with a module per record kind.

Opted-out devices are never enqueued. The outbox is bounded: above ``max_rows`` the oldest
pending rows of the droppable kinds go first and every drop is counted; profiles and daily
aggregates are never dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

log = logging.getLogger(__name__)

KINDS = ("profile", "segment_change", "scenario_result", "daily_aggregate", "event", "health", "definitions")
NEVER_DROPPED = ("profile", "daily_aggregate", "health", "definitions")
_CHUNK = 500


def dumps(data: Any) -> str:
    """Canonical JSON: the same data always gives the same text (and digest)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    return bool(conn.execute("PRAGMA table_info(" + _quote(name) + ")").fetchall())


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# -- state and counters ---------------------------------------------------------------------


def get_state(conn: sqlite3.Connection, name: str, default: str | None = None) -> str | None:
    row = conn.execute("SELECT value FROM sync_state WHERE name = ?", (name,)).fetchone()
    return row[0] if row else default


def set_state(conn: sqlite3.Connection, name: str, value: Any) -> None:
    conn.execute(
        "INSERT INTO sync_state (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, str(value)),
    )


def count(conn: sqlite3.Connection, name: str, n: int = 1, now: float | None = None) -> None:
    if n <= 0:
        return
    conn.execute(
        """INSERT INTO sync_counters (name, count, last_at) VALUES (?, ?, ?)
           ON CONFLICT (name) DO UPDATE SET count = count + excluded.count, last_at = excluded.last_at""",
        (name, n, time.time() if now is None else now),
    )


def counters(conn: sqlite3.Connection) -> dict[str, int]:
    return {r[0]: r[1] for r in conn.execute("SELECT name, count FROM sync_counters ORDER BY name")}


# -- the queue itself -----------------------------------------------------------------------


def enqueue(conn: sqlite3.Connection, kind: str, key: str, data: Any, *, now: float | None = None) -> int:
    """Queue one record; replaces a pending record of the same kind and key. Returns its row id.

    Caller holds the transaction (``with conn:``).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {KINDS}")
    if not isinstance(key, str) or not key:
        raise ValueError("record key must be a non-empty string")
    text = dumps(data)
    row = conn.execute(
        """INSERT INTO sync_outbox (kind, key, data, created) VALUES (?, ?, ?, ?)
           ON CONFLICT (kind, key) WHERE batch_id IS NULL AND parked IS NULL
           DO UPDATE SET data = excluded.data, created = excluded.created
           RETURNING id""",
        (kind, key, text, time.time() if now is None else now),
    ).fetchone()
    return int(row[0])


def enqueue_many(
    conn: sqlite3.Connection, kind: str, items: Iterable[tuple[str, Any]], *, now: float | None = None
) -> int:
    """:func:`enqueue` for many ``(key, data)`` at once (one statement, executemany)."""
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {KINDS}")
    now = time.time() if now is None else now
    rows = [(kind, key, dumps(data), now) for key, data in items]
    if any(not isinstance(r[1], str) or not r[1] for r in rows):
        raise ValueError("record key must be a non-empty string")
    conn.executemany(
        """INSERT INTO sync_outbox (kind, key, data, created) VALUES (?, ?, ?, ?)
           ON CONFLICT (kind, key) WHERE batch_id IS NULL AND parked IS NULL
           DO UPDATE SET data = excluded.data, created = excluded.created""",
        rows,
    )
    return len(rows)


def enqueue_if_changed(
    conn: sqlite3.Connection, kind: str, key: str, data: Any, *, now: float | None = None, compare: Any = None
) -> bool:
    """Queue a snapshot only when it (or ``compare``, its non-volatile part) differs from the last one."""
    digest = _digest(dumps(data if compare is None else compare))
    row = conn.execute("SELECT digest FROM sync_digests WHERE kind = ? AND key = ?", (kind, key)).fetchone()
    if row and row[0] == digest:
        return False
    enqueue(conn, kind, key, data, now=now)
    conn.execute(
        "INSERT INTO sync_digests (kind, key, digest) VALUES (?, ?, ?) "
        "ON CONFLICT (kind, key) DO UPDATE SET digest = excluded.digest",
        (kind, key, digest),
    )
    return True


def pending_count(conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute("SELECT kind, count(*) FROM sync_outbox WHERE parked IS NULL GROUP BY kind ORDER BY kind")
    return {r[0]: r[1] for r in rows}


def enforce_bound(
    conn: sqlite3.Connection, max_rows: int, droppable: Sequence[str], *, now: float | None = None
) -> dict[str, int]:
    """Drop the oldest pending rows of ``droppable`` kinds until at most ``max_rows`` remain.

    Never touches rows of a formed batch, nor profiles/daily aggregates. Returns drops by kind
    (also added to the ``dropped_<kind>`` counters).
    """
    total = conn.execute("SELECT count(*) FROM sync_outbox WHERE parked IS NULL").fetchone()[0]
    excess = total - max_rows
    dropped: dict[str, int] = {}
    kinds = [k for k in droppable if k not in NEVER_DROPPED]
    if excess <= 0:
        return dropped
    if kinds:
        marks = ",".join("?" * len(kinds))
        ids = conn.execute(
            f"""SELECT id, kind, key FROM sync_outbox WHERE batch_id IS NULL AND parked IS NULL AND kind IN ({marks})
                ORDER BY id LIMIT ?""",
            (*kinds, excess),
        ).fetchall()
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i : i + _CHUNK]
            conn.execute(f"DELETE FROM sync_outbox WHERE id IN ({','.join('?' * len(chunk))})", [r[0] for r in chunk])
        # A dropped snapshot must be re-queued when it next changes, not thought already sent.
        conn.executemany("DELETE FROM sync_digests WHERE kind = ? AND key = ?", [(r[1], r[2]) for r in ids])
        for _, kind, _ in ids:
            dropped[kind] = dropped.get(kind, 0) + 1
        for kind, n in dropped.items():
            count(conn, f"dropped_{kind}", n, now)
        excess -= len(ids)
    if dropped:
        log.warning("sync outbox over its bound of %d rows: dropped %s (oldest first)", max_rows, dropped)
    if excess > 0:
        # Only never-dropped kinds are left; keeping them beats losing profiles silently.
        count(conn, "outbox_over_bound", 1, now)
        log.warning("sync outbox holds %d rows over its bound, all of kinds that are never dropped", excess)
    return dropped


def release_batch(conn: sqlite3.Connection, batch_id: str) -> None:
    """Forget a formed, unacknowledged batch and give its rows back to the queue.

    Used when the batch must change (413 re-cut, an opt-out or consent withdrawal touching
    its rows): the re-formed batch has new content, hence a new id, and a new seq (the released
    batch may have reached the centre, so its seq stays used: seq has gaps, never repeats).
    Caller holds the transaction.
    """
    # A newer version of a record queued meanwhile supersedes the frozen one.
    conn.execute(
        """DELETE FROM sync_outbox WHERE batch_id = ? AND parked IS NULL AND EXISTS (
               SELECT 1 FROM sync_outbox o WHERE o.kind = sync_outbox.kind AND o.key = sync_outbox.key
               AND o.batch_id IS NULL AND o.parked IS NULL)""",
        (batch_id,),
    )
    if conn.execute("SELECT count(*) FROM sync_batches").fetchone()[0] > 1:
        # So does one in a batch formed after this one (the sender forms one ahead): re-cut,
        # this batch goes out after it and must not carry the older version. (A later row of
        # the same kind and key is a newer version: a frozen row is never updated in place.)
        newest: dict[tuple[str, str], int] = {}
        for rid, kind, key in conn.execute(
            "SELECT id, kind, key FROM sync_outbox WHERE batch_id IS NOT NULL AND batch_id <> ? AND parked IS NULL",
            (batch_id,),
        ):
            newest[(kind, key)] = max(rid, newest.get((kind, key), rid))
        stale = [
            rid
            for rid, kind, key in conn.execute(
                "SELECT id, kind, key FROM sync_outbox WHERE batch_id = ? AND parked IS NULL", (batch_id,)
            )
            if newest.get((kind, key), rid) > rid
        ]
        for i in range(0, len(stale), _CHUNK):
            chunk = stale[i : i + _CHUNK]
            conn.execute(f"DELETE FROM sync_outbox WHERE id IN ({','.join('?' * len(chunk))})", chunk)
    conn.execute("UPDATE sync_outbox SET batch_id = NULL WHERE batch_id = ? AND parked IS NULL", (batch_id,))
    conn.execute("DELETE FROM sync_batches WHERE batch_id = ?", (batch_id,))


def unpark(conn: sqlite3.Connection, *, kind: str | None = None) -> int:
    """Queue parked rows again (after the centre was fixed); returns how many. Caller holds the transaction."""
    where = "parked IS NOT NULL" + (" AND kind = ?" if kind else "")
    args = (kind,) if kind else ()
    # A pending newer version of the same record wins over the parked one, the newest parked over older ones.
    conn.execute(
        f"""DELETE FROM sync_outbox WHERE {where} AND id < (
               SELECT max(o.id) FROM sync_outbox o WHERE o.kind = sync_outbox.kind AND o.key = sync_outbox.key
               AND o.parked IS NOT NULL)""",
        args,
    )
    conn.execute(
        f"""DELETE FROM sync_outbox WHERE {where} AND EXISTS (
               SELECT 1 FROM sync_outbox o WHERE o.kind = sync_outbox.kind AND o.key = sync_outbox.key
               AND o.batch_id IS NULL AND o.parked IS NULL)""",
        args,
    )
    return conn.execute(
        f"UPDATE sync_outbox SET parked = NULL, park_reason = NULL, batch_id = NULL WHERE {where}", args
    ).rowcount


# -- opt-outs and consents (used by enqueueing and by pushback) -------------------------------


def optout_keys(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT device_key FROM optout_keys")}


def record_consent(conn: sqlite3.Connection, device: str, *, granted: float | None = None, source: str = "hub") -> None:
    """Record a personal-data processing consent for a device: its phone hash may then be synced."""
    now = time.time()
    conn.execute(
        """INSERT INTO consents (device, granted, withdrawn, source, updated) VALUES (?, ?, NULL, ?, ?)
           ON CONFLICT (device) DO UPDATE SET granted = excluded.granted, withdrawn = NULL,
               source = excluded.source, updated = excluded.updated""",
        (device, now if granted is None else granted, source, now),
    )
