"""MQTT publishing with store-and-forward: every message is on disk before it is on the wire.

Flow of one message::

    publish(kind, payload) -> validate -> in-memory batch -> DiskBuffer (one commit per batch)
        -> sender thread peeks in seq order -> paho publish QoS 1 -> PUBACK -> ack (batched delete)

Protocol: MQTT 5 with ``clean_start=False``, a session expiry of ``SESSION_EXPIRY_S`` and a stable
client id. MQTT 5 because its PUBACK carries a reason code: a publish the broker's ACL denies
comes back as 0x87 Not authorized instead of being acknowledged as if delivered (3.1.1), so it
stays in the buffer (``held.py``). The persistent session keeps the config subscription across
reconnects. Needs a broker with MQTT 5 (Mosquitto 1.6 or later).

The connection itself (our own network loop, why a connect failed in the journal, the watchdog
that says when networking died for good) is ``connection.py``; the config topic ``hubconfig.py``.

Ordering and duplicates. Rows go to paho strictly in ``seq`` order with a bounded in-flight
window. While the process lives, paho itself keeps every unacknowledged QoS 1 message and resends
it (DUP flag) after a reconnect, in order; we do not resend those from the buffer as well, which
would duplicate every in-flight message on every reconnect. New rows are held back after a
reconnect until the resent ones are acknowledged, so a new message can never overtake an old
one. The buffer covers what paho's memory cannot: after a crash or restart every row that was
never acknowledged is sent again from the start. A message the broker received but whose PUBACK
was lost is therefore delivered twice (at-least-once); payloads carry deterministic ``id`` s so
the hub drops the second copy. Messages of a topic the broker refuses are the exception to
strict order: they are sent again when the broker takes the topic again.

Status: the last will is a retained ``offline`` status; on every connect we publish a retained
``online`` status; ``close()`` publishes ``offline`` itself and disconnects cleanly. Status
messages bypass the buffer: a replayed stale status would be wrong, a missed one is superseded.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from footfall import payloads, schema, topics

from .buffer import DiskBuffer, DiskBufferError
from .connection import STALL_S, NetworkLoop, TLSOptions, package_version
from .held import FIRST_RETRY_S, HeldBack
from .hubconfig import ConfigCallback, ConfigSubscription
from .sender import COMMIT_BATCH, COMMIT_INTERVAL, MAX_PENDING, PENDING_TIMEOUT, Sender

__all__ = ["COMMIT_BATCH", "COMMIT_INTERVAL", "ConfigCallback", "Publisher", "TLSOptions"]

log = logging.getLogger(__name__)

# How long the broker keeps our session (the config subscription) while we are away. Our own
# data does not depend on it (the disk buffer does that); a week covers a long closure.
SESSION_EXPIRY_S = 7 * 86400


class Publisher(Sender):
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
        stall_s: float = STALL_S,
        refused_retry_s: float = FIRST_RETRY_S,
    ) -> None:
        self.site = topics.check_id(site, "site")
        self.sensor = topics.check_id(sensor, "sensor")
        self.host = host
        self.port = port
        self.buffer = buffer
        self.version = version or package_version()
        self.window = max(1, window)
        self.keepalive = keepalive
        self.started = time.time()
        self._status_topic = topics.topic(site, sensor, "status")
        self._config = ConfigSubscription(topics.topic(site, sensor, "config"))

        self._cond = threading.Condition()
        # Held across "take the pending batch" and "commit it", so batches reach the disk in the
        # order they were taken, whichever thread commits them.
        self._commit_lock = threading.Lock()
        self._write_failing = False
        self._committing = 0
        self._pending: list[tuple[str, bytes, int, bool, str | None]] = []
        self._acked: list[int] = []
        # mid -> (buffer seq or None for status messages that bypass the buffer, topic).
        self._inflight: dict[int, tuple[int | None, str]] = {}
        self._inflight_rows = 0
        # PUBACKs that arrived before publish() returned their mid to us (see _claim): mid -> reason.
        self._early: dict[int, Any] = {}
        self._last_sent = 0
        self._held = HeldBack(first_retry=refused_retry_s)
        # Send again from here once the broker takes a refused topic again (see held.py).
        self._rewind_to: int | None = None
        self._send_window = self.window
        self._connected = False
        self._barrier = False
        self._draining = False
        self._stopping = False
        self._closed = False
        self._started = False
        self._counts = {
            "published": 0,
            "acked": 0,
            "connects": 0,
            "reconnects": 0,
            "disconnects": 0,
            "write_errors": 0,
            "unsendable": 0,
        }

        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"footfall-{self.site}-{self.sensor}",
            protocol=mqtt.MQTTv5,
        )
        # Our window bounds what is in flight; a second, hidden queue inside paho would only
        # blur what "in flight" means when it resends after a reconnect.
        self._client.max_inflight_messages_set(0)
        self._client.max_queued_messages_set(0)
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls is not None:
            self._client.tls_set_context(tls.context())
        # The will's ts is when it was registered; the hub should stamp receipt time on it.
        self._client.will_set(self._status_topic, self._status("offline"), qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._client.message_callback_add(self._config.topic, self._config.on_message)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self._net = NetworkLoop(
            self._client,
            host,
            port,
            keepalive,
            properties=props,
            min_delay=reconnect_min_delay,
            max_delay=reconnect_max_delay,
            stall_s=stall_s,
            name=f"footfall-mqtt-{self.sensor}",
            on_lost=self._lost,
        )
        self._sender = threading.Thread(target=self._run, name=f"footfall-sender-{self.sensor}", daemon=True)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Publisher:
        """Start the sender and the network loop; returns at once, even if the broker is down."""
        if self._started:
            return self
        self._started = True
        self._sender.start()
        self._net.start()
        return self

    @property
    def dead(self) -> str | None:
        """Why the network loop stopped for good (logged once), or None while it runs.

        Then nothing more reaches the broker while this process lives: the agent exits non-zero
        so that systemd or procd restart it.
        """
        return self._net.dead

    @property
    def client(self) -> mqtt.Client:
        """The paho client, for callbacks of your own (they run on the network loop's thread)."""
        return self._client

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
                lambda: (
                    not self._pending
                    and (self._inflight_rows == 0 or not self._connected or self._net.dead is not None)
                ),
                timeout=max(0.0, deadline - time.monotonic()),
            )
            self._stopping = True
            self._cond.notify_all()
        if self._sender.is_alive():
            self._sender.join()
        if self._connected and self._net.dead is None:
            info = self._publish_direct("offline")
            try:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as exc:
                log.warning("could not publish offline status: %s", exc)
        self._client.disconnect()
        self._net.stop()
        # PUBACKs that arrived after the sender stopped (and anything a failing disk held back).
        with self._commit_lock:
            with self._cond:
                pending, self._pending = self._pending, []
                acked, self._acked = self._acked, []
                self._committing = len(pending)
            if not self._commit(pending, acked):
                log.error("closed with %d messages that could not be written to disk", len(self._pending))

    # -- publishing ----------------------------------------------------------------------------

    def publish(self, kind: str, payload: dict[str, Any], durable: bool = False) -> None:
        """Queue one message for delivery (QoS 1; ``status`` retained).

        Raises :class:`footfall.schema.SchemaError` for a payload the hub would reject and
        ValueError for a wrong kind or site/sensor, so bad data never enters the queue.

        The message is on disk before it is sent, and at the latest ``COMMIT_BATCH`` messages
        or ``COMMIT_INTERVAL`` seconds after this returns: a SIGKILL can lose at most that
        much, counting a batch the sender thread is still writing (not counting it, a loaded
        machine once lost 432 of 1,500 where 256 was the promise).
        ``durable=True`` commits before returning (one disk write per call; raises
        DiskBufferError if the disk refuses, the message then stays queued in memory).
        """
        if kind == "config":
            raise ValueError("config is written by the hub; the agent only subscribes to it")
        topic = topics.topic(self.site, self.sensor, kind)
        raw = payloads.dumps(payload)
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
            # The rows another thread is writing are not on disk yet either: while they are, a
            # batch forms here only up to what they leave of COMMIT_BATCH, so a SIGKILL loses at
            # most that many. Waiting for that write (not committing a small batch behind it)
            # keeps the disk writes large.
            if self._committing and len(self._pending) + self._committing >= COMMIT_BATCH:
                self._cond.wait_for(lambda: not self._committing or self._write_failing, timeout=PENDING_TIMEOUT)
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
                self._committing = len(pending)
            return self._commit(pending, [])

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything published so far is acknowledged by the broker.

        False at once when all that is left is held back because the broker refuses its topic
        (``held`` in :meth:`stats`): that waits for an operator, not for the network.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
            while True:
                if not self._pending and not self._acked and self._inflight_rows == 0:
                    left = len(self.buffer)
                    if left == 0:
                        return True
                    if left <= self._held.count and not self._held.due():
                        return False
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
            self._config.callback = callback
            connected = self._connected
        if connected:
            self._client.subscribe(self._config.topic, qos=1)

    def wait_config(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the retained config (after :meth:`subscribe_config`).

        True once it was handled or the broker has none for us; False when the broker was not
        reachable in time (the agent then starts with the config it saved last time).
        """
        return self._config.wait(timeout)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            counts = dict(self._counts)
            counts.update(
                connected=self._connected,
                inflight=self._inflight_rows,
                window=self._send_window,
                pending=len(self._pending),
                connect_failures=self._net.failures,
                denied=self._held.refusals,
                held=self._held.count,
            )
        counts.update(self._config.stats())
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

    def _publish_direct(self, state: str) -> mqtt.MQTTMessageInfo:
        info = self._client.publish(self._status_topic, self._status(state), qos=1, retain=True)
        self._claim(info.mid, None, self._status_topic)
        return info

    def _status(self, state: str) -> bytes:
        return payloads.dumps(
            payloads.status_payload(
                site=self.site,
                sensor=self.sensor,
                state=state,
                ts=time.time(),
                version=self.version,
                started=self.started,
            )
        )

    # -- paho callbacks (the network loop's thread, connection.py) --------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            # "Not authorized", "Bad user name or password", ...: the broker closes the socket next.
            self._net.refused(str(reason))
            return
        receive_max = getattr(properties, "ReceiveMaximum", None)
        with self._cond:
            self._connected = True
            self._counts["connects"] += 1
            if self._counts["connects"] > 1:
                self._counts["reconnects"] += 1
            # MQTT 5: the broker says how many QoS 1 publishes it takes unacknowledged at once.
            # One of them is kept for the status messages (``online`` just below, ``offline`` at
            # close), which bypass the buffer and so the row count; at least one row, though.
            if isinstance(receive_max, int):
                self._send_window = max(1, min(self.window, receive_max - 1))
            else:
                self._send_window = self.window
            self._held.retry_now()
            callback = self._config.callback
            self._cond.notify_all()
        self._net.connected(f"session present: {bool(flags.session_present)}, backlog {len(self.buffer)}")
        self._publish_direct("online")
        if callback is not None:
            client.subscribe(self._config.topic, qos=1)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._lost(str(reason))

    def _lost(self, reason: str) -> None:
        """The socket is gone: from paho's on_disconnect, or from the network loop when paho's
        ``loop()`` failed without calling it (connection.py)."""
        with self._cond:
            was = self._connected
            self._connected = False
            # paho resends what is in flight after the reconnect; nothing new may overtake it.
            self._barrier = True
            if was:
                self._counts["disconnects"] += 1
            self._cond.notify_all()
        self._net.disconnected(reason, was, report=not self._closed)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._cond:
            if mid in self._inflight:
                seq, topic = self._inflight.pop(mid)
                if seq is not None:
                    self._inflight_rows -= 1
                self._settle(seq, topic, reason)
            else:
                self._early[mid] = reason

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        self._config.on_suback(reasons)
