"""HTTP connector to the telecom partner (MAC MD5 matching and SMS on our behalf).

Protocol (JSON over HTTPS, ``Authorization: Bearer <api key>``; the reference server is
``footfall.tools.partner_server``)::

    POST /v1/match   {"batch_id": str, "scenario": str, "hashes": [mac_md5, ...]}   (<= 1000)
      -> {"batch_id": str, "results": [{"hash": mac_md5, "known": bool,
                                        "messageable": bool, "phone_md5": str | null}]}
         one result per hash sent; ``phone_md5`` only when the subscriber allows sharing it.
    POST /v1/sms     {"messages": [{"ref": str, "hash": mac_md5, "text": str,
                                    "category": str, "system": bool}]}           (<= 500)
      -> {"results": [{"ref": str, "status": "queued" | "duplicate" | "rejected",
                       "message_id": str | null, "reason": str | null}]}
         ``ref`` is an idempotency key: a retried request never sends a second SMS, it gets
         ``duplicate`` with the first message's id.
    GET  /v1/usage?start=<unix>&end=<unix>  -> {"match_requests", "hashes", "known", "sms"}
    GET  /v1/health -> {"status": "ok"}

Hashes are MD5 of the MAC in the partner's normal form (``AA:BB:CC:DD:EE:FF`` by default,
see ``edge_agent/identity.py``); nothing else about the device ever leaves.

Failures raise :class:`PartnerError` with ``kind`` ``unavailable`` (connection refused, DNS,
5xx, 429), ``timeout``, ``auth`` (401/403) or ``protocol`` (an answer that does not follow the
above). ``unavailable`` and ``timeout`` are retried in the call with exponential backoff; if the
call still fails the runner leaves its targets pending for the next run. Both requests are
idempotent (matching has no side effects, SMS has ``ref``), so retries are safe.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

log = logging.getLogger(__name__)

MD5 = re.compile(r"^[0-9a-f]{32}$")
MATCH_BATCH = 1000
SMS_BATCH = 500


class PartnerError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class MatchResult:
    hash: str
    known: bool
    messageable: bool
    phone_md5: str | None


@dataclass(frozen=True)
class SmsResult:
    ref: str
    status: str
    message_id: str | None
    reason: str | None


@dataclass
class PartnerConfig:
    url: str = "http://127.0.0.1:8600"
    api_key: str = ""
    name: str = "partner"
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    retries: int = 2  # extra attempts within one call
    backoff_s: float = 0.5
    headers: dict[str, str] = field(default_factory=dict)


class PartnerClient:
    def __init__(self, config: PartnerConfig, session: requests.Session | None = None) -> None:
        self.config = config
        self.session = session or requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {config.api_key}", **config.headers})
        self.requests = 0
        self.failures = 0

    def _call(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        cfg = self.config
        url = cfg.url.rstrip("/") + path
        last: PartnerError | None = None
        for attempt in range(cfg.retries + 1):
            if attempt:
                time.sleep(cfg.backoff_s * 2 ** (attempt - 1))
            self.requests += 1
            try:
                resp = self.session.request(
                    method, url, json=body, params=params, timeout=(cfg.connect_timeout_s, cfg.read_timeout_s)
                )
            except requests.Timeout as exc:
                last = PartnerError("timeout", f"partner {cfg.name} timed out on {path}: {exc.__class__.__name__}")
            except requests.ConnectionError as exc:
                last = PartnerError(
                    "unavailable", f"partner {cfg.name} unreachable on {path}: {exc.__class__.__name__}"
                )
            else:
                if resp.status_code in (401, 403):
                    raise PartnerError("auth", f"partner {cfg.name} refused our credentials ({resp.status_code})")
                if resp.status_code == 429 or resp.status_code >= 500:
                    last = PartnerError("unavailable", f"partner {cfg.name} answered {resp.status_code} on {path}")
                elif resp.status_code != 200:
                    raise PartnerError("protocol", f"partner {cfg.name} answered {resp.status_code}: {resp.text[:200]}")
                else:
                    try:
                        return resp.json()
                    except ValueError:
                        raise PartnerError("protocol", f"partner {cfg.name} sent non-JSON on {path}") from None
            self.failures += 1
            log.warning("%s (attempt %d/%d)", last, attempt + 1, cfg.retries + 1)
        assert last is not None
        raise last

    def health(self) -> bool:
        try:
            return self._call("GET", "/v1/health").get("status") == "ok"
        except PartnerError:
            return False

    def match(self, hashes: Sequence[str], *, batch_id: str, scenario: str = "") -> list[MatchResult]:
        """One request of at most :data:`MATCH_BATCH` hashes (the runner batches)."""
        if len(hashes) > MATCH_BATCH:
            raise ValueError(f"at most {MATCH_BATCH} hashes per match request")
        for h in hashes:
            if not MD5.match(h):
                raise ValueError("match takes lowercase hex MD5 hashes only")
        data = self._call("POST", "/v1/match", {"batch_id": batch_id, "scenario": scenario, "hashes": list(hashes)})
        try:
            results = [
                MatchResult(
                    str(r["hash"]),
                    bool(r["known"]),
                    bool(r["known"] and r.get("messageable")),
                    r.get("phone_md5") if r.get("phone_md5") and MD5.match(str(r["phone_md5"])) else None,
                )
                for r in data["results"]
            ]
        except (KeyError, TypeError) as exc:
            raise PartnerError("protocol", f"bad match answer: {exc!r}") from None
        if {r.hash for r in results} != set(hashes):
            raise PartnerError("protocol", "match answer does not cover exactly the hashes sent")
        return results

    def send_sms(self, messages: Sequence[dict[str, Any]]) -> list[SmsResult]:
        if len(messages) > SMS_BATCH:
            raise ValueError(f"at most {SMS_BATCH} messages per request")
        data = self._call("POST", "/v1/sms", {"messages": list(messages)})
        try:
            results = [
                SmsResult(str(r["ref"]), str(r["status"]), r.get("message_id"), r.get("reason"))
                for r in data["results"]
            ]
        except (KeyError, TypeError) as exc:
            raise PartnerError("protocol", f"bad sms answer: {exc!r}") from None
        if {r.ref for r in results} != {m["ref"] for m in messages}:
            raise PartnerError("protocol", "sms answer does not cover exactly the messages sent")
        return results

    def usage(self, start: float, end: float) -> dict[str, int]:
        return self._call("GET", "/v1/usage", params={"start": start, "end": end})
