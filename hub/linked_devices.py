"""Devices from the tracker's keys: how many there were, and each one's sessions.

The tracker (``hub/derandomize.py``) gives every visit a device key; this module counts them.
:func:`estimate_unique` counts the unique devices among visits overlapping a time range, with
bounds: no fewer than the most MACs heard at once (:func:`peak_concurrency`), no more than the
distinct hashes. :class:`LinkingEstimator` is the hub's device estimator
(``hub/devices.py``'s interface) backed by the tracker: it keys sensor visits as ingest hands
them over and counts from the store. :func:`device_sessions` re-builds one device's presence
(its store visit) from the visits of all its MACs.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from footfall.hub.derandomize import Linker, LinkSettings, LinkStats, link_with_stats
from footfall.hub.devices import MAX_VISIT_S, UniqueEstimate, distinct_keys, visit_filter

LONG_STAY_S = 4 * 3600.0  # as the agent's long_stay_s: no shopping trip lasts that long


def peak_concurrency(intervals: Iterable[tuple[float, float]], tol: float = 0.0) -> int:
    """Most MACs heard at once (overlapping by more than ``tol``): no fewer devices can explain them.

    Unlike a per-fingerprint bound it stays valid for phones that switch element sets.
    """
    peak = 0
    ends: list[float] = []
    for first, last in sorted(intervals):
        while ends and ends[0] <= first + tol:
            heapq.heappop(ends)
        heapq.heappush(ends, last)
        peak = max(peak, len(ends))
    return peak


def estimate_unique(
    visits: Iterable[Mapping[str, Any]],
    start: float,
    end: float,
    settings: LinkSettings | None = None,
    keys: Mapping[str, str] | None = None,
    stats: LinkStats | None = None,
) -> UniqueEstimate:
    """Unique devices among visits overlapping ``[start, end)``.

    ``count`` from the linker; ``low``: the fingerprint concurrency bound (visits heard at the
    same time with the same fingerprint must be different devices); ``high``: distinct hashes.
    ``confidence``: share of the linker's decisions in the range without a close runner-up.
    """
    settings = settings or LinkSettings()
    vs = sorted(visits, key=lambda v: v["first_seen"])
    if keys is None:
        keys, stats = link_with_stats(vs, settings)
    inside = [v for v in vs if v["first_seen"] < end and v["last_seen"] >= start]
    stable = {v["device"] for v in inside if v.get("randomized", True) in (False, 0) and settings.trust_la_bit}
    rand = [v for v in inside if v["device"] not in stable]
    low = peak_concurrency([(v["first_seen"], v["last_seen"]) for v in rand], settings.sweep_skew_s)
    high = len({v["device"] for v in rand})
    count = len({keys[v["id"]] for v in rand})
    count = max(low, min(count, high))
    confidence = stats.confidence if stats is not None else 1.0
    return UniqueEstimate(
        count=len(stable) + count,
        low=len(stable) + low,
        high=len(stable) + high,
        confidence=confidence,
        stable=len(stable),
        randomized=count,
    )


class LinkingEstimator:
    """The hub's :class:`footfall.hub.devices.DeviceEstimator` backed by :class:`Linker`.

    ``device_key`` links each sensor visit as ingest hands it over (arrival order is close to
    first-seen order: an agent publishes a visit when it closes). A MAC seen before keeps its
    key, so re-aggregating a store visit is stable. When the row handed over lacks the linking
    evidence (``hub/merge.py`` passes a subset of columns), the full ``sensor_visits`` row is
    read through ``conn``. :meth:`warm` rebuilds the live chains after a restart.
    """

    name = "linker-v2"
    EVIDENCE = ("seq_first", "seq_last", "rssi_mean", "ssid_hashes", "channels", "fingerprint")

    def __init__(self, settings: LinkSettings | None = None, conn: sqlite3.Connection | None = None) -> None:
        self.linker = Linker(settings)
        self.conn = conn

    def device_key(self, sensor_visit: Mapping[str, Any]) -> str:
        known = self.linker.mac_key.get(sensor_visit["device"])
        if known is not None:
            return known
        visit: Mapping[str, Any] = sensor_visit
        if self.conn is not None and any(k not in sensor_visit for k in self.EVIDENCE):
            cur = self.conn.execute(
                "SELECT * FROM sensor_visits WHERE first_seen = ? AND id = ?",
                (sensor_visit["first_seen"], sensor_visit["id"]),
            )
            row = cur.fetchone()
            if row is not None:
                names = [d[0] for d in cur.description]
                visit = {**dict(zip(names, row, strict=True)), **dict(sensor_visit)}
        return self.linker.feed([visit])[sensor_visit["id"]]

    def warm(self, conn: sqlite3.Connection, now: float) -> int:
        """Reload the sensor visits of the last ``max_gap_s`` with the keys they were given."""
        since = now - self.linker.s.max_gap_s - MAX_VISIT_S / 24
        cur = conn.execute(
            """SELECT s.*, v.device_key FROM sensor_visits s JOIN visits v ON v.id = s.visit_id
               WHERE s.first_seen >= ? AND s.last_seen >= ? ORDER BY s.first_seen""",
            (since - MAX_VISIT_S, since),
        )
        names = [d[0] for d in cur.description]
        visits = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        self.linker.restore(visits, {v["id"]: v["device_key"] for v in visits})
        return len(visits)

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
        linked = distinct_keys(conn, cond, args, randomized=True)
        rows = conn.execute(
            f"SELECT v.first_seen, v.last_seen FROM visits v WHERE v.randomized = 1 AND {cond}", args
        ).fetchall()
        low = peak_concurrency([(r[0], r[1]) for r in rows], self.linker.s.sweep_skew_s)
        high = conn.execute(
            f"SELECT count(DISTINCT v.device) FROM visits v WHERE v.randomized = 1 AND {cond}", args
        ).fetchone()[0]
        count = max(low, min(linked, high))
        return UniqueEstimate(
            count=stable + count,
            low=stable + low,
            high=stable + high,
            confidence=self.linker.stats.confidence,
            stable=stable,
            randomized=count,
        )


@dataclass
class DeviceSession:
    """One device's presence, re-built from the visits of all its MACs (the store visit of a person)."""

    device_key: str
    first_seen: float
    last_seen: float
    inside_s: float
    visits: int
    visitor: bool
    long_stay: bool = False  # staff or fixed equipment: the hub leaves these out of footfall

    @property
    def dwell_s(self) -> float:
        return self.last_seen - self.first_seen


def device_sessions(
    visits: Iterable[Mapping[str, Any]],
    keys: Mapping[str, str],
    *,
    gap_s: float = 600.0,
    inside_rssi: int = -70,
    inside_gap_s: float = 180.0,
    min_inside_s: float = 60.0,
) -> list[DeviceSession]:
    """Visits of one device key (all its MACs, all sensors) -> sessions split by ``gap_s`` silences.

    The visitor/passer-by line has to be drawn again here: a phone that rotates its MAC every
    scan sends each MAC for a fraction of a second, so no single MAC visit has inside time.
    Same rule as the agent (``edge_agent/visit_settings.py``): strong sightings (``rssi_max`` at least
    ``inside_rssi``) at most ``inside_gap_s`` apart chain into inside time.
    """
    by_key: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for v in visits:
        by_key[keys.get(v["id"], v["device"])].append(v)
    out: list[DeviceSession] = []
    for key, vs in by_key.items():
        vs.sort(key=lambda v: v["first_seen"])
        group: list[Mapping[str, Any]] = []
        end = float("-inf")
        for v in vs:
            if group and v["first_seen"] - end > gap_s:
                out.append(_session(key, group, inside_rssi, inside_gap_s, min_inside_s))
                group = []
            group.append(v)
            end = max(end, v["last_seen"]) if len(group) > 1 else v["last_seen"]
        if group:
            out.append(_session(key, group, inside_rssi, inside_gap_s, min_inside_s))
    return out


def _session(
    key: str, group: list[Mapping[str, Any]], inside_rssi: int, inside_gap_s: float, min_inside_s: float
) -> DeviceSession:
    # Inside time: the agent's own figure for MACs that lived long enough to have one (per
    # sensor summed, the best sensor taken: sensors hear the same minutes), or the strong short
    # MACs chained with gaps of at most inside_gap_s, whichever is larger.
    per_sensor: dict[str, float] = defaultdict(float)
    spans: list[tuple[float, float]] = []
    for v in group:
        per_sensor[v.get("sensor", "")] += float(v.get("inside_s") or 0.0)
        rmax = v.get("rssi_max")
        if rmax is not None and rmax >= inside_rssi and v["last_seen"] - v["first_seen"] <= inside_gap_s:
            spans.append((float(v["first_seen"]), float(v["last_seen"])))
    chained = 0.0
    if spans:
        spans.sort()
        lo, hi = spans[0]
        for a, b in spans[1:]:
            if a - hi <= inside_gap_s:
                hi = max(hi, b)
            else:
                chained += hi - lo
                lo, hi = a, b
        chained += hi - lo
    inside = max(chained, max(per_sensor.values(), default=0.0))
    return DeviceSession(
        device_key=key,
        first_seen=float(group[0]["first_seen"]),
        last_seen=max(float(v["last_seen"]) for v in group),
        inside_s=inside,
        visits=len(group),
        visitor=inside >= min_inside_s,
        long_stay=any(v.get("long_stay") for v in group)
        or max(float(v["last_seen"]) for v in group) - float(group[0]["first_seen"]) >= LONG_STAY_S,
    )
