"""MQTT -> SQLite: the hub's ingest, exactly once under crashes.

The hub subscribes to ``footfall/<site>/+/+`` at QoS 1 with a persistent MQTT 5 session (fixed
client id, ``clean_start=False``, a session expiry), so the broker queues whatever the sensors
send while the hub restarts.

Exactly once: paho acknowledges a QoS-1 message (PUBACK) when ``on_message`` returns, after
which the broker forgets it. The hub therefore uses manual acks: ``on_message`` only appends
to a batch; the batch is written in ONE SQLite transaction (every ``batch_max`` messages or
``batch_ms``), and only after the commit are its messages acknowledged, in arrival order.
A kill -9 before the commit loses nothing (the broker redelivers the unacknowledged
messages); one after the commit but before the acks gets redeliveries that the message id
(``sensor_visits``' unique key, with the visit start) drops as duplicates. MQTT 5
``Receive Maximum`` lets the broker keep a whole batch in flight instead of its default of 20
unacknowledged messages.

The hub reads through :class:`BulkReadClient`, a paho client that parses every PUBLISH in a
socket read at once (MQTT 5 properties skipped) and sends a batch's PUBACKs in one write: stock
paho's per-message cost was more than validating, merging and storing the message.

Every payload is checked (:func:`footfall.schema.validate`); bad ones are counted by reason in
``ingest_rejects`` with a rate-limited log line, acknowledged (a redelivery would be just as
bad) and never stop the good messages around them. Reasons:

``topic``           not a ``footfall/<site>/<sensor>/<kind>`` topic of this site
``oversized``       larger than ``schema.MAX_PAYLOAD_BYTES``
``garbage``         not JSON, or not a JSON object
``version``         a schema version this build does not read
``schema``          a field missing, mistyped or out of range
``unknown_sensor``  a sensor not in the configured allow-list
``mismatch``        payload site/sensor differs from the topic's
``privacy``         a device field that looks like a raw MAC address (never stored)
``expired``         a visit older than the retention window (see ``hub/retention.py``); the log line
                    names the visit's date and ``retention.raw_days``
``error``           a message that passed validation but could not be stored (logged)

Library use: ``Ingestor(config).run()`` (blocking; ``stop()`` from another thread or a signal
handler) or ``ingest_payload(conn, topic, raw_bytes)`` for one message without MQTT.
"""

from __future__ import annotations

import gc
import json
import logging
import operator
import re
import sqlite3
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from footfall import schema, topics
from footfall.hub import devices, merge, retention, store
from footfall.hub.config import HubConfig
from footfall.hub.devices import DeviceEstimator, HashEstimator
from footfall.hub.sensors import ActivityMeter, apply_health, apply_status

log = logging.getLogger(__name__)

REASONS = (
    "topic",
    "oversized",
    "garbage",
    "version",
    "schema",
    "unknown_sensor",
    "mismatch",
    "privacy",
    "expired",
    "error",
)
_INT64 = (-(2**63), 2**63 - 1)
MAX_CLOCK_AHEAD_S = 86400.0
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
    # Finite is not enough: local day/hour must be computable, and a clock years ahead is wrong.
    if not 0 <= first_seen <= last_seen <= received + MAX_CLOCK_AHEAD_S:
        raise Rejected("schema", "first_seen/last_seen out of range (sensor clock?)")
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

    def __init__(self, conn: sqlite3.Connection, config: HubConfig, estimator: DeviceEstimator | None = None) -> None:
        self.conn = conn
        self.config = config
        self.estimator: DeviceEstimator = estimator or HashEstimator()
        self.tz = config.tz
        self.allowed = frozenset(config.sensors)
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
        if self.allowed and sensor not in self.allowed:
            raise Rejected("unknown_sensor", f"sensor {sensor!r} is not configured")
        if payload["site"] != site or payload["sensor"] != sensor:
            raise Rejected("mismatch", "payload site/sensor differ from the topic's")
        return site, sensor, kind, payload

    def _write(self, messages: Sequence[Incoming]) -> list[str]:
        now = time.time()
        expired = retention.expired_before(self.config, now)
        outcomes: list[str] = [""] * len(messages)
        visits: dict[str, tuple[int, dict[str, Any]]] = {}
        rejects: dict[str, int] = {}
        details: dict[str, str] = {}
        activity: dict[tuple[str, str], int] = {}
        other = 0
        conn = self.conn
        with conn:
            for i, m in enumerate(messages):
                try:
                    site, sensor, kind, payload = self._parse(m)
                    if kind == "visit":
                        row = visit_row(payload, now)
                        if row["first_seen"] < expired:
                            raise Rejected("expired", self._expired_detail(row["first_seen"]))
                except Rejected as exc:
                    rejects[exc.reason] = rejects.get(exc.reason, 0) + 1
                    details[exc.reason] = f"{m.topic}: {exc.detail}"[:300]
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


def ingest_payload(
    conn: sqlite3.Connection,
    topic: str,
    raw: bytes | str,
    config: HubConfig | None = None,
    *,
    retained: bool = False,
) -> str:
    """Validate and store one message without MQTT; returns its outcome (see ``Writer.write``).

    Without ``config`` the site is taken from the topic and every sensor is accepted.
    """
    if isinstance(raw, str):
        raw = raw.encode()
    if config is None:
        parsed = topics.parse(topic)
        config = HubConfig(site=parsed[0] if parsed else "unknown")
    return Writer(conn, config).write([Incoming(topic, raw, retained)])[0]


def ingest_many(conn: sqlite3.Connection, messages: Iterable[tuple[str, bytes]], config: HubConfig) -> list[str]:
    """Store many (topic, payload) pairs in batches of ``config.ingest.batch_max``."""
    writer = Writer(conn, config)
    out: list[str] = []
    batch: list[Incoming] = []
    for topic, raw in messages:
        batch.append(Incoming(topic, raw))
        if len(batch) >= config.ingest.batch_max:
            out += writer.write(batch)
            batch = []
    if batch:
        out += writer.write(batch)
    return out


_PUBACK = struct.Struct("!BBH")
_GC_GEN0 = 20_000
_RECV_BYTES = 65536
_CONN_LOST = mqtt.MQTT_ERR_CONN_LOST


def _fresh_in_packet() -> dict[str, Any]:
    return {
        "command": 0,
        "have_remaining": 0,
        "remaining_count": [],
        "remaining_mult": 1,
        "remaining_length": 0,
        "packet": bytearray(b""),
        "to_process": 0,
        "pos": 0,
    }


class BulkReadClient(mqtt.Client):
    """A paho client that reads many packets per ``recv`` and hands QoS 0/1 PUBLISHes straight
    to ``sink(topic_bytes, payload, retain, mid, qos)``; PUBACKs go out many per packet write.

    Stock paho costs ~4 syscalls, an ``MQTTMessage`` and a full MQTT 5 ``Properties`` decode per
    message: more than the rest of ingest together. Everything else (CONNACK, SUBACK, pings,
    QoS 2, topic aliases) still goes through paho's own handlers, so session handling, keepalive
    and reconnects are paho's. Relies on paho 2.x internals (``_packet_read``, ``_in_packet``,
    ``_packet_handle``, ``_packet_queue``): :func:`bulk_read_supported` checks for them.
    """

    def __init__(self, *args: Any, sink: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sink = sink
        self._rbuf = bytearray()
        self._rbuf_sock: Any = None

    def ack_many(self, mids: Sequence[int]) -> None:
        """PUBACK these QoS-1 message ids, in order, in one write (manual ack mode)."""
        if mids:
            packet = b"".join([_PUBACK.pack(0x40, 2, mid) for mid in mids])
            self._packet_queue(0x40, packet, 0, 0)

    def _packet_read(self) -> mqtt.MQTTErrorCode:
        sock = self._sock
        if sock is not self._rbuf_sock:  # a new connection: the old stream's tail is void
            self._rbuf = bytearray()
            self._rbuf_sock = sock
        try:
            data = self._sock_recv(_RECV_BYTES)
        except BlockingIOError:
            return mqtt.MQTT_ERR_AGAIN
        except OSError as err:
            self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return _CONN_LOST
        if not data:
            return _CONN_LOST
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        buf = self._rbuf
        buf += data
        n = len(buf)
        pos = 0
        v5 = self._protocol == mqtt.MQTTv5
        sink = self._sink
        rc = mqtt.MQTT_ERR_SUCCESS
        while n - pos >= 2:
            cmd = buf[pos]
            i = pos + 1
            length = 0
            shift = 0
            while True:
                if i >= n:
                    length = -1  # remaining length not complete yet
                    break
                b = buf[i]
                i += 1
                length |= (b & 127) << shift
                if b < 128:
                    break
                shift += 7
                if shift >= 28:
                    return mqtt.MQTT_ERR_PROTOCOL
            if length < 0:
                break
            end = i + length
            if end > n:
                break
            qos = (cmd >> 1) & 3
            if cmd >> 4 == 3 and qos < 2 and length >= 2 and (buf[i] or buf[i + 1]):
                # PUBLISH: topic, packet id (QoS 1), MQTT 5 properties (skipped), payload.
                t_end = i + 2 + ((buf[i] << 8) | buf[i + 1])
                p = t_end
                mid = 0
                if qos:
                    mid = (buf[p] << 8) | buf[p + 1] if p + 2 <= end else -1
                    p += 2
                if v5 and p < end:
                    plen = 0
                    shift = 0
                    while p < end:
                        b = buf[p]
                        p += 1
                        plen |= (b & 127) << shift
                        if b < 128:
                            break
                        shift += 7
                    p += plen
                elif v5:
                    p = end + 1
                if p > end or mid < 0:
                    self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received malformed PUBLISH")
                    return mqtt.MQTT_ERR_PROTOCOL
                pos = end
                sink(bytes(buf[i + 2 : t_end]), bytes(buf[p:end]), cmd & 1, mid, qos)
            else:
                self._in_packet = _fresh_in_packet()
                self._in_packet.update(
                    command=cmd, have_remaining=1, remaining_length=length, packet=bytearray(buf[i:end])
                )
                pos = end
                try:
                    rc = self._packet_handle()
                except mqtt.MalformedPacket as exc:
                    self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
                    rc = mqtt.MQTT_ERR_PROTOCOL
                self._in_packet = _fresh_in_packet()
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    break
            if self._sock is not sock:  # a handler closed or replaced the connection
                self._rbuf = bytearray()
                return rc
        del buf[:pos]
        return rc


def bulk_read_supported() -> bool:
    """Whether this paho has the internals :class:`BulkReadClient` builds on."""
    c = mqtt.Client
    return all(hasattr(c, name) for name in ("_packet_read", "_packet_handle", "_packet_queue", "_sock_recv"))


class Ingestor:
    """The hub's MQTT ingest loop: ``Ingestor(config).run()`` blocks until ``stop()``."""

    def __init__(
        self,
        config: HubConfig,
        *,
        conn: sqlite3.Connection | None = None,
        estimator: DeviceEstimator | None = None,
    ) -> None:
        self.config = config
        if conn is None:
            conn = store.connect(config.db)
            # Message ids and device hashes are random keys: their index pages are touched all
            # over the file, so a large page cache and mmap'd reads save most page I/O.
            conn.execute("PRAGMA cache_size = -65536")
            conn.execute("PRAGMA mmap_size = 268435456")
            # Every commit rewrites those scattered index pages into the WAL; checkpointing (and
            # its fsync) every 32 MB instead of every 4 MB cut commit time ~5x in the bench. Crash safety
            # is the WAL's, whatever its length.
            conn.execute("PRAGMA wal_autocheckpoint = 8192")
        self.conn = conn
        self.writer = Writer(self.conn, config, estimator)
        self.ready = threading.Event()  # set once the subscription is acknowledged
        self._stop = threading.Event()
        self._batch: list[Incoming] = []
        self._batch_started = 0.0
        self._next_link = 0.0
        self._connected = False
        self.client = self._make_client()

    @property
    def stats(self) -> IngestStats:
        return self.writer.stats

    def _make_client(self) -> mqtt.Client:
        cfg = self.config.mqtt
        args = (mqtt.CallbackAPIVersion.VERSION2,)
        kwargs: dict[str, Any] = {"client_id": self.config.client_id, "protocol": mqtt.MQTTv5}
        if bulk_read_supported():
            client: mqtt.Client = BulkReadClient(*args, sink=self._on_publish, **kwargs)
        else:  # pragma: no cover - a paho without the internals BulkReadClient relies on
            client = mqtt.Client(*args, **kwargs)
        client.manual_ack_set(True)
        if cfg.username:
            client.username_pw_set(cfg.username, self.config.mqtt_password() or None)
        if cfg.tls:
            client.tls_set(ca_certs=cfg.ca_certs or None, certfile=cfg.certfile or None, keyfile=cfg.keyfile or None)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        return client

    def _connect(self) -> None:
        cfg = self.config.mqtt
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = cfg.session_expiry_s
        props.ReceiveMaximum = cfg.receive_maximum
        self.client.connect(cfg.host, cfg.port, cfg.keepalive, clean_start=False, properties=props)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        self._connected = True
        log.info(
            "connected to %s:%d (session present: %s)",
            self.config.mqtt.host,
            self.config.mqtt.port,
            flags.session_present,
        )
        # Subscribing again on a resumed session is harmless and repairs a broker that lost it.
        client.subscribe(topics.site_filter(self.config.site), options=SubscribeOptions(qos=1, noLocal=True))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        if any(r.is_failure for r in reasons):
            log.error("subscription refused: %s", reasons)
            return
        self.ready.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._connected = False
        self.ready.clear()
        if not self._stop.is_set():
            log.warning("disconnected from the broker: %s", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic: str | None = msg.topic
        except UnicodeDecodeError:
            topic = None
        if not self._batch:
            self._batch_started = time.monotonic()
        self._batch.append(Incoming(topic, msg.payload, bool(msg.retain), msg.mid, msg.qos))

    def _on_publish(self, topic: bytes, payload: bytes, retain: int, mid: int, qos: int) -> None:
        # BulkReadClient's sink: the same as _on_message without an MQTTMessage per message.
        try:
            name: str | None = topic.decode()
        except UnicodeDecodeError:
            name = None
        if not self._batch:
            self._batch_started = time.monotonic()
        self._batch.append(Incoming(name, payload, bool(retain), mid, qos))

    def _flush(self, *, ack: bool = True) -> None:
        """Commit the batch, then (only then) acknowledge it to the broker."""
        batch, self._batch = self._batch, []
        if not batch:
            return
        self.writer.write(batch)
        if ack and self._connected:
            client = self.client
            if isinstance(client, BulkReadClient):
                client.ack_many([m.mid for m in batch if m.qos == 1])
                for m in batch:
                    if m.qos == 2:  # pragma: no cover - the subscription is QoS 1
                        client.ack(m.mid, m.qos)
            else:  # pragma: no cover
                for m in batch:
                    if m.qos:
                        client.ack(m.mid, m.qos)

    def _housekeeping(self) -> None:
        try:
            retention.apply(self.conn, self.config)
        except sqlite3.Error:
            log.exception("retention failed; will retry")
        self._maybe_relink()

    def _maybe_relink(self) -> None:
        # Linking randomized MACs into devices and estimating people is a batch job beside
        # ingest (hub/link.py): it costs far more per visit than the hot path could afford.
        now = time.time()
        if self.config.link_every_s <= 0 or now < self._next_link:
            return
        self._next_link = now + self.config.link_every_s
        from footfall.hub.link import relink

        try:
            # Today (and yesterday, until its last visits have settled): see hub/link.py.
            relink(self.conn, self.config, since=now - self.config.settle_s - self.config.link_every_s, now=now)
            # Dynamic segments follow the re-keyed devices (coupons and sync read them).
            from footfall.hub.segments import refresh_segments

            refresh_segments(self.conn, now)
        except sqlite3.Error:
            log.exception("relinking devices or refreshing segments failed; will retry")

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        cfg = self.config.ingest
        batch_s = cfg.batch_ms / 1000.0
        # A batch holds thousands of payload dicts: with the default thresholds the cyclic GC
        # ran every 700 of them and walked every long-lived object (the app, the caches) on
        # each full pass, ~3% of ingest. Ingest makes no cycles; collect less often, and never
        # walk what existed at startup again.
        gc.freeze()
        if gc.get_threshold()[0] < _GC_GEN0:
            gc.set_threshold(_GC_GEN0, *gc.get_threshold()[1:])
        backoff = 0.5
        next_housekeeping = time.monotonic()
        try:
            while not self._stop.is_set():
                if not self._connected:
                    try:
                        self._connect()
                        backoff = 0.5
                    except OSError as exc:
                        log.warning(
                            "cannot reach the broker at %s:%d: %s; retrying in %.1fs",
                            self.config.mqtt.host,
                            self.config.mqtt.port,
                            exc,
                            backoff,
                        )
                        self._stop.wait(backoff)
                        backoff = min(backoff * 2, 30.0)
                        continue
                    self._connected = True  # until on_connect/on_disconnect say otherwise
                timeout = batch_s if not self._batch else max(0.0, self._batch_started + batch_s - time.monotonic())
                rc = self.client.loop(timeout=min(timeout, 0.5))
                # Read what is already buffered without a select() per packet.
                while rc == mqtt.MQTT_ERR_SUCCESS and len(self._batch) < cfg.batch_max:
                    before = len(self._batch)
                    rc = self.client.loop_read()
                    if len(self._batch) == before:
                        break
                if self._batch and (
                    len(self._batch) >= cfg.batch_max
                    or time.monotonic() - self._batch_started >= batch_s
                    or rc != mqtt.MQTT_ERR_SUCCESS
                ):
                    try:
                        self._flush(ack=rc == mqtt.MQTT_ERR_SUCCESS)
                    except sqlite3.OperationalError:
                        # Nothing committed, nothing acknowledged: drop the connection so the
                        # broker redelivers the batch once the database works again.
                        log.exception("database write failed; reconnecting to get the batch redelivered")
                        self._batch = []
                        self.client.disconnect()
                        self._connected = False
                        self._stop.wait(backoff)
                        backoff = min(backoff * 2, 30.0)
                        continue
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    self._connected = False
                    self._batch = []
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                if not self._batch and time.monotonic() >= next_housekeeping:
                    self._housekeeping()
                    next_housekeeping = time.monotonic() + cfg.housekeeping_s
                elif not self._batch:
                    self._maybe_relink()
        finally:
            try:
                if self._batch:
                    self._flush(ack=self._connected)
            finally:
                self.client.disconnect()
                self.ready.clear()
