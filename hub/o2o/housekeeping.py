"""Retention of the O2O artifacts; run by ``hub/retention.py`` (hourly, from ingest) and the runner.

Defaults (:class:`O2ORetention`), and why:

==========================  ===============================================================
raw MAC MD5                 only in the window of an enabled scenario, at least the last day
                            (``privacy.py``); keyed after that
segment rows (phone MD5)    the scenario's membership window (``cap_days``, 7 by default)
segment files               the current snapshot while a link can reach it and the runner
                            refreshes it; a superseded one an hour more (``adsegment.py``)
share links                 expire after 3 days; their records (hash of the token, no data)
                            are deleted ``register_days`` after expiry
register, snapshot records  ``register_days`` = 3 years: counts, digests and times only, kept
                            for the partner's invoices and audits (the general limitation
                            period for claims, 3 years)
stop-list, local consent    ``stoplist_days`` = 3 years after the entry was made, keyed; an
                            opt-out must outlive the data it protects (raw visits: 400 days)
targets, coupons            hashes cleared after ``retention.o2o_days`` (``hub/retention.py``)
==========================  ===============================================================
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass, field

from footfall.hub.o2o import adsegment, privacy, tables

log = logging.getLogger(__name__)

DAY = 86400.0


@dataclass
class O2ORetention:
    register_days: float = 3 * 365
    stoplist_days: float = 3 * 365

    def __post_init__(self) -> None:
        if self.register_days < 1 or self.stoplist_days < 1:
            raise ValueError("register_days and stoplist_days must be at least 1")


@dataclass
class HousekeepingResult:
    purge: privacy.PurgeResult = field(default_factory=privacy.PurgeResult)
    files_deleted: int = 0
    transfers_deleted: int = 0
    snapshot_records_deleted: int = 0
    links_deleted: int = 0
    stoplist_deleted: int = 0
    consent_deleted: int = 0


def apply(
    conn: sqlite3.Connection,
    *,
    now: float | None = None,
    settings: O2ORetention | None = None,
    export: adsegment.ExportSettings | None = None,
) -> HousekeepingResult:
    """Key raw hashes outside their window, delete expired files and old records; commits.

    Raises :class:`privacy.PrivacyError` when the subject key is missing or wrong.
    """
    now = time.time() if now is None else now
    settings = settings or O2ORetention()
    tables.ensure(conn)
    res = HousekeepingResult(purge=privacy.purge(conn, now=now))
    res.files_deleted = adsegment.cleanup(conn, export, now=now)
    reg_before = now - settings.register_days * DAY
    stop_before = now - settings.stoplist_days * DAY
    with conn:
        res.transfers_deleted = conn.execute("DELETE FROM o2o_transfers WHERE at < ?", (reg_before,)).rowcount
        res.snapshot_records_deleted = conn.execute(
            "DELETE FROM o2o_snapshots WHERE deleted IS NOT NULL AND created < ?", (reg_before,)
        ).rowcount
        res.snapshot_records_deleted += conn.execute(
            "DELETE FROM o2o_exports WHERE link_status = 'deleted' AND created < ?", (reg_before,)
        ).rowcount
        res.links_deleted = conn.execute("DELETE FROM o2o_share_links WHERE expires < ?", (reg_before,)).rowcount
        res.stoplist_deleted = conn.execute("DELETE FROM o2o_stoplist WHERE added < ?", (stop_before,)).rowcount
        res.consent_deleted = conn.execute("DELETE FROM o2o_consent WHERE updated < ?", (stop_before,)).rowcount
    return res
