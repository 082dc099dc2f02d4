"""Which store visits belong to one physical device, and how many devices there were.

MAC randomization makes "distinct device hashes" a poor count of people: a phone that is
not connected to a network probes from a fresh random MAC every few minutes (or every scan),
so one shopper becomes several hashes. Every metric therefore counts the estimator's
``device_key`` and asks the estimator for unique-device counts.

This module defines the interface (:class:`DeviceEstimator`) and a first, honest version
(:class:`HashEstimator`):

- ``device_key`` is the device hash itself, for globally administered MACs and randomized ones
  alike (no linking yet; a later estimator links randomized hashes and returns a shared key).
- ``estimate_unique(start, end)`` counts globally administered devices exactly (distinct keys)
  and brackets the randomized ones, per probe fingerprint (same chipset/OS/IE set):

  * ``high``: distinct randomized hashes, what a naive count reports (upper bound: two
    devices never share a hash);
  * ``low``: the largest number of visits of one fingerprint that overlap in time, summed over
    fingerprints. Visits that overlap must be different devices, so no explanation of the data
    needs fewer (an interval-graph clique bound, assuming a device keeps its fingerprint);
  * ``count``: a minimum chain cover where one device may continue with a new hash only when
    the new hash appears within ``link_gap_s`` after the previous one disappeared (what a MAC
    rotation looks like), clamped to ``[low, high]``. Shoppers of the same phone model who
    come and go within ``link_gap_s`` of each other are merged, so it undercounts crowds of
    identical phones and overcounts a device whose rotation gap exceeds ``link_gap_s``.

  ``confidence`` is ``low / high`` over all devices (1.0 when no randomized MAC is involved):
  how much the answer could move, not a probability.

The ``devices`` table is kept by ingest (:func:`apply_deltas`): first/last seen, visit count,
total dwell and ``first_visitor_day`` (local day of its first visitor visit: a visitor visit
on a later day is a returning visitor) over the device's lifetime, so they survive
retention; and ``excluded`` for staff and fixed equipment (:func:`update_exclusions`).
"""

from __future__ import annotations

import heapq
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from footfall.hub.config import ExclusionConfig


@dataclass(frozen=True)
class UniqueEstimate:
    count: int
    low: int
    high: int
    confidence: float
    # Of ``count``: devices with globally administered (stable) MACs, and randomized ones.
    stable: int = 0
    randomized: int = 0


class DeviceEstimator(Protocol):
    """Assigns device keys to sensor visits and counts unique devices over a time range."""

    name: str

    def device_key(self, sensor_visit: Mapping[str, Any]) -> str:
        """The key of the device that made this sensor visit (a row of ``sensor_visits``)."""
        ...

    def estimate_unique(
        self,
        conn: sqlite3.Connection,
        start: float,
        end: float,
        *,
        visitors_only: bool = False,
        include_excluded: bool = False,
        zone: str | None = None,
    ) -> UniqueEstimate:
        """Unique devices with a store visit overlapping ``[start, end)`` (UNIX seconds)."""
        ...


# Longest store visit the range query looks back for (a visit that started this long before
# ``start`` and still overlaps it). Longer ones are long_stay devices, excluded anyway.
MAX_VISIT_S = 86400.0


def visit_filter(
    start: float, end: float, *, visitors_only: bool = False, include_excluded: bool = False, zone: str | None = None
) -> tuple[str, list[Any]]:
    """SQL condition (on ``visits v``) and its arguments: store visits present in [start, end)."""
    where = ["v.first_seen >= ?", "v.first_seen < ?", "v.last_seen >= ?"]
    args: list[Any] = [start - MAX_VISIT_S, end, start]
    if visitors_only:
        where.append("v.class = 'visitor'")
    if not include_excluded:
        where.append("v.excluded = 0")
    if zone is not None:
        where.append("v.best_sensor = ?")
        args.append(zone)
    return " AND ".join(where), args


def distinct_keys(conn: sqlite3.Connection, cond: str, args: list[Any], *, randomized: bool) -> int:
    """Distinct device keys among the store visits matching a :func:`visit_filter` condition."""
    return conn.execute(
        f"SELECT count(DISTINCT v.device_key) FROM visits v WHERE v.randomized = ? AND {cond}", [int(randomized), *args]
    ).fetchone()[0]


class HashEstimator:
    """Device key = device hash; randomized hashes bracketed per fingerprint (see module doc)."""

    name = "hash-v1"

    def __init__(self, link_gap_s: float = 600.0) -> None:
        self.link_gap_s = link_gap_s

    def device_key(self, sensor_visit: Mapping[str, Any]) -> str:
        return sensor_visit["device"]

    def estimate_unique(
        self,
        conn: sqlite3.Connection,
        start: float,
        end: float,
        *,
        visitors_only: bool = False,
        include_excluded: bool = False,
        zone: str | None = None,
    ) -> UniqueEstimate:
        cond, args = visit_filter(start, end, visitors_only=visitors_only, include_excluded=include_excluded, zone=zone)
        stable = distinct_keys(conn, cond, args, randomized=False)
        rows = conn.execute(
            f"""SELECT v.device_key, v.first_seen, v.last_seen,
                   (SELECT s.fingerprint FROM sensor_visits s WHERE s.visit_id = v.id LIMIT 1)
                FROM visits v WHERE v.randomized = 1 AND {cond} ORDER BY v.first_seen""",
            args,
        ).fetchall()
        low, count, high = randomized_bounds(rows, self.link_gap_s)
        total_low, total_high = stable + low, stable + high
        return UniqueEstimate(
            count=stable + count,
            low=total_low,
            high=total_high,
            confidence=1.0 if total_high == 0 else round(total_low / total_high, 3),
            stable=stable,
            randomized=count,
        )


def randomized_bounds(rows: Iterable[tuple[str, float, float, str | None]], link_gap_s: float) -> tuple[int, int, int]:
    """(low, count, high) for randomized visits ``(key, first, last, fingerprint)`` sorted by first."""
    keys: set[str] = set()
    by_fp: dict[str | None, list[tuple[float, float]]] = defaultdict(list)
    for key, first, last, fingerprint in rows:
        keys.add(key)
        by_fp[fingerprint].append((first, last))
    low = count = 0
    for intervals in by_fp.values():
        intervals.sort()
        # low: most visits of this fingerprint in progress at once.
        ends: list[float] = []
        peak = 0
        for first, last in intervals:
            while ends and ends[0] < first:
                heapq.heappop(ends)
            heapq.heappush(ends, last)
            peak = max(peak, len(ends))
        # count: greedy chain cover; a chain (device) may take the next visit that starts at
        # most link_gap_s after the chain's last visit ended. Extending the chain that ended
        # earliest keeps later-ending chains (which stay eligible longer) free: optimal greedy.
        chains: list[float] = []
        n = 0
        for first, last in intervals:
            while chains and chains[0] < first - link_gap_s:
                heapq.heappop(chains)
            if chains and chains[0] < first:
                heapq.heapreplace(chains, last)
            else:
                heapq.heappush(chains, last)
                n += 1
        low += peak
        count += n
    high = len(keys)
    low = min(low, high)
    return low, max(low, min(count, high)), high


@dataclass(slots=True)
class DeviceDelta:
    """Change of one device's lifetime counters caused by one ingest batch."""

    randomized: int
    partner_hash: str | None
    first_seen: float
    last_seen: float
    visit_count: int = 0
    total_dwell_s: float = 0.0
    long_stay: bool = False
    # Longest store visit of this device touched in the batch (staff rule trigger).
    max_dwell_s: float = 0.0
    # Earliest local day with a visitor visit in the batch (new vs returning).
    first_visitor_day: str | None = None


def apply_deltas(conn: sqlite3.Connection, deltas: Mapping[str, DeviceDelta]) -> None:
    """Fold a batch's changes into ``devices`` (lifetime counters: retention never lowers them)."""
    conn.executemany(
        """INSERT INTO devices (device_key, randomized, partner_hash, first_seen, last_seen, visit_count, total_dwell_s,
                                first_visitor_day)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (device_key) DO UPDATE SET
               first_visitor_day = coalesce(min(devices.first_visitor_day, excluded.first_visitor_day),
                                            devices.first_visitor_day, excluded.first_visitor_day),
               partner_hash = coalesce(devices.partner_hash, excluded.partner_hash),
               first_seen = min(devices.first_seen, excluded.first_seen),
               last_seen = max(devices.last_seen, excluded.last_seen),
               visit_count = devices.visit_count + excluded.visit_count,
               total_dwell_s = devices.total_dwell_s + excluded.total_dwell_s""",
        [
            (
                key,
                d.randomized,
                d.partner_hash,
                d.first_seen,
                d.last_seen,
                d.visit_count,
                d.total_dwell_s,
                d.first_visitor_day,
            )
            for key, d in deltas.items()
        ],
    )


def excluded_keys(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT device_key FROM devices WHERE excluded = 1")}


def exclude(conn: sqlite3.Connection, key: str, reason: str) -> bool:
    """Mark a device as staff/fixed and move its visits out of the metrics; False if it was already."""
    cur = conn.execute(
        "UPDATE devices SET excluded = 1, excluded_reason = ? WHERE device_key = ? AND excluded = 0", (reason, key)
    )
    if cur.rowcount == 0:
        return False
    conn.execute("UPDATE visits SET excluded = 1 WHERE device_key = ? AND excluded = 0", (key,))
    return True


def update_exclusions(
    conn: sqlite3.Connection, deltas: Mapping[str, DeviceDelta], cfg: ExclusionConfig, already: set[str]
) -> list[str]:
    """Apply the staff/fixed-device rules to the devices a batch touched; returns new exclusions.

    - ``long_stay``: a device with a long_stay visit (the agent saw it for hours) is fixed
      equipment or staff.
    - staff: at least ``staff_days`` distinct local days with a store visit of at least
      ``staff_hours``. Only checked when the batch touched a visit that long, which keeps the
      per-batch cost near zero; the merge gap already joins a staff member's short absences.
    """
    new: list[str] = []
    staff_s = cfg.staff_hours * 3600.0
    for key, d in deltas.items():
        if key in already:
            continue
        if cfg.long_stay and d.long_stay:
            if exclude(conn, key, "long_stay"):
                new.append(key)
            continue
        if cfg.staff_days > 0 and d.max_dwell_s >= staff_s:
            days = conn.execute(
                "SELECT count(DISTINCT day) FROM visits WHERE device_key = ? AND dwell_s >= ?", (key, staff_s)
            ).fetchone()[0]
            if days >= cfg.staff_days and exclude(conn, key, f"staff: {days} days >= {cfg.staff_hours:g} h"):
                new.append(key)
    return new
