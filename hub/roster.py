"""Which sensors the hub takes messages from: the broker decides, provisioning says who is revoked.

The broker is the authority on which sensors exist. Its ACL (``tools/provision/mosquitto.py``)
lets a sensor write only ``footfall/<site>/<its id>/...`` and lets no unlisted user do anything,
so a message that reached the hub's subscription on ``footfall/<site>/s3/visit`` was published by
a client the broker authenticated as ``s3``. The hub therefore accepts every well-formed sensor
id of its site by default: a sensor added after go-live is ingested without touching hub.toml.

What the hub refuses, and keeps (nothing refused here is lost):

``revoked``         the roster file (``roster`` in hub.toml: ``roster.json`` that ``footfall
                    provision`` writes into ``broker/``, or a provisioning ``site.json`` or site
                    directory) lists the sensor as revoked. The broker refuses such a sensor once
                    reloaded; this also refuses what it sent before that and is still queued.
``unknown_sensor``  ``sensors`` in hub.toml is set (an optional allow-list) and the sensor is in
                    neither that list, the roster's active sensors, nor the admitted sensors.

Refused messages are counted in ``ingest_rejects`` under those reasons, logged once per sensor
per ``ingest.log_every_s``, acknowledged to the broker and stored in ``sensor_quarantine``.
``footfall hub sensors --admit NAME`` (or the sensor becoming active in the roster) lets the
sensor in and replays its quarantined messages through the normal checks; duplicates are
dropped by message id as for any redelivery. The roster file and the admissions are re-read
every ``CHECK_EVERY_S`` seconds while ingest runs: no restart.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from footfall import topics

if TYPE_CHECKING:
    from footfall.hub.config import HubConfig
    from footfall.hub.ingest_writer import Incoming, Writer

log = logging.getLogger("footfall.hub.ingest")

ROSTER_FILE = "roster.json"
SITE_FILE = "site.json"
ROSTER_VERSION = 1
QUARANTINE_REASONS = ("unknown_sensor", "revoked")
CHECK_EVERY_S = 2.0
QUARANTINE_MAX = 500_000  # messages: days of a busy sensor's visits and presence reports
_RELEASE_CHUNK = 1000

_TABLES = (
    """CREATE TABLE IF NOT EXISTS sensor_quarantine (
        id INTEGER PRIMARY KEY,
        site TEXT NOT NULL,
        sensor TEXT NOT NULL,
        reason TEXT NOT NULL,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        retained INTEGER NOT NULL,
        received REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS sensor_quarantine_sensor ON sensor_quarantine (site, sensor)",
    """CREATE TABLE IF NOT EXISTS sensor_admissions (
        site TEXT NOT NULL,
        sensor TEXT NOT NULL,
        admitted_at REAL NOT NULL,
        PRIMARY KEY (site, sensor)
    )""",
)


def ensure_tables(conn: sqlite3.Connection) -> None:
    """Create the quarantine tables; idempotent (kept here, not in store.py's migrations, so the
    roster is one module; both tables are plain additions an older hub simply ignores)."""
    with conn:
        for sql in _TABLES:
            conn.execute(sql)


@dataclass(frozen=True)
class RosterFile:
    """The provisioning state the hub may read: sensor names and statuses, no secrets."""

    site: str
    active: frozenset[str]
    revoked: frozenset[str]
    # sensor -> notAfter of its active certificate (for /metrics)
    cert_expiry: dict[str, float] = field(default_factory=dict)


def _iso(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def read_roster(path: Path) -> RosterFile:
    """``roster.json``, ``site.json`` or a directory holding one of them (roster.json first).

    Both files map sensor -> {"status": "active" | "revoked", ...}; raises OSError or ValueError.
    """
    if path.is_dir():
        path = path / ROSTER_FILE if (path / ROSTER_FILE).exists() else path / SITE_FILE
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("sensors"), dict) or not data.get("site"):
        raise ValueError(f"{path} is not a roster (no site or sensors)")
    active: set[str] = set()
    revoked: set[str] = set()
    expiry: dict[str, float] = {}
    for sensor, rec in data["sensors"].items():
        status = rec.get("status") if isinstance(rec, dict) else None
        if status == "active":
            active.add(sensor)
            not_after = _iso(rec.get("not_after") or (rec.get("cert") or {}).get("not_after"))
            if not_after is not None:
                expiry[sensor] = not_after
        elif status == "revoked":
            revoked.add(sensor)
    return RosterFile(str(data["site"]), frozenset(active), frozenset(revoked), expiry)


class SensorGate:
    """Decides per message whether its sensor is let in; re-reads its sources while running."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        config: HubConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        check_every_s: float = CHECK_EVERY_S,
    ) -> None:
        ensure_tables(conn)
        self.conn = conn
        self.site = config.site
        self.allow_list = frozenset(config.sensors)
        self.path = Path(config.roster) if config.roster else None
        self.log_every_s = config.ingest.log_every_s
        self.clock = clock
        self.check_every_s = check_every_s
        self.roster: RosterFile | None = None
        self.admitted: frozenset[str] = frozenset()
        # Bumped whenever who is let in may have changed: ingest then replays the quarantine.
        self.generation = 0
        self._stamp: tuple[int, int] | None = None
        self._error: str | None = None
        self._next = 0.0
        self._logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self.refresh(force=True)

    @property
    def revoked(self) -> frozenset[str]:
        return self.roster.revoked if self.roster else frozenset()

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the roster file (when it changed) and the admissions; True if anything did."""
        now = self.clock()
        if not force and now < self._next:
            return False
        self._next = now + self.check_every_s
        changed = self._read_roster()
        try:
            rows = self.conn.execute("SELECT sensor FROM sensor_admissions WHERE site = ?", (self.site,))
            admitted = frozenset(r[0] for r in rows)
        except sqlite3.OperationalError as exc:  # locked for longer than busy_timeout: next time
            log.warning("could not read sensor admissions: %s", exc)
            admitted = self.admitted
        if admitted != self.admitted:
            self.admitted = admitted
            changed = True
        if changed:
            self.generation += 1
        return changed

    def _read_roster(self) -> bool:
        if self.path is None:
            return False
        try:
            st = self.path.stat()
            target = self.path
            if self.path.is_dir():  # the directory's mtime does not move when site.json is rewritten
                target = self.path / ROSTER_FILE if (self.path / ROSTER_FILE).exists() else self.path / SITE_FILE
                st = target.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return False
            roster = read_roster(target)
            if roster.site != self.site:
                raise ValueError(f"it is the roster of site {roster.site!r}, not {self.site!r}")
        except (OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            if error != self._error:
                # Keep the last good roster: a half-copied file must not let a revoked sensor in.
                log.warning("cannot read the sensor roster %s (%s); keeping the last one read", self.path, error)
                self._error = error
            return False
        self._stamp, self._error = stamp, None
        if roster == self.roster:
            return False
        self.roster = roster
        log.info(
            "sensor roster %s: %d active, %d revoked (%s)",
            self.path,
            len(roster.active),
            len(roster.revoked),
            ", ".join(sorted(roster.revoked)) or "none revoked",
        )
        return True

    def refuse(self, sensor: str) -> tuple[str, str] | None:
        """(reason, detail) when the sensor's messages are to be quarantined; None to accept."""
        roster = self.roster
        if roster is not None and sensor in roster.revoked:
            return "revoked", f"sensor {sensor!r} is revoked in {self.path}; message kept in sensor_quarantine"
        if (
            self.allow_list
            and sensor not in self.allow_list
            and sensor not in self.admitted
            and (roster is None or sensor not in roster.active)
        ):
            return "unknown_sensor", (
                f"sensor {sensor!r} is not in hub.toml's sensors {sorted(self.allow_list)} nor provisioned; "
                f"message kept in sensor_quarantine: `footfall hub sensors --admit {sensor}` ingests it"
            )
        return None

    def note(self, topic: str | None, reason: str, detail: str) -> None:
        """One log line per refused sensor per ``log_every_s``: each unknown sensor is named."""
        key = f"{reason}:{topic}"
        now = time.monotonic()
        if now - self._logged.get(key, -1e18) < self.log_every_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        more = self._suppressed.pop(key, 0)
        self._logged[key] = now
        suffix = f" (+{more} more since the last line)" if more else ""
        log.warning("refused message on %s: %s: %s%s", topic, reason, detail, suffix)

    def hold(self, held: Sequence[tuple[Incoming, str]], now: float) -> None:
        """Quarantine refused messages (inside the caller's batch transaction)."""
        rows = []
        for m, reason in held:
            parsed = topics.parse(m.topic) if m.topic is not None else None
            if parsed is None:  # cannot happen: refusal comes after the topic was parsed
                continue
            rows.append((parsed[0], parsed[1], reason, m.topic, m.payload, int(m.retained), now))
        self.conn.executemany(
            "INSERT INTO sensor_quarantine (site, sensor, reason, topic, payload, retained, received)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        # Bounded: a sensor nobody admits must not fill the hub's disk. The id span stands in for
        # the row count (two index lookups, not a scan); the oldest go first, counted and logged.
        low, high = self.conn.execute("SELECT min(id), max(id) FROM sensor_quarantine").fetchone()
        if high is not None and high - low + 1 > QUARANTINE_MAX:
            gone = self.conn.execute("DELETE FROM sensor_quarantine WHERE id <= ?", (high - QUARANTINE_MAX,)).rowcount
            log.warning(
                "quarantine full (%d messages): dropped the %d oldest; admit (footfall hub sensors --admit) "
                "or drop (--drop) the sensors waiting there",
                QUARANTINE_MAX,
                gone,
            )


def admit(conn: sqlite3.Connection, site: str, sensor: str, now: float | None = None) -> None:
    topics.check_id(sensor, "sensor")
    ensure_tables(conn)
    with conn:
        conn.execute(
            "INSERT OR IGNORE INTO sensor_admissions (site, sensor, admitted_at) VALUES (?, ?, ?)",
            (site, sensor, time.time() if now is None else now),
        )


def quarantined(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Per sensor and reason: how many messages wait, and since when (for ``footfall hub sensors``)."""
    ensure_tables(conn)
    cur = conn.execute(
        "SELECT site, sensor, reason, count(*), min(received), max(received) FROM sensor_quarantine"
        " GROUP BY site, sensor, reason ORDER BY site, sensor, reason"
    )
    keys = ("site", "quarantined", "reason", "count", "first_received", "last_received")
    return [dict(zip(keys, tuple(r), strict=True)) for r in cur]


def release(conn: sqlite3.Connection, writer: Writer, site: str, sensor: str) -> dict[str, int]:
    """Replay a now-allowed sensor's quarantined messages through ``writer``; outcome counts.

    Each chunk's DELETE is issued before ``writer.write`` and so commits in the same transaction
    as the chunk's rows (sqlite3 opens the transaction at the DELETE; the writer's ``with conn``
    commits or rolls back both): a crash replays a chunk whole or not at all.
    """
    writer.gate.refresh(force=True)
    refused = writer.gate.refuse(sensor)
    if refused is not None:
        raise ValueError(refused[1])
    from footfall.hub.ingest_writer import Incoming

    outcomes: dict[str, int] = {}
    while True:
        rows = conn.execute(
            "SELECT id, topic, payload, retained FROM sensor_quarantine WHERE site = ? AND sensor = ?"
            " ORDER BY id LIMIT ?",
            (site, sensor, _RELEASE_CHUNK),
        ).fetchall()
        if not rows:
            return outcomes
        conn.execute(f"DELETE FROM sensor_quarantine WHERE id IN ({', '.join('?' * len(rows))})", [r[0] for r in rows])
        for outcome in writer.write([Incoming(r[1], bytes(r[2]), bool(r[3])) for r in rows]):
            outcomes[outcome] = outcomes.get(outcome, 0) + 1


def release_allowed(conn: sqlite3.Connection, writer: Writer) -> dict[str, dict[str, int]]:
    """Replay every quarantined sensor the gate now lets in (ingest calls it when the gate changed)."""
    gate = writer.gate
    pending = conn.execute("SELECT DISTINCT site, sensor FROM sensor_quarantine WHERE site = ?", (gate.site,))
    done: dict[str, dict[str, int]] = {}
    for site, sensor in pending.fetchall():
        if gate.refuse(sensor) is None:
            done[sensor] = release(conn, writer, site, sensor)
            log.warning("sensor %s let in: replayed its quarantined messages: %s", sensor, done[sensor])
    return done
