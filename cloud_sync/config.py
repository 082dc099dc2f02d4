"""The hub's sync settings: a ``[sync]`` table in a TOML file, every value overridable from env.

Example (``/etc/footfall/sync.toml``)::

    [sync]
    hub_config = "/etc/footfall/hub.toml"     # site, db, timezone and MQTT come from here
    url = "https://central.example.com"       # the central service (paths are appended)
    secret_file = "/etc/footfall/sync.secret" # this hub's HMAC secret (or FOOTFALL_SYNC_SECRET)
    ca_file = "/etc/footfall/central-ca.pem"  # TLS trust for the centre; empty = system CAs
    interval_s = 60
    batch_records = 5000                      # records per batch (the centre takes up to 50,000)
    batch_bytes = 4000000                     # uncompressed JSON bytes per batch (~600 kB gzipped)
    outbox_max_rows = 500000                  # above this, oldest low-value rows are dropped

Without ``hub_config`` the keys ``site``, ``db``, ``timezone``, ``mqtt_host`` ... are read from
the ``[sync]`` table itself. With it, the MQTT login (which publishes the sensors' opt-out lists)
is hub.toml's ``[sync_mqtt]`` (``footfall-sync``, from ``footfall provision``), host, port and CA
its ``[mqtt]``; a hub.toml without ``[sync_mqtt]`` leaves the ingest's login, which the publisher
refuses to use (``ingest_identity_clash``). Environment overrides are named ``FOOTFALL_SYNC_<KEY>``
(``FOOTFALL_SYNC_URL``, ``FOOTFALL_SYNC_BATCH_RECORDS=100``). The secret is never in the file.
"""

from __future__ import annotations

import dataclasses
import os
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from footfall.cloud_sync import signing
from footfall.settings import check_site, coerce, read_toml

ENV_PREFIX = "FOOTFALL_SYNC_"
SECRET_ENV = "FOOTFALL_SYNC_SECRET"


class ConfigError(ValueError):
    """A sync setting that cannot work; ``str()`` names the setting."""


@dataclass
class SyncConfig:
    site: str = "store"
    db: str = "hub.db"
    timezone: str = "UTC"
    hub_config: str = ""
    url: str = ""
    secret_file: str = ""
    ca_file: str = ""
    tls_verify: bool = True
    client_cert: str = ""
    client_key: str = ""
    # Plain http is only for tests and a loopback centre: signatures stop forgery, not reading.
    allow_http: bool = False
    interval_s: float = 60.0
    # Big batches: the per-request costs (signature, nonce, transaction, commit) are shared by
    # more records; 5,000 profiles are ~2.3 MB of JSON, ~350 kB on the wire (docs/central.md,
    # "Performance"). A 413 from the centre halves them for the batches that follow.
    batch_records: int = 5000
    batch_bytes: int = 4_000_000
    # While the centre acknowledges batches, form the next one while the last is in flight
    # (sender.py): a backlog drains at the pace of the slower side instead of both added up.
    form_ahead: bool = True
    outbox_max_rows: int = 500_000
    # Kinds that may be dropped (oldest first, counted) when the outbox is over its bound.
    # Profiles are snapshots that collapse per device and are never dropped.
    droppable_kinds: list[str] = field(default_factory=lambda: ["event", "segment_change"])
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 300.0
    # ``footfall sync once`` gives up after this many failed attempts in a row.
    once_max_attempts: int = 5
    # Closed days re-checked (and re-sent if their numbers changed, e.g. late visits).
    aggregate_days: int = 3
    # The sensors' health interval (hub config); 3 missed heartbeats = a stale sensor.
    heartbeat_s: float = 60.0
    # Visitor visits as profile events, once older than this (no merge can extend them).
    visit_events: bool = True
    event_settle_s: float = 900.0
    event_backfill_days: float = 30.0
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_username: str = ""
    mqtt_password: str = ""
    mqtt_password_file: str = ""
    mqtt_tls: bool = False
    mqtt_ca_certs: str = ""
    mqtt_certfile: str = ""
    mqtt_keyfile: str = ""
    # The hub ingest's login (hub.toml [mqtt], filled from hub_config): the broker makes the
    # username the client id, so publishing under it would disconnect the running ingest and
    # take over its session. The opt-out publisher refuses to; the fleet report reads its
    # certificate's expiry as the hub's ("client").
    ingest_mqtt_username: str = ""
    ingest_mqtt_certfile: str = ""
    sensors: list[str] = field(default_factory=list)
    # The provisioning roster (hub.toml's ``roster``): the fleet report lists every sensor it
    # names, so one that never connected shows as down at the centre too (cloud_sync/fleet.py).
    roster: str = ""
    # Send the fleet report (sensors, hub liveness, certificate and CRL expiry) every cycle.
    fleet_report: bool = True

    def __post_init__(self) -> None:
        self.check()

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    def check(self) -> None:
        check_site(self.site, self.sensors, self.timezone, ConfigError)
        if self.url:
            parts = urlsplit(self.url)
            if parts.scheme not in ("https", "http") or not parts.netloc:
                raise ConfigError(f"url {self.url!r} must be an https:// URL")
            if parts.scheme == "http" and not self.allow_http:
                raise ConfigError("url uses plain http; set allow_http = true only for a loopback/test centre")
        if self.batch_records < 1 or self.batch_bytes < 1024:
            raise ConfigError("batch_records must be >= 1 and batch_bytes >= 1024")
        if self.outbox_max_rows < 1:
            raise ConfigError("outbox_max_rows must be >= 1")
        if self.backoff_base_s <= 0 or self.backoff_cap_s < self.backoff_base_s:
            raise ConfigError("backoff_base_s must be > 0 and backoff_cap_s >= backoff_base_s")
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ConfigError("timeouts must be > 0")

    def endpoint(self, path: str) -> str:
        if not self.url:
            raise ConfigError("url (the central service) is not set")
        return self.url.rstrip("/") + path

    def secret(self, env: Mapping[str, str] | None = None) -> bytes:
        env = os.environ if env is None else env
        if env.get(SECRET_ENV, "").strip():
            return env[SECRET_ENV].strip().encode("utf-8")
        if not self.secret_file:
            raise ConfigError(f"no hub secret: set secret_file or {SECRET_ENV}")
        try:
            return signing.load_secret(file=self.secret_file)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"secret_file: {exc}") from None

    def tls_verify_arg(self) -> bool | str:
        """``requests``' ``verify``: the configured CA bundle, else the system's (or off)."""
        if not self.tls_verify:
            return False
        return self.ca_file or True

    def client_cert_arg(self) -> tuple[str, str] | str | None:
        if self.client_cert and self.client_key:
            return (self.client_cert, self.client_key)
        return self.client_cert or None

    def ingest_identity_clash(self) -> str | None:
        """Why the MQTT login configured here is the hub ingest's own, or None when it is not."""
        if self.ingest_mqtt_username and self.mqtt_username == self.ingest_mqtt_username:
            return f"mqtt_username {self.mqtt_username!r} is the hub ingest's"
        # Under use_identity_as_username the certificate, not the username sent, is the login.
        if self.ingest_mqtt_certfile and self.mqtt_certfile:
            mine, ingest = Path(self.mqtt_certfile), Path(self.ingest_mqtt_certfile)
            if mine.resolve() == ingest.resolve():
                return f"mqtt_certfile {self.mqtt_certfile} is the hub ingest's certificate"
        return None

    def mqtt_secret(self) -> str:
        if self.mqtt_password:
            return self.mqtt_password
        if self.mqtt_password_file:
            return Path(self.mqtt_password_file).read_text().strip()
        return ""


def _coerce(value: Any, kind: Any, name: str) -> Any:
    return coerce(value, kind, name, ConfigError)


def _from_hub_config(path: str) -> dict[str, Any]:
    from footfall.hub import config as hub_config

    try:
        hub = hub_config.load(path)
    except hub_config.ConfigError as exc:
        raise ConfigError(f"hub_config: {exc}") from None
    m = hub.mqtt
    # The sync's own login when hub.toml names one (a provisioned site); otherwise the ingest's
    # stays, and the publisher refuses it (ingest_identity_clash) rather than kick the ingest.
    login = hub.sync_mqtt if (hub.sync_mqtt.username or hub.sync_mqtt.certfile) else m
    return {
        "site": hub.site,
        "db": hub.db,
        "timezone": hub.timezone,
        "sensors": list(hub.sensors),
        "roster": hub.roster,
        "heartbeat_s": hub.heartbeat_s,
        "mqtt_host": m.host,
        "mqtt_port": m.port,
        "mqtt_username": login.username,
        "mqtt_password": login.password,
        "mqtt_password_file": login.password_file,
        "mqtt_tls": m.tls,
        "mqtt_ca_certs": m.ca_certs,
        "mqtt_certfile": login.certfile,
        "mqtt_keyfile": login.keyfile,
        "ingest_mqtt_username": m.username,
        "ingest_mqtt_certfile": m.certfile,
    }


def from_dict(data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> SyncConfig:
    """Settings from a parsed mapping (``[sync]`` table or flat), hub config, then env overrides."""
    env = os.environ if env is None else env
    if "sync" in data and isinstance(data["sync"], Mapping):
        data = data["sync"]
    known = {f.name: f for f in dataclasses.fields(SyncConfig)}
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(f"unknown setting(s) in [sync]: {', '.join(sorted(unknown))}")
    hub_path = env.get(ENV_PREFIX + "HUB_CONFIG") or data.get("hub_config") or ""
    merged: dict[str, Any] = _from_hub_config(str(hub_path)) if hub_path else {}
    merged.update(data)
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        env_name = ENV_PREFIX + name.upper()
        if env_name in env and env_name != SECRET_ENV:
            kwargs[name] = _coerce(env[env_name], f.type, name)
        elif name in merged:
            kwargs[name] = _coerce(merged[name], f.type, name)
    return SyncConfig(**kwargs)


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> SyncConfig:
    return from_dict(read_toml(path, ConfigError), env)
