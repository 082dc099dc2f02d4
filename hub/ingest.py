"""MQTT -> SQLite: the hub's ingest, exactly once under crashes, on paho's public API only.

The hub subscribes to ``footfall/<site>/+/+`` at QoS 1 with a persistent MQTT 5 session (fixed
client id, ``clean_start=False``, a session expiry), so the broker queues whatever the sensors
send while the hub restarts.

Exactly once: paho acknowledges a QoS-1 message (PUBACK) when ``on_message`` returns, after
which the broker forgets it. The hub therefore creates its client with ``manual_ack=True``:
``on_message`` only appends to a batch; the batch is written in ONE SQLite transaction (every
``batch_max`` messages or ``batch_ms``) by :class:`footfall.hub.ingest_writer.Writer`, and only
after the commit are its messages acknowledged with ``Client.ack``, in arrival order. A kill -9
before the commit loses nothing (the broker redelivers the unacknowledged messages); one after
the commit but before the acks gets redeliveries that the message id (``sensor_visits``' unique
key, with the visit start) drops as duplicates. MQTT 5 ``Receive Maximum`` lets the broker keep
a whole batch in flight instead of its default of 20 unacknowledged messages.

One stock ``paho.mqtt.client.Client`` driven by its public ``loop``/``loop_read`` from this
thread, no subclass and no private attribute (tests/test_hub_ingest.py checks): a day's backlog
of a 10-sensor store (200,000 visits) drains in about 30 s on a 2-core x86 box, 0.5-0.6x a bare
subscriber's rate, against the 5 minutes a store needs (``footfall.tools.bench.bench_ingest``).
paho's per-message cost (a few syscalls, an ``MQTTMessage``, an MQTT 5 properties decode) is
about what validating, merging and storing the message costs, so it halves the rate of the
database path alone. Several subscribers on a shared subscription would not win that back in
one process (one GIL, one SQLite writer) and would spread one session's unacknowledged messages
over several, so the hub stays one client.

Library use: ``Ingestor(config).run()`` (blocking; ``stop()`` from another thread or a signal
handler) or ``ingest_payload(conn, topic, raw_bytes)`` for one message without MQTT. Validation,
reject reasons and storage are in :mod:`footfall.hub.ingest_writer`; which sensors are let in, and
the quarantine of the refused ones, in :mod:`footfall.hub.roster`.
"""

from __future__ import annotations

import gc
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from footfall import topics
from footfall.hub import monitor, retention, roster, store
from footfall.hub.config import HubConfig
from footfall.hub.devices import DeviceEstimator
from footfall.hub.ingest_writer import (
    REASONS,
    SENSOR_VISIT_COLUMNS,
    Incoming,
    IngestStats,
    Rejected,
    RejectLog,
    Writer,
    visit_row,
)

__all__ = [
    "REASONS",
    "SENSOR_VISIT_COLUMNS",
    "Incoming",
    "IngestStats",
    "Ingestor",
    "RejectLog",
    "Rejected",
    "Writer",
    "ingest_many",
    "ingest_payload",
    "visit_row",
]

log = logging.getLogger(__name__)

_GC_GEN0 = 20_000


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
        # Which connection the pending batch arrived on: message ids restart with a new
        # connection when the broker lost the session, so an ack must never cross connections.
        self._conn_gen = 0
        self._batch_gen = 0
        self._connack = False
        self._next_link = 0.0
        self._next_status = 0.0
        self._released = -1  # the sensor gate's generation whose quarantine was last replayed
        self._connected = False
        self.client = self._make_client()

    @property
    def stats(self) -> IngestStats:
        return self.writer.stats

    def _make_client(self) -> mqtt.Client:
        cfg = self.config.mqtt
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.config.client_id,
            protocol=mqtt.MQTTv5,
            # Acknowledged only once committed (see _flush): what makes a crash lose nothing.
            manual_ack=True,
        )
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
        self._connack = True
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
        self._status()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._connected = False
        self._connack = False
        self._conn_gen += 1
        self.ready.clear()
        self._status()
        if not self._stop.is_set():
            log.warning("disconnected from the broker: %s", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic: str | None = msg.topic
        except UnicodeDecodeError:
            topic = None
        if not self._batch:
            self._batch_started = time.monotonic()
            self._batch_gen = self._conn_gen
        self._batch.append(Incoming(topic, msg.payload, bool(msg.retain), msg.mid, msg.qos))

    def _flush(self, *, ack: bool = True) -> None:
        """Commit the batch, then (only then) acknowledge it to the broker."""
        batch, self._batch = self._batch, []
        if not batch:
            return
        self.writer.write(batch)
        # Only on the connection the batch came on (a message id of a lost connection may name
        # another message on the next), and only once that connection's CONNACK arrived.
        if ack and self._connected and self._connack and self._batch_gen == self._conn_gen:
            send_ack = self.client.ack
            for m in batch:
                if m.qos:  # QoS 0 has nothing to acknowledge
                    send_ack(m.mid, m.qos)

    def _status(self) -> None:
        """Liveness for /metrics, served by another process: the loop turned, the session is up.
        Callbacks and the loop run on this one thread, so this never lands inside a batch's write."""
        now = time.time()
        try:
            with self.conn:
                monitor.record_status(self.conn, monitor.STATUS_HEARTBEAT, now, now)
                monitor.record_status(self.conn, monitor.STATUS_MQTT_CONNECTED, float(self.ready.is_set()), now)
        except sqlite3.Error as exc:
            log.warning("could not record ingest status for monitoring: %s", exc)
        self._next_status = time.monotonic() + monitor.STATUS_EVERY_S

    def _maybe_release(self) -> None:
        """A sensor admitted or re-activated in the roster: ingest what it sent while refused."""
        gate = self.writer.gate
        gate.refresh()
        if gate.generation == self._released:
            return
        try:
            roster.release_allowed(self.conn, self.writer)
        except sqlite3.OperationalError:
            log.exception("replaying quarantined messages failed; will retry")
            return
        self._released = gate.generation

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
                    if self._batch:
                        # Commit what came on the connection that ended, without acks: a batch
                        # never spans connections, and the broker redelivers anything of a
                        # resumed session (dropped as duplicates).
                        try:
                            self._flush(ack=False)
                        except sqlite3.OperationalError:
                            log.exception("database write failed; the broker redelivers the batch")
                            self._batch = []
                    self._connack = False
                    self._conn_gen += 1  # whatever is pending came on the connection that ended
                    try:
                        self._connect()
                        backoff = 0.5
                    except OSError as exc:
                        # Still alive, only the broker is not: the heartbeat keeps telling apart
                        # "ingest stopped" from "broker unreachable" (mqtt_connected 0).
                        if time.monotonic() >= self._next_status:
                            self._status()
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
                if not self._batch and time.monotonic() >= self._next_status:
                    self._status()
                if not self._batch:
                    self._maybe_release()
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
