"""Settings of the central service: a TOML file, then ``FOOTFALL_CENTRAL_*`` env overrides.

db = "postgresql://footfall@db.internal/footfall"   # or a SQLite path (default central.db)
host = "127.0.0.1"
port = 8090
chain_key_file = "/etc/footfall/chain.key"   # the sensors' chain-wide hash key (opt-out page)
secure_cookie = true
max_batch_bytes = 8388608                    # compressed body bound (413 above)
max_inflated_bytes = 67108864                # decompressed bound (gzip bombs)
timestamp_window_s = 300

[retention]
events_days = 400
profiles_days = 400
batches_days = 30

[cdp.main]                                   # one table per CDP push connector
url = "https://cdp.example/api/v1/profiles/import"
api_key_env = "CDP_MAIN_KEY"                 # or api_key_file; never the key itself
api_key_header = "X-API-Key"
batch_size = 500
mapping = { device = "external_id", phone_md5 = "phone_md5", visits = "visits" }
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from footfall.cloud_sync.central.cdp import DEFAULT_MAPPING, CdpConfig
from footfall.cloud_sync.central.consent import Retention


@dataclass
class CentralConfig:
    db: str = "central.db"
    host: str = "127.0.0.1"
    port: int = 8090
    chain_key_file: str | None = None
    secure_cookie: bool = False
    max_batch_bytes: int = 8 * 1024 * 1024
    max_inflated_bytes: int = 64 * 1024 * 1024
    max_records: int = 50_000
    timestamp_window_s: int = 300
    retention: Retention = field(default_factory=Retention)
    cdp: dict[str, CdpConfig] = field(default_factory=dict)

    def chain_key(self) -> bytes | None:
        if not self.chain_key_file:
            return None
        from footfall.edge_agent.identity import load_key

        return load_key(self.chain_key_file)


def _secret(name: str, table: dict[str, Any]) -> str:
    if "api_key_file" in table:
        return Path(table["api_key_file"]).read_text().strip()
    if "api_key_env" in table:
        value = os.environ.get(table["api_key_env"], "").strip()
        if not value:
            raise ValueError(f"cdp.{name}: environment variable {table['api_key_env']} is empty")
        return value
    raise ValueError(f"cdp.{name}: give api_key_file or api_key_env (keys never live in the config)")


def load(path: str | Path | None = None) -> CentralConfig:
    data: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    cfg = CentralConfig()
    for name in (
        "db",
        "host",
        "port",
        "chain_key_file",
        "secure_cookie",
        "max_batch_bytes",
        "max_inflated_bytes",
        "max_records",
        "timestamp_window_s",
    ):
        if name in data:
            setattr(cfg, name, data[name])
        env = os.environ.get(f"FOOTFALL_CENTRAL_{name.upper()}")
        if env is not None:
            current = getattr(cfg, name)
            if isinstance(current, bool):
                setattr(cfg, name, env.lower() in ("1", "true", "yes"))
            elif isinstance(current, int):
                setattr(cfg, name, int(env))
            else:
                setattr(cfg, name, env)
    if "retention" in data:
        cfg.retention = Retention(**data["retention"])
    for name, table in data.get("cdp", {}).items():
        cfg.cdp[name] = CdpConfig(
            url=table["url"],
            api_key=_secret(name, table),
            api_key_header=table.get("api_key_header", "X-API-Key"),
            mapping=table.get("mapping", dict(DEFAULT_MAPPING)),
            batch_size=int(table.get("batch_size", 500)),
            retries=int(table.get("retries", 5)),
        )
    return cfg
