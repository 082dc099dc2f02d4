"""Validating and storing the hub's messages: one SQLite transaction per batch, no MQTT here.

:class:`Writer` is what :class:`footfall.hub.ingest.Ingestor` commits each batch through before
acknowledging it; ``ingest_payload`` / ``ingest_many`` use it without a broker (replays, tests,
benchmarks). A visit's message id (``sensor_visits``' unique key, with the visit start) makes a
redelivered or replayed message a counted duplicate, never a second row.

Every payload is checked (:func:`footfall.schema.validate`); bad ones are counted by reason in
``ingest_rejects`` with a rate-limited log line, acknowledged (a redelivery would be just as
bad) and never stop the good messages around them. Reasons:

``topic``           not a ``footfall/<site>/<sensor>/<kind>`` topic of this site
``oversized``       larger than ``schema.MAX_PAYLOAD_BYTES``
``garbage``         not JSON, or not a JSON object
``version``         a schema version this build does not read
``schema``          a field missing, mistyped or out of range
``unknown_sensor``  a sensor outside hub.toml's optional ``sensors`` allow-list and the roster
``revoked``         a sensor the provisioning roster lists as revoked. These two are kept in
                    ``sensor_quarantine``, not dropped: see ``hub/roster.py``
``mismatch``        payload site/sensor differs from the topic's
``privacy``         a device field that looks like a raw MAC address (never stored)
``expired``         a visit older than the retention window (see ``hub/retention.py``); the log line
                    names the visit's date and ``retention.raw_days``
``future``          a visit (its ``last_seen``) or presence report (its ``ts``) from the future: more
                    than ``ingest.max_clock_ahead_s`` (default 300 s) ahead of the hub's clock. A
                    sensor's clock is wrong (no NTP yet after boot); stored, such a visit would sit
                    in tomorrow's figures. The log line says how far ahead it was
``error``           a message that passed validation but could not be stored (logged)
"""

from __future__ import annotations

import json
import logging
import operator
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from footfall import schema, topics
from footfall.hub import devices, merge, retention
from footfall.hub.config import HubConfig
from footfall.hub.devices import DeviceEstimator, HashEstimator
from footfall.hub.roster import QUARANTINE_REASONS, SensorGate
from footfall.hub.sensors import ActivityMeter, apply_health, apply_status

# The reject log lines keep the logger name operators filter on.
log = logging.getLogger("footfall.hub.ingest")

REASONS = (
    "topic",
    "oversized",
    "garbage",
    "version",
    "schema",
    "unknown_sensor",
    "revoked",
    "mismatch",
    "privacy",
    "expired",
    "future",
    "error",
)
_INT64 = (-(2**63), 2**63 - 1)
# 9999-12-31 23:59:59 UTC: the last second whose local day and hour Python can compute.
_LAST_TIME = 253402300799.0
# A raw MAC in a field meant for a keyed hash: refuse to store it (privacy, defence in depth).
_MAC = re.compile(r"^[0-9A-Fa-f]{2}([:.-]?[0-9A-Fa-f]{2}){5}$")

SENSOR_VISIT_COLUMNS = (
    "id",
    "site",
    "sensor",
    "device",
    "randomized",
    "partner_hash",
    "first_seen",
    "last_seen",
    "dwell_s",
    "inside_s",
    "sightings",
    "rssi_max",
    "rssi_mean",
    "class",
    "long_stay",
    "fingerprint",
    "ie_ids",
    "seq_first",
    "seq_last",
    "channels",
    "ssid_hashes",
    "burst_gap_s",
    "bursts",
    "burst_offsets",
    "rssi_minutes",
    "received",
    "visit_id",
)
_row_values = operator.itemgetter(*SENSOR_VISIT_COLUMNS)
_INSERT_SENSOR_VISIT = (
    f"INSERT INTO sensor_visits ({', '.join(SENSOR_VISIT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(SENSOR_VISIT_COLUMNS))})"
)


class Rejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Incoming(NamedTuple):
    """One message as it came off the wire (``topic`` None when it was not UTF-8)."""

    topic: str | None
    payload: bytes
    retained: bool = False
    mid: int = 0
    qos: int = 0


@dataclass
class IngestStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    other: int = 0  # status, health, presence, config
    rejected: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    created_visits: int = 0
    merged_visits: int = 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


def _classify_schema_error(raw: bytes, exc: schema.SchemaError) -> str:
    """Which reject reason a SchemaError is (only runs for bad messages)."""
    if len(raw) > schema.MAX_PAYLOAD_BYTES:
        return "oversized"
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "garbage"
    if not isinstance(payload, dict):
        return "garbage"
    if not schema.supported_version(payload):
        return "version"
    return "schema"


def _check_int(value: Any, name: str) -> None:
    if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
        raise Rejected("schema", f"field {name!r} out of range")


if schema._msgspec is not None:
    _encode = schema._msgspec.json.Encoder().encode

    def _json_list(values: list[Any]) -> str:
        """Compact JSON text of a list (msgspec: 20x faster than json.dumps, hot path)."""
        return _encode(values).decode()

else:  # pragma: no cover - without the hub extra

    def _json_list(values: list[Any]) -> str:
        return json.dumps(values, separators=(",", ":"))


_NUMERIC_COLUMNS = (
    "sightings",
    "rssi_max",
    "seq_first",
    "seq_last",
    "dwell_s",
    "inside_s",
    "rssi_mean",
    "burst_gap_s",
    "bursts",
)
# Absent from a payload: NULL. bursts, burst_offsets, rssi_minutes are absent from version 1.
_OPTIONAL_COLUMNS = (
    "partner_hash",
    "seq_first",
    "seq_last",
    "channels",
    "ssid_hashes",
    "burst_gap_s",
    "bursts",
    "burst_offsets",
    "rssi_minutes",
)


def visit_row(payload: dict[str, Any], received: float) -> dict[str, Any]:
    """A ``sensor_visits`` row from a validated visit payload: the payload itself, completed.

    The payload is changed in place rather than copied (hot path). Ints in REAL columns stay
    ints: SQLite stores them as REAL by the column's affinity, and merging reads them either way.
    """
    lo, hi = _INT64
    for value in map(payload.get, _NUMERIC_COLUMNS):
        if type(value) is int and not lo <= value <= hi:  # JSON integers have no size limit
            for name in _NUMERIC_COLUMNS:
                _check_int(payload.get(name), name)
    first_seen = payload["first_seen"]
    last_seen = payload["last_seen"]
    # Finite is not enough: local day/hour must be computable. (A time merely ahead of the
    # hub's clock is the ``future`` reject, see Writer._write.)
    if not 0 <= first_seen <= last_seen <= _LAST_TIME:
        raise Rejected("schema", "first_seen/last_seen out of range (not a date)")
    for name in _OPTIONAL_COLUMNS:
        if name not in payload:
            payload[name] = None
    for name in ("device", "partner_hash"):
        value = payload[name]
        # A MAC is 12-17 characters: the length test spares the regex for every hash.
        if isinstance(value, str) and 12 <= len(value) <= 17 and _MAC.match(value):
            raise Rejected("privacy", f"field {name!r} looks like a raw MAC address, not a hash")
    payload["ie_ids"] = _json_list(payload["ie_ids"])
    channels = payload["channels"]
    if channels is not None:
        payload["channels"] = _json_list(channels)
    ssids = payload["ssid_hashes"]
    if ssids is not None:
        payload["ssid_hashes"] = _json_list(ssids)
    minutes = payload["rssi_minutes"]
    if minutes is not None:  # version 2
        payload["rssi_minutes"] = _json_list(minutes)
        payload["burst_offsets"] = _json_list(payload["burst_offsets"])
    # Exact ints: the sqlite3 module binds a bool through its adapter lookup, ~10x the cost.
    payload["randomized"] = 1 if payload["randomized"] else 0
    payload["long_stay"] = 1 if payload["long_stay"] else 0
    payload["received"] = received
    payload["visit_id"] = None
    return payload


class RejectLog:
    """One log line per reject reason per ``every_s`` seconds, with how many were suppressed."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def note(self, reason: str, topic: str | None, detail: str) -> None:
        now = time.monotonic()
        if now - self._last.get(reason, -1e18) < self.every_s:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        more = self._suppressed.pop(reason, 0)
        self._last[reason] = now
        suffix = f" (+{more} more since the last line)" if more else ""
        log.warning("rejected message on %s: %s: %s%s", topic, reason, detail, suffix)


class Writer:
    """Validates and stores batches of messages in one transaction each (no MQTT here)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        config: HubConfig,
        estimator: DeviceEstimator | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.conn = conn
        self.config = config
        # The hub's clock: what "received" means and what "from the future" is measured against.
        self.clock = clock
        self.estimator: DeviceEstimator = estimator or HashEstimator()
        self.tz = config.tz
        self.gate = SensorGate(conn, config)
        self.stats = IngestStats()
        self.meter = ActivityMeter()
        self.reject_log = RejectLog(config.ingest.log_every_s)
        self._topics: dict[str, tuple[str, str, str] | None] = {}

    def write(self, messages: Sequence[Incoming]) -> list[str]:
        """Store a batch; returns one outcome per message (``stored``, ``duplicate``, ``status``,
        ``health``, ``presence``, ``ignored`` or ``rejected:<reason>``). Commits before returning.

        Raises ``sqlite3.OperationalError`` (disk full, I/O error, locked) with nothing committed:
        the caller must not acknowledge the batch.
        """
        try:
            return self._write(messages)
        except sqlite3.OperationalError:
            raise
        except Exception:
            if len(messages) == 1:
                return [self._write_failed(messages[0])]
            # A message that passed validation but breaks storing: isolate it, keep the rest.
            log.exception("batch of %d failed; storing its messages one by one", len(messages))
            return [self.write([m])[0] for m in messages]

    def _write_failed(self, message: Incoming) -> str:
        log.exception("message on %s passed validation but could not be stored", message.topic)
        with self.conn:
            self._count_rejects({"error": 1}, {"error": "could not be stored (see the hub log)"}, time.time())
        self.stats.rejected["error"] = self.stats.rejected.get("error", 0) + 1
        return "rejected:error"

    def _parse(self, m: Incoming) -> tuple[str, str, str, dict[str, Any]]:
        topic = m.topic
        if topic is None:
            parsed = None
        else:
            try:
                parsed = self._topics[topic]
            except KeyError:  # a handful of sensors: parse each topic once (hot path)
                if len(self._topics) >= 4096:
                    self._topics.clear()
                parsed = self._topics[topic] = topics.parse(topic)
        if parsed is None or parsed[0] != self.config.site:
            raise Rejected("topic", "not a topic of this site")
        site, sensor, kind = parsed
        if kind == "config":
            return site, sensor, kind, {}
        if len(m.payload) > schema.MAX_PAYLOAD_BYTES:
            raise Rejected("oversized", f"{len(m.payload)} bytes > {schema.MAX_PAYLOAD_BYTES}")
        try:
            payload = schema.validate(m.payload, kind)
        except schema.SchemaError as exc:
            raise Rejected(_classify_schema_error(m.payload, exc), str(exc)) from None
        if payload["site"] != site or payload["sensor"] != sensor:
            raise Rejected("mismatch", "payload site/sensor differ from the topic's")
        refused = self.gate.refuse(sensor)
        if refused is not None:  # last: only messages that would be stored are quarantined
            raise Rejected(*refused)
        return site, sensor, kind, payload

    def _write(self, messages: Sequence[Incoming]) -> list[str]:
        now = self.clock()
        self.gate.refresh()
        expired = retention.expired_before(self.config, now)
        latest = now + self.config.ingest.max_clock_ahead_s
        outcomes: list[str] = [""] * len(messages)
        visits: dict[str, tuple[int, dict[str, Any]]] = {}
        rejects: dict[str, int] = {}
        details: dict[str, str] = {}
        activity: dict[tuple[str, str], int] = {}
        held: list[tuple[Incoming, str]] = []
        other = 0
        conn = self.conn
        with conn:
            for i, m in enumerate(messages):
                try:
                    site, sensor, kind, payload = self._parse(m)
                    if kind == "visit":
                        row = visit_row(payload, now)
                        if row["last_seen"] > latest:
                            raise Rejected("future", self._future_detail("visit's last_seen", row["last_seen"], now))
                        if row["first_seen"] < expired:
                            raise Rejected("expired", self._expired_detail(row["first_seen"]))
                    elif kind == "presence" and payload["ts"] > latest:
                        raise Rejected("future", self._future_detail("presence ts", payload["ts"], now))
                except Rejected as exc:
                    rejects[exc.reason] = rejects.get(exc.reason, 0) + 1
                    details[exc.reason] = f"{m.topic}: {exc.detail}"[:300]
                    if exc.reason in QUARANTINE_REASONS:
                        held.append((m, exc.reason))
                        self.gate.note(m.topic, exc.reason, exc.detail)
                    else:
                        self.reject_log.note(exc.reason, m.topic, exc.detail)
                    outcomes[i] = f"rejected:{exc.reason}"
                    continue
                if not m.retained:
                    activity[(site, sensor)] = activity.get((site, sensor), 0) + 1
                if kind == "visit":
                    if row["id"] in visits:
                        outcomes[i] = "duplicate"
                    else:
                        visits[row["id"]] = (i, row)
                    continue
                other += 1
                outcomes[i] = kind
                if kind == "status":
                    apply_status(conn, payload, received=now, retained=m.retained)
                elif kind == "health":
                    apply_health(conn, payload)
                elif kind == "presence":
                    conn.execute(
                        "INSERT OR REPLACE INTO presence (site, sensor, ts, devices, inside) VALUES (?, ?, ?, ?, ?)",
                        (site, sensor, payload["ts"], payload["devices"], payload["inside"]),
                    )
                else:
                    outcomes[i] = "ignored"  # config: the hub's own messages to the agents
            new_rows = self._drop_known(visits)
            for i, _ in visits.values():
                outcomes[i] = "duplicate"
            result = merge.MergeResult()
            if new_rows:
                excluded = devices.excluded_keys(conn)
                result = merge.merge_new(
                    conn,
                    [row for _, row in new_rows],
                    gap_s=self.config.merge_gap_s,
                    tz=self.tz,
                    estimator=self.estimator,
                    excluded=excluded,
                )
                conn.executemany(_INSERT_SENSOR_VISIT, [_row_values(row) for _, row in new_rows])
                devices.apply_deltas(conn, result.deltas)
                devices.update_exclusions(conn, result.deltas, self.config.exclusion, excluded)
                for i, _ in new_rows:
                    outcomes[i] = "stored"
            if rejects:
                self._count_rejects(rejects, details, now)
            if held:
                self.gate.hold(held, now)
            self.meter.flush(conn, now, activity)
        s = self.stats
        s.batches += 1
        s.received += len(messages)
        s.stored += len(new_rows)
        s.duplicates += sum(1 for o in outcomes if o == "duplicate")
        s.other += other
        s.created_visits += result.created
        s.merged_visits += result.absorbed
        for reason, n in rejects.items():
            s.rejected[reason] = s.rejected.get(reason, 0) + n
        return outcomes

    def _expired_detail(self, first_seen: float) -> str:
        day = datetime.fromtimestamp(first_seen, self.tz).date()
        raw_days = self.config.retention.raw_days
        return (
            f"visit of {day} is older than the retention window (retention.raw_days = {raw_days}): "
            "not stored; raise retention.raw_days in the hub config to keep such visits"
        )

    def _future_detail(self, what: str, when: float, now: float) -> str:
        try:
            stamp = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            ahead = _duration(when - now)
        except (OverflowError, ValueError, OSError):  # a presence ts beyond any date
            stamp, ahead = "beyond any date", "far"
        return (
            f"from the future: {what} {stamp} is {ahead} ahead of the hub's clock "
            f"(allowed: ingest.max_clock_ahead_s = {self.config.ingest.max_clock_ahead_s:g}); "
            "not stored; check the sensor's clock (NTP)"
        )

    def _drop_known(self, visits: dict[str, tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
        """The batch's visits not yet stored (removed from ``visits``); the rest stay as duplicates.

        Looked up by start time, the leading column of the unique key (a message id is derived
        from its visit's start): one index seek per visit, near the end of the index.
        """
        starts = sorted({row["first_seen"] for _, row in visits.values()})
        known: set[tuple[float, str]] = set()
        for start in range(0, len(starts), 500):
            chunk = starts[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            cur = self.conn.execute(f"SELECT first_seen, id FROM sensor_visits WHERE first_seen IN ({marks})", chunk)
            known.update(map(tuple, cur))
        new = [visits.pop(vid) for vid, (_, row) in list(visits.items()) if (row["first_seen"], vid) not in known]
        return new

    def _count_rejects(self, counts: dict[str, int], details: dict[str, str], now: float) -> None:
        self.conn.executemany(
            """INSERT INTO ingest_rejects (reason, count, last_at, last_detail) VALUES (?, ?, ?, ?)
               ON CONFLICT (reason) DO UPDATE SET count = ingest_rejects.count + excluded.count,
                   last_at = excluded.last_at, last_detail = excluded.last_detail""",
            [(reason, n, now, details.get(reason)) for reason, n in counts.items()],
        )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"
