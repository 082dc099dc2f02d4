"""``/metrics``: the hub's fleet health in Prometheus text exposition format (version 0.0.4).

What an operator alerts on: sensors down (offline, stale, or expected and never seen), their
buffer backlog and drops, capture rate and temperature from their health reports, what ingest
rejected, whether the hub itself still ingests and has disk, and when a certificate or the CRL
expires. Only counts, states and times: no device ids. ``hub/monitor.py`` says where each
reading comes from; docs/operator-guide.md ("Monitoring") has alert rules.

Types: a value that only grows (or restarts from 0 with the agent) is a counter named
``_total``; the agents report ``dropped``, ``rejected`` and ``frames`` as running totals, so
they are counters here and ``rate()`` works on them. ``footfall_sensor_visits_total`` is the
highest row number of ``sensor_visits``: ingest only appends and retention deletes the oldest
days, so it never falls when retention runs (``count(*)``, which it used to be, did); the number
of rows kept is the gauge ``footfall_sensor_visits_stored``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from footfall.hub import metrics_health, monitor

# A replayed sensor (the demo's) is not capturing anything live: down, like an offline one.
# A sensor of the roster that never sent anything is down too: that is the alert that was missing.
STATE_VALUE = {"online": 1, "stale": 0.5, "offline": 0, "replayed": 0, "never_seen": 0}

# Running totals in the agents' health reports (edge_agent/agent.py): counters.
HEALTH_COUNTERS = (
    ("footfall_sensor_buffer_dropped_total", "dropped", "messages the sensor's full buffer had to drop"),
    ("footfall_sensor_rejected_frames_total", "rejected", "frames the sensor's parser rejected since it started"),
    ("footfall_sensor_frames_total", "frames", "frames the sensor captured since it started"),
    ("footfall_sensor_denied_total", "denied", "publishes the broker refused (ACL) since the agent started"),
)
HEALTH_GAUGES = (
    ("footfall_sensor_frames_per_second", "frames_per_s", "probe requests captured per second"),
    ("footfall_sensor_devices_tracked", "devices_tracked", "devices with an open visit"),
    ("footfall_sensor_uptime_seconds", "uptime_s", "agent uptime"),
    ("footfall_sensor_cpu_temperature_celsius", "cpu_temp_c", "SoC temperature"),
)


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: Any) -> float | int | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float | int | None, **labels: object) -> None:
        if value is None:
            return
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        self.lines.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _per_sensor(w: _Writer, sensors: Iterable[dict[str, Any]], name: str, values: Any) -> None:
    for s in sensors:
        w.sample(name, values(s), site=s["site"], sensor=s["sensor"])


def exposition(
    conn: sqlite3.Connection,
    *,
    now: float | None = None,
    stale_after_s: float = 180,
    sources: monitor.MonitorSources | None = None,
) -> str:
    now = time.time() if now is None else now
    sources = sources or monitor.MonitorSources()
    roster = monitor.roster(sources)
    sensors, counts = monitor.sensors(conn, now, stale_after_s, roster)
    w = _Writer()

    w.family(
        "footfall_sensor_up", "gauge", "1 online, 0.5 stale (silent), 0 offline (last will), replayed or never seen"
    )
    _per_sensor(w, sensors, "footfall_sensor_up", lambda s: STATE_VALUE[s["status"]])
    w.family("footfall_sensor_expected", "gauge", "1 for each sensor of the roster (hub.toml sensors, site.json)")
    for (site, sensor), source in sorted(roster.expected.items()):
        w.sample("footfall_sensor_expected", 1, site=site, sensor=sensor, source=source)
    w.family("footfall_sensor_last_seen_timestamp_seconds", "gauge", "hub time of the sensor's last message; 0: never")
    _per_sensor(w, sensors, "footfall_sensor_last_seen_timestamp_seconds", lambda s: s["last_message"] or 0)
    w.family("footfall_sensor_last_message_age_seconds", "gauge", "seconds since the sensor's last message")
    _per_sensor(w, sensors, "footfall_sensor_last_message_age_seconds", lambda s: s["last_message_age_s"])
    w.family("footfall_sensor_messages_total", "counter", "messages the hub received from the sensor")
    _per_sensor(w, sensors, "footfall_sensor_messages_total", lambda s: s["messages"] or 0)
    w.family("footfall_sensor_buffer_backlog", "gauge", "messages waiting in the sensor's disk buffer")
    _per_sensor(w, sensors, "footfall_sensor_buffer_backlog", lambda s: s["backlog"])
    for name, key, help_text in HEALTH_COUNTERS:
        w.family(name, "counter", help_text)
        _per_sensor(w, sensors, name, lambda s, key=key: _number((s["health"] or {}).get(key)))
    for name, key, help_text in HEALTH_GAUGES:
        w.family(name, "gauge", help_text)
        _per_sensor(w, sensors, name, lambda s, key=key: _number((s["health"] or {}).get(key)))
    w.family("footfall_sensors", "gauge", "sensors by state")
    for state in ("online", "stale", "offline", "replayed", "never_seen"):
        w.sample("footfall_sensors", counts[state], state=state)

    w.family("footfall_ingest_rejected_total", "counter", "MQTT messages ingest rejected, by reason")
    for r in metrics_health.rejects(conn)["reasons"]:
        w.sample("footfall_ingest_rejected_total", r["count"], reason=r["reason"])
    # max(rowid) is one b-tree step; rows are only appended, and retention deletes the oldest.
    highest, stored = conn.execute("SELECT coalesce(max(rowid), 0), count(*) FROM sensor_visits").fetchone()
    w.family("footfall_sensor_visits_total", "counter", "sensor visits stored since the database was created")
    w.sample("footfall_sensor_visits_total", highest)
    w.family("footfall_sensor_visits_stored", "gauge", "sensor visits kept now (retention deletes old ones)")
    w.sample("footfall_sensor_visits_stored", stored)

    _hub(w, conn, now)
    _certificates(w, sources, roster)
    return w.text()


def _hub(w: _Writer, conn: sqlite3.Connection, now: float) -> None:
    w.family("footfall_hub_last_ingest_timestamp_seconds", "gauge", "hub time ingest last stored a message; 0: never")
    w.sample("footfall_hub_last_ingest_timestamp_seconds", monitor.last_ingest(conn))
    status = monitor.hub_status(conn)
    # Written by ingest into hub_status; absent (not 0) while it does not, so no false alert.
    if monitor.STATUS_HEARTBEAT in status:
        w.family("footfall_hub_ingest_heartbeat_timestamp_seconds", "gauge", "last turn of the ingest loop")
        w.sample("footfall_hub_ingest_heartbeat_timestamp_seconds", status[monitor.STATUS_HEARTBEAT][0])
    session = monitor.mqtt_session(status, now)
    if session is not None:
        up, updated = session
        w.family("footfall_hub_mqtt_connected", "gauge", "1 while ingest's MQTT session is up")
        w.sample("footfall_hub_mqtt_connected", 1 if up else 0)
        w.family("footfall_hub_mqtt_connected_changed_timestamp_seconds", "gauge", "when it last changed")
        w.sample("footfall_hub_mqtt_connected_changed_timestamp_seconds", updated)
    d = monitor.disk(conn)
    if d is not None:
        where = str(d.path.parent)
        w.family("footfall_hub_disk_free_bytes", "gauge", "free bytes on the database's filesystem (for the hub)")
        w.sample("footfall_hub_disk_free_bytes", d.free_bytes, path=where)
        w.family("footfall_hub_disk_size_bytes", "gauge", "size of the database's filesystem")
        w.sample("footfall_hub_disk_size_bytes", d.size_bytes, path=where)
        w.family("footfall_hub_database_bytes", "gauge", "the database file with its write-ahead log")
        w.sample("footfall_hub_database_bytes", d.db_bytes, path=str(d.path))


def _certificates(w: _Writer, sources: monitor.MonitorSources, roster: monitor.Roster) -> None:
    certs, crls = monitor.files(sources)
    w.family("footfall_cert_expiry_timestamp_seconds", "gauge", "notAfter of the certificate (earliest in the file)")
    for c in certs:
        w.sample("footfall_cert_expiry_timestamp_seconds", c.timestamp, file=c.path, role=c.role)
    w.family("footfall_crl_next_update_timestamp_seconds", "gauge", "nextUpdate of the CRL: after it, mTLS refuses all")
    for c in crls:
        w.sample("footfall_crl_next_update_timestamp_seconds", c.timestamp, file=c.path, role=c.role)
    w.family(
        "footfall_sensor_cert_expiry_timestamp_seconds", "gauge", "notAfter of the sensor's certificate (site.json)"
    )
    for (site, sensor), ts in sorted(roster.cert_expiry.items()):
        w.sample("footfall_sensor_cert_expiry_timestamp_seconds", ts, site=site, sensor=sensor)
    errors = [(c, kind) for kind, group in (("cert", certs), ("crl", crls)) for c in group if c.error]
    if roster.error and sources.site_dir is not None:
        errors.append((monitor.FileReading("roster", sources.site_dir / "site.json", None, roster.error), "site"))
    w.family("footfall_monitor_file_error", "gauge", "1: a configured file could not be read or parsed")
    for c, kind in errors:
        w.sample("footfall_monitor_file_error", 1, file=c.path, role=c.role, kind=kind, error=c.error)
