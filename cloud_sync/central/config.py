"""Settings of the central service: a TOML file, then ``FOOTFALL_CENTRAL_*`` env overrides.

db = "postgresql://footfall@db.internal/footfall"   # or a SQLite path (default central.db)
db_password_file = "db.password"             # the PostgreSQL password (a credential, see below)
host = "127.0.0.1"
port = 8090
chain_key_file = "chain.key"                 # the sensors' chain-wide hash key (opt-out page)
secure_cookie = true
max_batch_bytes = 8388608                    # compressed body bound (413 above)
max_inflated_bytes = 67108864                # decompressed bound (gzip bombs)
sync_concurrency = 4                         # hub batches applied at once per process
sync_wait_s = 20                             # a batch waits this long for its turn, then 503
timestamp_window_s = 300
fleet_stale_after_h = 2                      # fleet page: a hub silent this long is shown stale
fleet_warn_days = 30                         # fleet page: certificates/CRLs ending this soon

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

Secret files (``chain_key_file``, ``db_password_file``, ``api_key_file``) are systemd
credentials: under ``systemd/footfall-central.service`` (a DynamicUser, which can read no
root-only file) systemd copies each ``LoadCredential=NAME:/etc/footfall/credentials/NAME`` into
``$CREDENTIALS_DIRECTORY``, readable by this service only, and a bare name (no ``/``) is looked up
there. Without ``$CREDENTIALS_DIRECTORY`` a bare name is relative to the working directory, and
a path is a path, as before; so an administrator's command can use the same config with
``CREDENTIALS_DIRECTORY=/etc/footfall/credentials``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from footfall.cloud_sync.central.cdp import DEFAULT_MAPPING, CdpConfig
from footfall.cloud_sync.central.consent import Retention


@dataclass
class CentralConfig:
    db: str = "central.db"
    db_password_file: str | None = None
    host: str = "127.0.0.1"
    port: int = 8090
    chain_key_file: str | None = None
    secure_cookie: bool = False
    max_batch_bytes: int = 8 * 1024 * 1024
    max_inflated_bytes: int = 64 * 1024 * 1024
    max_records: int = 50_000
    # Per service process (``footfall central serve --workers N`` runs N): batches applied at
    # once, and how long one waits for a turn before the hub is told 503 (it retries later).
    sync_concurrency: int = 4
    sync_wait_s: float = 20.0
    timestamp_window_s: int = 300
    # The fleet page (fleet.py): a report older than this is stale; expiry this close is flagged.
    fleet_stale_after_h: float = 2.0
    fleet_warn_days: float = 30.0
    retention: Retention = field(default_factory=Retention)
    cdp: dict[str, CdpConfig] = field(default_factory=dict)

    def chain_key(self) -> bytes | None:
        if not self.chain_key_file:
            return None
        from footfall.edge_agent.identity import load_key

        path = credential_path(self.chain_key_file)
        read_credential(self.chain_key_file, "chain_key_file")  # a missing or unreadable file, explained
        return load_key(path)


CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"


def credential_path(value: str) -> Path:
    """Where a secret file setting points: a bare name is a systemd credential when the service
    manager passed ``$CREDENTIALS_DIRECTORY``; anything else is an ordinary path."""
    directory = os.environ.get(CREDENTIALS_ENV)
    if directory and "/" not in value:
        return Path(directory) / value
    return Path(value)


def read_credential(value: str, setting: str) -> str:
    """The secret in the file ``setting`` names, stripped; errors say how to hand it over."""
    path = credential_path(value)
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        if os.environ.get(CREDENTIALS_ENV) and "/" not in value:
            raise ValueError(
                f"{setting}: no credential {value!r} in ${CREDENTIALS_ENV} ({path.parent}); "
                f"the unit needs LoadCredential={value}:/etc/footfall/credentials/{value}"
            ) from None
        raise ValueError(f"{setting}: {path} does not exist") from None
    except PermissionError:
        raise ValueError(
            f"{setting}: {path} is not readable by this user; under systemd pass it as a credential "
            f"(LoadCredential={path.name}:{path} and {setting} = {path.name!r}), never make it world-readable"
        ) from None
    if not text:
        raise ValueError(f"{setting}: {path} is empty")
    return text


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("db_password_file: only a postgresql:// database has a password")
    if parts.password is not None:
        raise ValueError("db_password_file: the db URL has a password already; keep it in one place, the file")
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if not userinfo:
        raise ValueError("db_password_file: the db URL names no user (postgresql://USER@host/db)")
    netloc = f"{userinfo}:{quote(password, safe='')}@{hostport}"
    return urlunsplit(parts._replace(netloc=netloc))


def _secret(name: str, table: dict[str, Any]) -> str:
    if "api_key_file" in table:
        return read_credential(table["api_key_file"], f"cdp.{name}.api_key_file")
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
        "db_password_file",
        "host",
        "port",
        "chain_key_file",
        "secure_cookie",
        "max_batch_bytes",
        "max_inflated_bytes",
        "max_records",
        "sync_concurrency",
        "sync_wait_s",
        "timestamp_window_s",
        "fleet_stale_after_h",
        "fleet_warn_days",
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
            elif isinstance(current, float):
                setattr(cfg, name, float(env))
            else:
                setattr(cfg, name, env)
    if cfg.db_password_file:
        cfg.db = _with_password(cfg.db, read_credential(cfg.db_password_file, "db_password_file"))
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
