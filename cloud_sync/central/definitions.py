"""Segment definitions and scenario settings the marketing team sends to the stores, versioned.

``POST /api/v1/pushback`` with ``kind`` ``segment_definition`` or ``scenario_settings`` stores
the body as the next version of that id (1, 2, ...) and queues it for the hubs (all, or one
store). Each hub applies it and reports back, in a ``definitions`` sync record, the version it
runs and whether it was applied or refused with the reason (``cloud_sync/definitions.py``).
``GET /api/v1/definitions`` shows, per id, the latest version and every store's applied one,
so "which stores run the new rule" is one request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from footfall.cloud_sync.central import pushback, validation
from footfall.cloud_sync.central.db import Connection

KINDS = {"segment_definition": "definition", "scenario_settings": "settings"}
STATUSES = ("applied", "refused")


def publish(
    conn: Connection, kind: str, ident: str, body: Mapping[str, Any], *, store: str | None, by: str, now: float
) -> tuple[int, int]:
    """Store the next version of ``ident`` and queue it for the hubs: (pushback id, version)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    with conn.transaction():
        if conn.postgres:
            # Two publishers of one id must not both take version n + 1.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (f"definition:{kind}:{ident}",))
        version = int(conn.scalar("SELECT MAX(version) FROM definitions WHERE kind = ? AND id = ?", (kind, ident),
                                  default=0) or 0) + 1  # fmt: skip
        conn.execute(
            "INSERT INTO definitions (kind, id, version, body, store, created, created_by) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (kind, ident, version, json.dumps(dict(body), sort_keys=True), store, now, by),
        )
        item = pushback.add_pushback(
            conn, kind, {"id": ident, "version": version, KINDS[kind]: dict(body)}, store=store
        )
    return item, version


def status_op(store: str, data: Mapping[str, Any], now: float) -> Callable[[Connection], None]:
    """Validate a hub's ``definitions`` record (raises ``validation.RecordError``) into one write."""
    rows = []
    for kind in KINDS:
        entries = data.get(kind, [])
        if not isinstance(entries, list) or len(entries) > 10_000:
            raise validation.RecordError(f"{kind} must be a list")
        for e in entries:
            if not isinstance(e, dict) or not isinstance(e.get("id"), str) or not 0 < len(e["id"]) <= 200:
                raise validation.RecordError(f"{kind}: each entry needs an id")
            version, st, error, at = e.get("version"), e.get("status"), e.get("error"), e.get("at")
            if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
                raise validation.RecordError(f"{kind} {e['id']}: version must be an integer")
            if st not in STATUSES:
                raise validation.RecordError(f"{kind} {e['id']}: status must be one of {', '.join(STATUSES)}")
            if error is not None and not isinstance(error, str):
                raise validation.RecordError(f"{kind} {e['id']}: error must be text")
            if at is not None and (not isinstance(at, (int, float)) or isinstance(at, bool)):
                raise validation.RecordError(f"{kind} {e['id']}: at must be a time")
            rows.append((store, kind, e["id"], version, st, (error or None) and error[:500], at, now))

    def op(conn: Connection) -> None:
        for row in rows:
            conn.execute(
                "INSERT INTO definition_status (store, kind, id, version, status, error, applied, received) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (store, kind, id) DO UPDATE SET "
                "version = excluded.version, status = excluded.status, error = excluded.error, "
                "applied = excluded.applied, received = excluded.received",
                row,
            )

    return op


def overview(conn: Connection, stores: Sequence[str] | None) -> list[dict[str, Any]]:
    """Per (kind, id): the latest version, its body, and each store's applied version and outcome.
    ``stores`` limits what a store-bound user sees (None: every store)."""
    latest = conn.dicts(
        "SELECT d.kind, d.id, d.version, d.body, d.store, d.created, d.created_by FROM definitions d "
        "WHERE d.version = (SELECT MAX(version) FROM definitions x WHERE x.kind = d.kind AND x.id = d.id) "
        "ORDER BY d.kind, d.id"
    )
    status: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in conn.dicts(
        "SELECT store, kind, id, version, status, error, applied, received FROM definition_status ORDER BY store"
    ):
        if stores is None or r["store"] in stores:
            status.setdefault((r["kind"], r["id"]), []).append(r)
    out = []
    for d in latest:
        if stores is not None and d["store"] is not None and d["store"] not in stores:
            continue
        hubs = status.get((d["kind"], d["id"]), [])
        out.append(
            {
                "kind": d["kind"],
                "id": d["id"],
                "version": d["version"],
                "body": json.loads(d["body"]),
                "store": d["store"],
                "created": d["created"],
                "created_by": d["created_by"],
                "stores": hubs,
                "stores_current": sum(1 for h in hubs if h["version"] == d["version"] and h["status"] == "applied"),
            }
        )
    return out
