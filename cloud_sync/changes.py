"""Snapshot what changed on the hub into the outbox: :func:`enqueue_changes`, run every sync cycle.

Record kinds (``docs/sync-protocol.md``), each found by a module of its own:

- ``profile`` (key: ``device_key``): first/last seen, visits, dwell mean/median/total,
  cluster, segment memberships, and the partner phone hash only with a recorded consent
  (``profiles.py``).
- ``segment_change`` (key: segment, device, enter/exit, since): found by diffing
  ``segment_members`` against the snapshot taken at the previous run (``segment_changes.py``).
- ``scenario_result`` (key: scenario and run): finished ``o2o_runs`` when that table exists,
  or whatever ``outbox.enqueue`` is given; and (key: scenario and ``day:YYYY-MM-DD``) each
  scenario's report of a local day's cohort, re-reported while it can still change
  (``o2o_results.py``).
- ``daily_aggregate`` (key: site and local day): closed days only; visitors, passers-by,
  capture rate, dwell, and per-sensor reporting (the day's sensor health) (``daily.py``).
- ``health`` (key: site): the sensors now (total, stale, offline; per-sensor state), queued
  when a state changes (``health.py``).
- ``definitions`` (key: site): the version of every segment definition and scenario setting
  the centre pushed, and whether it was applied or refused (``definitions.py``).
- ``event`` (key: ``visit:<device>:<start>``, ``coupon:<code>``, ``redemption:<id>:<code>``):
  visitor visits once settled (no merge can extend them any more), coupons issued and
  redemptions (O2O tables, when installed), by id cursors; the first run backfills 30 days
  (``events.py``).
"""

from __future__ import annotations

import logging
import sqlite3
import time
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field

from footfall.cloud_sync import definitions, o2o_results
from footfall.cloud_sync.daily import _enqueue_daily
from footfall.cloud_sync.events import _enqueue_o2o_events, _enqueue_visit_events
from footfall.cloud_sync.health import _enqueue_health
from footfall.cloud_sync.o2o_results import _enqueue_scenario_results
from footfall.cloud_sync.outbox import enforce_bound, set_state
from footfall.cloud_sync.profiles import _enqueue_profiles
from footfall.cloud_sync.segment_changes import _enqueue_segment_changes

log = logging.getLogger(__name__)


@dataclass
class EnqueueResult:
    profiles: int = 0
    segment_changes: int = 0
    scenario_results: int = 0
    daily_aggregates: int = 0
    health: int = 0
    events: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum((self.profiles, self.segment_changes, self.scenario_results, self.daily_aggregates, self.health,
                    self.events))  # fmt: skip


def enqueue_changes(
    conn: sqlite3.Connection,
    site: str,
    *,
    tz: zoneinfo.ZoneInfo | str = "UTC",
    now: float | None = None,
    max_rows: int = 500_000,
    droppable: Iterable[str] = ("event", "segment_change"),
    aggregate_days: int = 3,
    heartbeat_s: float = 60.0,
    visit_events: bool = True,
    event_settle_s: float = 900.0,
    event_backfill_days: float = 30.0,
) -> EnqueueResult:
    """Snapshot everything that changed since the last run into the outbox (idempotent).

    One transaction: a crash leaves either the previous state or the new one, never snapshots
    that claim to be queued when they are not.
    """
    now = time.time() if now is None else now
    zone = zoneinfo.ZoneInfo(tz) if isinstance(tz, str) else tz
    res = EnqueueResult()
    with conn:
        res.profiles = _enqueue_profiles(conn, site, now)
        res.segment_changes = _enqueue_segment_changes(conn, now)
        res.scenario_results = _enqueue_scenario_results(conn, site, now)
        res.scenario_results += o2o_results.enqueue_days(conn, site, zone, now)
        res.daily_aggregates = _enqueue_daily(conn, site, zone, now, aggregate_days)
        res.health = _enqueue_health(conn, site, now, heartbeat_s)
        res.health += definitions.enqueue_status(conn, site, now)
        if visit_events:
            res.events += _enqueue_visit_events(conn, now, event_settle_s, event_backfill_days)
        res.events += _enqueue_o2o_events(conn, now)
        res.dropped = enforce_bound(conn, max_rows, list(droppable), now=now)
        set_state(conn, "last_enqueue", now)
    if res.total:
        log.info(
            "sync outbox: +%d profiles, +%d segment changes, +%d scenario results, +%d daily aggregates",
            res.profiles,
            res.segment_changes,
            res.scenario_results,
            res.daily_aggregates,
        )
    return res
