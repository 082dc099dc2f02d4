"""Push a segment to a CDP's bulk profile import over HTTP.

The members are first queued in ``export_items`` (one row per profile, already mapped to the
CDP's field names), then sent in batches; each acknowledged batch is deleted from the queue.
So a push interrupted by a CDP outage resumes where it stopped (:func:`resume`), and a
consent withdrawn while a push is queued deletes that profile's queued row before it is sent.

Retries: connection errors, 429 and 5xx are retried with exponential backoff and full
jitter; any other 4xx is a configuration problem (bad key, bad mapping) and stops the push
with :class:`CdpError`, leaving the rest queued.

The request body is ``{"segment": <name>, "profiles": [{<cdp field>: value, ...}, ...]}``;
``mapping`` maps our field names (``device``, ``phone_md5``, ``stores``, ``visits``,
``dwell_s``, ``first_seen``, ``last_seen``, ``clusters``) to the CDP's, and fields not in
the mapping are not sent. The device id goes as an informational identifier, never as a
contact channel; the phone hash only with a recorded consent (see ``export.profile_rows``).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from footfall.cloud_sync.central import export, segments
from footfall.cloud_sync.central.db import Connection

log = logging.getLogger(__name__)

DEFAULT_MAPPING = {
    "device": "external_id",
    "phone_md5": "phone_md5",
    "stores": "stores",
    "visits": "visits",
    "last_seen": "last_visit",
}


class CdpError(RuntimeError):
    """The CDP refused a batch in a way retrying will not fix, or retries ran out."""


@dataclass
class CdpConfig:
    url: str
    api_key: str
    api_key_header: str = "X-API-Key"
    mapping: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_MAPPING))
    batch_size: int = 500
    retries: int = 5
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    timeout_s: float = 15.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("CDP url must be http(s)://")
        if not self.api_key:
            raise ValueError("CDP api_key is empty")
        if not 1 <= self.batch_size <= 10000:
            raise ValueError("batch_size must be 1..10000")


@dataclass
class PushResult:
    export_id: str
    queued: int = 0
    sent: int = 0
    batches: int = 0
    retries: int = 0


def map_profile(row: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    return {target: row[ours] for ours, target in mapping.items() if ours in row}


def queue(
    conn: Connection,
    segment_id: str,
    cfg: CdpConfig,
    *,
    version: int | None = None,
    stores: Sequence[str] | None = None,
) -> PushResult:
    rows = export.profile_rows(conn, segment_id, version=version, stores=stores)
    export_id = f"{segment_id}:{time.time():.6f}"
    now = time.time()
    with conn.transaction():
        conn.executemany(
            "INSERT INTO export_items (export_id, device, payload, created) VALUES (?, ?, ?, ?)",
            [(export_id, r["device"], json.dumps(map_profile(r, cfg.mapping)), now) for r in rows],
        )
    return PushResult(export_id, queued=len(rows))


def _post(session: requests.Session, cfg: CdpConfig, body: dict[str, Any], result: PushResult) -> None:
    headers = {cfg.api_key_header: cfg.api_key, "Content-Type": "application/json"}
    data = json.dumps(body).encode()
    for attempt in range(cfg.retries + 1):
        try:
            resp = session.post(cfg.url, data=data, headers=headers, timeout=cfg.timeout_s)
        except requests.RequestException as exc:
            why = type(exc).__name__
        else:
            if resp.status_code < 300:
                return
            if resp.status_code != 429 and resp.status_code < 500:
                raise CdpError(f"CDP refused the batch: HTTP {resp.status_code} {resp.text[:200]}")
            why = f"HTTP {resp.status_code}"
        if attempt == cfg.retries:
            raise CdpError(f"CDP unreachable after {cfg.retries + 1} attempts ({why})")
        result.retries += 1
        delay = random.uniform(0, min(cfg.backoff_max_s, cfg.backoff_s * 2**attempt))
        log.warning("CDP push: %s, retry %d in %.1fs", why, attempt + 1, delay)
        time.sleep(delay)


def resume(
    conn: Connection,
    export_id: str,
    cfg: CdpConfig,
    *,
    segment_name: str | None = None,
    session: requests.Session | None = None,
    result: PushResult | None = None,
) -> PushResult:
    """Send what is still queued for ``export_id``, batch by batch."""
    result = result or PushResult(export_id)
    session = session or requests.Session()
    name = segment_name or export_id.split(":", 1)[0]
    while True:
        rows = conn.all(
            "SELECT id, payload FROM export_items WHERE export_id = ? ORDER BY id LIMIT ?",
            (export_id, cfg.batch_size),
        )
        if not rows:
            return result
        _post(session, cfg, {"segment": name, "profiles": [json.loads(p) for _, p in rows]}, result)
        ids = [r[0] for r in rows]
        conn.execute(f"DELETE FROM export_items WHERE id IN ({', '.join('?' * len(ids))})", ids)
        result.sent += len(rows)
        result.batches += 1


def push_segment(
    conn: Connection,
    segment_id: str,
    cfg: CdpConfig,
    *,
    version: int | None = None,
    stores: Sequence[str] | None = None,
    session: requests.Session | None = None,
) -> PushResult:
    seg = segments.get_segment(conn, segment_id)
    if seg is None:
        raise KeyError(segment_id)
    result = queue(conn, segment_id, cfg, version=version, stores=stores)
    return resume(conn, result.export_id, cfg, segment_name=seg["name"], session=session, result=result)
