"""What ``/metrics`` checks beyond the sensors' own rows: the roster, hub liveness, certificates.

The dashboard process serves ``/metrics``; ingest (``footfall hub run``) is another process. So
everything here is read from what both can see: the hub's TOML settings (the same file
``footfall hub serve --config`` reads), the provisioning site directory when it is on the hub,
the SQLite database and the files the settings name. Every read happens at scrape time, so a
sensor provisioned or a CRL renewed shows up at the next scrape without a restart.

- **Roster**: ``sensors`` in hub.toml, plus the active sensors of the ``roster`` file hub.toml
  names (the one ingest reads, hub/roster.py) and of ``site.json`` when the site directory is
  visible (``$FOOTFALL_SITE_DIR``, the variable ``footfall provision`` reads). A sensor either
  lists as revoked is not expected: ingest refuses it.
  A rostered sensor with no row in ``sensors`` has never sent anything: down from the start.
- **Liveness**: the last time ingest stored a message is ``max(sensors.last_message)`` (ingest
  stamps it with the hub's clock on every batch). The MQTT session state and a heartbeat that
  moves while no sensor sends: ingest writes them into ``hub_status`` (:func:`record_status`,
  every ``STATUS_EVERY_S`` and at each connect and disconnect); absent until it first has.
- **Certificates and CRLs**: ``mqtt.certfile`` (the hub's client certificate),
  ``sync_mqtt.certfile`` (the sync's, role ``sync_client``) and ``mqtt.ca_certs``; a ``crl.pem``
  beside ``ca_certs`` (install the site's CRL there, readable by the dashboard's user: the
  broker's copy in /etc/mosquitto/footfall is not); from the site directory ``ca/ca.pem``,
  ``ca/crl.pem``, ``broker/crl.pem`` and every active sensor certificate's expiry recorded in
  ``site.json``. Files not configured are skipped; a configured file that cannot be read or parsed
  is reported as an error series, since silence would look healthy.

The fleet report the sync sends the central service (``cloud_sync/fleet.py``) reads the same
things through the same functions, so the centre's fleet page and ``/metrics`` agree.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from footfall.hub import metrics_health
from footfall.hub.config import HubConfig
from footfall.hub.roster import SITE_FILE, read_roster

SITE_DIR_ENV = "FOOTFALL_SITE_DIR"  # the same variable as ``footfall provision``

# What ingest should write (not yet: the table needs a migration in hub/store.py and writes in
# hub/ingest.py): one row per name, ``value`` a number, ``updated`` the hub's clock.
STATUS_MQTT_CONNECTED = "mqtt_connected"  # 1 after on_connect, 0 after on_disconnect
STATUS_HEARTBEAT = "ingest_heartbeat"  # value = the time of the ingest loop's last turn
STATUS_EVERY_S = 10.0


@dataclass(frozen=True)
class MonitorSources:
    """Where to look; built once from the settings, read at every scrape."""

    site: str = ""
    sensors: tuple[str, ...] = ()
    site_dir: Path | None = None
    roster_file: Path | None = None  # ``roster`` in hub.toml
    # (role, path): role is what the file is to the hub, so an alert can say which one expires.
    certs: tuple[tuple[str, Path], ...] = ()
    # (role, path, required): a CRL we only guess the place of is skipped when it is not there.
    crls: tuple[tuple[str, Path, bool], ...] = ()

    @classmethod
    def from_config(
        cls, config: HubConfig, *, site_dir: str | Path | None = None, env: Mapping[str, str] | None = None
    ) -> MonitorSources:
        env = os.environ if env is None else env
        where = site_dir if site_dir is not None else env.get(SITE_DIR_ENV) or None
        certs: list[tuple[str, Path]] = []
        crls: list[tuple[str, Path, bool]] = []
        if config.mqtt.certfile:
            certs.append(("client", Path(config.mqtt.certfile)))
        # Expired, it stops opt-outs reaching the sensors while ingest carries on: watched too.
        if config.sync_mqtt.certfile and config.sync_mqtt.certfile != config.mqtt.certfile:
            certs.append(("sync_client", Path(config.sync_mqtt.certfile)))
        if config.mqtt.ca_certs:
            ca = Path(config.mqtt.ca_certs)
            certs.append(("ca", ca))
            crls.append(("hub", ca.with_name("crl.pem"), False))
        path = Path(where) if where else None
        if path is not None:
            certs.append(("site_ca", path / "ca" / "ca.pem"))
            crls.append(("site", path / "ca" / "crl.pem", True))
            crls.append(("broker", path / "broker" / "crl.pem", True))
        return cls(
            site=config.site,
            sensors=tuple(config.sensors),
            site_dir=path,
            roster_file=Path(config.roster) if config.roster else None,
            certs=tuple(certs),
            crls=tuple(crls),
        )


@dataclass(frozen=True)
class FileReading:
    role: str
    path: Path
    timestamp: float | None  # certificate: earliest notAfter in the file; CRL: nextUpdate
    error: str | None = None  # missing, unreadable, unparsable


@dataclass(frozen=True)
class Roster:
    # sensor -> where we learned that it should exist ("config", "provisioning" or both)
    expected: dict[tuple[str, str], str]
    # (site, sensor) -> notAfter of its active certificate, from site.json
    cert_expiry: dict[tuple[str, str], float]
    error: str | None = None


def _ts(value: dt.datetime) -> float:
    return value.timestamp()


def read_cert(role: str, path: Path) -> FileReading:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return FileReading(role, path, None, type(exc).__name__)
    try:
        # A CA file may hold a chain: what expires first is what breaks first.
        certs = (
            x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data else [x509.load_der_x509_certificate(data)]
        )
    except ValueError:
        return FileReading(role, path, None, "unparsable")
    return FileReading(role, path, min(_ts(c.not_valid_after_utc) for c in certs))


def read_crl(role: str, path: Path) -> FileReading:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return FileReading(role, path, None, type(exc).__name__)
    try:
        crl = x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
    except ValueError:
        return FileReading(role, path, None, "unparsable")
    # A CRL without nextUpdate never expires; Mosquitto accepts it, so there is nothing to alert on.
    nxt = crl.next_update_utc
    return FileReading(role, path, _ts(nxt) if nxt is not None else None)


def files(sources: MonitorSources) -> tuple[list[FileReading], list[FileReading]]:
    """(certificates, CRLs) as read now; guessed CRL places that do not exist are left out."""
    certs = [read_cert(role, path) for role, path in sources.certs]
    crls = [read_crl(role, path) for role, path, required in sources.crls if required or path.exists()]
    return certs, crls


def roster(sources: MonitorSources) -> Roster:
    expected: dict[tuple[str, str], str] = {(sources.site, s): "config" for s in sources.sensors}
    expiry: dict[tuple[str, str], float] = {}
    error = None
    # The hub's roster file and the provisioning site's site.json read alike (hub/roster.py).
    files = (sources.roster_file, None if sources.site_dir is None else sources.site_dir / SITE_FILE)
    for path in files:
        if path is None:
            continue
        try:
            rf = read_roster(path)
        except Exception as exc:  # a damaged or half-copied file is an error series, never a 500
            error = error or type(exc).__name__
            continue
        for sensor in rf.revoked:
            expected.pop((rf.site, sensor), None)
        for sensor in rf.active:
            key = (rf.site, sensor)
            expected[key] = "config,provisioning" if expected.get(key, "").startswith("config") else "provisioning"
            if sensor in rf.cert_expiry:
                expiry[key] = rf.cert_expiry[sensor]
    return Roster(expected, expiry, error)


def sensors(
    conn: sqlite3.Connection, now: float, stale_after_s: float, roster: Roster
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Every sensor the database knows plus every expected one it does not (``never_seen``),
    sorted by (site, sensor), and how many are in each state. ``/metrics`` and the fleet report
    the hub sends the centre (cloud_sync/fleet.py) both read the fleet through this."""
    health = metrics_health.sensor_health(conn, now=now, stale_after_s=stale_after_s)
    known = {(s["site"], s["sensor"]): s for s in health["sensors"]}
    for key in roster.expected:
        if key not in known:
            known[key] = {"site": key[0], "sensor": key[1], "status": "never_seen", "messages": 0}
            known[key].update(dict.fromkeys(("last_message", "last_message_age_s", "backlog", "health")))
    counts = {state: health[state] for state in ("online", "stale", "offline", "replayed")}
    counts["never_seen"] = len(known) - len(health["sensors"])
    return [known[k] for k in sorted(known)], counts


def visits_since(conn: sqlite3.Connection, since: float) -> dict[tuple[str, str], int]:
    """Sensor visits that began at or after ``since``, per (site, sensor) (first_seen is indexed)."""
    rows = conn.execute(
        "SELECT site, sensor, count(*) FROM sensor_visits WHERE first_seen >= ? GROUP BY site, sensor", (since,)
    )
    return {(r[0], r[1]): int(r[2]) for r in rows}


def hub_status(conn: sqlite3.Connection) -> dict[str, tuple[float, float]]:
    """``hub_status`` rows (name -> (value, updated)); empty while ingest does not write them."""
    try:
        return {r[0]: (r[1], r[2]) for r in conn.execute("SELECT name, value, updated FROM hub_status")}
    except sqlite3.OperationalError:  # no such table (yet)
        return {}


def record_status(conn: sqlite3.Connection, name: str, value: float, now: float) -> None:
    """For ingest: set one ``hub_status`` row (in its own batch transaction; it commits)."""
    # ``updated`` is when the value last changed (the heartbeat's value is its time, so it
    # changes every write), which is what "connected since" needs.
    conn.execute(
        "INSERT INTO hub_status (name, value, updated) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET updated = CASE WHEN value = excluded.value THEN updated"
        " ELSE excluded.updated END, value = excluded.value",
        (name, value, now),
    )


def mqtt_session(status: dict[str, tuple[float, float]], now: float) -> tuple[bool, float] | None:
    """(up, changed at) of ingest's MQTT session; None while ingest has never written it."""
    if STATUS_MQTT_CONNECTED not in status:
        return None
    value, updated = status[STATUS_MQTT_CONNECTED]
    beat = status.get(STATUS_HEARTBEAT, (0.0, 0.0))[0]
    # A killed ingest leaves its last "1" behind: past three missed heartbeats it is not up.
    alive = now - beat <= 3 * STATUS_EVERY_S
    return bool(value) and alive, updated


def last_ingest(conn: sqlite3.Connection) -> float:
    """When ingest last stored a message (hub clock); 0 when it never has, so an age alert fires."""
    row = conn.execute("SELECT max(last_message) FROM sensors").fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


def database_file(conn: sqlite3.Connection) -> Path | None:
    for row in conn.execute("PRAGMA database_list"):
        if row[1] == "main" and row[2]:
            return Path(row[2])
    return None  # in memory


@dataclass(frozen=True)
class Disk:
    path: Path
    free_bytes: int
    size_bytes: int
    db_bytes: int  # the database with its WAL: what grows


def disk(conn: sqlite3.Connection) -> Disk | None:
    db = database_file(conn)
    if db is None:
        return None
    usage = shutil.disk_usage(db.parent)
    size = 0
    for p in (db, db.with_name(db.name + "-wal")):
        with contextlib.suppress(OSError):  # no WAL file between checkpoints
            size += p.stat().st_size
    # disk_usage's free is what an unprivileged writer (the hub) may use: root's reserve excluded.
    return Disk(db, usage.free, usage.total, size)
