"""Retention: old raw data is rolled up into ``hourly`` and only then deleted.

``retention.raw_days`` keeps whole local days of ``visits`` (and their ``sensor_visits``):
everything whose local day is older than today minus ``raw_days`` is first added to
``hourly`` and then deleted, in one transaction, so the totals survive (tested). ``presence``
rows older than ``presence_days`` are simply deleted (live counts, nothing to roll up).

O2O rows hold MAC and phone MD5s (``o2o_targets``, ``o2o_coupons``, ``o2o_segment_rows``):
after ``retention.o2o_days`` the hashes and device keys of targets are cleared (the rows and
their counts stay, so past ROMI reports do not change except for return visits, whose raw
visits are gone by then anyway), coupons lose theirs once expired, and segment rows are
deleted. Long before that, ``hub/o2o/housekeeping.py`` (run here, after the transaction) keys
every unkeyed MAC MD5 no enabled scenario needs (visits included), deletes segment rows
outside their scenario's membership window and segment files nobody can download, and ages
out the transfer register, snapshot records, share links, stop-list and local consent
(3 years by default). If it cannot run (the O2O subject key is missing or wrong) the reason
is logged and returned in ``o2o_error``; the rest of retention is not held up.

``hourly`` rows written here have ``rolled_up = 1``; per (site, local day, hour, zone =
best sensor), over the visits NOT excluded as staff/fixed devices:

- ``visitors``/``passersby``: store visits of that class (visits, not unique devices);
- ``dwell_s_sum``: total dwell of the visitor visits;
- ``new_visitors``: visitor visits of a device on its first day as a visitor
  (``devices.first_visitor_day``, kept by ingest); ``returning_visitors`` the other ones.

A late message for an already rolled-up day is stored, then added to the same hourly row
at the next run. Messages older than the retention window itself are rejected by ingest
(reason ``expired``): their duplicates could no longer be recognised once the raw rows are gone.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from footfall import schema
from footfall.hub.config import HubConfig

log = logging.getLogger(__name__)


@dataclass
class RetentionResult:
    cutoff_day: str
    hours_rolled_up: int
    visits_deleted: int
    sensor_visits_deleted: int
    presence_deleted: int
    o2o_targets_cleared: int = 0
    o2o_segment_rows_deleted: int = 0
    o2o_hashes_keyed: int = 0
    o2o_files_deleted: int = 0
    o2o_records_deleted: int = 0
    o2o_error: str | None = None


def cutoff_day(config: HubConfig, now: float | None = None) -> str:
    """Local days before this one (ISO date) are rolled up and deleted."""
    now = time.time() if now is None else now
    today = datetime.fromtimestamp(now, config.tz).date()
    return (today - timedelta(days=config.retention.raw_days)).isoformat()


def expired_before(config: HubConfig, now: float | None = None) -> float:
    """Visits that started before this (UNIX seconds) are outside the window altogether."""
    now = time.time() if now is None else now
    return schema.retention_cutoff(now, config.retention.raw_days)


ROLLUP_SQL = """
INSERT INTO hourly (site, day, hour, zone, visitors, passersby, dwell_s_sum, new_visitors, returning_visitors,
                    rolled_up)
SELECT v.site, v.day, v.hour, v.best_sensor,
       sum(v.class = 'visitor'),
       sum(v.class = 'passerby'),
       coalesce(sum(CASE WHEN v.class = 'visitor' THEN v.dwell_s END), 0),
       sum(v.class = 'visitor' AND (d.first_visitor_day IS NULL OR d.first_visitor_day >= v.day)),
       sum(v.class = 'visitor' AND d.first_visitor_day < v.day),
       1
FROM visits v
LEFT JOIN devices d ON d.device_key = v.device_key
WHERE v.day < :cutoff AND v.excluded = 0
GROUP BY v.site, v.day, v.hour, v.best_sensor
ON CONFLICT (site, day, hour, zone) DO UPDATE SET
    visitors = excluded.visitors + CASE WHEN hourly.rolled_up THEN hourly.visitors ELSE 0 END,
    passersby = excluded.passersby + CASE WHEN hourly.rolled_up THEN hourly.passersby ELSE 0 END,
    dwell_s_sum = excluded.dwell_s_sum + CASE WHEN hourly.rolled_up THEN hourly.dwell_s_sum ELSE 0 END,
    new_visitors = excluded.new_visitors + CASE WHEN hourly.rolled_up THEN hourly.new_visitors ELSE 0 END,
    returning_visitors = excluded.returning_visitors
        + CASE WHEN hourly.rolled_up THEN hourly.returning_visitors ELSE 0 END,
    rolled_up = 1
"""


def apply(conn: sqlite3.Connection, config: HubConfig, *, now: float | None = None) -> RetentionResult:
    """Roll up and delete what is older than the retention window; one transaction."""
    now = time.time() if now is None else now
    cutoff = cutoff_day(config, now)
    with conn:
        hours = conn.execute(ROLLUP_SQL, {"cutoff": cutoff}).rowcount
        sv = conn.execute(
            "DELETE FROM sensor_visits WHERE visit_id IN (SELECT id FROM visits WHERE day < ?)", (cutoff,)
        ).rowcount
        visits = conn.execute("DELETE FROM visits WHERE day < ?", (cutoff,)).rowcount
        conn.execute("DELETE FROM estimated_visitors WHERE day < ?", (cutoff,))
        conn.execute("DELETE FROM network_visits WHERE day < ?", (cutoff,))
        presence = conn.execute(
            "DELETE FROM presence WHERE ts < ?", (now - config.retention.presence_days * 86400.0,)
        ).rowcount
        o2o_before = now - config.retention.o2o_days * 86400.0
        targets = conn.execute(
            "UPDATE o2o_targets SET partner_hash = '', device_key = '', phone_md5 = NULL"
            " WHERE assigned_at < ? AND (partner_hash != '' OR device_key != '' OR phone_md5 IS NOT NULL)",
            (o2o_before,),
        ).rowcount
        conn.execute(
            "UPDATE o2o_coupons SET partner_hash = NULL, device_key = NULL"
            " WHERE issued_at < ? AND valid_until < ? AND (partner_hash IS NOT NULL OR device_key IS NOT NULL)",
            (o2o_before, now),
        )
        rows = conn.execute("DELETE FROM o2o_segment_rows WHERE added < ?", (o2o_before,)).rowcount
    result = RetentionResult(cutoff, hours, visits, sv, presence, targets, rows)
    return _o2o_housekeeping(conn, now, result)


def _o2o_housekeeping(conn: sqlite3.Connection, now: float, result: RetentionResult) -> RetentionResult:
    from footfall.hub.o2o import housekeeping, privacy

    try:
        h = housekeeping.apply(conn, now=now)
    except (privacy.PrivacyError, OSError) as exc:
        # Ingest calls this hourly: a missing key file must not stop ingest, it must be seen.
        log.error("O2O housekeeping skipped: %s", exc)
        result.o2o_error = str(exc)
        return result
    p = h.purge
    result.o2o_hashes_keyed = (
        p.visits_keyed + p.sensor_visits_keyed + p.devices_keyed + p.targets_keyed + p.coupons_keyed + p.subjects_keyed
    )
    result.o2o_segment_rows_deleted += p.segment_rows_deleted
    result.o2o_files_deleted = h.files_deleted
    result.o2o_records_deleted = (
        h.transfers_deleted + h.snapshot_records_deleted + h.links_deleted + h.stoplist_deleted + h.consent_deleted
    )
    return result
