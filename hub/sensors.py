"""Sensor health: online/offline from status and last-will messages, heartbeats, activity.

- ``status`` (retained; the agent's last will publishes ``offline`` when its connection dies):
  ``state``, ``online_since`` (the agent's ``started`` time, else the message time) and
  ``offline_since``. An offline will carries the time the will was registered, not the time
  the sensor died, so a live (not retained) offline message is dated when the hub got it.
  Statuses are applied in arrival order, never by their ``ts``: MQTT keeps one topic's
  messages in order, and a will's ``ts`` is older than the ``online`` it follows by design.
  ``status_ts`` keeps the ``ts`` of the last one.
- ``health`` (periodic heartbeat): software ``version``, ``backlog`` (visits buffered on the
  sensor, not yet acknowledged by the broker), ``dropped``, and the whole report as JSON in
  ``health`` (frame rate, CPU temperature, uptime, ...).
- every message: ``last_message``, ``messages`` and ``message_rate`` (messages per second
  the hub received from the sensor over the last minute).

A sensor is *stale* when nothing arrived from it for more than 3 heartbeat intervals: it may
be online on the broker but no longer capturing or reporting.

A sensor is *replayed* (state ``replayed``, set by ``mark_replayed``) when its data is a
recorded capture played back once, as in ``footfall demo``: neither online (nothing live is
connected) nor offline (nothing is broken). Any later live status message replaces it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STALE_HEARTBEATS = 3
RATE_WINDOW_S = 60.0


def apply_status(conn: sqlite3.Connection, payload: Mapping[str, Any], *, received: float, retained: bool) -> None:
    """Apply one status message (online, or offline from the agent or its last will)."""
    site, sensor, ts = payload["site"], payload["sensor"], float(payload["ts"])
    if payload["state"] == "online":
        since = float(payload.get("started") or ts)
        conn.execute(
            """INSERT INTO sensors (site, sensor, state, version, online_since, offline_since, status_ts)
               VALUES (?, ?, 'online', ?, ?, NULL, ?)
               ON CONFLICT (site, sensor) DO UPDATE SET state = 'online', online_since = excluded.online_since,
                   offline_since = NULL, status_ts = excluded.status_ts,
                   version = coalesce(excluded.version, sensors.version)""",
            (site, sensor, payload.get("version") or None, since, ts),
        )
    else:
        if retained:
            # Went offline while the hub was away: at least as late as anything we heard from it.
            row = conn.execute(
                "SELECT last_message FROM sensors WHERE site = ? AND sensor = ?", (site, sensor)
            ).fetchone()
            last = row["last_message"] if row is not None else None
            since = max(ts, last or ts)
        else:
            since = received
        conn.execute(
            """INSERT INTO sensors (site, sensor, state, offline_since, status_ts) VALUES (?, ?, 'offline', ?, ?)
               ON CONFLICT (site, sensor) DO UPDATE SET state = 'offline', status_ts = excluded.status_ts,
                   offline_since = CASE WHEN sensors.state = 'offline' AND sensors.offline_since IS NOT NULL
                                        THEN sensors.offline_since ELSE excluded.offline_since END""",
            (site, sensor, since, ts),
        )


def mark_replayed(conn: sqlite3.Connection, site: str, sensors: list[str], *, until: float) -> None:
    """Say that these sensors' data is a replay that ran up to ``until`` (kept in ``status_ts``).

    Their agents closed after the replay and said ``offline``: true of the agent process, but a
    store manager reads red "offline" as a broken sensor, and green "online" would be a lie."""
    conn.executemany(
        """INSERT INTO sensors (site, sensor, state, status_ts) VALUES (?, ?, 'replayed', ?)
           ON CONFLICT (site, sensor) DO UPDATE SET state = 'replayed', offline_since = NULL,
               status_ts = excluded.status_ts""",
        [(site, sensor, until) for sensor in sensors],
    )
    conn.commit()


def apply_health(conn: sqlite3.Connection, payload: Mapping[str, Any]) -> None:
    report = {k: v for k, v in payload.items() if k not in ("v", "type", "id", "site", "sensor")}
    conn.execute(
        """INSERT INTO sensors (site, sensor, version, backlog, dropped, health) VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (site, sensor) DO UPDATE SET version = excluded.version, backlog = excluded.backlog,
               dropped = excluded.dropped, health = excluded.health""",
        (
            payload["site"],
            payload["sensor"],
            payload["version"],
            payload["backlog"],
            payload["dropped"],
            json.dumps(report, sort_keys=True),
        ),
    )


class ActivityMeter:
    """Per-sensor message rates over a sliding window, folded into ``sensors`` once per batch."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._history: dict[tuple[str, str], deque[tuple[float, int]]] = {}
        self._started = time.monotonic()

    def flush(self, conn: sqlite3.Connection, now: float, counts: Mapping[tuple[str, str], int]) -> None:
        """Add one batch's message counts per (site, sensor)."""
        if not counts:
            return
        mono = time.monotonic()
        span = max(1.0, min(self.window_s, mono - self._started))
        rows = []
        for key, n in counts.items():
            hist = self._history.setdefault(key, deque())
            hist.append((mono, n))
            while hist and hist[0][0] < mono - self.window_s:
                hist.popleft()
            rows.append((key[0], key[1], n, now, round(sum(c for _, c in hist) / span, 3)))
        conn.executemany(
            """INSERT INTO sensors (site, sensor, messages, last_message, message_rate) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (site, sensor) DO UPDATE SET messages = sensors.messages + excluded.messages,
                   last_message = max(coalesce(sensors.last_message, 0), excluded.last_message),
                   message_rate = excluded.message_rate""",
            rows,
        )


@dataclass(frozen=True)
class SensorHealth:
    site: str
    sensor: str
    state: str  # online | offline | replayed | unknown
    stale: bool
    online_since: float | None
    offline_since: float | None
    last_message: float | None
    messages: int
    message_rate: float | None
    version: str | None
    backlog: int | None
    dropped: int | None
    health: dict[str, Any] | None


def sensor_health(
    conn: sqlite3.Connection, *, heartbeat_s: float = 60.0, now: float | None = None, site: str | None = None
) -> list[SensorHealth]:
    """Every known sensor with its state and whether it is stale (for the dashboard and CLI)."""
    now = time.time() if now is None else now
    sql = "SELECT * FROM sensors" + (" WHERE site = ?" if site else "") + " ORDER BY site, sensor"
    out = []
    for r in conn.execute(sql, (site,) if site else ()):
        last = r["last_message"]
        out.append(
            SensorHealth(
                site=r["site"],
                sensor=r["sensor"],
                state=r["state"],
                stale=last is None or now - last > STALE_HEARTBEATS * heartbeat_s,
                online_since=r["online_since"],
                offline_since=r["offline_since"],
                last_message=last,
                messages=r["messages"],
                message_rate=r["message_rate"],
                version=r["version"],
                backlog=r["backlog"],
                dropped=r["dropped"],
                health=json.loads(r["health"]) if r["health"] else None,
            )
        )
    return out
