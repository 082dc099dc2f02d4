"""``/metrics``: the hub's fleet health in Prometheus text exposition format (version 0.0.4).

What an operator alerts on: sensors offline or stale, their buffer backlog and drops,
capture rate and temperature from their health reports, and what ingest rejected. Only
counts and states: no device ids.
"""

from __future__ import annotations

import sqlite3
import time

from footfall.hub import metrics

# A replayed sensor (the demo's) is not capturing anything live: down, like an offline one.
STATE_VALUE = {"online": 1, "stale": 0.5, "offline": 0, "replayed": 0}


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(conn: sqlite3.Connection, *, now: float | None = None, stale_after_s: float = 180) -> str:
    now = time.time() if now is None else now
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    def sample(name: str, value: float | int | None, **labels: object) -> None:
        if value is None:
            return
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")

    health = metrics.sensor_health(conn, now=now, stale_after_s=stale_after_s)
    sensors = health["sensors"]
    family("footfall_sensor_up", "gauge", "1 online, 0.5 stale (silent), 0 offline (last will) or replayed")
    for s in sensors:
        sample("footfall_sensor_up", STATE_VALUE[s["status"]], site=s["site"], sensor=s["sensor"])
    family("footfall_sensor_last_message_age_seconds", "gauge", "seconds since the sensor's last message")
    for s in sensors:
        sample("footfall_sensor_last_message_age_seconds", s["last_message_age_s"], site=s["site"], sensor=s["sensor"])
    family("footfall_sensor_buffer_backlog", "gauge", "messages waiting in the sensor's disk buffer")
    for s in sensors:
        sample("footfall_sensor_buffer_backlog", s["backlog"], site=s["site"], sensor=s["sensor"])
    family("footfall_sensor_buffer_dropped", "gauge", "messages the sensor's full buffer had to drop")
    for s in sensors:
        sample("footfall_sensor_buffer_dropped", s["dropped"], site=s["site"], sensor=s["sensor"])
    per_health = (
        ("footfall_sensor_frames_per_second", "frames_per_s", "probe requests captured per second"),
        ("footfall_sensor_rejected_frames", "rejected", "frames the parser rejected since start"),
        ("footfall_sensor_devices_tracked", "devices_tracked", "devices with an open visit"),
        ("footfall_sensor_uptime_seconds", "uptime_s", "agent uptime"),
        ("footfall_sensor_cpu_temperature_celsius", "cpu_temp_c", "SoC temperature"),
    )
    for name, key, help_text in per_health:
        family(name, "gauge", help_text)
        for s in sensors:
            h = s["health"] or {}
            value = h.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                sample(name, value, site=s["site"], sensor=s["sensor"])
    family("footfall_sensors", "gauge", "sensors by state")
    for state in ("online", "stale", "offline", "replayed"):
        sample("footfall_sensors", health[state], state=state)
    family("footfall_ingest_rejected_total", "counter", "MQTT messages ingest rejected, by reason")
    for r in metrics.rejects(conn)["reasons"]:
        sample("footfall_ingest_rejected_total", r["count"], reason=r["reason"])
    family("footfall_sensor_visits_total", "counter", "sensor visits stored")
    sample("footfall_sensor_visits_total", conn.execute("SELECT count(*) FROM sensor_visits").fetchone()[0])
    return "\n".join(lines) + "\n"
