"""HMAC request signing shared by the hub (client) and the central service (server).

canonical = METHOD "\\n" PATH(with query) "\\n" TIMESTAMP "\\n" NONCE "\\n" hex SHA-256(raw body bytes)

The signature covers the body bytes exactly as sent (compressed), so the server must verify
before decompressing. Nonce replay needs storage, so `verify` only checks the signature and the
timestamp window; the server then calls `NonceCache.check_and_add` (or its own DB-backed
equivalent) to reject a nonce seen within the window.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections.abc import Mapping
from pathlib import Path

HUB_HEADER = "X-Footfall-Hub"
TIMESTAMP_HEADER = "X-Footfall-Timestamp"
NONCE_HEADER = "X-Footfall-Nonce"
SIGNATURE_HEADER = "X-Footfall-Signature"
# The centre's clock on its replies (docs/sync-protocol.md, "Clock offset"): the time on every
# reply, and on replies to a known hub an HMAC over it bound to the request's nonce.
SERVER_TIME_HEADER = "X-Footfall-Server-Time"
SERVER_SIGNATURE_HEADER = "X-Footfall-Server-Signature"
DEFAULT_WINDOW_S = 300

_NONCE_RE = re.compile(r"^[0-9a-f]{32}$")
_SIG_RE = re.compile(r"^[0-9a-f]{64}$")


class SignatureError(Exception):
    """Request authentication failed; `reason` is a short machine-friendly code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body or b"").hexdigest()


def canonical(method: str, path_with_query: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    return "\n".join([method.upper(), path_with_query, str(timestamp), nonce, body_digest(body)]).encode("utf-8")


def signature(secret: bytes, method: str, path_with_query: str, timestamp: str, nonce: str, body: bytes) -> str:
    return hmac.new(secret, canonical(method, path_with_query, timestamp, nonce, body), hashlib.sha256).hexdigest()


def sign_headers(
    secret: bytes,
    hub: str,
    method: str,
    path_with_query: str,
    body: bytes,
    *,
    now: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Return the four X-Footfall-* headers for one request."""
    if not secret:
        raise ValueError("empty signing secret")
    ts = str(int(time.time() if now is None else now))
    nonce = nonce or secrets.token_hex(16)
    return {
        HUB_HEADER: hub,
        TIMESTAMP_HEADER: ts,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: signature(secret, method, path_with_query, ts, nonce, body),
    }


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # Starlette/requests headers are case-insensitive mappings; plain dicts may not be.
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        for k, v in headers.items():
            if k.lower() == lower:
                return v
    return value


def verify(
    secret: bytes,
    headers: Mapping[str, str],
    method: str,
    path: str,
    body: bytes,
    *,
    now: float | None = None,
    window_s: int = DEFAULT_WINDOW_S,
) -> None:
    """Raise SignatureError unless headers carry a valid, in-window signature for this request.

    `path` must include the query string exactly as the client sent it.
    Reasons: missing_header, bad_timestamp, stale_timestamp, bad_nonce, bad_signature.
    """
    values = {}
    for name in (HUB_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER):
        v = _header(headers, name)
        if not v:
            raise SignatureError("missing_header", name)
        values[name] = v.strip()
    ts = values[TIMESTAMP_HEADER]
    if not ts.isdigit():
        raise SignatureError("bad_timestamp", "not an integer")
    current = time.time() if now is None else now
    if abs(current - int(ts)) > window_s:
        raise SignatureError("stale_timestamp", f"skew {int(current - int(ts))}s > {window_s}s")
    nonce = values[NONCE_HEADER].lower()
    if not _NONCE_RE.match(nonce):
        raise SignatureError("bad_nonce", "expected 32 hex characters")
    sig = values[SIGNATURE_HEADER].lower()
    if not _SIG_RE.match(sig):
        raise SignatureError("bad_signature", "malformed")
    expected = signature(secret, method, path, ts, values[NONCE_HEADER], body)
    if not hmac.compare_digest(expected, sig):
        raise SignatureError("bad_signature")


def _server_time_message(hub: str, nonce: str, server_time: str) -> bytes:
    # Its own first line, so a signed server time can never pass for a signed request (whose
    # canonical form starts with an upper-case method) and the other way round.
    return "\n".join(["footfall-server-time", hub, nonce.lower(), server_time]).encode("utf-8")


def server_time_signature(secret: bytes, hub: str, nonce: str, server_time: str) -> str:
    """The centre's HMAC over its time, bound to the hub and to the nonce of the request it answers."""
    return hmac.new(secret, _server_time_message(hub, nonce, server_time), hashlib.sha256).hexdigest()


def verified_server_time(secret: bytes, hub: str, nonce: str, headers: Mapping[str, str]) -> float | None:
    """The server time of a reply to our request with ``nonce``, or None unless the centre signed it.

    The nonce was random and fresh in our request, so a valid signature also proves the time is
    the answer to this request and not one recorded earlier."""
    text = (_header(headers, SERVER_TIME_HEADER) or "").strip()
    sig = (_header(headers, SERVER_SIGNATURE_HEADER) or "").strip().lower()
    if not text or not _SIG_RE.match(sig):
        return None
    if not hmac.compare_digest(server_time_signature(secret, hub, nonce, text), sig):
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and 0 < value < 1e11 else None


def hub_of(headers: Mapping[str, str]) -> str | None:
    """The claimed hub id, so the server can look up that hub's secret before `verify`."""
    return _header(headers, HUB_HEADER)


class NonceCache:
    """In-memory replay guard: remembers (hub, nonce) for `window_s` (plus slack).

    A nonce only needs remembering for as long as its timestamp would pass `verify`; older
    entries are pruned. A multi-process server should use a DB table with the same semantics.
    """

    def __init__(self, window_s: int = DEFAULT_WINDOW_S, max_entries: int = 1_000_000) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def check_and_add(self, hub: str, nonce: str, *, now: float | None = None) -> None:
        """Raise SignatureError('replay') when this nonce was already used by this hub."""
        current = time.time() if now is None else now
        key = (hub, nonce.lower())
        with self._lock:
            self._prune(current)
            if key in self._seen:
                raise SignatureError("replay", "nonce already seen")
            if len(self._seen) >= self.max_entries:
                # Fail closed rather than forget nonces that are still inside the window.
                raise SignatureError("replay", "nonce cache full")
            self._seen[key] = current

    def _prune(self, current: float) -> None:
        horizon = current - 2 * self.window_s
        if self._seen and next(iter(self._seen.values())) < horizon:
            self._seen = {k: t for k, t in self._seen.items() if t >= horizon}

    def __len__(self) -> int:
        return len(self._seen)


def load_secret(*, file: str | os.PathLike | None = None, env: str | None = None) -> bytes:
    """Read a secret from a file (stripped) or an environment variable; never from the repo."""
    if file:
        data = Path(file).read_bytes().strip()
        if not data:
            raise ValueError(f"secret file {file} is empty")
        return data
    if env:
        value = os.environ.get(env, "").strip()
        if not value:
            raise ValueError(f"environment variable {env} is not set")
        return value.encode("utf-8")
    raise ValueError("no secret source given (file or env)")
