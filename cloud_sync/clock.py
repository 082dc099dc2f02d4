"""The hub's clock as the centre sees it: the offset measured from the centre's replies, applied
to the signing timestamp.

The centre refuses a request whose ``X-Footfall-Timestamp`` is more than 300 s from its clock
(``signing.verify``), so a hub whose clock is off by more than that failed every sync with 401
and retried forever. Every signed request now goes through :meth:`CentralClock.request`, which
reads the centre's time off the reply and, when it can trust it, keeps ``offset`` (centre minus
hub) so the next signature carries the centre's time. One WARNING line says so::

    hub clock is 3600 s behind central; correcting; fix NTP

Only the signing timestamp is corrected: everything the hub stores keeps its own clock, which
is why the log line says to fix NTP rather than pretending nothing is wrong.

Which replies are trusted. The correction moves the window in which this hub's signatures are
valid, so whoever can set it decides when the hub's requests can be used. Had the hub believed
the ``server_time`` of any 401, a man in the middle (or a look-alike host on a plain-http URL)
could answer "it is tomorrow"; the hub would then sign requests dated tomorrow, which the
attacker could hold and deliver to the real centre a day later, when their timestamps are in its
window and their nonces long pruned from its replay cache: a replay window of a day instead of
five minutes. (Setting the hub back instead only makes it fail, which the real centre's next
reply undoes.) So the hub corrects only from

- a *signed* server time: ``X-Footfall-Server-Time`` with ``X-Footfall-Server-Signature``, an
  HMAC with this hub's secret over the time, the hub id and the nonce of the request it answers.
  Only the centre (or the hub) holds the secret, and the nonce is fresh per request, so an
  attacker can neither forge a time nor replay an old signed one. The centre signs its 401s
  too whenever it knows the claimed hub, which is what lets a skewed hub recover; or
- the HTTP ``Date`` header, only over https with the certificate verified: the TLS channel then
  authenticates the reply as the centre's (or its reverse proxy's, which is part of it).

Anything else (plain http, no or a bad server signature) only produces a hint in the log, never
a correction. The correction is also bounded (``max_correction_s``, a day): a clock off by more
than that is a broken clock, not drift, and is logged as an error instead.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests

from footfall.cloud_sync import signing

log = logging.getLogger("footfall.cloud_sync.clock")

MAX_CORRECTION_S = 86400.0
# Below this the hub signs with its own clock: well inside the 300 s window, and round-trip
# noise (the offset is measured to within half a round trip) does not move the correction.
TOLERANCE_S = 30.0


class CentralClock:
    """The hub's clock (``local``) and the correction that makes it the centre's (``now``)."""

    def __init__(
        self,
        local: Callable[[], float] | None = None,
        *,
        max_correction_s: float = MAX_CORRECTION_S,
        tolerance_s: float = TOLERANCE_S,
    ) -> None:
        self.local = local or time.time
        self.max_correction_s = max_correction_s
        self.tolerance_s = tolerance_s
        self.offset = 0.0  # centre minus hub, seconds; 0 while within tolerance
        self.measured: float | None = None  # the last trusted measurement, corrected or not
        self._too_far = False
        self._hinted: int | None = None

    def now(self) -> float:
        """The centre's time as best known: what the signing timestamp carries."""
        return self.local() + self.offset

    # -- measuring ---------------------------------------------------------------------------
    def observe(
        self,
        resp: requests.Response,
        *,
        secret: bytes,
        hub: str,
        nonce: str,
        sent: float,
        received: float,
        tls_verified: bool,
    ) -> bool:
        """Take the centre's time off one reply; True when the correction changed materially."""
        # The centre stamped its time somewhere between our sending and receiving: the midpoint
        # is within half a round trip of the moment it did. A slow round trip (or one a man in
        # the middle stretched by holding our request, which would push the correction forward)
        # could move it by more than the tolerance, so it is not used at all.
        if received - sent > 2 * self.tolerance_s:
            return False
        local = (sent + received) / 2
        server = signing.verified_server_time(secret, hub, nonce, resp.headers)
        if server is None and tls_verified:
            server = _date_header(resp.headers)
        if server is None:
            self._hint(resp, local)
            return False
        self._hinted = None
        return self._set(server - local)

    def _set(self, raw: float) -> bool:
        self.measured = raw
        before = self.offset
        if abs(raw) > self.max_correction_s:
            if not self._too_far:
                log.error(
                    "hub clock is %d s %s central, more than the %d s this hub corrects; not correcting; fix NTP",
                    round(abs(raw)),
                    _side(raw),
                    self.max_correction_s,
                )
            self._too_far = True
            self.offset = 0.0
            return before != 0.0
        self._too_far = False
        if abs(raw) < self.tolerance_s:
            if before:
                log.warning("hub clock is back within %d s of central; correction removed", self.tolerance_s)
            self.offset = 0.0
            return before != 0.0
        self.offset = raw
        if before == 0.0 or abs(raw - before) >= self.tolerance_s:
            log.warning("hub clock is %d s %s central; correcting; fix NTP", round(abs(raw)), _side(raw))
            return True
        return False  # drift within the tolerance: followed silently

    def _hint(self, resp: requests.Response, local: float) -> None:
        """An untrusted 401 that says the clock is off: say so once (no correction, see above)."""
        if resp.status_code != 401:
            return
        server = _float(resp.headers.get(signing.SERVER_TIME_HEADER))
        if server is None:
            try:
                body = resp.json()
            except ValueError:
                body = None
            server = _float(body.get("server_time")) if isinstance(body, dict) else None
        if server is None:
            server = _date_header(resp.headers)
        if server is None or abs(server - local) <= self.tolerance_s:
            return
        skew = round(server - local)
        if self._hinted is not None and abs(skew - self._hinted) < self.tolerance_s:
            return
        self._hinted = skew
        log.warning(
            "central refused this hub (401) and its unauthenticated reply says the hub clock is %d s %s central; "
            "not correcting from an unauthenticated reply (no valid server signature, not verified https); fix NTP",
            abs(skew),
            _side(skew),
        )

    # -- signed requests ---------------------------------------------------------------------
    def request(
        self,
        session: requests.Session,
        config: Any,  # SyncConfig (not imported: config imports signing, keep this leaf-light)
        secret: bytes,
        method: str,
        url: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send one signed request to the centre, learning its clock from the reply.

        A 401 that changed the correction is signed again at once with the corrected time (once:
        a second 401 is a real refusal for the caller to handle)."""
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        tls_verified = parts.scheme == "https" and config.tls_verify_arg() is not False
        for attempt in range(2):
            sent = self.local()
            signed = signing.sign_headers(secret, config.site, method, path, body, now=sent + self.offset)
            resp = session.request(
                method,
                url,
                data=body if body else None,
                headers={**signed, **(headers or {})},
                timeout=(config.connect_timeout_s, config.read_timeout_s),
                verify=config.tls_verify_arg(),
                cert=config.client_cert_arg(),
            )
            changed = self.observe(
                resp,
                secret=secret,
                hub=config.site,
                nonce=signed[signing.NONCE_HEADER],
                sent=sent,
                received=self.local(),
                tls_verified=tls_verified,
            )
            if not (resp.status_code == 401 and changed and attempt == 0):
                return resp
        return resp


def _side(offset: float) -> str:
    return "behind" if offset > 0 else "ahead of"


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out and 0 < out < 1e11 else None


def _date_header(headers: Mapping[str, str]) -> float | None:
    text = headers.get("Date")
    if not text:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    # Whole seconds: the true time is anywhere in the next second, half a second on average.
    return parsed.timestamp() + 0.5 if parsed.tzinfo is not None else None
