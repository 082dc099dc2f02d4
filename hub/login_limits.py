"""Limits on wrong passwords at the dashboard's login (the central service's uses them too).

``LoginLimiter`` counts them over a sliding ``window_s``:

- per (user name, client address): ``pair_failures`` wrong passwords lock that pair only, so
  an attacker at one address cannot lock the manager out at another;
- per client address across user names: ``address_failures`` (password spraying);
- per user name across addresses: past ``user_free_failures`` attempts from addresses the
  user has not logged in from recently are spaced out exponentially, up to ``slow_max_s``
  apart: a botnet is slowed, the owner is never locked out (not slowed at all from an address
  they logged in from recently; from a new one each wait is at most ``slow_max_s``).

A slot is taken, under one lock, *before* the password is checked and given back on success,
so N parallel attempts let at most the allowed number through. A successful login clears its
pair. Lockouts are logged (user name and address, never the password) on the
``footfall.hub.auth`` logger. The address is ``forwarded.client_address``'s.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_FAILURES = 5
FAILURE_WINDOW_S = 300

# Not __name__: lockouts keep the logger name they have always had, which log filters and
# alerts match.
log = logging.getLogger("footfall.hub.auth")


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
