"""Store-manager logins and machine API keys for the hub's dashboard and API.

- Passwords: ``hashlib.scrypt`` (n=2**14, r=8, p=1) with a random 16-byte salt per user,
  stored as ``scrypt$n$r$p$salt$hash``; checked with a constant-time compare.
- Sessions: server-side rows in SQLite. The browser holds only a random token (HttpOnly,
  SameSite=Strict cookie); the database holds its SHA-256, so a copied database file holds
  no usable session. Sessions expire after ``SESSION_TTL_S``; logout deletes the row.
- API keys: ``ffk_<prefix>_<secret>``, shown once at creation, stored as SHA-256 (the secret
  is 256 random bits, so a plain hash is enough), sent as ``Authorization: Bearer <key>`` or
  ``X-API-Key: <key>``; revocable.
- Login limits (``LoginLimiter``), all over a sliding ``window_s``:
  * per (user name, client address): ``pair_failures`` wrong passwords lock that pair only, so
    an attacker at one address cannot lock the manager out at another;
  * per client address across user names: ``address_failures`` (password spraying);
  * per user name across addresses: past ``user_free_failures`` attempts from addresses the
    user has not logged in from recently are spaced out exponentially, up to ``slow_max_s``
    apart: a botnet is slowed, the owner is never locked out (not slowed at all from an address
    they logged in from recently; from a new one each wait is at most ``slow_max_s``).
  A slot is taken, under one lock, *before* the password is checked and given back on success,
  so N parallel attempts let at most the allowed number through. A successful login clears its
  pair. Lockouts are logged (user name and address, never the password) on the
  ``footfall.hub.auth`` logger. IPv6 clients are counted per /64, the block one host controls.
- Client address: the socket peer; ``X-Forwarded-For`` only when the peer is a configured
  trusted proxy (``client_address``), else any client could pick the address it is counted as.
- The session cookie is ``Secure`` whenever the request came over HTTPS: served with TLS, or
  from a trusted proxy whose ``X-Forwarded-Proto`` says https (``forwarded_https``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import math
import secrets
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

SESSION_COOKIE = "footfall_session"
SESSION_TTL_S = 12 * 3600
MAX_FAILURES = 5
FAILURE_WINDOW_S = 300
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_KEY_PREFIX = "ffk"

log = logging.getLogger(__name__)


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


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(specs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``["127.0.0.1", "10.0.0.0/8"]`` -> networks; raises ValueError naming a bad entry."""
    out = []
    for spec in specs:
        spec = spec.strip()
        if not spec:
            continue
        try:
            out.append(ipaddress.ip_network(spec, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {spec!r}") from None
    return tuple(out)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _rate_key(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    # One IPv6 host usually has a whole /64 to itself: counting single addresses would hand an
    # attacker 2**64 fresh limits.
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]) -> str:
    """The address a login is counted against.

    ``peer`` is the socket peer, ``forwarded_for`` the request's ``X-Forwarded-For`` header
    values. The header is followed only from a trusted proxy, right to left (each proxy appends
    the address it received from), stopping at the first hop that is not itself a trusted proxy:
    the entries left of it were written by the client and prove nothing.
    """
    if not peer:
        return "unknown"
    addr = _ip(peer)
    if addr is None:
        return peer  # not an IP (a test client, a Unix socket): counted under its own name
    hops = [h for value in forwarded_for for h in value.split(",") if h.strip()]
    while hops and any(addr in net for net in trusted):
        hop = _ip(hops.pop())
        if hop is None:
            break  # a garbled entry: count the request against the proxy that handed it over
        addr = hop
    return _rate_key(addr)


def forwarded_https(peer: str | None, forwarded_proto: Sequence[str], trusted: Sequence[IPNetwork]) -> bool:
    """Whether the reverse proxy in front says its client spoke HTTPS to it.

    ``forwarded_proto`` is the request's ``X-Forwarded-Proto`` header values. Believed only from
    a trusted proxy (any client can send the header), and only its last entry: the one the
    proxy next to us wrote about the connection it accepted.
    """
    addr = _ip(peer) if peer else None
    if addr is None or not any(addr in net for net in trusted):
        return False
    values = [v.strip().lower() for value in forwarded_proto for v in value.split(",") if v.strip()]
    return bool(values) and values[-1] == "https"


@dataclass(frozen=True)
class LoginLimits:
    """How many wrong passwords are allowed before a client waits (see the module docstring)."""

    pair_failures: int = MAX_FAILURES  # per (user name, address)
    address_failures: int = 20  # per address, all user names together
    user_free_failures: int = 10  # per user name, all addresses, before attempts are spaced out
    window_s: float = FAILURE_WINDOW_S
    slow_base_s: float = 1.0  # first spacing past user_free_failures; doubles with each failure
    slow_max_s: float = 30.0  # longest spacing: the most a distributed attack can delay the owner
    known_address_s: float = 30 * 86400  # a login this recent from an address exempts it from spacing


@dataclass
class LoginAttempt:
    """A login the limiter admitted (``retry_after == 0``) or refused (the wait, and why)."""

    username: str
    address: str
    at: float
    retry_after: float = 0.0
    reason: str = ""  # refused: "user and address", "address" or "user"
    _done: bool = field(default=False, repr=False)

    @property
    def allowed(self) -> bool:
        return self.retry_after <= 0


class LoginLimiter:
    """Failed logins per (user, address), per address and per user in a sliding window.

    In memory: one hub process serves one store (``footfall hub serve`` runs one worker), and a
    restart forgetting a lockout costs an attacker a restart they cannot cause.
    """

    _PRUNE_EVERY = 256

    def __init__(self, limits: LoginLimits | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or LoginLimits()
        self.clock = clock
        self._pair: dict[tuple[str, str], deque[float]] = {}
        self._address: dict[str, deque[float]] = {}
        self._user: dict[str, deque[float]] = {}
        self._user_next: dict[str, float] = {}  # earliest admitted attempt from an unknown address
        self._known: dict[tuple[str, str], float] = {}  # last successful login per (user, address)
        self._alerted: dict[str, float] = {}  # lockouts already logged, until when
        self._calls = 0
        self._lock = threading.Lock()

    def _recent(self, table: dict, key: object, now: float) -> deque[float] | None:
        q = table.get(key)
        if q is not None:
            while q and q[0] <= now - self.limits.window_s:
                q.popleft()
        return q

    def _count(self, table: dict, key: object, now: float) -> int:
        q = self._recent(table, key, now)
        return len(q) if q else 0

    def _wait(self, table: dict, key: object, now: float, limit: int) -> float:
        """Seconds until ``key`` is below ``limit`` failures again; 0 when it is now."""
        q = self._recent(table, key, now)
        if not q or len(q) < limit:
            return 0.0
        # The (len - limit + 1)-th oldest failure has to leave the window.
        return q[len(q) - limit] + self.limits.window_s - now

    def _known_address(self, username: str, address: str, now: float) -> bool:
        last = self._known.get((username, address))
        return last is not None and now - last < self.limits.known_address_s

    def begin(self, username: str, address: str) -> LoginAttempt:
        """Admit or refuse a login attempt. An admitted one counts as a failure at once (so
        parallel attempts see it) until ``finish`` says otherwise: call ``finish`` exactly once."""
        lim = self.limits
        pair = (username, address)
        with self._lock:
            now = self.clock()
            self._calls += 1
            if self._calls % self._PRUNE_EVERY == 0:
                self._prune(now)
            attempt = LoginAttempt(username, address, now)
            checks = [
                ("user and address", self._wait(self._pair, pair, now, lim.pair_failures)),
                ("address", self._wait(self._address, address, now, lim.address_failures)),
            ]
            slowed = self._count(self._user, username, now) >= lim.user_free_failures and not self._known_address(
                username, address, now
            )
            if slowed:
                checks.append(("user", self._user_next.get(username, 0.0) - now))
            reason, wait = max(checks, key=lambda c: c[1])
            if wait > 0:
                attempt.retry_after, attempt.reason, attempt._done = wait, reason, True
                return attempt
            if slowed:
                excess = self._count(self._user, username, now) - lim.user_free_failures
                gap = min(lim.slow_base_s * 2.0 ** min(excess, 32), lim.slow_max_s)
                self._user_next[username] = now + gap
                if self._alerted.get(f"user:{username}", -math.inf) <= now:
                    self._alerted[f"user:{username}"] = now + lim.window_s
                    log.warning(
                        "login slowed down for user %r: %d failed logins from several addresses in %.0f s",
                        username,
                        lim.user_free_failures,
                        lim.window_s,
                    )
            self._pair.setdefault(pair, deque()).append(now)
            self._address.setdefault(address, deque()).append(now)
            self._user.setdefault(username, deque()).append(now)
            return attempt

    def finish(self, attempt: LoginAttempt, ok: bool | None) -> None:
        """Record an admitted attempt's outcome: True (right password: clears its pair), False
        (wrong: the failure stays counted), None (no verdict, e.g. a database error: given back)."""
        if attempt._done:
            return
        attempt._done = True
        pair = (attempt.username, attempt.address)
        with self._lock:
            now = self.clock()
            if ok is False:
                self._log_lockouts(attempt, now)
                return
            for table, key in ((self._pair, pair), (self._address, attempt.address), (self._user, attempt.username)):
                q = table.get(key)
                if q is not None and attempt.at in q:  # absent once it slid out of the window
                    q.remove(attempt.at)
            if ok:
                # Only the pair: the address may be spraying other names, the name may be under
                # attack from elsewhere.
                self._pair.pop(pair, None)
                self._alerted.pop(f"pair:{attempt.username}@{attempt.address}", None)
                self._known[pair] = now

    def _log_lockouts(self, attempt: LoginAttempt, now: float) -> None:
        lim = self.limits
        pair = (attempt.username, attempt.address)
        for key, table, tkey, limit, what in (
            (f"pair:{attempt.username}@{attempt.address}", self._pair, pair, lim.pair_failures, "user and address"),
            (f"address:{attempt.address}", self._address, attempt.address, lim.address_failures, "address"),
        ):
            wait = self._wait(table, tkey, now, limit)
            if wait > 0 and self._alerted.get(key, -math.inf) <= now:
                self._alerted[key] = now + wait
                log.warning(
                    "login locked for %s: user %r from %s, %d failed logins in %.0f s; next try in %.0f s",
                    what,
                    attempt.username,
                    attempt.address,
                    limit,
                    lim.window_s,
                    wait,
                )

    def _prune(self, now: float) -> None:
        """Drop state nobody needs any more, so random names and addresses cannot grow memory."""
        for table in (self._pair, self._address, self._user):
            for key in [k for k in table if not self._recent(table, k, now)]:
                del table[key]
        for key in [k for k, t in self._user_next.items() if t <= now]:
            del self._user_next[key]
        for key in [k for k, t in self._alerted.items() if t <= now]:
            del self._alerted[key]
        for key in [k for k, t in self._known.items() if now - t >= self.limits.known_address_s]:
            del self._known[key]


# ---------------------------------------------------------------- a generic failure limiter
@dataclass
class Admission:
    """What :meth:`FailureLimiter.admit` decided: answer the request, or refuse it for
    ``retry_after`` seconds because the ``reason`` dimension (e.g. "key", "address") is locked."""

    allowed: bool
    retry_after: float = 0.0
    reason: str = ""
    locked: tuple[str, ...] = ()  # dimensions this very failure locked


class FailureLimiter:
    """Failures per named dimension (e.g. per API key and per client address) in a sliding
    window; a key that reaches its dimension's limit is locked out for one window.

    Unlike :class:`LoginLimiter` the caller learns the outcome (failed or not) *before* it
    answers, from a lookup with no side effects, and hands it to :meth:`admit`: the lockout test
    and the count of the failure happen under one lock, and a refused request is answered with
    nothing learnt from the lookup. So N parallel failures get at most the limit answered, while
    parallel successes (fifty tills on one code) never wait on each other's slots.
    In memory, for the same reason as :class:`LoginLimiter`.
    """

    _PRUNE_EVERY = 256

    def __init__(
        self,
        limits: dict[str, int],
        window_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        what: str = "attempts",
        logger: logging.Logger | None = None,
    ) -> None:
        if window_s <= 0 or any(n < 1 for n in limits.values()):
            raise ValueError("failure limits must be >= 1 and the window > 0 s")
        self.limits = dict(limits)
        self.window_s = window_s
        self.clock = clock
        self.what = what
        self.log = logger or log
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._locked_until: dict[tuple[str, str], float] = {}
        self.refused: dict[str, int] = dict.fromkeys(limits, 0)
        self.lockouts: dict[str, int] = dict.fromkeys(limits, 0)
        self._calls = 0
        self._lock = threading.Lock()

    def admit(self, keys: dict[str, str], *, failed: bool, detail: str = "") -> Admission:
        """Refuse if any of ``keys`` (dimension -> key) is locked; else count a failure (when
        ``failed``), locking each dimension it brings to its limit. ``detail`` goes into the
        lockout log line (never a secret)."""
        alerts: list[tuple[str, str, int]] = []
        with self._lock:
            now = self.clock()
            self._calls += 1
            if self._calls % self._PRUNE_EVERY == 0:
                self._prune(now)
            waits = [(self._locked_until.get((dim, key), -math.inf) - now, dim) for dim, key in keys.items()]
            wait, reason = max(waits, default=(0.0, ""))
            if wait > 0:
                self.refused[reason] = self.refused.get(reason, 0) + 1
                return Admission(False, wait, reason)
            locked = []
            if failed:
                for dim, key in keys.items():
                    q = self._failures.setdefault((dim, key), deque())
                    while q and q[0] <= now - self.window_s:
                        q.popleft()
                    q.append(now)
                    if len(q) >= self.limits[dim]:
                        # Locked for a whole window from the failure that reached the limit: by
                        # then every failure counted towards it has left the window too.
                        self._locked_until[(dim, key)] = now + self.window_s
                        q.clear()
                        self.lockouts[dim] = self.lockouts.get(dim, 0) + 1
                        locked.append(dim)
                        alerts.append((dim, key, self.limits[dim]))
        for dim, key, limit in alerts:
            self.log.warning(
                "%s locked for %s %s: %d failures in %.0f s; next try in %.0f s%s",
                self.what, dim, key, limit, self.window_s, self.window_s, f" ({detail})" if detail else "",
            )  # fmt: skip
        return Admission(True, locked=tuple(locked))

    def locked_now(self) -> dict[str, int]:
        """How many keys of each dimension are locked out at the moment."""
        with self._lock:
            now = self.clock()
            out = dict.fromkeys(self.limits, 0)
            for (dim, _), until in self._locked_until.items():
                if until > now:
                    out[dim] += 1
            return out

    def _prune(self, now: float) -> None:
        """Forget expired state, so that an attacker rotating addresses cannot grow memory."""
        for k in [k for k, q in self._failures.items() if not q or q[-1] <= now - self.window_s]:
            del self._failures[k]
        for k in [k for k, until in self._locked_until.items() if until <= now]:
            del self._locked_until[k]
