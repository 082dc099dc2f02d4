"""Re-key recent store visits by device: the linker runs beside ingest, not inside it.

Ingest keys a sensor visit by its MAC hash at once (cheap: it must keep up with every
sensor), so a phone that rotates its random MAC every few minutes, or every scan, first shows
up as many one-MAC visits. Every ``link_every_s`` the hub runs :func:`relink` over a recent
window: the de-randomizing linker (``hub/derandomize.py``) assigns ``device_key`` to every
sensor visit there, store visits are rebuilt grouped by device (``hub/merge.py``, where the
inside/visitor rule is re-applied across a phone's successive MACs) and the affected
``devices`` rows are recomputed. Linking costs a few hundred microseconds a visit, which the
hot path could not afford, but a batch job every quarter of an hour easily can.

Idempotent: running it twice over the same window gives the same visits.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass

from footfall.hub import devices
from footfall.hub.config import HubConfig
from footfall.hub.derandomize import LinkingEstimator, LinkSettings
from footfall.hub.merge import merge_new

log = logging.getLogger(__name__)


@dataclass
class RelinkResult:
    sensor_visits: int
    visits_before: int
    visits_after: int
    devices_before: int
    devices_after: int
    seconds: float


def relink(
    conn: sqlite3.Connection, config: HubConfig, *, since: float, settings: LinkSettings | None = None
) -> RelinkResult:
    """Rebuild the store visits that end at or after ``since`` with linked device keys."""
    t0 = time.monotonic()
    estimator = LinkingEstimator(settings)
    conn.execute("BEGIN IMMEDIATE")
    try:
        old = conn.execute("SELECT id, device_key FROM visits WHERE last_seen >= ?", (since,)).fetchall()
        old_keys = {r[1] for r in old}
        cur = conn.execute(
            "SELECT * FROM sensor_visits WHERE visit_id IN (SELECT id FROM visits WHERE last_seen >= ?)"
            " ORDER BY first_seen, id",
            (since,),
        )
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        excluded = devices.excluded_keys(conn)
        conn.execute(
            "UPDATE sensor_visits SET visit_id = NULL WHERE visit_id IN (SELECT id FROM visits WHERE last_seen >= ?)",
            (since,),
        )
        conn.execute("DELETE FROM visits WHERE last_seen >= ?", (since,))
        merge_new(conn, rows, gap_s=config.merge_gap_s, tz=config.tz, estimator=estimator, excluded=excluded)
        conn.executemany(
            "UPDATE sensor_visits SET visit_id = ? WHERE first_seen = ? AND id = ?",
            [(r["visit_id"], r["first_seen"], r["id"]) for r in rows],
        )
        new_keys = {r[0] for r in conn.execute("SELECT DISTINCT device_key FROM visits WHERE last_seen >= ?", (since,))}
        _recount_devices(conn, old_keys | new_keys, excluded)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    # The dashboard reads per-day summaries: bring the days this rebuilt up to date now,
    # rather than leave them to the web app's slow background check of older days.
    from footfall.hub import metrics

    for (day,) in conn.execute("SELECT DISTINCT day FROM visits WHERE last_seen >= ?", (since,)).fetchall():
        metrics.summarize_day(conn, day)
    result = RelinkResult(
        sensor_visits=len(rows),
        visits_before=len(old),
        visits_after=conn.execute("SELECT count(*) FROM visits WHERE last_seen >= ?", (since,)).fetchone()[0],
        devices_before=len(old_keys),
        devices_after=len(new_keys),
        seconds=time.monotonic() - t0,
    )
    log.info(
        "relinked %d sensor visits: %d -> %d store visits, %d -> %d devices in %.1fs",
        result.sensor_visits,
        result.visits_before,
        result.visits_after,
        result.devices_before,
        result.devices_after,
        result.seconds,
    )
    return result


def _recount_devices(conn: sqlite3.Connection, keys: set[str], excluded: set[str]) -> None:
    """Recompute ``devices`` rows of the keys a relink touched, from the visits stored.

    Keys that no visit uses any more (a MAC hash now folded into a linked device) disappear;
    exclusion (staff, fixed equipment) is kept for keys that had it.
    """
    key_list = sorted(keys)
    for start in range(0, len(key_list), 500):
        chunk = key_list[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        conn.execute(f"DELETE FROM devices WHERE device_key IN ({marks})", chunk)
        conn.execute(
            f"""INSERT INTO devices (device_key, randomized, partner_hash, first_seen, last_seen, visit_count,
                                     total_dwell_s, excluded, first_visitor_day)
                SELECT device_key, max(randomized), max(partner_hash), min(first_seen), max(last_seen), count(*),
                       sum(dwell_s), max(excluded), min(CASE WHEN class = 'visitor' THEN day END)
                FROM visits WHERE device_key IN ({marks}) GROUP BY device_key""",
            chunk,
        )
    if excluded & keys:
        conn.executemany("UPDATE devices SET excluded = 1 WHERE device_key = ?", [(k,) for k in excluded & keys])
