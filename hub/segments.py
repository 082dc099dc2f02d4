"""Visitor segments: sets of devices kept in the database, with their sizes over time.

Segments are sets of ``device_key`` (the device estimator's ids, see ``hub/linked_devices.py``) kept in
``segments`` / ``segment_members``, with their sizes over time in ``segment_counts``; the
coupon, partner and sync features read them from there. A segment is defined by a rule
(``hub/segment_rules.py``) or is one behavioural cluster (``hub/segment_clusters.py``).
A rule segment is *static* (members fixed when it is created) or *dynamic* (re-evaluated by
:func:`refresh_segments`); both record their size at every refresh.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

from footfall.hub.segment_rules import RuleError, evaluate_rule, parse_rule, rule_to_json


# -- stored segments ---------------------------------------------------------------------------
def create_segment(
    conn: sqlite3.Connection,
    name: str,
    rule: Mapping[str, Any] | str,
    *,
    dynamic: bool = True,
    now: float | None = None,
    lookback_days: float = 30.0,
) -> int:
    """Store a rule-based segment and evaluate it once; returns its id."""
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise RuleError("a segment needs a name of 1-200 characters")
    parsed = parse_rule(rule)
    now = time.time() if now is None else now
    definition = json.dumps({"rule": rule_to_json(parsed), "lookback_days": lookback_days})
    with conn:
        try:
            cur = conn.execute(
                "INSERT INTO segments (name, kind, definition, dynamic, created, updated) "
                "VALUES (?, 'rule', ?, ?, ?, ?)",
                (name.strip(), definition, int(dynamic), now, now),
            )
        except sqlite3.IntegrityError:
            raise RuleError(f"a segment named {name.strip()!r} exists already") from None
        seg_id = int(cur.lastrowid)
        _set_members(conn, seg_id, evaluate_rule(conn, parsed, now, lookback_days), now)
    return seg_id


def put_rule_segment(
    conn: sqlite3.Connection,
    name: str,
    rule: Mapping[str, Any] | str,
    *,
    origin: str,
    dynamic: bool = True,
    now: float | None = None,
    lookback_days: float = 30.0,
) -> int:
    """Create or redefine the rule segment ``name`` owned by ``origin`` (e.g. ``central``) and
    evaluate it; returns its size. A segment of that name made by someone else is refused, so
    the centre never overwrites a store manager's segment (or the other way round)."""
    parsed = parse_rule(rule)
    if not 0 < lookback_days <= 3650:
        raise RuleError("lookback_days must be in (0, 3650]")
    now = time.time() if now is None else now
    definition = json.dumps({"rule": rule_to_json(parsed), "lookback_days": lookback_days, "origin": origin})
    row = conn.execute("SELECT id, kind, definition FROM segments WHERE name = ?", (name,)).fetchone()
    if row is not None and (row[1] != "rule" or json.loads(row[2] or "{}").get("origin") != origin):
        raise RuleError(f"a segment named {name!r} exists already and was not made by {origin}")
    if row is None:
        seg_id = int(
            conn.execute(
                "INSERT INTO segments (name, kind, definition, dynamic, created, updated) "
                "VALUES (?, 'rule', ?, ?, ?, ?)",
                (name, definition, int(dynamic), now, now),
            ).lastrowid
        )
    else:
        seg_id = int(row[0])
        conn.execute("UPDATE segments SET definition = ?, dynamic = ? WHERE id = ?", (definition, int(dynamic), seg_id))
    return _set_members(conn, seg_id, evaluate_rule(conn, parsed, now, lookback_days), now)


def _set_members(conn: sqlite3.Connection, seg_id: int, keys: Sequence[str], now: float) -> int:
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _seg_new (device_key TEXT PRIMARY KEY)")
    conn.execute("DELETE FROM _seg_new")
    conn.executemany("INSERT OR IGNORE INTO _seg_new VALUES (?)", [(k,) for k in keys])
    conn.execute(
        "DELETE FROM segment_members WHERE segment_id = ? AND device_key NOT IN (SELECT device_key FROM _seg_new)",
        (seg_id,),
    )
    conn.execute(
        "INSERT OR IGNORE INTO segment_members (segment_id, device_key, since) SELECT ?, device_key, ? FROM _seg_new",
        (seg_id, now),
    )
    n = conn.execute("SELECT count(*) FROM segment_members WHERE segment_id = ?", (seg_id,)).fetchone()[0]
    conn.execute("INSERT OR REPLACE INTO segment_counts (segment_id, ts, members) VALUES (?, ?, ?)", (seg_id, now, n))
    conn.execute("UPDATE segments SET updated = ? WHERE id = ?", (now, seg_id))
    return n


def refresh_segments(conn: sqlite3.Connection, now: float | None = None) -> dict[str, int]:
    """Re-evaluate dynamic rule segments; record every segment's size at ``now``. Returns name -> size."""
    now = time.time() if now is None else now
    sizes: dict[str, int] = {}
    with conn:
        for row in conn.execute("SELECT id, name, kind, definition, dynamic FROM segments ORDER BY id").fetchall():
            seg_id, name, kind, definition, dynamic = row[0], row[1], row[2], row[3], row[4]
            if kind == "rule" and dynamic:
                d = json.loads(definition)
                keys = evaluate_rule(conn, d["rule"], now, d.get("lookback_days", 30.0))
                sizes[name] = _set_members(conn, seg_id, keys, now)
            else:
                n = conn.execute("SELECT count(*) FROM segment_members WHERE segment_id = ?", (seg_id,)).fetchone()[0]
                conn.execute(
                    "INSERT OR REPLACE INTO segment_counts (segment_id, ts, members) VALUES (?, ?, ?)", (seg_id, now, n)
                )
                sizes[name] = n
    return sizes


def segment_members(conn: sqlite3.Connection, name: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT m.device_key FROM segment_members m JOIN segments s ON s.id = m.segment_id "
            "WHERE s.name = ? ORDER BY m.device_key",
            (name,),
        )
    ]


def segment_history(conn: sqlite3.Connection, name: str) -> list[tuple[float, int]]:
    return [
        (r[0], r[1])
        for r in conn.execute(
            "SELECT c.ts, c.members FROM segment_counts c JOIN segments s ON s.id = c.segment_id "
            "WHERE s.name = ? ORDER BY c.ts",
            (name,),
        )
    ]


def list_segments(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Segments with their current size and profile (what the dashboard shows)."""
    out = []
    for r in conn.execute(
        """SELECT s.id, s.name, s.kind, s.definition, s.dynamic, s.profile, s.updated,
                  (SELECT count(*) FROM segment_members m WHERE m.segment_id = s.id)
           FROM segments s ORDER BY s.kind, s.name"""
    ):
        out.append(
            {
                "id": r[0],
                "name": r[1],
                "kind": r[2],
                "definition": json.loads(r[3]) if r[3] else None,
                "dynamic": bool(r[4]),
                "profile": json.loads(r[5]) if r[5] else None,
                "updated": r[6],
                "members": r[7],
            }
        )
    return out
