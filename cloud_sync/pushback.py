"""Pull what the central service pushes back: opt-outs, consent withdrawals, definitions.

``GET /api/v1/sync/pushback?since=<cursor>`` (signed like every request) answers
``{"cursor": .., "items": [...]}``. Each page is applied and its cursor stored in one
transaction, so a crash re-applies at most one page, and every item is idempotent.

The items are applied by ``pushback_items.py``; after the last page the opt-out list goes to
the sensors (``sensor_optouts.py``).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from footfall.cloud_sync import outbox
from footfall.cloud_sync.clock import CentralClock
from footfall.cloud_sync.config import SyncConfig
from footfall.cloud_sync.pushback_items import ApplyResult, apply_items, retry_o2o_forget

if TYPE_CHECKING:
    from footfall.cloud_sync.sensor_optouts import ConfigPublisher


PUSHBACK_PATH = "/api/v1/sync/pushback"
MAX_PAGES = 100


class PushbackError(RuntimeError):
    """The centre could not be asked (network, auth, bad answer); retried next cycle."""


@dataclass
class PullResult:
    pages: int = 0
    cursor: str | None = None
    applied: ApplyResult = field(default_factory=ApplyResult)
    sensors_notified: int = 0


def fetch(
    session: requests.Session,
    config: SyncConfig,
    secret: bytes,
    cursor: str | None,
    clock: CentralClock | None = None,
) -> tuple[str | None, list[Any]]:
    url = config.endpoint(PUSHBACK_PATH) + f"?since={quote(str(cursor if cursor is not None else 0), safe='')}"
    try:
        resp = (clock or CentralClock()).request(session, config, secret, "GET", url)
    except requests.RequestException as exc:
        raise PushbackError(f"{type(exc).__name__}: {exc}") from None
    if resp.status_code != 200:
        raise PushbackError(f"HTTP {resp.status_code}: {resp.text[:300]}")
    try:
        body = resp.json()
    except ValueError:
        raise PushbackError("answer is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("items", []), list):
        raise PushbackError("answer lacks an items list")
    new_cursor = body.get("cursor")
    return (None if new_cursor is None else str(new_cursor)), body.get("items") or []


def pull(
    conn: sqlite3.Connection,
    config: SyncConfig,
    secret: bytes,
    *,
    session: requests.Session | None = None,
    publisher: ConfigPublisher | None = None,
    now: float | None = None,
    clock: CentralClock | None = None,
) -> PullResult:
    """Fetch and apply every page of pushback since the stored cursor, then update the sensors."""
    from footfall.cloud_sync.sensor_optouts import publish_optouts  # it builds on this module

    session = session or requests.Session()
    res = PullResult(cursor=outbox.get_state(conn, "pushback_cursor"))
    for _ in range(MAX_PAGES):
        cursor, items = fetch(session, config, secret, res.cursor, clock)
        with conn:
            retry_o2o_forget(conn, time.time() if now is None else now)
            applied = apply_items(conn, items, config.site, now=now)
            if cursor is not None:
                outbox.set_state(conn, "pushback_cursor", cursor)
            outbox.set_state(conn, "last_pushback", time.time() if now is None else now)
        res.applied.add(applied)
        res.pages += 1
        advanced = cursor is not None and cursor != res.cursor
        res.cursor = cursor if cursor is not None else res.cursor
        if not items or not advanced:
            break
    # Digest-gated: also catches sensors that appeared since the last publication.
    res.sensors_notified = publish_optouts(conn, config, publisher)
    return res
