"""Sensor visits -> store visits: one device seen by several sensors is one visit.

Sensor visits of the same device (the estimator's ``device_key``: one phone, whatever MAC
addresses it rotated through) that overlap or lie at most ``gap_s`` apart form one store visit
in ``visits``; every sensor visit points to it through ``visit_id``.

The store visit is a pure function of its sensor visits (:func:`aggregate`):

- ``first_seen``/``last_seen``: min/max; ``dwell_s`` their difference.
- ``inside_s``: best effort. Sensors report only durations, not the intervals, so a union is
  not computable: one sensor's visits of a device never overlap, so they are summed per
  sensor; different sensors see the same minutes, so the largest per-sensor sum is taken;
  capped at ``dwell_s``.
- ``class``: visitor if any sensor says visitor, or if the members heard at or above
  ``inside_rssi`` chain (gaps of at most ``inside_gap_s``) into ``min_inside_s`` or more: a
  phone that takes a new random MAC every scan leaves a trail of one-burst sensor visits, each
  a "passer-by" on its own, that together are a stay inside. ``long_stay`` if any says so.
- ``best_sensor``/``best_rssi``: the sensor (zone) with the strongest ``rssi_max``.
- ``day``/``hour``: local time of ``first_seen`` in the site's time zone.

Merging is incremental and idempotent: each batch of new sensor visits (already free of
duplicates) is swept together with the existing store visits it could touch; a store visit
that a new sensor visit joins is recomputed from all its members; a late sensor visit that
bridges two store visits merges them (the lower id survives, the other's sensor visits are
re-pointed). The result does not depend on arrival order (tested), so replays, late and
reordered messages give the same store visits as an ordered stream.
"""

from __future__ import annotations

import functools
import json
import operator
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from footfall.edge_agent.visit_settings import VisitSettings
from footfall.hub.devices import DeviceDelta, DeviceEstimator


@dataclass(frozen=True)
class InsideRule:
    """The agents' inside/visitor rule, applied again across a device's sensor visits."""

    inside_rssi: int = VisitSettings.inside_rssi
    min_inside_s: float = VisitSettings.min_inside_s
    inside_gap_s: float = VisitSettings.inside_gap_s


DEFAULT_RULE = InsideRule()


def chained_inside(members: Sequence[Mapping[str, Any]], rule: InsideRule) -> tuple[float, list[str]]:
    """Inside time per sensor, with the gaps between its strong members chained in: the largest,
    and the sensors (sorted). ``members`` must be sorted by ``first_seen``.

    Members act like the agent's sightings: a gap of at most ``inside_gap_s`` between two
    members heard at or above ``inside_rssi`` counts as inside, on top of their own inside time.
    One sensor's members never overlap; different sensors hear the same minutes, so the best
    sensor's figure is taken rather than a sum.
    """
    totals: dict[str, float] = {}
    ends: dict[str, float] = {}
    strong, gap = rule.inside_rssi, rule.inside_gap_s
    for m in members:
        sensor = m["sensor"]
        total = totals.get(sensor, 0.0) + m["inside_s"]
        rssi = m["rssi_max"]
        if rssi is not None and rssi >= strong:
            end = ends.get(sensor)
            if end is not None and 0 < m["first_seen"] - end <= gap:
                total += m["first_seen"] - end
            ends[sensor] = m["last_seen"]
        totals[sensor] = total
    return max(totals.values()), sorted(totals)


# Sensor visit columns a store visit is computed from.
MEMBER_COLUMNS = (
    "id",
    "site",
    "sensor",
    "device",
    "randomized",
    "partner_hash",
    "first_seen",
    "last_seen",
    "inside_s",
    "rssi_max",
    "class",
    "long_stay",
    "fingerprint",
)
VISIT_COLUMNS = (
    "site",
    "device",
    "device_key",
    "randomized",
    "partner_hash",
    "first_seen",
    "last_seen",
    "dwell_s",
    "inside_s",
    "class",
    "long_stay",
    "excluded",
    "best_sensor",
    "best_rssi",
    "sensors",
    "n_sensor_visits",
    "day",
    "hour",
)
_INSERT_VISIT = f"INSERT INTO visits (id, {', '.join(VISIT_COLUMNS)}) VALUES (?, {', '.join('?' * len(VISIT_COLUMNS))})"
_visit_values = operator.itemgetter("id", *VISIT_COLUMNS)
_UPDATE_VISIT = f"UPDATE visits SET {', '.join(c + ' = ?' for c in VISIT_COLUMNS)} WHERE id = ?"
_by_start = operator.itemgetter("first_seen", "id")
_member_order = operator.itemgetter("first_seen", "sensor", "id")


@functools.lru_cache(maxsize=1024)
def _sensors_json(sensors: tuple[str, ...]) -> str:
    return json.dumps(list(sensors))


@dataclass
class MergeResult:
    created: int = 0
    extended: int = 0
    # Store visits that disappeared because a late sensor visit bridged them into another.
    absorbed: int = 0
    deltas: dict[str, DeviceDelta] = field(default_factory=dict)


_DAY_HOUR_CACHE: dict[tuple[tzinfo, int], tuple[str, int]] = {}


def local_day_hour(ts: float, tz: tzinfo) -> tuple[str, int]:
    """Local (ISO day, hour) of a UNIX time. Every UTC offset in use is a multiple of 15 min,
    so the answer is constant within a UTC quarter hour: cached by it (hot path)."""
    key = (tz, int(ts // 900))
    hit = _DAY_HOUR_CACHE.get(key)
    if hit is None:
        if len(_DAY_HOUR_CACHE) > 100_000:
            _DAY_HOUR_CACHE.clear()
        dt = datetime.fromtimestamp(key[1] * 900, tz)
        hit = _DAY_HOUR_CACHE[key] = (dt.date().isoformat(), dt.hour)
    return hit


def aggregate(
    members: Sequence[Mapping[str, Any]],
    tz: tzinfo,
    estimator: DeviceEstimator,
    excluded: set[str],
    rule: InsideRule = DEFAULT_RULE,
) -> dict[str, Any]:
    """The store visit made of these sensor visits (see the module docstring for each field)."""
    if len(members) == 1:
        return _aggregate_one(members[0], tz, estimator, excluded)
    members = sorted(members, key=_member_order)
    first = members[0]["first_seen"]
    last = max(m["last_seen"] for m in members)
    dwell = last - first
    # Strongest sensor; a missing RSSI loses to any reading, ties go to the first sensor name.
    best = min(members, key=lambda m: (m["rssi_max"] is None, -(m["rssi_max"] or 0), m["sensor"]))
    key = estimator.device_key(members[0])
    day, hour = local_day_hour(first, tz)
    inside, sensors = chained_inside(members, rule)
    visitor = inside >= rule.min_inside_s or any(m["class"] == "visitor" for m in members)
    return {
        "site": members[0]["site"],
        "device": members[0]["device"],
        "device_key": key,
        "randomized": int(any(m["randomized"] for m in members)),
        "partner_hash": next((m["partner_hash"] for m in members if m["partner_hash"]), None),
        "first_seen": first,
        "last_seen": last,
        "dwell_s": round(dwell, 3),
        "inside_s": round(min(inside, dwell), 3),
        "class": "visitor" if visitor else "passerby",
        "long_stay": int(any(m["long_stay"] for m in members)),
        "excluded": int(key in excluded),
        "best_sensor": best["sensor"],
        "best_rssi": best["rssi_max"],
        "sensors": _sensors_json(tuple(sensors)),
        "n_sensor_visits": len(members),
        "day": day,
        "hour": hour,
    }


def _aggregate_one(m: Mapping[str, Any], tz: tzinfo, estimator: DeviceEstimator, excluded: set[str]) -> dict[str, Any]:
    # The common case (one sensor, one visit), same result as the general path.
    key = estimator.device_key(m)
    day, hour = local_day_hour(m["first_seen"], tz)
    dwell = m["last_seen"] - m["first_seen"]
    return {
        "site": m["site"],
        "device": m["device"],
        "device_key": key,
        "randomized": int(bool(m["randomized"])),
        "partner_hash": m["partner_hash"] or None,
        "first_seen": m["first_seen"],
        "last_seen": m["last_seen"],
        "dwell_s": round(dwell, 3),
        "inside_s": round(min(m["inside_s"], dwell), 3),
        "class": "visitor" if m["class"] == "visitor" else "passerby",
        "long_stay": int(bool(m["long_stay"])),
        "excluded": int(key in excluded),
        "best_sensor": m["sensor"],
        "best_rssi": m["rssi_max"],
        "sensors": f'["{m["sensor"]}"]',
        "n_sensor_visits": 1,
        "day": day,
        "hour": hour,
    }


def _note(deltas: dict[str, DeviceDelta], visit: Mapping[str, Any], sign: int) -> None:
    """Add (sign=+1) or remove (-1) one store visit from its device's lifetime counters."""
    d = deltas.get(visit["device_key"])
    if d is None:
        d = deltas[visit["device_key"]] = DeviceDelta(
            randomized=visit["randomized"],
            partner_hash=visit.get("partner_hash"),
            first_seen=visit["first_seen"],
            last_seen=visit["last_seen"],
        )
    d.visit_count += sign
    d.total_dwell_s += sign * visit["dwell_s"]
    if sign > 0:
        d.first_seen = min(d.first_seen, visit["first_seen"])
        d.last_seen = max(d.last_seen, visit["last_seen"])
        d.long_stay = d.long_stay or bool(visit["long_stay"])
        d.max_dwell_s = max(d.max_dwell_s, visit["dwell_s"])
        d.partner_hash = d.partner_hash or visit.get("partner_hash")
        if visit["class"] == "visitor" and (d.first_visitor_day is None or visit["day"] < d.first_visitor_day):
            d.first_visitor_day = visit["day"]


def merge_new(
    conn: sqlite3.Connection,
    rows: Iterable[dict[str, Any]],
    *,
    gap_s: float,
    tz: tzinfo,
    estimator: DeviceEstimator,
    excluded: set[str],
    rule: InsideRule = DEFAULT_RULE,
) -> MergeResult:
    """Merge new sensor visits (not yet in ``sensor_visits``) into ``visits``.

    Sets ``row["visit_id"]`` on every row; the caller inserts the rows afterwards, in the same
    transaction. Existing sensor visits of absorbed store visits are re-pointed here.
    """
    result = MergeResult()
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    # Keys in first-seen order: a linking estimator chains a phone's MACs as they appear.
    device_key = estimator.device_key
    for row in sorted(rows, key=_by_start):
        groups[(row["site"], device_key(row))].append(row)
    if not groups:
        return result
    existing_by_device = _existing(conn, groups, gap_s)
    # New store visits are inserted together at the end (one executemany): their ids are
    # assigned here, as SQLite would (max + 1), inside the caller's write transaction.
    next_id = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM visits").fetchone()[0]
    created: list[dict[str, Any]] = []

    def create(members: list[dict[str, Any]]) -> None:
        nonlocal next_id
        visit = aggregate(members, tz, estimator, excluded, rule)
        visit["id"] = next_id
        next_id += 1
        for m in members:
            m["visit_id"] = visit["id"]
        created.append(visit)
        _note(result.deltas, visit, +1)
        result.created += 1

    for key, new in groups.items():
        existing = existing_by_device.get(key)
        if existing:
            lo = min(r["first_seen"] for r in new) - gap_s
            hi = max(r["last_seen"] for r in new) + gap_s
            existing = [v for v in existing if v["last_seen"] >= lo and v["first_seen"] <= hi]
        if not existing and len(new) == 1:
            create(new)
            continue
        # Sweep store visits and new sensor visits by start; anything within gap_s of the
        # running cluster end joins it.
        items: list[tuple[float, float, int, Any]] = [(v["first_seen"], v["last_seen"], 0, v) for v in existing or ()]
        items += [(r["first_seen"], r["last_seen"], 1, r) for r in new]
        items.sort(key=lambda it: (it[0], it[2]))
        clusters: list[list[tuple[float, float, int, Any]]] = []
        end = float("-inf")
        for it in items:
            if clusters and it[0] <= end + gap_s:
                clusters[-1].append(it)
                end = max(end, it[1])
            else:
                clusters.append([it])
                end = it[1]
        for cluster in clusters:
            fresh = [it[3] for it in cluster if it[2] == 1]
            if not fresh:
                continue
            old = [it[3] for it in cluster if it[2] == 0]
            if not old:
                create(fresh)
            else:
                _extend(conn, old, fresh, tz, estimator, excluded, result, rule)
    if created:
        conn.executemany(_INSERT_VISIT, map(_visit_values, created))
    return result


def _existing(
    conn: sqlite3.Connection, groups: Mapping[tuple[str, str], list[dict[str, Any]]], gap_s: float
) -> dict[tuple[str, str], list[sqlite3.Row]]:
    """Store visits the batch could touch, by (site, device_key): one query per 500 devices."""
    lo = min(r["first_seen"] for new in groups.values() for r in new) - gap_s
    hi = max(r["last_seen"] for new in groups.values() for r in new) + gap_s
    devices = sorted({device for _, device in groups})
    out: dict[tuple[str, str], list[sqlite3.Row]] = defaultdict(list)
    for start in range(0, len(devices), 500):
        chunk = devices[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        for v in conn.execute(
            "SELECT id, site, device, first_seen, last_seen, dwell_s, device_key, randomized, partner_hash, long_stay"
            f" FROM visits WHERE device_key IN ({marks}) AND last_seen >= ? AND first_seen <= ?",
            [*chunk, lo, hi],
        ):
            out[(v["site"], v["device_key"])].append(v)
    return out


def _extend(
    conn: sqlite3.Connection,
    old: list[sqlite3.Row],
    fresh: list[dict[str, Any]],
    tz: tzinfo,
    estimator: DeviceEstimator,
    excluded: set[str],
    result: MergeResult,
    rule: InsideRule = DEFAULT_RULE,
) -> None:
    target = min(v["id"] for v in old)
    others = [v["id"] for v in old if v["id"] != target]
    marks = ", ".join("?" * len(old))
    stored = conn.execute(
        f"SELECT {', '.join(MEMBER_COLUMNS)} FROM sensor_visits WHERE visit_id IN ({marks})", [v["id"] for v in old]
    ).fetchall()
    visit = aggregate([*stored, *fresh], tz, estimator, excluded, rule)
    if others:
        others_marks = ", ".join("?" * len(others))
        conn.execute(f"UPDATE sensor_visits SET visit_id = ? WHERE visit_id IN ({others_marks})", [target, *others])
        conn.execute(f"DELETE FROM visits WHERE id IN ({others_marks})", others)
        result.absorbed += len(others)
    conn.execute(_UPDATE_VISIT, [*(visit[c] for c in VISIT_COLUMNS), target])
    for m in fresh:
        m["visit_id"] = target
    for v in old:
        _note(result.deltas, dict(v), -1)
    _note(result.deltas, visit, +1)
    result.extended += 1


def remerge_all(
    conn: sqlite3.Connection, *, gap_s: float, tz: tzinfo, estimator: DeviceEstimator, excluded: set[str]
) -> MergeResult:
    """Rebuild every store visit from the stored sensor visits (after changing ``gap_s``).

    Device lifetime counters are recomputed from the visits still stored, which loses the
    counts of visits that retention already rolled up; run it only on young databases.
    """
    conn.execute("DELETE FROM visits")
    conn.execute("UPDATE sensor_visits SET visit_id = NULL")
    rows = [dict(r) for r in conn.execute(f"SELECT {', '.join(MEMBER_COLUMNS)} FROM sensor_visits")]
    result = merge_new(conn, rows, gap_s=gap_s, tz=tz, estimator=estimator, excluded=excluded)
    conn.executemany(
        "UPDATE sensor_visits SET visit_id = ? WHERE first_seen = ? AND id = ?",
        [(r["visit_id"], r["first_seen"], r["id"]) for r in rows],
    )
    conn.execute(
        """UPDATE devices SET
               visit_count = coalesce((SELECT count(*) FROM visits v WHERE v.device_key = devices.device_key), 0),
               total_dwell_s = coalesce(
                   (SELECT sum(dwell_s) FROM visits v WHERE v.device_key = devices.device_key), 0)"""
    )
    return result
