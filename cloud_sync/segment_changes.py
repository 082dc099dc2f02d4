"""Segment entries and exits for the centre, found by diffing ``segment_members`` against the
snapshot taken at the previous run (``sync_segment_snapshot``); opted-out devices are left out.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from footfall.cloud_sync.outbox import enqueue_many, has_table, optout_keys


def _enqueue_segment_changes(conn: sqlite3.Connection, now: float) -> int:
    if not (has_table(conn, "segment_members") and has_table(conn, "segments")):
        return 0
    blocked = optout_keys(conn)
    entries = conn.execute(
        """SELECT m.segment_id, m.device_key, s.name, s.kind, m.since FROM segment_members m
           JOIN segments s ON s.id = m.segment_id
           LEFT JOIN sync_segment_snapshot p ON p.segment_id = m.segment_id AND p.device_key = m.device_key
           WHERE p.device_key IS NULL OR p.since != m.since"""
    ).fetchall()
    exits = conn.execute(
        """SELECT p.segment_id, p.device_key, p.name, p.kind, p.since FROM sync_segment_snapshot p
           LEFT JOIN segment_members m ON m.segment_id = p.segment_id AND m.device_key = p.device_key
           WHERE m.device_key IS NULL OR m.since != p.since"""
    ).fetchall()
    records: list[tuple[str, dict[str, Any]]] = []
    for _, key, name, kind, since in exits:
        if key not in blocked:
            data = {"segment": name, "segment_kind": kind, "device": key, "change": "exit", "ts": now, "since": since}
            records.append((f"{name}|{key}|exit|{since}", data))
    conn.executemany(
        "DELETE FROM sync_segment_snapshot WHERE segment_id = ? AND device_key = ?", [(r[0], r[1]) for r in exits]
    )
    for _, key, name, kind, since in entries:
        if key not in blocked:
            data = {"segment": name, "segment_kind": kind, "device": key, "change": "enter", "ts": since}
            records.append((f"{name}|{key}|enter|{since}", data))
    conn.executemany(
        "INSERT OR REPLACE INTO sync_segment_snapshot (segment_id, device_key, name, kind, since) "
        "VALUES (?, ?, ?, ?, ?)",
        [tuple(r) for r in entries],
    )
    return enqueue_many(conn, "segment_change", records, now=now)
