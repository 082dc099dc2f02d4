"""The agent's settings: a TOML file (``footfall provision`` writes one per sensor).

Secrets are never in the file itself: the hash key and the MQTT password are read from the
files it names (mode 0600), or from ``FOOTFALL_HASH_KEY`` / ``FOOTFALL_MQTT_PASSWORD``.
Example::

    site = "store-042"
    sensor = "s1"
    hash_key_file = "/etc/footfall/hash.key"

    [capture]
    source = "iface:mon0"          # or a .pcap/.pcapng path, or "scapy:mon0"
    channels = [1, 6, 11]           # empty: stay on the current channel
    dwell_s = 0.25
    realtime = false                # replaying a file: at its original pace?

    [visits]                        # see edge_agent/visit_settings.py for what they mean and why
    inside_rssi = -70
    min_inside_s = 60
    gap_s = 600

    [partner]
    enabled = false
    mac_format = "colon-upper"

    [privacy]
    optout_file = "/etc/footfall/optout.txt"   # one device hash a line

    [mqtt]
    host = "hub.local"
    port = 8883
    username = "s1"
    password_file = "/etc/footfall/mqtt.pass"
    ca_certs = "/etc/footfall/ca.pem"
    certfile = "/etc/footfall/s1.crt"
    keyfile = "/etc/footfall/s1.key"
    config_wait_s = 5               # at start, wait this long for the hub's retained config

    [buffer]
    path = "/var/lib/footfall/buffer.db"
    max_bytes = 50000000
    hub_config = "/var/lib/footfall/buffer.hub-config.json"   # default: next to path

    [report]
    presence_interval_s = 60
    health_interval_s = 60
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from footfall import topics
from footfall.edge_agent.identity import MAC_FORMATS, load_key
from footfall.edge_agent.visit_settings import VisitSettings


class ConfigError(ValueError):
    pass


@dataclass
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password_file: str | None = None
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    tls_insecure: bool = False
    keepalive: int = 30
    enabled: bool = True
    # Capture opens only after the retained config (opt-outs) arrived, the broker said it has
    # none, or this many seconds passed (broker unreachable: the saved config applies).
    config_wait_s: float = 5.0

    def password(self) -> str | None:
        env = os.environ.get("FOOTFALL_MQTT_PASSWORD")
        if env:
            return env
        if self.password_file:
            return Path(self.password_file).read_text().strip()
        return None


@dataclass
class AgentConfig:
    site: str
    sensor: str
    hash_key_file: str | None = None
    source: str = ""
    channels: list[int] = field(default_factory=list)
    dwell_s: float = 0.25
    realtime: bool = False
    visits: VisitSettings = field(default_factory=VisitSettings)
    partner_enabled: bool = False
    partner_mac_format: str = "colon-upper"
    optout_file: str | None = None
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    buffer_path: str = "/var/lib/footfall/buffer.db"
    buffer_max_bytes: int = 50_000_000
    # The last config received from the hub (opt-outs), applied at start before capture.
    hub_config_path: str | None = None
    presence_interval_s: float = 60.0
    health_interval_s: float = 60.0

    def __post_init__(self) -> None:
        try:
            topics.check_id(self.site, "site")
            topics.check_id(self.sensor, "sensor")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.partner_mac_format not in MAC_FORMATS:
            raise ConfigError(f"partner.mac_format must be one of {sorted(MAC_FORMATS)}")

    def hash_key(self) -> bytes:
        env = os.environ.get("FOOTFALL_HASH_KEY")
        if env:
            try:
                key = bytes.fromhex(env.strip())
            except ValueError:
                raise ConfigError("FOOTFALL_HASH_KEY must be hex") from None
            if len(key) < 16:
                raise ConfigError("FOOTFALL_HASH_KEY must be at least 16 bytes (32 hex digits)")
            return key
        if not self.hash_key_file:
            raise ConfigError("no hash key: set hash_key_file or FOOTFALL_HASH_KEY")
        try:
            return load_key(self.hash_key_file)
        except (OSError, ValueError) as exc:
            raise ConfigError(str(exc)) from None

    def hub_config_file(self) -> Path:
        """Where the last hub config is saved: ``[buffer] hub_config``, else next to the buffer."""
        if self.hub_config_path:
            return Path(self.hub_config_path)
        return Path(self.buffer_path).with_suffix(".hub-config.json")

    def optout(self) -> list[str]:
        if not self.optout_file or not Path(self.optout_file).exists():
            return []
        lines = Path(self.optout_file).read_text().split()
        return [h.strip().lower() for h in lines if h.strip() and not h.startswith("#")]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentConfig:
        def section(name: str) -> dict[str, Any]:
            value = data.get(name, {})
            if not isinstance(value, dict):
                raise ConfigError(f"[{name}] must be a table")
            return value

        capture, visits, partner = section("capture"), section("visits"), section("partner")
        privacy, mqtt, buffer, report = section("privacy"), section("mqtt"), section("buffer"), section("report")
        if "site" not in data or "sensor" not in data:
            raise ConfigError("site and sensor are required")
        settings = VisitSettings()
        unknown = set(visits) - set(VisitSettings.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown [visits] keys: {sorted(unknown)}")
        settings.update(visits)
        mqtt_fields = set(MqttSettings.__dataclass_fields__)
        if set(mqtt) - mqtt_fields:
            raise ConfigError(f"unknown [mqtt] keys: {sorted(set(mqtt) - mqtt_fields)}")
        return cls(
            site=data["site"],
            sensor=data["sensor"],
            hash_key_file=data.get("hash_key_file"),
            source=capture.get("source", ""),
            channels=list(capture.get("channels", [])),
            dwell_s=float(capture.get("dwell_s", 0.25)),
            realtime=bool(capture.get("realtime", False)),
            visits=settings,
            partner_enabled=bool(partner.get("enabled", False)),
            partner_mac_format=partner.get("mac_format", "colon-upper"),
            optout_file=privacy.get("optout_file"),
            mqtt=MqttSettings(**mqtt),
            buffer_path=buffer.get("path", "/var/lib/footfall/buffer.db"),
            buffer_max_bytes=int(buffer.get("max_bytes", 50_000_000)),
            hub_config_path=buffer.get("hub_config"),
            presence_interval_s=float(report.get("presence_interval_s", 60)),
            health_interval_s=float(report.get("health_interval_s", 60)),
        )

    @classmethod
    def load(cls, path: str | Path) -> AgentConfig:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config {path} is not valid TOML: {exc}") from None
        return cls.from_dict(data)
