"""Segment definitions and scenario settings made at the centre, applied at this hub.

The centre publishes them through pushback, each with a version that grows per id
(``cloud_sync/central/definitions.py``)::

    {"kind": "segment_definition", "id": "lapsed-regulars", "version": 3,
     "definition": {"rule": {...}, "lookback_days": 30, "dynamic": true}}
    {"kind": "scenario_settings", "id": "passersby", "version": 2,
     "settings": {"target": "passersby", "control_share": 0.1, "enabled": true, ...}}

A segment definition becomes the hub's rule segment named after the id (``hub/segments.py``
rule syntax), evaluated at once and refreshed with the others; the scenario targets it as
``segment:<id>``. Scenario settings create or update the O2O scenario of that name: fields not
given keep their current value (a new scenario starts from the defaults), and an existing
scenario keeps its control-group salt, so its control group does not change under a running
campaign. A definition older than the one applied is ignored (pushback pages may be re-read);
one the hub cannot apply (a rule on an unknown field, a setting out of range, a name a store
manager already uses) is refused with its reason. Either way the hub records the version and
the outcome (``central_segments`` / ``central_scenarios``) and reports every id's applied
version back in a ``definitions`` record, so the centre shows which stores run which version.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from typing import Any

from footfall.cloud_sync import outbox

log = logging.getLogger(__name__)

ORIGIN = "central"
TABLES = {
    "segment_definition": ("central_segments", "definition"),
    "scenario_settings": ("central_scenarios", "settings"),
}
# What a centre may not set: the name is the id; the salt stays the store's (see above).
_SCENARIO_FIXED = {"name", "id", "control_salt"}
_SEGMENT_FIELDS = {"rule", "lookback_days", "dynamic", "name", "description"}


def apply(
    conn: sqlite3.Connection, kind: str, ident: str, version: int | None, body: Mapping[str, Any], now: float
) -> str:
    """Store and apply one item inside the caller's transaction; returns ``applied``,
    ``refused`` or ``stale``."""
    table, column = TABLES[kind]
    row = conn.execute(f"SELECT version FROM {table} WHERE id = ?", (ident,)).fetchone()
    if version is not None and row is not None and row[0] is not None and version <= row[0]:
        return "stale"
    error = None
    try:
        with _savepoint(conn):
            if kind == "segment_definition":
                _apply_segment(conn, ident, body, now)
            else:
                _apply_scenario(conn, ident, body, now)
    except sqlite3.OperationalError:
        raise  # the database (locked, full), not the definition: the page is applied again later
    except Exception as exc:  # noqa: BLE001 - whatever else a definition does, it is refused, never fatal
        error = f"{type(exc).__name__}: {exc}"[:500] if not isinstance(exc, ValueError) else str(exc)[:500]
        log.warning("central %s %r version %s refused: %s", kind.replace("_", " "), ident, version, error)
    status = "refused" if error else "applied"
    conn.execute(
        f"""INSERT INTO {table} (id, {column}, updated, version, status, error) VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET {column} = excluded.{column}, updated = excluded.updated,
                version = excluded.version, status = excluded.status, error = excluded.error""",
        (ident, outbox.dumps(body), now, version, status, error),
    )
    return status


class _savepoint:
    """A refused definition must leave nothing half-applied, inside the page's transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        if not self.conn.in_transaction:
            # Outside a transaction the savepoint would be one, and its release a commit.
            self.conn.execute("BEGIN")
        self.conn.execute("SAVEPOINT central_definition")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.conn.execute("ROLLBACK TO central_definition")
        self.conn.execute("RELEASE central_definition")


def _apply_segment(conn: sqlite3.Connection, ident: str, body: Mapping[str, Any], now: float) -> None:
    from footfall.hub import segments

    unknown = set(body) - _SEGMENT_FIELDS
    if unknown:
        raise ValueError(f"unknown segment definition fields: {', '.join(sorted(unknown))}")
    if "rule" not in body:
        raise ValueError("a segment definition needs a rule")
    lookback = body.get("lookback_days", 30.0)
    if not isinstance(lookback, (int, float)) or isinstance(lookback, bool):
        raise ValueError("lookback_days must be a number")
    segments.put_rule_segment(conn, ident, body["rule"], origin=ORIGIN, dynamic=bool(body.get("dynamic", True)),
                              now=now, lookback_days=float(lookback))  # fmt: skip


def _apply_scenario(conn: sqlite3.Connection, ident: str, body: Mapping[str, Any], now: float) -> None:
    from footfall.hub.o2o import scenarios

    fixed = _SCENARIO_FIXED & set(body)
    if fixed:
        raise ValueError(f"the centre cannot set {', '.join(sorted(fixed))}")
    row = conn.execute("SELECT id FROM o2o_scenarios WHERE name = ?", (ident,)).fetchone()
    sc = scenarios.from_settings(ident, dict(body), scenarios.get(conn, ident) if row else None)
    scenarios.add(conn, sc, now=now, replace=True)


def check(kind: str, ident: str, body: Mapping[str, Any]) -> None:
    """What can be checked before a definition leaves the centre (raises ValueError); a store
    can still refuse one (a name its manager already uses, codes the store has no room for)."""
    from footfall.hub import segment_rules
    from footfall.hub.o2o import scenarios

    if kind == "scenario_settings":
        fixed = _SCENARIO_FIXED & set(body)
        if fixed:
            raise ValueError(f"the centre cannot set {', '.join(sorted(fixed))}")
        scenarios.from_settings(ident, dict(body))
    else:
        unknown = set(body) - _SEGMENT_FIELDS
        if unknown:
            raise ValueError(f"unknown segment definition fields: {', '.join(sorted(unknown))}")
        if "rule" not in body:
            raise ValueError("a segment definition needs a rule")
        segment_rules.parse_rule(body["rule"])


def status(conn: sqlite3.Connection) -> dict[str, Any]:
    """Every central id's version and outcome, as reported to the centre."""
    out: dict[str, Any] = {}
    for kind, (table, _column) in TABLES.items():
        out[kind] = [
            {"id": r[0], "version": r[1], "status": r[2] or "applied", "error": r[3], "at": r[4]}
            for r in conn.execute(f"SELECT id, version, status, error, updated FROM {table} ORDER BY id")
        ]
    return out


def enqueue_status(conn: sqlite3.Connection, site: str, now: float) -> int:
    """Queue the ``definitions`` record when an outcome changed (nothing when there is none)."""
    data = status(conn)
    if not any(data.values()):
        return 0
    stable = {k: [{f: v for f, v in e.items() if f != "at"} for e in items] for k, items in data.items()}
    return int(outbox.enqueue_if_changed(conn, "definitions", site, {**data, "ts": now}, now=now, compare=stable))
