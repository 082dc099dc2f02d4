"""The site state file (``site.json``): what was issued to whom, and when it expires.

It holds certificate serials, fingerprints and expiry dates, and the broker's PBKDF2 password
hashes (so that ``passwd`` can be rewritten without ever storing a password). It never holds a
private key or a password. The site directory as a whole (it also holds the CA key) belongs
offline or on the hub with mode 0700, never in git.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from footfall import topics
from footfall.tools.provision.files import write_file

STATE_VERSION = 1
STATE_FILE = "site.json"
ROSTER_FILE = "roster.json"  # written into broker/, read by the hub


@dataclass
class SiteState:
    site: str
    key_type: str = "ec"
    hosts: list[str] = field(default_factory=list)
    broker: dict[str, Any] = field(default_factory=dict)
    bridge: dict[str, Any] | None = None
    agent_dir: str = "/etc/footfall"  # where a sensor bundle is installed on the device
    ca: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)
    hub: dict[str, Any] = field(default_factory=dict)
    # `footfall sync`'s MQTT identity (footfall-sync), shaped like ``hub``; empty for a site made
    # before it existed, until `footfall provision hub` issues it.
    sync: dict[str, Any] = field(default_factory=dict)
    sensors: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Every revoked certificate: {"serial": hex, "revoked_at": iso, "reason": str, "subject": str}
    revoked: list[dict[str, Any]] = field(default_factory=list)
    crl: dict[str, Any] = field(default_factory=dict)
    # The device-id key's provenance, never the key: {"source": "site" | "chain", "since": iso,
    # "history": [earlier records]} (`rotate-hash-key`); empty for sites made before it existed.
    hash_key: dict[str, Any] = field(default_factory=dict)
    version: int = STATE_VERSION

    def active_sensors(self) -> list[str]:
        return sorted(s for s, rec in self.sensors.items() if rec.get("status") == "active")

    def sensor(self, sensor: str) -> dict[str, Any]:
        topics.check_id(sensor, "sensor")
        rec = self.sensors.get(sensor)
        if rec is None:
            raise KeyError(f"sensor {sensor!r} is not provisioned in site {self.site!r}")
        return rec

    def roster_json(self) -> str:
        """``roster.json`` for the hub: who is active or revoked, no secrets (hub/roster.py reads it).

        The hub ingests any sensor the broker lets publish; this tells it whom to refuse (revoked)
        and whom /metrics should expect (active) without a copy of site.json and the CA beside it.
        """
        sensors = {}
        for name, rec in sorted(self.sensors.items()):
            entry: dict[str, Any] = {"status": rec.get("status")}
            if rec.get("status") == "active":
                entry["not_after"] = rec.get("cert", {}).get("not_after")
            elif rec.get("revoked_at"):
                entry["revoked_at"] = rec["revoked_at"]
            sensors[name] = entry
        doc = {"version": 1, "site": self.site, "sensors": sensors}
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> SiteState:
        data = json.loads(text)
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"site state version {data.get('version')!r} is not {STATE_VERSION}")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"site state has unknown fields {sorted(unknown)}")
        return cls(**data)


def load(site_dir: Path) -> SiteState:
    path = site_dir / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `footfall provision init-site` first")
    return SiteState.from_json(path.read_text())


def save(site_dir: Path, state: SiteState) -> Path:
    return write_file(site_dir / STATE_FILE, state.to_json())
