"""Apply what the central service pushes back: opt-outs, consent withdrawals, definitions.

``GET /api/v1/sync/pushback?since=<cursor>`` (signed like every request) answers
``{"cursor": .., "items": [...]}``. Each page is applied and its cursor stored in one
transaction, so a crash re-applies at most one page, and every item is idempotent.

- ``optout`` (``device``: the chain-wide hashed id): recorded in ``optouts``; the device and every
  ``device_key`` it was linked to are recorded in ``optout_keys`` (never enqueued again); their
  profile, memberships, consent and phone hashes are deleted from the hub and from the outbox
  (a formed batch holding them is released and re-cut). Then the whole opt-out list goes to
  every sensor of the site in its retained ``footfall/<site>/<sensor>/config`` message
  (``{"v":1,"type":"config","optout":[...]}``, merged into whatever else that message holds;
  beyond about 1,800 ids as 8-byte prefixes in ``optout_prefixes``, see ``config_payload``),
  which the agents apply at once and drop those devices at capture.
- ``consent_withdrawn``: phone hashes of the device deleted everywhere on the hub; only the
  fact and the date of withdrawal are kept (``consents``); its profile is re-queued without it.
- Both put the device's partner hashes on the O2O stop-list (``o2o_stoplist``) first, when the
  O2O module's tables exist, so no campaign contacts that person again.
- ``consent_granted`` (an extension of the protocol): a consent recorded centrally.
- ``segment_definition`` / ``scenario_settings``: versioned; applied to the hub's rule segments
  and O2O scenarios, the outcome reported back (``definitions.py``).

Unknown or malformed items are counted (``pushback_rejected``) and skipped, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from footfall import schema, topics
from footfall.cloud_sync import definitions, outbox
from footfall.cloud_sync.clock import CentralClock
from footfall.cloud_sync.config import SyncConfig

log = logging.getLogger(__name__)

PUSHBACK_PATH = "/api/v1/sync/pushback"
MAX_PAGES = 100
_DEVICE = re.compile(r"^[0-9a-f]{8,128}$")


class PushbackError(RuntimeError):
    """The centre could not be asked (network, auth, bad answer); retried next cycle."""


@dataclass
class ApplyResult:
    optouts: int = 0
    consents_withdrawn: int = 0
    consents_granted: int = 0
    segment_definitions: int = 0
    scenario_settings: int = 0
    definitions_refused: int = 0
    rejected: int = 0
    devices_forgotten: int = 0

    def add(self, other: ApplyResult) -> None:
        for f in self.__dataclass_fields__:
            setattr(self, f, getattr(self, f) + getattr(other, f))


@dataclass
class PullResult:
    pages: int = 0
    cursor: str | None = None
    applied: ApplyResult = field(default_factory=ApplyResult)
    sensors_notified: int = 0


# -- applying items -------------------------------------------------------------------------


def _device(item: Mapping[str, Any]) -> str:
    device = item.get("device")
    if not isinstance(device, str) or not _DEVICE.match(device.lower()):
        raise ValueError("device must be a hashed device id (hex)")
    return device.lower()


def _ts(item: Mapping[str, Any], now: float) -> float:
    ts = item.get("ts")
    return float(ts) if isinstance(ts, (int, float)) and not isinstance(ts, bool) else now


def linked_keys(conn: sqlite3.Connection, device: str) -> set[str]:
    """The device id itself and every ``device_key`` the hub's estimator linked it to."""
    keys = {device}
    keys |= {r[0] for r in conn.execute("SELECT DISTINCT device_key FROM visits WHERE device = ?", (device,))}
    return keys


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def _release_batches_touching(conn: sqlite3.Connection, keys: Sequence[str]) -> None:
    """A formed batch holding any of these devices must not go out as it is: re-cut it."""
    m = _marks(keys)
    batches = {
        r[0]
        for r in conn.execute(
            f"""SELECT DISTINCT batch_id FROM sync_outbox WHERE batch_id IS NOT NULL AND parked IS NULL
                AND (key IN ({m}) OR json_extract(data, '$.device') IN ({m}))""",
            (*keys, *keys),
        )
    }
    for batch_id in batches:
        outbox.release_batch(conn, batch_id)


def _drop_from_outbox(conn: sqlite3.Connection, keys: Sequence[str]) -> None:
    m = _marks(keys)
    conn.execute(
        f"""DELETE FROM sync_outbox WHERE kind IN ('profile', 'segment_change', 'event')
            AND batch_id IS NULL AND (key IN ({m}) OR json_extract(data, '$.device') IN ({m}))""",
        (*keys, *keys),
    )
    conn.execute(
        f"""DELETE FROM sync_outbox WHERE parked IS NOT NULL AND kind IN ('profile', 'segment_change', 'event')
            AND (key IN ({m}) OR json_extract(data, '$.device') IN ({m}))""",
        (*keys, *keys),
    )


def _stop_list(conn: sqlite3.Connection, device: str, keys: Sequence[str], reason: str, now: float) -> None:
    """Put the device's partner hashes on the O2O stop-list (when that module is installed).

    The hashes are deleted from the hub right after, so without this the O2O runner could not
    tell that a target it already holds belongs to someone who opted out or withdrew consent.
    """
    if not outbox.has_table(conn, "o2o_stoplist"):
        return
    m = _marks(keys)
    hashes = {r[0] for r in conn.execute(f"SELECT partner_hash FROM devices WHERE device_key IN ({m})", keys)}
    hashes |= {
        r[0]
        for r in conn.execute(
            f"SELECT DISTINCT partner_hash FROM visits WHERE device_key IN ({m}) OR device = ?", (*keys, device)
        )
    }
    conn.executemany(
        "INSERT OR IGNORE INTO o2o_stoplist (subject, reason, added) VALUES (?, ?, ?)",
        [(h.lower(), reason, now) for h in hashes if h],
    )
    # Everything else of the person's on the O2O side: targets, segment rows, and the rows of
    # segment files already written (rewritten in place), inside this transaction.
    from footfall.hub.o2o import optout, privacy

    try:
        optout.forget_devices(conn, keys, reason=reason, now=now)
    except privacy.PrivacyError as exc:
        # Without the O2O key the keyed stop-list cannot be written: everything else of the
        # opt-out is applied now (the hashes are cleared below), the O2O part is retried at
        # every pull until the key is back (retry_o2o_forget).
        log.error("sync pushback: O2O part of an opt-out deferred: %s", exc)
        outbox.count(conn, "o2o_forget_deferred", 1, now)
        pending = set(json.loads(outbox.get_state(conn, O2O_PENDING) or "[]"))
        outbox.set_state(conn, O2O_PENDING, json.dumps(sorted(pending | set(keys))))


O2O_PENDING = "o2o_forget_pending"


def retry_o2o_forget(conn: sqlite3.Connection, now: float) -> int:
    """The O2O part of opt-outs deferred for a missing key, once the key is back; returns how
    many device keys were done."""
    keys = json.loads(outbox.get_state(conn, O2O_PENDING) or "[]")
    if not keys:
        return 0
    from footfall.hub.o2o import optout, privacy

    try:
        optout.forget_devices(conn, keys, reason="opt-out (central, deferred)", now=now)
    except privacy.PrivacyError:
        return 0
    outbox.set_state(conn, O2O_PENDING, "[]")
    return len(keys)


def _strip_phone_hashes(conn: sqlite3.Connection, device: str, keys: Sequence[str]) -> None:
    m = _marks(keys)
    conn.execute(f"UPDATE devices SET partner_hash = NULL WHERE device_key IN ({m})", keys)
    conn.execute(
        f"UPDATE visits SET partner_hash = NULL WHERE partner_hash IS NOT NULL AND (device_key IN ({m}) OR device = ?)",
        (*keys, device),
    )
    conn.execute(
        f"UPDATE sensor_visits SET partner_hash = NULL WHERE partner_hash IS NOT NULL AND device IN ({m})", keys
    )
    # The phone hashes the telecom partner shared, kept by the O2O module.
    if outbox.has_table(conn, "o2o_targets"):
        conn.execute(f"UPDATE o2o_targets SET phone_md5 = NULL WHERE device_key IN ({m})", keys)


def apply_optout(conn: sqlite3.Connection, device: str, *, ts: float, now: float, source: str = "central") -> int:
    """Record an opt-out and forget the device's profile data; returns the keys forgotten."""
    keys = sorted(linked_keys(conn, device))
    conn.execute(
        "INSERT INTO optouts (device, ts, received, source) VALUES (?, ?, ?, ?) ON CONFLICT (device) DO NOTHING",
        (device, ts, now, source),
    )
    conn.executemany(
        "INSERT INTO optout_keys (device_key, device) VALUES (?, ?) ON CONFLICT (device_key) DO NOTHING",
        [(k, device) for k in keys],
    )
    _release_batches_touching(conn, keys)
    _drop_from_outbox(conn, keys)
    _stop_list(conn, device, keys, "opt-out (central)", now)
    _strip_phone_hashes(conn, device, keys)
    m = _marks(keys)
    gone = conn.execute(f"DELETE FROM devices WHERE device_key IN ({m})", keys).rowcount
    if outbox.has_table(conn, "segment_members"):
        conn.execute(f"DELETE FROM segment_members WHERE device_key IN ({m})", keys)
    if outbox.has_table(conn, "estimated_visitors"):
        conn.execute(f"DELETE FROM estimated_visitors WHERE device_key IN ({m})", keys)
    conn.execute(f"DELETE FROM sync_profile_state WHERE device_key IN ({m})", keys)
    conn.execute(f"DELETE FROM sync_segment_snapshot WHERE device_key IN ({m})", keys)
    conn.execute(f"DELETE FROM consents WHERE device IN ({m})", keys)
    return gone


def apply_consent_withdrawn(conn: sqlite3.Connection, device: str, *, ts: float, now: float, site: str) -> None:
    keys = sorted(linked_keys(conn, device))
    conn.executemany(
        """INSERT INTO consents (device, granted, withdrawn, source, updated) VALUES (?, NULL, ?, 'central', ?)
           ON CONFLICT (device) DO UPDATE SET granted = NULL, withdrawn = excluded.withdrawn,
               source = excluded.source, updated = excluded.updated""",
        [(k, ts, now) for k in keys],
    )
    _release_batches_touching(conn, keys)
    _stop_list(conn, device, keys, "personal-data consent withdrawn (central)", now)
    _strip_phone_hashes(conn, device, keys)
    # Pending profiles are rebuilt now (without the hash), not at the next enqueue run.
    pending = [
        r[0]
        for r in conn.execute(
            f"SELECT key FROM sync_outbox WHERE kind = 'profile' AND batch_id IS NULL AND key IN ({_marks(keys)})", keys
        )
    ]
    for key, profile in outbox.build_profiles(conn, pending, site).items():
        outbox.enqueue(conn, "profile", key, profile, now=now)


def apply_items(conn: sqlite3.Connection, items: Iterable[Any], site: str, *, now: float | None = None) -> ApplyResult:
    """Apply pushback items (caller holds the transaction)."""
    now = time.time() if now is None else now
    res = ApplyResult()
    for item in items:
        try:
            if not isinstance(item, Mapping):
                raise ValueError("item is not an object")
            kind = item.get("kind")
            if kind == "optout":
                res.devices_forgotten += apply_optout(conn, _device(item), ts=_ts(item, now), now=now)
                res.optouts += 1
            elif kind == "consent_withdrawn":
                apply_consent_withdrawn(conn, _device(item), ts=_ts(item, now), now=now, site=site)
                res.consents_withdrawn += 1
            elif kind == "consent_granted":
                device = _device(item)
                if conn.execute("SELECT 1 FROM optouts WHERE device = ?", (device,)).fetchone():
                    raise ValueError("consent for an opted-out device")
                # Every key the hub linked to the device: the phone hash a partner shared may
                # sit on any of them.
                for key in sorted(linked_keys(conn, device)):
                    outbox.record_consent(conn, key, granted=_ts(item, now), source="central")
                res.consents_granted += 1
            elif kind in ("segment_definition", "scenario_settings"):
                ident = item.get("id")
                body = item.get("definition" if kind == "segment_definition" else "settings")
                version = item.get("version")
                if not isinstance(ident, (str, int)) or isinstance(ident, bool) or not isinstance(body, Mapping):
                    raise ValueError("needs an id and an object")
                if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
                    raise ValueError("version must be a positive integer")
                outcome = definitions.apply(conn, kind, str(ident), version, body, now)
                if outcome == "refused":
                    res.definitions_refused += 1
                elif kind == "segment_definition":
                    res.segment_definitions += 1
                else:
                    res.scenario_settings += 1
            else:
                raise ValueError(f"unknown kind {kind!r}")
        except sqlite3.OperationalError:
            raise  # the database, not the item: the whole page is applied again next cycle
        except Exception as exc:  # noqa: BLE001 - one bad item must not block the items behind it
            res.rejected += 1
            outbox.count(conn, "pushback_rejected", 1, now)
            if isinstance(exc, (ValueError, TypeError)):
                log.warning("sync pushback: item skipped: %s", exc)
            else:
                log.exception("sync pushback: item skipped")
    return res


# -- publishing opt-outs to the sensors ------------------------------------------------------


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


# -- pulling --------------------------------------------------------------------------------


def fetch(
    session: requests.Session,
    config: SyncConfig,
    secret: bytes,
    cursor: str | None,
    clock: CentralClock | None = None,
) -> tuple[str | None, list[Any]]:
    url = config.endpoint(PUSHBACK_PATH) + f"?since={quote(str(cursor if cursor is not None else 0), safe='')}"
    try:
        resp = (clock or CentralClock()).request(session, config, secret, "GET", url)
    except requests.RequestException as exc:
        raise PushbackError(f"{type(exc).__name__}: {exc}") from None
    if resp.status_code != 200:
        raise PushbackError(f"HTTP {resp.status_code}: {resp.text[:300]}")
    try:
        body = resp.json()
    except ValueError:
        raise PushbackError("answer is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("items", []), list):
        raise PushbackError("answer lacks an items list")
    new_cursor = body.get("cursor")
    return (None if new_cursor is None else str(new_cursor)), body.get("items") or []


def pull(
    conn: sqlite3.Connection,
    config: SyncConfig,
    secret: bytes,
    *,
    session: requests.Session | None = None,
    publisher: ConfigPublisher | None = None,
    now: float | None = None,
    clock: CentralClock | None = None,
) -> PullResult:
    """Fetch and apply every page of pushback since the stored cursor, then update the sensors."""
    session = session or requests.Session()
    res = PullResult(cursor=outbox.get_state(conn, "pushback_cursor"))
    for _ in range(MAX_PAGES):
        cursor, items = fetch(session, config, secret, res.cursor, clock)
        with conn:
            retry_o2o_forget(conn, time.time() if now is None else now)
            applied = apply_items(conn, items, config.site, now=now)
            if cursor is not None:
                outbox.set_state(conn, "pushback_cursor", cursor)
            outbox.set_state(conn, "last_pushback", time.time() if now is None else now)
        res.applied.add(applied)
        res.pages += 1
        advanced = cursor is not None and cursor != res.cursor
        res.cursor = cursor if cursor is not None else res.cursor
        if not items or not advanced:
            break
    # Digest-gated: also catches sensors that appeared since the last publication.
    res.sensors_notified = publish_optouts(conn, config, publisher)
    return res
