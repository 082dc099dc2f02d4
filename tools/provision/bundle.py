"""Config bundles: the directory of files one sensor (or the hub) needs, ready to copy over.

A sensor bundle holds ``agent.toml``, ``ca.pem``, ``<sensor>.crt``, ``<sensor>.key``,
``mqtt.pass`` and ``hash.key``, every file 0600 in a 0700 directory; the TOML points at the
paths the files will have *on the device* (``agent_dir``, default ``/etc/footfall``). The hub's
holds ``hub.toml``, ``ca.pem`` and two identities: ``footfall-hub.crt/.key`` with
``hub-mqtt.pass`` (ingest) and ``footfall-sync.crt/.key`` with ``sync-mqtt.pass`` (``footfall
sync``, which reads them from hub.toml's ``[sync_mqtt]``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from footfall import topics
from footfall.tools.provision.files import ensure_dir, write_file

AGENT_TOML = "agent.toml"
HUB_TOML = "hub.toml"
HUB_PASS = "hub-mqtt.pass"
SYNC_PASS = "sync-mqtt.pass"


@dataclass
class AgentSettings:
    """The agent's non-secret knobs a provisioner may want to set per sensor."""

    capture_source: str = "iface:mon0"
    channels: list[int] = field(default_factory=lambda: [1, 6, 11])
    dwell_s: float = 0.25
    inside_rssi: int = -70
    min_inside_s: int = 60
    gap_s: int = 300
    buffer_path: str = "/var/lib/footfall/buffer.db"
    buffer_max_bytes: int = 50_000_000
    platform: str = "linux"


PLATFORMS = ("linux", "openwrt")

# OpenWrt: the buffer stays in RAM (/var is tmpfs), capped small. On the internal flash a queue
# that inserts and deletes a row per message would wear NOR/NAND out and can fill an overlay of a
# few MB (which also blocks saving the router's config). 5 MB of payload is ~8,000 visits, days of
# a hub outage for one store; SQLite needs ~6 MB of tmpfs for it plus its WAL (README.md, "RAM
# and flash budget"). A power cut loses the queue: the price of not wearing the flash.
# No channel hopping: the radio usually also serves the store's Wi-Fi, and hopping would move the
# access point's channel; a dedicated radio opts in with --channels 1,6,11.
PLATFORM_DEFAULTS: dict[str, dict[str, Any]] = {
    "linux": {},
    "openwrt": {
        "channels": [],
        "buffer_path": "/var/lib/footfall/buffer.db",
        "buffer_max_bytes": 5_000_000,
    },
}


def platform_settings(platform: str = "linux", **overrides: Any) -> AgentSettings:
    """A platform's defaults, with the given settings (those not None) on top."""
    if platform not in PLATFORM_DEFAULTS:
        raise ValueError(f"unknown platform {platform!r}: use one of {', '.join(PLATFORMS)}")
    values = {**PLATFORM_DEFAULTS[platform], **{k: v for k, v in overrides.items() if v is not None}}
    return AgentSettings(platform=platform, **values)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        # A JSON string is a valid TOML basic string (same escapes), and never breaks the line.
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def toml_text(doc: Mapping[str, Any], header: str = "") -> str:
    """A flat TOML writer (tables one level deep) - enough for our configs, no dependency."""
    lines = [f"# {line}" for line in header.splitlines()]
    tables = []
    for key, value in doc.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        elif value is not None:
            lines.append(f"{key} = {_value(value)}")
    for name, table in tables:
        lines += ["", f"[{name}]"]
        lines += [f"{k} = {_value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


def mqtt_table(host: str, port: int, username: str, install_dir: str, *, client_cert: bool = True) -> dict[str, Any]:
    d = install_dir.rstrip("/")
    return {
        "host": host,
        "port": port,
        "username": username,
        "password_file": f"{d}/mqtt.pass",
        "ca_certs": f"{d}/ca.pem",
        "certfile": f"{d}/{username}.crt" if client_cert else None,
        "keyfile": f"{d}/{username}.key" if client_cert else None,
    }


def agent_toml(site: str, sensor: str, host: str, port: int, agent_dir: str, settings: AgentSettings) -> str:
    d = agent_dir.rstrip("/")
    doc = {
        "site": topics.check_id(site, "site"),
        "sensor": topics.check_id(sensor, "sensor"),
        "hash_key_file": f"{d}/hash.key",
        "capture": {"source": settings.capture_source, "channels": settings.channels, "dwell_s": settings.dwell_s},
        "visits": {
            "inside_rssi": settings.inside_rssi,
            "min_inside_s": settings.min_inside_s,
            "gap_s": settings.gap_s,
        },
        "mqtt": mqtt_table(host, port, sensor, d),
        "buffer": {"path": settings.buffer_path, "max_bytes": settings.buffer_max_bytes},
    }
    header = f"Footfall agent for sensor {sensor} of site {site}: written by `footfall provision`."
    if settings.platform == "openwrt":
        # The hub's last config (opt-outs) must survive a reboot, unlike the RAM buffer beside
        # which it would land by default; it is rewritten only when the hub changes it, so
        # flash sees a write per config change, not per message.
        doc["buffer"]["hub_config"] = f"{d}/hub-config.json"
        header += (
            "\nOpenWrt: no channel hopping (channels = []; the radio may serve the store's Wi-Fi); the buffer is"
            "\nin RAM (/var is tmpfs) and capped: flash wear. firmware_configs/openwrt/README.md says why."
        )
    return toml_text(doc, header)


def write_sensor_bundle(
    out: Path,
    *,
    site: str,
    sensor: str,
    host: str,
    port: int,
    agent_dir: str,
    settings: AgentSettings,
    ca_pem: bytes,
    cert_pem: bytes,
    key_pem: bytes,
    password: str,
    hash_key_hex: str,
) -> Path:
    ensure_dir(out.parent)
    ensure_dir(out)
    write_file(out / AGENT_TOML, agent_toml(site, sensor, host, port, agent_dir, settings))
    write_file(out / "ca.pem", ca_pem)
    write_file(out / f"{sensor}.crt", cert_pem)
    write_file(out / f"{sensor}.key", key_pem)
    write_file(out / "mqtt.pass", password + "\n")
    write_file(out / "hash.key", hash_key_hex + "\n")
    return out


def hub_toml(site: str, username: str, port: int, hub_dir: str, *, sync_username: str | None = None) -> str:
    """Settings for ``footfall hub run`` (hub/config.py's format); merge in timezone etc. by hand.

    ``[sync_mqtt]`` is the sync job's login (``footfall sync`` reads hub.toml); None leaves it
    out (a site whose sync identity is not issued yet).
    """
    d = hub_dir.rstrip("/")
    doc: dict[str, Any] = {
        "site": topics.check_id(site, "site"),
        "db": "/var/lib/footfall/hub.db",
        # Deployed from broker/ with every sensor change: the hub refuses the revoked ones.
        "roster": f"{d}/roster.json",
        "mqtt": {
            # The hub talks to the broker on its own machine; 127.0.0.1 is in the server certificate.
            "host": "127.0.0.1",
            "port": port,
            "username": username,
            "password_file": f"{d}/{HUB_PASS}",
            "tls": True,
            "ca_certs": f"{d}/ca.pem",
            "certfile": f"{d}/{username}.crt",
            "keyfile": f"{d}/{username}.key",
            "client_id": f"footfall-hub-{site}",
        },
    }
    header = f"Footfall hub for site {site}: written by `footfall provision`."
    if sync_username:
        doc["sync_mqtt"] = {
            "username": sync_username,
            "password_file": f"{d}/{SYNC_PASS}",
            "certfile": f"{d}/{sync_username}.crt",
            "keyfile": f"{d}/{sync_username}.key",
        }
        header += (
            "\n[sync_mqtt]: `footfall sync`'s own login (host, port and CA are [mqtt]'s). Never the ingest's:"
            "\nthe broker makes the username the client id, so it would disconnect the running ingest."
        )
    return toml_text(doc, header)


def write_hub_bundle(
    out: Path,
    *,
    site: str,
    username: str,
    port: int,
    hub_dir: str,
    ca_pem: bytes,
    cert_pem: bytes,
    key_pem: bytes,
    password: str,
    sync_username: str | None = None,
) -> Path:
    """The hub's MQTT client identity; file names differ from a sensor's so both fit one /etc/footfall."""
    ensure_dir(out)
    write_file(out / HUB_TOML, hub_toml(site, username, port, hub_dir, sync_username=sync_username))
    write_file(out / "ca.pem", ca_pem)
    write_file(out / f"{username}.crt", cert_pem)
    write_file(out / f"{username}.key", key_pem)
    write_file(out / HUB_PASS, password + "\n")
    return out


def write_sync_identity(
    out: Path,
    *,
    site: str,
    hub_username: str,
    username: str,
    port: int,
    hub_dir: str,
    cert_pem: bytes,
    key_pem: bytes,
    password: str,
) -> Path:
    """The sync job's identity beside the hub's, and hub.toml rewritten to name it."""
    ensure_dir(out)
    write_file(out / f"{username}.crt", cert_pem)
    write_file(out / f"{username}.key", key_pem)
    write_file(out / SYNC_PASS, password + "\n")
    write_file(out / HUB_TOML, hub_toml(site, hub_username, port, hub_dir, sync_username=username))
    return out
