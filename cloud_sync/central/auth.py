"""Roles and per-store access for the central service's users and API keys.

Passwords and tokens are handled exactly like the hub's (``footfall.hub.auth``): scrypt
password hashes, server-side sessions stored as SHA-256 of a random token, API keys
``ffk_<prefix>_<secret>`` shown once and stored as SHA-256.

Roles, each including the one below it:

- ``readonly``: stores, health, profiles, segments and their sizes, read only.
- ``marketing``: also creates and recounts segments, exports them, pushes them to a CDP,
  sends segment definitions and scenario settings to the stores.
- ``admin``: also hubs, users, consents and opt-outs on behalf of a shopper.

``stores`` is ``*`` (the whole chain) or a comma-separated list of store ids: a principal
sees only profiles, per-store stats, health and segments of those stores.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from footfall.cloud_sync.central.db import Connection
from footfall.hub.auth import AuthError, hash_password, verify_password

SESSION_COOKIE = "footfall_central_session"
SESSION_TTL_S = 12 * 3600
ROLES = ("readonly", "marketing", "admin")
_KEY_PREFIX = "ffk"
_DUMMY_HASH = hash_password(secrets.token_hex(8))

__all__ = ["AuthError", "Principal", "ROLES", "SESSION_COOKIE"]


@dataclass(frozen=True)
class Principal:
    kind: str  # "user" or "apikey"
    name: str
    role: str
    stores: tuple[str, ...] | None  # None: the whole chain

    def allows(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def sees(self, store: str | None) -> bool:
        return self.stores is None or store in self.stores

    def covers(self, stores: list[str] | None) -> bool:
        """May act on something scoped to ``stores`` (None = the whole chain)?"""
        if self.stores is None:
            return True
        return stores is not None and set(stores) <= set(self.stores)


def parse_stores(text: str | None) -> tuple[str, ...] | None:
    if text is None or text.strip() in ("", "*"):
        return None
    return tuple(sorted({s.strip() for s in text.split(",") if s.strip()}))


def _stores_text(stores: str | list[str] | tuple[str, ...] | None) -> str:
    parsed = parse_stores(stores) if stores is None or isinstance(stores, str) else tuple(sorted(set(stores)))
    return "*" if not parsed else ",".join(parsed)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise AuthError(f"role must be one of {', '.join(ROLES)}")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_user(
    conn: Connection,
    username: str,
    password: str,
    *,
    role: str = "readonly",
    stores: str | list[str] | None = None,
    replace: bool = False,
) -> int:
    username = username.strip()
    _check_role(role)
    if not username or len(username) > 64:
        raise AuthError("user name must be 1-64 characters")
    if len(password) < 8:
        raise AuthError("password must be at least 8 characters")
    hashed = hash_password(password)
    with conn.transaction():
        row = conn.one("SELECT id FROM users WHERE username = ?", (username,))
        if row is not None:
            if not replace:
                raise AuthError(f"user {username!r} exists (use --replace to change it)")
            conn.execute(
                "UPDATE users SET password_hash = ?, role = ?, stores = ?, disabled = 0 WHERE id = ?",
                (hashed, role, _stores_text(stores), row[0]),
            )
            conn.execute("DELETE FROM sessions WHERE user_id = ?", (row[0],))
            return int(row[0])
        cur = conn.execute(
            "INSERT INTO users (username, password_hash, role, stores, created) VALUES (?, ?, ?, ?, ?) RETURNING id",
            (username, hashed, role, _stores_text(stores), time.time()),
        )
        return int(cur.fetchone()[0])


def authenticate(conn: Connection, username: str, password: str) -> int | None:
    row = conn.one("SELECT id, password_hash, disabled FROM users WHERE username = ?", (username,))
    if row is None:
        verify_password(password, _DUMMY_HASH)  # same cost for unknown names
        return None
    if not verify_password(password, row[1]) or row[2]:
        return None
    return int(row[0])


def create_session(conn: Connection, user_id: int, *, ttl_s: float = SESSION_TTL_S) -> str:
    token = secrets.token_urlsafe(32)
    now = time.time()
    with conn.transaction():
        conn.execute("DELETE FROM sessions WHERE expires < ?", (now,))
        conn.execute(
            "INSERT INTO sessions (token_hash, user_id, created, expires) VALUES (?, ?, ?, ?)",
            (_token_hash(token), user_id, now, now + ttl_s),
        )
    return token


def session_principal(conn: Connection, token: str | None) -> Principal | None:
    if not token:
        return None
    row = conn.one(
        "SELECT u.username, u.role, u.stores FROM sessions s JOIN users u ON u.id = s.user_id "
        "WHERE s.token_hash = ? AND s.expires > ? AND u.disabled = 0",
        (_token_hash(token), time.time()),
    )
    return Principal("user", row[0], row[1], parse_stores(row[2])) if row else None


def end_session(conn: Connection, token: str | None) -> None:
    if token:
        conn.execute("DELETE FROM sessions WHERE token_hash = ?", (_token_hash(token),))


def create_api_key(
    conn: Connection, name: str, *, role: str = "readonly", stores: str | list[str] | None = None
) -> str:
    """A key for a machine client; returned once, stored only as its hash."""
    name = name.strip()
    _check_role(role)
    if not name or len(name) > 64:
        raise AuthError("key name must be 1-64 characters")
    if conn.one("SELECT 1 FROM api_keys WHERE name = ?", (name,)):
        raise AuthError(f"an API key named {name!r} exists")
    key = f"{_KEY_PREFIX}_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"
    conn.execute(
        "INSERT INTO api_keys (name, prefix, key_hash, role, stores, created) VALUES (?, ?, ?, ?, ?, ?)",
        (name, key.split("_")[1], _token_hash(key), role, _stores_text(stores), time.time()),
    )
    return key


def revoke_api_key(conn: Connection, name: str) -> bool:
    cur = conn.execute("UPDATE api_keys SET revoked = ? WHERE name = ? AND revoked IS NULL", (time.time(), name))
    return cur.rowcount > 0


def api_key_principal(conn: Connection, key: str | None) -> Principal | None:
    if not key or not key.startswith(_KEY_PREFIX + "_"):
        return None
    wanted = _token_hash(key)
    row = conn.one(
        "SELECT name, key_hash, role, stores FROM api_keys WHERE key_hash = ? AND revoked IS NULL", (wanted,)
    )
    if row is None or not hmac.compare_digest(row[1], wanted):
        return None
    return Principal("apikey", row[0], row[2], parse_stores(row[3]))


def add_hub(conn: Connection, hub_id: str, *, name: str = "", rotate: bool = False) -> str:
    """Register a store hub; returns its signing secret (shown once to the operator, who puts
    it in the hub's secret file). The centre keeps it because HMAC verification needs it."""
    hub_id = hub_id.strip()
    if not hub_id or len(hub_id) > 64 or not all(c.isalnum() or c in "-_." for c in hub_id):
        raise AuthError("hub id must be 1-64 characters of letters, digits, - _ .")
    secret = secrets.token_hex(32)
    with conn.transaction():
        if conn.one("SELECT 1 FROM hubs WHERE hub_id = ?", (hub_id,)):
            if not rotate:
                raise AuthError(f"hub {hub_id!r} exists (use --rotate for a new secret)")
            conn.execute("UPDATE hubs SET secret = ?, disabled = 0 WHERE hub_id = ?", (secret, hub_id))
        else:
            conn.execute(
                "INSERT INTO hubs (hub_id, name, secret, created) VALUES (?, ?, ?, ?)",
                (hub_id, name or hub_id, secret, time.time()),
            )
    return secret
