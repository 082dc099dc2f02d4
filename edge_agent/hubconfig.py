"""The sensor's retained ``config`` topic as the publisher sees it: validate, de-duplicate, apply,
and tell the agent's start whether the retained config has arrived yet.

At start the agent waits (bounded) for the retained config before it opens capture, so an
opt-out already published by the hub applies to the very first frame. A retained message comes
right after the SUBACK of the subscription; when there is none, nothing comes at all, so the
wait ends ``GRACE_S`` after the SUBACK, and never later than the caller's timeout
(``[mqtt] config_wait_s``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from footfall import schema

log = logging.getLogger("footfall.edge_agent.publish")

ConfigCallback = Callable[[dict[str, Any]], None]
# The broker sends the retained PUBLISH right behind the SUBACK; what can still separate them here
# is the payload's transfer (a long opt-out list is tens of KB: seconds on a 100 kbit/s cellular
# uplink) and a lost TCP segment (RFC 6298's initial retransmission timeout is 1 s). Half a second
# (before) missed a config on such links; the cost of more is only a later capture start when
# the hub has published no config, and the wait's own timeout bounds it.
GRACE_S = 3.0


class ConfigSubscription:
    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.callback: ConfigCallback | None = None
        self.counts = {"config_applied": 0, "config_rejected": 0, "config_errors": 0}
        self._last: bytes | None = None
        self._lock = threading.Lock()
        self._settled = threading.Event()
        self._suback_at: float | None = None

    def on_suback(self, reasons: Any) -> None:
        failed = [r for r in reasons or () if getattr(r, "is_failure", False)]
        if failed:
            # An ACL without read access to the sensor's own config topic.
            log.warning("MQTT broker refused the subscription to %s: %s; hub config does not reach this sensor",
                        self.topic, failed[0])  # fmt: skip
            self._settled.set()
        else:
            self._suback_at = time.monotonic()

    def wait(self, timeout: float) -> bool:
        """True once the retained config was handled, or the broker has none; False on timeout."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            now = time.monotonic()
            if self._settled.is_set() or (self._suback_at is not None and now - self._suback_at >= GRACE_S):
                return True
            if now >= deadline:
                return False
            self._settled.wait(min(0.05, deadline - now))

    def on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._handle(bytes(message.payload), message.topic)
        finally:
            self._settled.set()

    def _handle(self, raw: bytes, topic: str) -> None:
        if not raw:
            log.info("retained config on %s was cleared; keeping the current config", topic)
            return
        with self._lock:
            callback = self.callback
            if callback is None or raw == self._last:
                return
        try:
            config = schema.validate(raw, "config")
        except schema.SchemaError as exc:
            log.warning("rejected config on %s (%d bytes): %s", topic, len(raw), exc)
            with self._lock:
                self.counts["config_rejected"] += 1
            return
        try:
            callback(config)
        except Exception:
            log.exception("config callback failed on %s", topic)
            with self._lock:
                self.counts["config_errors"] += 1
            return
        with self._lock:
            self._last = raw
            self.counts["config_applied"] += 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)
