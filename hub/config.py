"""The hub's settings: one TOML file, every value overridable from the environment.

Example (``/etc/footfall/hub.toml``)::

    site = "store-042"
    timezone = "Europe/Berlin"
    db = "/var/lib/footfall/hub.db"
    roster = "/etc/footfall/roster.json"  # from `footfall provision` (broker/): revoked sensors refused
    sensors = ["s1", "s2"]          # optional allow-list (plus the roster's active sensors); empty:
                                     # every sensor the broker lets publish on the site's topics
    merge_gap_s = 600                # visits of one device this close are one store visit
    link_every_s = 300               # link devices and estimate people this often ...
    settle_s = 900                   # ... up to this long ago (sensors send a visit 10 min after it ends)
    hours = "10-21"                  # opening hours, local; empty: guessed from the data
    heartbeat_s = 60                 # the agents' health interval; 3 missed = stale

    [mqtt]
    host = "127.0.0.1"
    port = 8883
    username = "hub"
    password_file = "/etc/footfall/hub-mqtt.pass"
    tls = true
    ca_certs = "/etc/footfall/ca.pem"
    client_id = "footfall-hub-store-042"   # fixed: the broker keeps our session by it

    [sync_mqtt]                      # `footfall sync`'s own login (it reads this file); host,
    username = "footfall-sync"       # port and CA are [mqtt]'s. Never the ingest's: the broker
    password_file = "/etc/footfall/sync-mqtt.pass"   # makes the username the client id
    certfile = "/etc/footfall/footfall-sync.crt"
    keyfile = "/etc/footfall/footfall-sync.key"

    [ingest]
    batch_max = 5000                 # commit after this many messages ...
    batch_ms = 50                    # ... or this long, whichever comes first, then ack
    max_clock_ahead_s = 300          # visits/presence timed further ahead of our clock: rejected

    [retention]
    raw_days = 400                   # sensor_visits and visits; rolled up into hourly first
    presence_days = 30
    o2o_days = 400                   # O2O targets, coupons, segment rows: hashes cleared after

    [exclusion]                      # staff and fixed devices, left out of metrics
    long_stay = true                 # a device with a long_stay visit is fixed equipment
    staff_days = 5                   # present on this many distinct days ...
    staff_hours = 4.0                # ... for at least this long each day

    [web]                            # `footfall hub serve` (flags override these)
    host = "0.0.0.0"
    port = 8443
    certfile = "/etc/footfall/dashboard.crt"   # from `footfall provision dashboard-cert`
    keyfile = "/etc/footfall/dashboard.key"
    insecure_http = false            # plain HTTP off loopback: only when this says so

The file may also put everything under a ``[hub]`` table. Environment overrides are named
``FOOTFALL_HUB_<KEY>`` for top-level keys and ``FOOTFALL_HUB_<SECTION>_<KEY>`` for the rest
(``FOOTFALL_HUB_MQTT_PORT=1884``, ``FOOTFALL_HUB_SENSORS=s1,s2``). The MQTT password is never
required in the file: ``password_file`` or ``FOOTFALL_HUB_MQTT_PASSWORD``.
"""

from __future__ import annotations

import dataclasses
import os
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from footfall import schema
from footfall.settings import check_site, coerce, parse_hours, read_toml

ENV_PREFIX = "FOOTFALL_HUB_"


class ConfigError(ValueError):
    """A hub setting that cannot work; ``str()`` names the setting."""


@dataclass
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password: str = ""
    password_file: str = ""
    tls: bool = False
    ca_certs: str = ""
    certfile: str = ""
    keyfile: str = ""
    client_id: str = ""  # default: footfall-hub-<site>
    keepalive: int = 30
    # How long the broker keeps our session (and queues QoS-1 messages) while the hub is down.
    session_expiry_s: int = 7 * 86400
    # MQTT 5 Receive Maximum: unacknowledged messages the broker may have in flight to us.
    # Must exceed batch_max by a margin, or the broker stalls waiting for acks of a batch.
    receive_maximum: int = 20000


@dataclass
class SyncMqttConfig:
    """``footfall sync``'s login for the sensors' retained config (opt-outs); the hub itself never
    uses it. A second login as the ingest's user would disconnect the ingest, whose username the
    broker makes its client id (use_username_as_clientid), and take over its persistent session."""

    username: str = ""
    password: str = ""
    password_file: str = ""
    certfile: str = ""
    keyfile: str = ""


@dataclass
class IngestConfig:
    # Bigger batches amortize the commit (index pages rewritten into the WAL) over more messages;
    # receive_maximum (20000) must stay well above it.
    batch_max: int = 5000
    batch_ms: float = 50.0
    # Repeated log lines about rejected messages: at most one per reason per this many seconds.
    log_every_s: float = 10.0
    # Retention and staff exclusion run from the ingest loop this often.
    housekeeping_s: float = 3600.0
    # A visit or presence report timed more than this ahead of the hub's clock is rejected as
    # ``future``: sensors and hub run NTP, so 5 minutes covers a sensor whose clock has drifted
    # before it synced; a larger error is a wrong clock whose data would land in the wrong hours.
    max_clock_ahead_s: float = 300.0


@dataclass
class RetentionConfig:
    raw_days: int = schema.DEFAULT_RAW_RETENTION_DAYS
    presence_days: int = 30
    # O2O rows keep MAC and phone MD5s: cleared after this many days, the counts stay for the
    # reports. Keep it above every scenario's cap_days + attribution_days.
    o2o_days: int = 400


@dataclass
class ExclusionConfig:
    long_stay: bool = True
    staff_days: int = 5
    staff_hours: float = 4.0


@dataclass
class WebConfig:
    # Plain HTTP is only served on loopback (a TLS proxy in front, a demo) unless insecure_http.
    host: str = "127.0.0.1"
    port: int = 8080
    certfile: str = ""
    keyfile: str = ""
    insecure_http: bool = False


@dataclass
class HubConfig:
    site: str = "store"
    timezone: str = "UTC"
    db: str = "hub.db"
    # The broker's ACL already ties a topic to the sensor that may publish it, so by default every
    # sensor of the site is ingested (hub/roster.py); ``sensors`` is an optional allow-list and
    # ``roster`` the provisioning file that says which sensors are active or revoked.
    sensors: list[str] = field(default_factory=list)
    roster: str = ""
    # The agents' visit gap: a linked phone's successive MACs are minutes apart when it idles.
    merge_gap_s: float = 600.0
    # Linking and estimates run every link_every_s over whole local days, up to settle_s ago: a
    # sensor sends a visit when the device has been silent for its visit gap (10 min), so the
    # last minutes are not complete yet. Figures of the last settle_s are provisional.
    link_every_s: float = 300.0
    settle_s: float = 900.0
    # Opening hours (local, "10-21" or "9:30-21:00"): the closed hours are when the site learns
    # what the street sounds like (hub/inside.py). Empty: guessed from the data.
    hours: str = ""
    # The return rate follows randomizing phones across days by the networks they ask for by name
    # (hub/returning.py: a keyed signature, kept as long as the raw visits). A site whose privacy
    # policy allows fixed addresses only turns it off; its return rate then rests on those alone.
    follow_networks: bool = True
    heartbeat_s: float = 60.0
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    sync_mqtt: SyncMqttConfig = field(default_factory=SyncMqttConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    exclusion: ExclusionConfig = field(default_factory=ExclusionConfig)
    web: WebConfig = field(default_factory=WebConfig)

    def __post_init__(self) -> None:
        self.check()

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"footfall-hub-{self.site}"

    def mqtt_password(self) -> str:
        if self.mqtt.password:
            return self.mqtt.password
        if self.mqtt.password_file:
            return Path(self.mqtt.password_file).read_text().strip()
        return ""

    def check(self) -> None:
        check_site(self.site, self.sensors, self.timezone, ConfigError)
        if self.merge_gap_s < 0:
            raise ConfigError("merge_gap_s must be >= 0")
        if self.settle_s < 0 or self.link_every_s < 0:
            raise ConfigError("settle_s and link_every_s must be >= 0")
        if not 0 <= self.ingest.max_clock_ahead_s < float("inf"):
            raise ConfigError("ingest.max_clock_ahead_s must be a number of seconds >= 0")
        if self.ingest.batch_max < 1 or self.ingest.batch_ms <= 0:
            raise ConfigError("ingest.batch_max must be >= 1 and ingest.batch_ms > 0")
        if self.mqtt.receive_maximum <= self.ingest.batch_max:
            raise ConfigError("mqtt.receive_maximum must be larger than ingest.batch_max")
        if min(self.retention.raw_days, self.retention.presence_days, self.retention.o2o_days) < 1:
            raise ConfigError("retention days must be >= 1")
        if not 0 < self.web.port < 65536:
            raise ConfigError("web.port must be 1-65535")
        if self.web.keyfile and not self.web.certfile:
            raise ConfigError("web.keyfile needs web.certfile")
        if self.hours:
            try:
                parse_hours(self.hours)
            except ValueError as exc:
                raise ConfigError(f"hours: {exc}") from None

    @property
    def opening_hours(self) -> tuple[float, float] | None:
        return parse_hours(self.hours) if self.hours else None


def _coerce(value: Any, kind: Any, name: str) -> Any:
    return coerce(value, kind, name, ConfigError)


def _build(cls: type, data: Mapping[str, Any], env: Mapping[str, str], prefix: str, where: str) -> Any:
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ConfigError(f"unknown setting(s) in {where or 'top level'}: {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        name = f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(f.type) or f.type in _SECTIONS:
            section = _SECTIONS[f.type] if isinstance(f.type, str) else f.type
            sub = data.get(f.name, {})
            if not isinstance(sub, Mapping):
                raise ConfigError(f"setting {name!r} must be a table")
            kwargs[f.name] = _build(section, sub, env, f"{prefix}{f.name.upper()}_", name)
            continue
        env_name = f"{prefix}{f.name.upper()}"
        if env_name in env:
            kwargs[f.name] = _coerce(env[env_name], f.type, name)
        elif f.name in data:
            kwargs[f.name] = _coerce(data[f.name], f.type, name)
    return cls(**kwargs)


# Field annotations are strings under ``from __future__ import annotations``.
_SECTIONS: dict[Any, type] = {
    "MqttConfig": MqttConfig,
    "SyncMqttConfig": SyncMqttConfig,
    "IngestConfig": IngestConfig,
    "RetentionConfig": RetentionConfig,
    "ExclusionConfig": ExclusionConfig,
    "WebConfig": WebConfig,
}


def from_dict(data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> HubConfig:
    """Settings from an already parsed mapping (tests, other tools), with env overrides."""
    if "hub" in data and isinstance(data["hub"], Mapping):
        data = data["hub"]
    return _build(HubConfig, data, os.environ if env is None else env, ENV_PREFIX, "")


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> HubConfig:
    """Read the TOML file (or only defaults + environment when ``path`` is None)."""
    return from_dict(read_toml(path, ConfigError), env)
