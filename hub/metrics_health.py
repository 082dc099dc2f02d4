"""Sensor health and ingest rejects: what the dashboard's health area and ``/metrics`` show.

Read from the ``sensors`` and ``ingest_rejects`` tables that ingest keeps (``hub/store.py``).
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any


def sensor_health(conn: sqlite3.Connection, *, now: float | None = None, stale_after_s: float = 180) -> dict[str, Any]:
    """Each sensor's state: ``online``, ``offline`` (its last will or an offline status),
    ``stale`` (claims online but silent for ``stale_after_s``: power cut, network loss), or
    ``replayed`` (its data is a recorded capture played back, as in the demo: not live, not broken)."""
    now = time.time() if now is None else now
    sensors = []
    for r in conn.execute("SELECT * FROM sensors ORDER BY site, sensor"):
        row = dict(r) if isinstance(r, sqlite3.Row) else dict(zip([c[0] for c in conn.description], r, strict=True))
        last = row.get("last_message")
        if row.get("state") in ("offline", "replayed"):
            status = row["state"]
        elif last is None or now - last > stale_after_s:
            status = "stale"
        else:
            status = "online"
        health = row.get("health")
        if isinstance(health, str):
            try:
                health = json.loads(health)
            except ValueError:
                health = {"raw": health}
        sensors.append(
            {
                "site": row["site"],
                "sensor": row["sensor"],
                "status": status,
                "state": row.get("state"),
                "version": row.get("version"),
                "online_since": row.get("online_since"),
                "offline_since": row.get("offline_since"),
                "last_message": last,
                "last_message_age_s": round(now - last, 1) if last is not None else None,
                "messages": row.get("messages"),
                "message_rate": row.get("message_rate"),
                "backlog": row.get("backlog"),
                "dropped": row.get("dropped"),
                "health": health if isinstance(health, dict) else None,
            }
        )
    counts = {k: sum(1 for s in sensors if s["status"] == k) for k in ("online", "offline", "stale", "replayed")}
    return {"as_of": now, "stale_after_s": stale_after_s, **counts, "sensors": sensors}


def rejects(conn: sqlite3.Connection) -> dict[str, Any]:
    """Messages ingest refused, by reason (garbage, schema, unknown sensor, ...)."""
    rows = [
        {"reason": r[0], "count": r[1], "last_at": r[2], "last_detail": r[3]}
        for r in conn.execute("SELECT reason, count, last_at, last_detail FROM ingest_rejects ORDER BY count DESC")
    ]
    return {"total": sum(r["count"] for r in rows), "reasons": rows}
