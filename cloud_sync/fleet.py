"""The hub's fleet report: its sensors and its own health, sent to the centre every sync cycle.

``POST /api/v1/sync/fleet`` (signed like every sync request, gzip JSON) carries what ``/metrics``
shows the store's operator, so the centre's fleet page has every store in one view:

- every sensor the hub knows or expects (hub.toml ``sensors``, the provisioning roster, the
  site directory's ``site.json``): status (``never_seen`` for one that never sent anything),
  last message, sensor visits of the last 24 hours, messages, certificate expiry;
- the hub: last ingest, ingest heartbeat, MQTT session up, disk free, database size;
- the certificate and CRL files the hub uses (expiry, CRL ``next_update``), read errors.

Everything is read through ``hub/monitor.py``, the same collection ``/metrics`` uses, so the two
never disagree. Times are the hub's clock; ``ts`` is when the report was made, and the centre
measures ages against it (a skewed hub clock does not make a live sensor look dead).

The report is a snapshot: it is not queued in the outbox. One that fails is simply superseded
by the next cycle's; one the centre refuses as malformed is logged and counted
(``fleet_rejected``), never retried as is.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import sqlite3
from collections.abc import Mapping
from typing import Any

import requests

from footfall.cloud_sync import outbox
from footfall.cloud_sync.clock import CentralClock
from footfall.cloud_sync.config import SyncConfig
from footfall.hub import monitor
from footfall.hub.config import HubConfig, MqttConfig, SyncMqttConfig

log = logging.getLogger(__name__)

FLEET_PATH = "/api/v1/sync/fleet"
REPORT_VERSION = 1
VISITS_WINDOW_S = 86400.0


def sources(cfg: SyncConfig, env: Mapping[str, str] | None = None) -> monitor.MonitorSources:
    """What to read, from the sync settings (which carry hub.toml's when ``hub_config`` is set)."""
    # "client" is the ingest's certificate; the sync's own login, when it has one, is "sync_client".
    ingest_cert = cfg.ingest_mqtt_certfile or cfg.mqtt_certfile
    sync_cert = cfg.mqtt_certfile if cfg.mqtt_certfile != ingest_cert else ""
    hub = HubConfig(
        site=cfg.site,
        timezone=cfg.timezone,
        db=cfg.db,
        sensors=list(cfg.sensors),
        roster=cfg.roster,
        mqtt=MqttConfig(ca_certs=cfg.mqtt_ca_certs, certfile=ingest_cert),
        sync_mqtt=SyncMqttConfig(certfile=sync_cert),
    )
    return monitor.MonitorSources.from_config(hub, env=os.environ if env is None else env)


def collect(
    conn: sqlite3.Connection,
    src: monitor.MonitorSources,
    *,
    hub: str,
    now: float,
    stale_after_s: float,
    clock: CentralClock | None = None,
) -> dict[str, Any]:
    """The report as sent (docs/sync-protocol.md, "Fleet report")."""
    roster = monitor.roster(src)
    sensors, _ = monitor.sensors(conn, now, stale_after_s, roster)
    visits = monitor.visits_since(conn, now - VISITS_WINDOW_S)
    status = monitor.hub_status(conn)
    session = monitor.mqtt_session(status, now)
    disk = monitor.disk(conn)
    certs, crls = monitor.files(src)
    last = monitor.last_ingest(conn)
    return {
        "v": REPORT_VERSION,
        "hub": hub,
        "ts": round(now, 3),
        "stale_after_s": stale_after_s,
        "clock_offset_s": None if clock is None else round(clock.offset, 1),
        "hub_status": {
            "last_ingest": last or None,
            "ingest_heartbeat": status[monitor.STATUS_HEARTBEAT][0] if monitor.STATUS_HEARTBEAT in status else None,
            "mqtt_connected": None if session is None else session[0],
            "mqtt_changed": None if session is None else session[1],
            "disk_free_bytes": None if disk is None else disk.free_bytes,
            "disk_size_bytes": None if disk is None else disk.size_bytes,
            "database_bytes": None if disk is None else disk.db_bytes,
        },
        "sensors": [
            {
                "site": s["site"],
                "sensor": s["sensor"],
                "status": s["status"],
                "last_ingest": s["last_message"],
                "visits_24h": visits.get((s["site"], s["sensor"]), 0),
                "messages": s["messages"] or 0,
                "cert_expiry": roster.cert_expiry.get((s["site"], s["sensor"])),
                "expected": (s["site"], s["sensor"]) in roster.expected,
            }
            for s in sensors
        ],
        "certificates": [{"role": c.role, "file": str(c.path), "expiry": c.timestamp, "error": c.error} for c in certs],
        "crls": [{"role": c.role, "file": str(c.path), "next_update": c.timestamp, "error": c.error} for c in crls],
        "roster_error": roster.error,
    }


def send(
    conn: sqlite3.Connection,
    cfg: SyncConfig,
    secret: bytes,
    clock: CentralClock,
    *,
    session: requests.Session | None = None,
    src: monitor.MonitorSources | None = None,
) -> bool:
    """Collect and send one report; True when the centre stored it."""
    now = clock.local()
    report = collect(conn, src or sources(cfg), hub=cfg.site, now=now, stale_after_s=3 * cfg.heartbeat_s, clock=clock)
    body = gzip.compress(json.dumps(report, separators=(",", ":")).encode("utf-8"), mtime=0)
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    url = cfg.endpoint(FLEET_PATH)
    try:
        resp = clock.request(session or requests.Session(), cfg, secret, "POST", url, body, headers)
    except requests.RequestException as exc:
        return _failed(conn, now, f"{type(exc).__name__}: {exc}")
    if resp.status_code == 200:
        with conn:
            outbox.count(conn, "fleet_reports", 1, now)
            outbox.set_state(conn, "fleet_last_sent", now)
        return True
    detail = _error_text(resp)
    if resp.status_code in (400, 413, 422):
        # Sending the same report again gets the same answer: a bug to fix, not a network blip.
        with conn:
            outbox.count(conn, "fleet_rejected", 1, now)
        log.error("sync: central refused the fleet report (%d): %s", resp.status_code, detail)
        return False
    return _failed(conn, now, f"HTTP {resp.status_code}: {detail}")


def _failed(conn: sqlite3.Connection, now: float, error: str) -> bool:
    with conn:
        outbox.count(conn, "fleet_failures", 1, now)
    log.warning("sync: fleet report not delivered: %s", error)
    return False


def _error_text(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return (resp.text or resp.reason or "")[:300]
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])[:300]
    return str(body)[:300]
