"""MQTT publishing with store-and-forward: every message is on disk before it is on the wire.

Flow of one message::

    publish(kind, payload) -> validate -> in-memory batch -> DiskBuffer (one commit per batch)
        -> sender thread peeks in seq order -> paho publish QoS 1 -> PUBACK -> ack (batched delete)

Protocol choice: MQTT 3.1.1 with ``clean_session=False`` and a stable client id. Durability of
our own data comes from the disk buffer, not from the broker session (QoS 1 publishes keep no
broker-side state), so MQTT 5's session-expiry and reason codes buy little here, while 3.1.1
works with every broker an installer may meet (old Mosquitto 1.x on OpenWrt, cloud brokers).
The persistent session keeps the config subscription across reconnects and queues config
changes sent while the sensor was offline. Bound a dead sensor's session on the broker with
Mosquitto's ``persistent_client_expiration``.

Ordering and duplicates. Rows go to paho strictly in ``seq`` order with a bounded in-flight
window. While the process lives, paho itself keeps every unacknowledged QoS 1 message and resends
it (DUP flag) after a reconnect, in order; we do not resend those from the buffer as well, which
would duplicate every in-flight message on every reconnect. New rows are held back after a
reconnect until the resent ones are acknowledged, so a new message can never overtake an old
one. The buffer covers what paho's memory cannot: after a crash or restart every row that was
never acknowledged is sent again from the start. A message the broker received but whose PUBACK
was lost is therefore delivered twice (at-least-once); payloads carry deterministic ``id`` s so
the hub drops the second copy.

Status: the last will is a retained ``offline`` status; on every connect we publish a retained
``online`` status; ``close()`` publishes ``offline`` itself and disconnects cleanly. Status
messages bypass the buffer: a replayed stale status would be wrong, a missed one is superseded.
"""

from __future__ import annotations

import importlib.metadata
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from footfall import schema, topics

from .buffer import DiskBuffer, DiskBufferError

log = logging.getLogger(__name__)

# Puts are committed in batches: whichever comes first of this many messages (committed by the
# publish() call that fills the batch, so a busy producer cannot outrun the disk) or this long
# (committed by the sender thread, so a lone message does not wait for company).
COMMIT_BATCH = 256
COMMIT_INTERVAL = 0.02
# Only while the disk refuses writes can more than a batch wait in memory; then publish()
# blocks (backpressure) and finally raises.
MAX_PENDING = 20_000
PENDING_TIMEOUT = 10.0

ConfigCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TLSOptions:
    """TLS to the broker. ``ca_certs`` None uses the system CAs.

    ``insecure`` skips the hostname check only (like ``mosquitto_pub --insecure``): the
    certificate must still chain to ``ca_certs``. For brokers addressed by IP on a shop LAN.
    """

    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    insecure: bool = False

    def context(self) -> ssl.SSLContext:
        try:
            ctx = ssl.create_default_context(cafile=self.ca_certs)
            if self.certfile:
                ctx.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"TLS setup failed (ca_certs={self.ca_certs!r}, certfile={self.certfile!r}, "
                f"keyfile={self.keyfile!r}): {exc}"
            ) from None
        if self.insecure:
            ctx.check_hostname = False
        return ctx


def _package_version() -> str:
    try:
        return importlib.metadata.version("footfall")
    except importlib.metadata.PackageNotFoundError:
        return "0"


class Publisher:
    """Publishes one sensor's messages through a :class:`DiskBuffer`; call :meth:`start` first."""

    def __init__(
        self,
        site: str,
        sensor: str,
        host: str,
        port: int,
        buffer: DiskBuffer,
        username: str | None = None,
        password: str | None = None,
        tls: TLSOptions | None = None,
        client_id: str | None = None,
        version: str | None = None,
        *,
        window: int = 100,
        keepalive: int = 30,
        reconnect_min_delay: float = 1.0,
        reconnect_max_delay: float = 60.0,
    ) -> None:
        self.site = topics.check_id(site, "site")
        self.sensor = topics.check_id(sensor, "sensor")
        self.host = host
        self.port = port
        self.buffer = buffer
        self.version = version or _package_version()
        self.window = max(1, window)
        self.keepalive = keepalive
        self.started = time.time()
        self._status_topic = topics.topic(site, sensor, "status")
        self._config_topic = topics.topic(site, sensor, "config")

        self._cond = threading.Condition()
        # Held across "take the pending batch" and "commit it", so batches reach the disk in the
        # order they were taken, whichever thread commits them.
        self._commit_lock = threading.Lock()
        self._write_failing = False
        self._pending: list[tuple[str, bytes, int, bool, str | None]] = []
        self._acked: list[int] = []
        # mid -> buffer seq (None for status messages that bypass the buffer).
        self._inflight: dict[int, int | None] = {}
        self._inflight_rows = 0
        # PUBACKs that arrived before publish() returned their mid to us (see _claim).
        self._early: set[int] = set()
        self._last_sent = 0
        self._connected = False
        self._barrier = False
        self._draining = False
        self._stopping = False
        self._closed = False
        self._started = False
        self._config_callback: ConfigCallback | None = None
        self._last_config: bytes | None = None
        self._counts = {
            "published": 0,
            "acked": 0,
            "connects": 0,
            "reconnects": 0,
            "disconnects": 0,
            "connect_failures": 0,
            "write_errors": 0,
            "unsendable": 0,
            "config_applied": 0,
            "config_rejected": 0,
            "config_errors": 0,
        }

        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"footfall-{self.site}-{self.sensor}",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        # Our window bounds what is in flight; a second, hidden queue inside paho would only
        # blur what "in flight" means when it resends after a reconnect.
        self._client.max_inflight_messages_set(0)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(reconnect_min_delay, reconnect_max_delay)  # type: ignore[arg-type]
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls is not None:
            self._client.tls_set_context(tls.context())
        # The will's ts is when it was registered; the hub should stamp receipt time on it.
        self._client.will_set(self._status_topic, self._status("offline"), qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.message_callback_add(self._config_topic, self._on_config)
        self._sender = threading.Thread(target=self._run, name=f"footfall-sender-{self.sensor}", daemon=True)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Publisher:
        """Start the sender and the network loop; returns at once, even if the broker is down."""
        if self._started:
            return self
        self._started = True
        self._sender.start()
        self._client.connect_async(self.host, self.port, keepalive=self.keepalive)
        self._client.loop_start()
        return self

    def __enter__(self) -> Publisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout: float = 5.0) -> None:
        """Commit what is pending, wait up to ``timeout`` for in-flight PUBACKs, go offline.

        Unsent rows stay in the buffer for the next start. The buffer is not closed: it
        belongs to the caller.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._draining = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        # Waiting for in-flight acks here saves a duplicate of each of them on the next start.
        with self._cond:
            self._cond.wait_for(
                lambda: not self._pending and (self._inflight_rows == 0 or not self._connected),
                timeout=max(0.0, deadline - time.monotonic()),
            )
            self._stopping = True
            self._cond.notify_all()
        if self._sender.is_alive():
            self._sender.join()
        if self._connected:
            info = self._publish_direct("offline")
            try:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as exc:
                log.warning("could not publish offline status: %s", exc)
        self._client.disconnect()
        self._client.loop_stop()
        # PUBACKs that arrived after the sender stopped (and anything a failing disk held back).
        with self._commit_lock:
            with self._cond:
                pending, self._pending = self._pending, []
                acked, self._acked = self._acked, []
            if not self._commit(pending, acked):
                log.error("closed with %d messages that could not be written to disk", len(self._pending))

    # -- publishing ----------------------------------------------------------------------------

    def publish(self, kind: str, payload: dict[str, Any], durable: bool = False) -> None:
        """Queue one message for delivery (QoS 1; ``status`` retained).

        Raises :class:`footfall.schema.SchemaError` for a payload the hub would reject and
        ValueError for a wrong kind or site/sensor, so bad data never enters the queue.

        The message is on disk before it is sent, and at the latest ``COMMIT_BATCH`` messages
        or ``COMMIT_INTERVAL`` seconds after this returns: a SIGKILL can lose at most that
        much. ``durable=True`` commits before returning (one disk write per call; raises
        DiskBufferError if the disk refuses, the message then stays queued in memory).
        """
        if kind == "config":
            raise ValueError("config is written by the hub; the agent only subscribes to it")
        topic = topics.topic(self.site, self.sensor, kind)
        raw = schema.dumps(payload)
        schema.validate(raw, kind)
        for field, mine in (("site", self.site), ("sensor", self.sensor)):
            if payload.get(field, mine) != mine:
                raise ValueError(f"payload {field} {payload.get(field)!r} does not match this publisher's {mine!r}")
        if len(raw) + len(topic) > self.buffer.max_bytes:
            raise ValueError(f"message of {len(raw)} bytes is larger than the disk buffer")
        row = (topic, raw, 1, kind == "status", payload.get("id"))
        with self._cond:
            if not self._started or self._closed:
                raise RuntimeError("publisher is not running: call start() before publish(), not after close()")
            if len(self._pending) >= MAX_PENDING and not self._cond.wait_for(
                lambda: len(self._pending) < MAX_PENDING, timeout=PENDING_TIMEOUT
            ):
                raise DiskBufferError(f"disk buffer {self.buffer.path} has not accepted writes for {PENDING_TIMEOUT}s")
            self._pending.append(row)
            self._counts["published"] += 1
            if len(self._pending) == 1:
                self._cond.notify_all()  # starts the sender's COMMIT_INTERVAL clock
            commit_now = durable or (len(self._pending) >= COMMIT_BATCH and not self._write_failing)
        if commit_now and not self._commit_pending() and durable:
            raise DiskBufferError(f"disk buffer {self.buffer.path} refused the write; the message stays queued")

    def _commit_pending(self) -> bool:
        with self._commit_lock:
            with self._cond:
                pending, self._pending = self._pending, []
            return self._commit(pending, [])

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything published so far is acknowledged by the broker."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
            while True:
                if not self._pending and not self._acked and self._inflight_rows == 0 and len(self.buffer) == 0:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))

    def subscribe_config(self, callback: ConfigCallback) -> None:
        """Call ``callback(config_dict)`` for each valid retained/new config (on paho's thread).

        Garbage payloads are logged and counted (``config_rejected``); a callback that raises
        is logged and counted (``config_errors``) and the same payload is offered again on the
        next delivery. An identical payload to the last applied one is not applied twice.
        """
        with self._cond:
            self._config_callback = callback
            connected = self._connected
        if connected:
            self._client.subscribe(self._config_topic, qos=1)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            counts = dict(self._counts)
            counts.update(
                connected=self._connected,
                inflight=self._inflight_rows,
                pending=len(self._pending),
            )
        buffered = self.buffer.stats()
        counts.update(
            backlog=buffered["backlog"] + counts["pending"],
            backlog_bytes=buffered["backlog_bytes"],
            dropped=buffered["dropped"],
            dropped_by_kind=buffered["dropped_by_kind"],
        )
        return counts

    @property
    def connected(self) -> bool:
        return self._connected

    # -- sender thread -------------------------------------------------------------------------

    def _can_send(self) -> bool:
        """Caller holds the lock. True when rows may go to paho now."""
        if not self._connected or self._draining:
            return False
        if self._barrier:
            if self._inflight_rows:
                return False
            self._barrier = False
        return self._inflight_rows < self.window and self.buffer.last_seq > self._last_sent

    def _urgent(self) -> bool:
        return (
            self._stopping
            or len(self._pending) >= COMMIT_BATCH
            or len(self._acked) >= max(1, self.window // 2)
            or (self._inflight_rows <= self.window // 2 and self._can_send())
        )

    def _run(self) -> None:
        while True:
            try:
                with self._cond:
                    if not self._urgent():
                        if not self._pending and not self._acked:
                            self._cond.wait(1.0)
                        # Something arrived: give a batch a moment to form before one commit.
                        self._cond.wait_for(self._urgent, timeout=COMMIT_INTERVAL)
                    stopping = self._stopping
                with self._commit_lock:
                    with self._cond:
                        pending, self._pending = self._pending, []
                        acked, self._acked = self._acked, []
                    ok = self._commit(pending, acked)
                if stopping:
                    if not ok:
                        log.error("closing with %d messages that could not be written to disk", len(self._pending))
                    return
                if not ok:
                    time.sleep(1.0)
                    continue
                self._send()
            except Exception:
                # The sender must outlive any bug: log, back off, carry on.
                log.exception("sender loop error")
                time.sleep(1.0)

    def _commit(self, pending: list[tuple[str, bytes, int, bool, str | None]], acked: list[int]) -> bool:
        """Write a batch of new rows and delete a batch of acknowledged ones; False on disk error.

        Callers hold ``_commit_lock`` from taking the batch until this returns.
        """
        if not pending and not acked:
            return True
        try:
            if pending:
                self.buffer.put_many(pending)
                pending = []
            if acked:
                self.buffer.ack_many(acked)
        except DiskBufferError as exc:
            log.error("disk buffer write failed, will retry: %s", exc)
            with self._cond:
                self._counts["write_errors"] += 1
                self._write_failing = True
                # Put the batches back in front, keeping order, for the next attempt.
                self._pending[:0] = pending
                self._acked[:0] = acked
                self._cond.notify_all()
            return False
        with self._cond:
            self._write_failing = False
            self._cond.notify_all()  # producers waiting on MAX_PENDING, flush()
        return True

    def _send(self) -> None:
        with self._cond:
            if not self._can_send():
                return
            free = self.window - self._inflight_rows
            after = self._last_sent
        newest = self.buffer.last_seq
        rows = self.buffer.peek(free, after=after)
        for msg in rows:
            if not self._connected or self._draining:
                return
            try:
                info = self._client.publish(msg.topic, msg.payload, qos=max(1, msg.qos), retain=msg.retain)
            except (ValueError, TypeError) as exc:
                # A row no broker would take (not written by us: wildcards in the topic, ...)
                # would block the queue forever: drop it, loudly.
                log.error("dropping unsendable buffered message seq %d: %s", msg.seq, exc)
                with self._cond:
                    self._counts["unsendable"] += 1
                    self._acked.append(msg.seq)
                self._last_sent = msg.seq
                continue
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                return  # paho refused to store it; it stays in the buffer for the next round
            self._claim(info.mid, msg.seq)
            self._last_sent = msg.seq
        if len(rows) < free:
            # Everything up to `newest` is sent or was dropped for space: don't look there again.
            self._last_sent = max(self._last_sent, newest)

    def _claim(self, mid: int, seq: int | None) -> None:
        # The PUBACK can be handled on paho's thread before publish() returns the mid here, and
        # paho holds its own lock while calling on_publish, so we cannot hold ours across
        # publish(): an ack for an unknown mid is parked in _early and matched here instead.
        with self._cond:
            if mid in self._early:
                self._early.discard(mid)
                self._acknowledged(seq)
            else:
                self._inflight[mid] = seq
                if seq is not None:
                    self._inflight_rows += 1

    def _acknowledged(self, seq: int | None) -> None:
        if seq is not None:
            self._acked.append(seq)
            self._counts["acked"] += 1
        # Waking the sender on every PUBACK costs more than the work it would do: wake it when a
        # batch is worth a commit, when the window is half empty, or when it might be asleep.
        half = max(1, self.window // 2)
        if seq is None or len(self._acked) in (1, half) or self._inflight_rows == half or self._inflight_rows == 0:
            self._cond.notify_all()

    def _publish_direct(self, state: str) -> mqtt.MQTTMessageInfo:
        info = self._client.publish(self._status_topic, self._status(state), qos=1, retain=True)
        self._claim(info.mid, None)
        return info

    def _status(self, state: str) -> bytes:
        return schema.dumps(
            schema.status_payload(
                site=self.site,
                sensor=self.sensor,
                state=state,
                ts=time.time(),
                version=self.version,
                started=self.started,
            )
        )

    # -- paho callbacks (paho's network thread) ------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            with self._cond:
                self._counts["connect_failures"] += 1
            log.warning("broker %s:%d refused the connection: %s", self.host, self.port, reason)
            return
        with self._cond:
            self._connected = True
            self._counts["connects"] += 1
            if self._counts["connects"] > 1:
                self._counts["reconnects"] += 1
            callback = self._config_callback
            self._cond.notify_all()
        log.info(
            "connected to %s:%d (session present: %s, backlog %d)",
            self.host,
            self.port,
            flags.session_present,
            len(self.buffer),
        )
        self._publish_direct("online")
        if callback is not None:
            client.subscribe(self._config_topic, qos=1)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        with self._cond:
            self._counts["connect_failures"] += 1

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._cond:
            was = self._connected
            self._connected = False
            # paho resends what is in flight after the reconnect; nothing new may overtake it.
            self._barrier = True
            if was:
                self._counts["disconnects"] += 1
            self._cond.notify_all()
        if was and not self._closed:
            log.warning("disconnected from %s:%d (%s); buffering until reconnect", self.host, self.port, reason)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._cond:
            if mid in self._inflight:
                seq = self._inflight.pop(mid)
                if seq is not None:
                    self._inflight_rows -= 1
                self._acknowledged(seq)
            else:
                self._early.add(mid)

    def _on_config(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        raw = bytes(message.payload)
        if not raw:
            log.info("retained config on %s was cleared; keeping the current config", message.topic)
            return
        with self._cond:
            callback = self._config_callback
            if callback is None or raw == self._last_config:
                return
        try:
            config = schema.validate(raw, "config")
        except schema.SchemaError as exc:
            log.warning("rejected config on %s (%d bytes): %s", message.topic, len(raw), exc)
            with self._cond:
                self._counts["config_rejected"] += 1
            return
        try:
            callback(config)
        except Exception:
            log.exception("config callback failed on %s", message.topic)
            with self._cond:
                self._counts["config_errors"] += 1
            return
        with self._cond:
            self._last_config = raw
            self._counts["config_applied"] += 1
