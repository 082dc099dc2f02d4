"""The opt-out list on every sensor of the site, so the agents drop those devices at capture.

The whole list goes in each sensor's retained ``footfall/<site>/<sensor>/config`` message
(``{"v":1,"type":"config","optout":[...]}``, merged into whatever else that message holds;
beyond about 1,800 ids as 8-byte prefixes in ``optout_prefixes``, see :func:`config_payload`),
which the agents apply at once. It is published again only when the list or the set of
sensors changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from footfall import schema, topics
from footfall.cloud_sync import outbox
from footfall.cloud_sync.config import SyncConfig
from footfall.cloud_sync.pushback import PushbackError

log = logging.getLogger(__name__)


def optout_list(conn: sqlite3.Connection) -> list[str]:
    """Every opted-out device id, newest first (the order in which they are kept if space runs out)."""
    return [r[0] for r in conn.execute("SELECT device FROM optouts ORDER BY received DESC, device")]


def site_sensors(conn: sqlite3.Connection, config: SyncConfig) -> list[str]:
    known = set(config.sensors)
    known |= {r[0] for r in conn.execute("SELECT sensor FROM sensors WHERE site = ?", (config.site,))}
    return sorted(s for s in known if topics._ID.match(s))


def config_payload(existing: Mapping[str, Any] | None, optout: Sequence[str]) -> tuple[bytes, int]:
    """The sensor's config message with the opt-out list replaced; returns (payload, ids left out).

    Full ids (``optout``) while they fit in ``schema.MAX_PAYLOAD_BYTES`` (the agent's limit);
    beyond that every id as an 8-byte prefix (``optout_prefixes``, about 6,000 fit). If even
    those do not fit, the newest are kept and the rest counted (the hub itself still honours
    every opt-out).
    """
    base = dict(existing) if isinstance(existing, Mapping) else {}
    base |= {"v": schema.VERSION, "type": "config"}
    base.pop("optout_prefixes", None)
    ids = list(optout)
    base["optout"] = ids
    raw = json.dumps(base, separators=(",", ":")).encode()
    if len(raw) <= schema.MAX_PAYLOAD_BYTES:
        return raw, 0
    base["optout"] = []
    base["optout_prefixes"] = ""
    room = schema.MAX_PAYLOAD_BYTES - len(json.dumps(base, separators=(",", ":")).encode())
    keep = min(len(ids), room // 4 * 3 // schema.OPTOUT_PREFIX_BYTES)  # base64: 4 characters per 3 bytes
    base["optout_prefixes"] = schema.pack_optout_prefixes(ids[:keep])
    return json.dumps(base, separators=(",", ":")).encode(), len(ids) - keep


class ConfigPublisher:
    """Publishes retained per-sensor config messages through the site broker.

    It logs in as the sync's own identity (``footfall-sync``: hub.toml ``[sync_mqtt]``), never as
    the hub ingest's: the broker makes the username the client id, so that login would disconnect
    the running ingest and take over its session, and sensor messages of that moment could be lost.
    The ACL lets footfall-sync read and write ``footfall/<site>/+/config`` and nothing else; MQTT 5
    makes a refused publish visible (PUBACK "Not authorized") instead of silently dropped.
    """

    def __init__(self, config: SyncConfig, *, timeout_s: float = 10.0, settle_s: float = 0.5) -> None:
        self.config = config
        self.timeout_s = timeout_s
        self.settle_s = settle_s

    def _client(self) -> Any:
        import paho.mqtt.client as mqtt

        cfg = self.config
        # A broker with use_username_as_clientid replaces this id by the username.
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"footfall-sync-{cfg.site}-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        if cfg.mqtt_username:
            client.username_pw_set(cfg.mqtt_username, cfg.mqtt_secret() or None)
        if cfg.mqtt_tls:
            client.tls_set(
                ca_certs=cfg.mqtt_ca_certs or None, certfile=cfg.mqtt_certfile or None, keyfile=cfg.mqtt_keyfile or None
            )
        return client

    def publish(self, sensors: Sequence[str], optout: Sequence[str]) -> tuple[list[str], int]:
        """Merge ``optout`` into each sensor's retained config; returns (sensors published, ids left out)."""
        site = self.config.site
        clash = self.config.ingest_identity_clash()
        if clash:
            raise PushbackError(
                f"not publishing the opt-out list: {clash}, and logging in as it would disconnect the running "
                "ingest; give the sync its own identity (`footfall provision hub` issues footfall-sync, then "
                "hub.toml [sync_mqtt]: docs/operator-guide.md, 'Upgrading a site: the sync's MQTT identity')"
            )
        retained: dict[str, Any] = {}
        connected = threading.Event()
        subscribed = threading.Event()
        failure: list[str] = []
        refused: dict[int, str] = {}

        def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
            if getattr(reason, "is_failure", False):
                failure.append(str(reason))
                connected.set()
                return
            connected.set()
            client.subscribe(f"{topics.ROOT}/{site}/+/config", qos=1)

        def on_subscribe(client: Any, userdata: Any, mid: Any, reasons: Any, properties: Any) -> None:
            subscribed.set()

        def on_publish(client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
            if getattr(reason, "is_failure", False):
                refused[mid] = str(reason)

        def on_message(client: Any, userdata: Any, msg: Any) -> None:
            parsed = topics.parse(msg.topic)
            if parsed is None or not msg.retain or not msg.payload:
                return
            try:
                value = json.loads(msg.payload)
            except ValueError:
                return
            if isinstance(value, dict) and value.get("v") == schema.VERSION:
                retained[parsed[1]] = value

        client = self._client()
        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_publish = on_publish
        client.on_message = on_message
        try:
            client.connect(self.config.mqtt_host, self.config.mqtt_port, keepalive=30)
        except OSError as exc:
            raise PushbackError(f"MQTT broker {self.config.mqtt_host}:{self.config.mqtt_port}: {exc}") from None
        client.loop_start()
        try:
            if not connected.wait(self.timeout_s) or failure:
                raise PushbackError(f"MQTT connect failed: {failure[0] if failure else 'timeout'}")
            if not subscribed.wait(self.timeout_s):
                raise PushbackError("MQTT subscribe timed out")
            # Retained messages follow the SUBACK at once; a short settle collects them all.
            time.sleep(self.settle_s)
            targets = sorted(set(sensors) | set(retained))
            left_out = 0
            infos = []
            for sensor in targets:
                payload, missing = config_payload(retained.get(sensor), optout)
                left_out = max(left_out, missing)
                infos.append(client.publish(topics.topic(site, sensor, "config"), payload, qos=1, retain=True))
            deadline = time.monotonic() + self.timeout_s
            for info in infos:
                try:
                    info.wait_for_publish(max(0.1, deadline - time.monotonic()))
                except RuntimeError as exc:
                    # paho raises this when the connection dropped with the message unsent;
                    # a PushbackError keeps it a failed cycle (retried), not a crashed sync.
                    raise PushbackError(f"MQTT publish failed: {exc}") from None
                if not info.is_published():
                    raise PushbackError("MQTT publish not acknowledged in time")
            if refused:
                user = self.config.mqtt_username or "this client"
                raise PushbackError(
                    f"the broker refused {len(refused)} config publication(s) ({next(iter(refused.values()))}): "
                    f"its ACL does not let {user} write {topics.ROOT}/{site}/+/config (deploy broker/ from "
                    "`footfall provision`)"
                )
            return targets, left_out
        finally:
            client.disconnect()
            client.loop_stop()


def publish_optouts(
    conn: sqlite3.Connection, config: SyncConfig, publisher: ConfigPublisher | None = None, *, force: bool = False
) -> int:
    """Send the opt-out list to every sensor when it (or the set of sensors) changed; returns sensors sent to."""
    ids = optout_list(conn)
    sensors = site_sensors(conn, config)
    digest = hashlib.sha256(json.dumps([ids, sensors]).encode()).hexdigest()[:32]
    if not force and outbox.get_state(conn, "optout_published") == digest:
        return 0
    if not ids and not force and outbox.get_state(conn, "optout_published") is None:
        return 0  # nothing was ever opted out: no config messages to write
    publisher = publisher or ConfigPublisher(config)
    targets, left_out = publisher.publish(sensors, ids)
    with conn:
        outbox.set_state(conn, "optout_published", digest)
        if left_out:
            outbox.count(conn, "optout_not_on_sensors", left_out)
    if left_out:
        log.error(
            "sync: %d opt-outs did not fit the sensors' config message (limit %d bytes); the hub still drops them",
            left_out,
            schema.MAX_PAYLOAD_BYTES,
        )
    log.info("sync: opt-out list (%d devices) published to %d sensors", len(ids), len(targets))
    return len(targets)
