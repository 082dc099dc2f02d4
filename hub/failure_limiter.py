"""A generic failure limiter: failures per named dimension (e.g. per API key and per client
address) in a sliding window, locking a key out for a window once it reaches its limit.

The POS coupon lookups use it (``hub/o2o/pos.py``); the login has its own
(``hub/login_limits.py``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# Not __name__: by default lockouts keep the logger name they have always had, which log
# filters and alerts match.
log = logging.getLogger("footfall.hub.auth")


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
