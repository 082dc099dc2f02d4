"""The store's sensors now, for the centre's store list: a ``health`` record, queued only
when a sensor's state or a count changes (backlog counters move all the time).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from footfall.cloud_sync.outbox import enqueue_if_changed


def health_summary(conn: sqlite3.Connection, site: str, now: float, heartbeat_s: float) -> dict[str, Any]:
    """The store's sensors right now: totals for the centre's store list, and per-sensor state."""
    stale_after = 3 * heartbeat_s  # the hub's own rule (hub/sensors.py): 3 missed heartbeats
    sensors: dict[str, dict[str, Any]] = {}
    for name, state, last, backlog, dropped, version in conn.execute(
        "SELECT sensor, state, last_message, backlog, dropped, version FROM sensors WHERE site = ? ORDER BY sensor",
        (site,),
    ):
        stale = last is None or now - last > stale_after
        sensors[name] = {"state": state, "stale": stale, "backlog": backlog, "dropped": dropped, "version": version}
    return {
        "site": site,
        "ts": now,
        "sensors_total": len(sensors),
        "sensors_stale": sum(s["stale"] for s in sensors.values()),
        "sensors_failing": sum(s["state"] == "offline" for s in sensors.values()),
        "sensors": sensors,
    }


def _enqueue_health(conn: sqlite3.Connection, site: str, now: float, heartbeat_s: float) -> int:
    data = health_summary(conn, site, now, heartbeat_s)
    if not data["sensors"]:
        return 0
    # Backlog counters move all the time; a new record only when a state or a count changes.
    stable = {k: v for k, v in data.items() if k != "ts"}
    stable["sensors"] = {n: {"state": s["state"], "stale": s["stale"]} for n, s in data["sensors"].items()}
    return int(enqueue_if_changed(conn, "health", site, data, now=now, compare=stable))
