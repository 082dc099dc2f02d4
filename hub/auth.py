"""Store-manager logins and machine API keys for the hub's dashboard and API.

- Passwords: ``hashlib.scrypt`` (n=2**14, r=8, p=1) with a random 16-byte salt per user,
  stored as ``scrypt$n$r$p$salt$hash``; checked with a constant-time compare.
- Sessions: server-side rows in SQLite. The browser holds only a random token (HttpOnly,
  SameSite=Strict cookie); the database holds its SHA-256, so a copied database file holds
  no usable session. Sessions expire after ``SESSION_TTL_S``; logout deletes the row.
- API keys: ``ffk_<prefix>_<secret>``, shown once at creation, stored as SHA-256 (the secret
  is 256 random bits, so a plain hash is enough), sent as ``Authorization: Bearer <key>`` or
  ``X-API-Key: <key>``; revocable.

Wrong passwords are limited by ``hub/login_limits.py``; the client address a login is counted
against, and whether it came over HTTPS, are ``hub/forwarded.py``'s.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import sqlite3
import time
from dataclasses import dataclass

SESSION_COOKIE = "footfall_session"
SESSION_TTL_S = 12 * 3600
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_KEY_PREFIX = "ffk"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, maxmem=64 * 1024 * 1024, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), maxmem=64 * 1024 * 1024, dklen=32
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, _unb64(digest))


# Checked against when the user does not exist, so that a wrong name costs as long as a wrong
# password and response times do not reveal which user names exist.
_DUMMY_HASH = hash_password(secrets.token_hex(8))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AuthError(ValueError):
    """A user-facing problem with a user or key (duplicate name, weak password)."""


def add_user(conn: sqlite3.Connection, username: str, password: str, *, replace: bool = False) -> int:
    username = username.strip()
    if not username or len(username) > 64:
        raise AuthError("user name must be 1-64 characters")
    if len(password) < 8:
        raise AuthError("password must be at least 8 characters")
    hashed = hash_password(password)
    with conn:
        row = conn.execute("SELECT id FROM users WHERE username = ?", (username,)).fetchone()
        if row is not None:
            if not replace:
                raise AuthError(f"user {username!r} exists (use --replace to set a new password)")
            conn.execute("UPDATE users SET password_hash = ?, disabled = 0 WHERE id = ?", (hashed, row[0]))
            # A new password ends every session opened with the old one.
            conn.execute("DELETE FROM sessions WHERE user_id = ?", (row[0],))
            return int(row[0])
        cur = conn.execute(
            "INSERT INTO users (username, password_hash, created) VALUES (?, ?, ?)", (username, hashed, time.time())
        )
        return int(cur.lastrowid)


def authenticate(conn: sqlite3.Connection, username: str, password: str) -> int | None:
    """The user's id when name and password match an enabled user, else None."""
    row = conn.execute("SELECT id, password_hash, disabled FROM users WHERE username = ?", (username,)).fetchone()
    if row is None:
        verify_password(password, _DUMMY_HASH)
        return None
    if not verify_password(password, row[1]) or row[2]:
        return None
    return int(row[0])


def create_session(conn: sqlite3.Connection, user_id: int, *, ttl_s: float = SESSION_TTL_S) -> str:
    token = secrets.token_urlsafe(32)
    now = time.time()
    with conn:
        conn.execute("DELETE FROM sessions WHERE expires < ?", (now,))
        conn.execute(
            "INSERT INTO sessions (token_hash, user_id, created, expires) VALUES (?, ?, ?, ?)",
            (_token_hash(token), user_id, now, now + ttl_s),
        )
    return token


@dataclass(frozen=True)
class Principal:
    """Who is calling: a logged-in user or an API key."""

    kind: str  # "user" or "apikey"
    name: str


def session_user(conn: sqlite3.Connection, token: str | None, *, now: float | None = None) -> Principal | None:
    if not token:
        return None
    now = time.time() if now is None else now
    row = conn.execute(
        "SELECT u.username FROM sessions s JOIN users u ON u.id = s.user_id "
        "WHERE s.token_hash = ? AND s.expires > ? AND u.disabled = 0",
        (_token_hash(token), now),
    ).fetchone()
    return Principal("user", row[0]) if row else None


def end_session(conn: sqlite3.Connection, token: str | None) -> None:
    if token:
        with conn:
            conn.execute("DELETE FROM sessions WHERE token_hash = ?", (_token_hash(token),))


def create_api_key(conn: sqlite3.Connection, name: str) -> str:
    """Create a key for a machine client; returns the key, which is never stored or shown again."""
    name = name.strip()
    if not name or len(name) > 64:
        raise AuthError("key name must be 1-64 characters")
    prefix = secrets.token_hex(4)
    key = f"{_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    try:
        with conn:
            conn.execute(
                "INSERT INTO api_keys (name, prefix, key_hash, created) VALUES (?, ?, ?, ?)",
                (name, prefix, _token_hash(key), time.time()),
            )
    except sqlite3.IntegrityError:
        raise AuthError(f"an API key named {name!r} exists") from None
    return key


def revoke_api_key(conn: sqlite3.Connection, name: str) -> bool:
    with conn:
        cur = conn.execute("UPDATE api_keys SET revoked = ? WHERE name = ? AND revoked IS NULL", (time.time(), name))
    return cur.rowcount > 0


def api_key_principal(conn: sqlite3.Connection, key: str | None) -> Principal | None:
    if not key or not key.startswith(_KEY_PREFIX + "_"):
        return None
    wanted = _token_hash(key)
    row = conn.execute(
        "SELECT name, key_hash FROM api_keys WHERE key_hash = ? AND revoked IS NULL", (wanted,)
    ).fetchone()
    if row is None or not hmac.compare_digest(row[1], wanted):
        return None
    return Principal("apikey", row[0])
