"""The outbox: records for the central service, kept in the hub database until acknowledged.

One pending row per ``(kind, key)``: enqueueing the same key again replaces the pending row's
data in place (the row keeps its place in the queue), so a device that changes ten times
between two sends is sent once, and re-running :func:`enqueue_changes` over unchanged data
adds nothing. Rows that belong to a formed batch (``batch_id`` set) are frozen: a newer
version of the same key becomes a new pending row behind them, so a resent batch is always
byte-identical to the first attempt (see ``sender.py``).

Record kinds (``docs/sync-protocol.md``):

- ``profile`` (key: ``device_key``): first/last seen, visits, dwell mean/median/total,
  cluster, segment memberships, and the partner phone hash only with a recorded consent.
- ``segment_change`` (key: segment, device, enter/exit, since): found by diffing
  ``segment_members`` against the snapshot taken at the previous run.
- ``scenario_result`` (key: scenario and run): finished ``o2o_runs`` when that table exists,
  or whatever :func:`enqueue` is given; and (key: scenario and ``day:YYYY-MM-DD``) each
  scenario's report of a local day's cohort, re-reported while it can still change
  (``o2o_results.py``).
- ``daily_aggregate`` (key: site and local day): closed days only; visitors, passers-by,
  capture rate, dwell, and per-sensor reporting (the day's sensor health).
- ``health`` (key: site): the sensors now (total, stale, offline; per-sensor state), queued
  when a state changes.
- ``definitions`` (key: site): the version of every segment definition and scenario setting
  the centre pushed, and whether it was applied or refused (``definitions.py``).
- ``event`` (key: ``visit:<device>:<start>``, ``coupon:<code>``, ``redemption:<id>:<code>``):
  visitor visits once settled (no merge can extend them any more), coupons issued and
  redemptions (O2O tables, when installed), by id cursors; the first run backfills 30 days.

Opted-out devices are never enqueued. The outbox is bounded: above ``max_rows`` the oldest
pending rows of the droppable kinds go first and every drop is counted; profiles and daily
aggregates are never dropped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import sqlite3
import statistics
import time
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

KINDS = ("profile", "segment_change", "scenario_result", "daily_aggregate", "event", "health", "definitions")
NEVER_DROPPED = ("profile", "daily_aggregate", "health", "definitions")
_CHUNK = 500


def dumps(data: Any) -> str:
    """Canonical JSON: the same data always gives the same text (and digest)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    return bool(conn.execute("PRAGMA table_info(" + _quote(name) + ")").fetchall())


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# -- state and counters ---------------------------------------------------------------------


def get_state(conn: sqlite3.Connection, name: str, default: str | None = None) -> str | None:
    row = conn.execute("SELECT value FROM sync_state WHERE name = ?", (name,)).fetchone()
    return row[0] if row else default


def set_state(conn: sqlite3.Connection, name: str, value: Any) -> None:
    conn.execute(
        "INSERT INTO sync_state (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, str(value)),
    )


def count(conn: sqlite3.Connection, name: str, n: int = 1, now: float | None = None) -> None:
    if n <= 0:
        return
    conn.execute(
        """INSERT INTO sync_counters (name, count, last_at) VALUES (?, ?, ?)
           ON CONFLICT (name) DO UPDATE SET count = count + excluded.count, last_at = excluded.last_at""",
        (name, n, time.time() if now is None else now),
    )


def counters(conn: sqlite3.Connection) -> dict[str, int]:
    return {r[0]: r[1] for r in conn.execute("SELECT name, count FROM sync_counters ORDER BY name")}


# -- the queue itself -----------------------------------------------------------------------


def enqueue(conn: sqlite3.Connection, kind: str, key: str, data: Any, *, now: float | None = None) -> int:
    """Queue one record; replaces a pending record of the same kind and key. Returns its row id.

    Caller holds the transaction (``with conn:``).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {KINDS}")
    if not isinstance(key, str) or not key:
        raise ValueError("record key must be a non-empty string")
    text = dumps(data)
    row = conn.execute(
        """INSERT INTO sync_outbox (kind, key, data, created) VALUES (?, ?, ?, ?)
           ON CONFLICT (kind, key) WHERE batch_id IS NULL AND parked IS NULL
           DO UPDATE SET data = excluded.data, created = excluded.created
           RETURNING id""",
        (kind, key, text, time.time() if now is None else now),
    ).fetchone()
    return int(row[0])


def enqueue_many(
    conn: sqlite3.Connection, kind: str, items: Iterable[tuple[str, Any]], *, now: float | None = None
) -> int:
    """:func:`enqueue` for many ``(key, data)`` at once (one statement, executemany)."""
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {KINDS}")
    now = time.time() if now is None else now
    rows = [(kind, key, dumps(data), now) for key, data in items]
    if any(not isinstance(r[1], str) or not r[1] for r in rows):
        raise ValueError("record key must be a non-empty string")
    conn.executemany(
        """INSERT INTO sync_outbox (kind, key, data, created) VALUES (?, ?, ?, ?)
           ON CONFLICT (kind, key) WHERE batch_id IS NULL AND parked IS NULL
           DO UPDATE SET data = excluded.data, created = excluded.created""",
        rows,
    )
    return len(rows)


def enqueue_if_changed(
    conn: sqlite3.Connection, kind: str, key: str, data: Any, *, now: float | None = None, compare: Any = None
) -> bool:
    """Queue a snapshot only when it (or ``compare``, its non-volatile part) differs from the last one."""
    digest = _digest(dumps(data if compare is None else compare))
    row = conn.execute("SELECT digest FROM sync_digests WHERE kind = ? AND key = ?", (kind, key)).fetchone()
    if row and row[0] == digest:
        return False
    enqueue(conn, kind, key, data, now=now)
    conn.execute(
        "INSERT INTO sync_digests (kind, key, digest) VALUES (?, ?, ?) "
        "ON CONFLICT (kind, key) DO UPDATE SET digest = excluded.digest",
        (kind, key, digest),
    )
    return True


def pending_count(conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute("SELECT kind, count(*) FROM sync_outbox WHERE parked IS NULL GROUP BY kind ORDER BY kind")
    return {r[0]: r[1] for r in rows}


def enforce_bound(
    conn: sqlite3.Connection, max_rows: int, droppable: Sequence[str], *, now: float | None = None
) -> dict[str, int]:
    """Drop the oldest pending rows of ``droppable`` kinds until at most ``max_rows`` remain.

    Never touches rows of a formed batch, nor profiles/daily aggregates. Returns drops by kind
    (also added to the ``dropped_<kind>`` counters).
    """
    total = conn.execute("SELECT count(*) FROM sync_outbox WHERE parked IS NULL").fetchone()[0]
    excess = total - max_rows
    dropped: dict[str, int] = {}
    kinds = [k for k in droppable if k not in NEVER_DROPPED]
    if excess <= 0:
        return dropped
    if kinds:
        marks = ",".join("?" * len(kinds))
        ids = conn.execute(
            f"""SELECT id, kind, key FROM sync_outbox WHERE batch_id IS NULL AND parked IS NULL AND kind IN ({marks})
                ORDER BY id LIMIT ?""",
            (*kinds, excess),
        ).fetchall()
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i : i + _CHUNK]
            conn.execute(f"DELETE FROM sync_outbox WHERE id IN ({','.join('?' * len(chunk))})", [r[0] for r in chunk])
        # A dropped snapshot must be re-queued when it next changes, not thought already sent.
        conn.executemany("DELETE FROM sync_digests WHERE kind = ? AND key = ?", [(r[1], r[2]) for r in ids])
        for _, kind, _ in ids:
            dropped[kind] = dropped.get(kind, 0) + 1
        for kind, n in dropped.items():
            count(conn, f"dropped_{kind}", n, now)
        excess -= len(ids)
    if dropped:
        log.warning("sync outbox over its bound of %d rows: dropped %s (oldest first)", max_rows, dropped)
    if excess > 0:
        # Only never-dropped kinds are left; keeping them beats losing profiles silently.
        count(conn, "outbox_over_bound", 1, now)
        log.warning("sync outbox holds %d rows over its bound, all of kinds that are never dropped", excess)
    return dropped


def release_batch(conn: sqlite3.Connection, batch_id: str) -> None:
    """Forget a formed, unacknowledged batch and give its rows back to the queue.

    Used when the batch must change (413 re-cut, an opt-out or consent withdrawal touching
    its rows): the re-formed batch has new content, hence a new id, and a new seq (the released
    batch may have reached the centre, so its seq stays used: seq has gaps, never repeats).
    Caller holds the transaction.
    """
    # A newer version of a record queued meanwhile supersedes the frozen one.
    conn.execute(
        """DELETE FROM sync_outbox WHERE batch_id = ? AND parked IS NULL AND EXISTS (
               SELECT 1 FROM sync_outbox o WHERE o.kind = sync_outbox.kind AND o.key = sync_outbox.key
               AND o.batch_id IS NULL AND o.parked IS NULL)""",
        (batch_id,),
    )
    if conn.execute("SELECT count(*) FROM sync_batches").fetchone()[0] > 1:
        # So does one in a batch formed after this one (the sender forms one ahead): re-cut,
        # this batch goes out after it and must not carry the older version. (A later row of
        # the same kind and key is a newer version: a frozen row is never updated in place.)
        newest: dict[tuple[str, str], int] = {}
        for rid, kind, key in conn.execute(
            "SELECT id, kind, key FROM sync_outbox WHERE batch_id IS NOT NULL AND batch_id <> ? AND parked IS NULL",
            (batch_id,),
        ):
            newest[(kind, key)] = max(rid, newest.get((kind, key), rid))
        stale = [
            rid
            for rid, kind, key in conn.execute(
                "SELECT id, kind, key FROM sync_outbox WHERE batch_id = ? AND parked IS NULL", (batch_id,)
            )
            if newest.get((kind, key), rid) > rid
        ]
        for i in range(0, len(stale), _CHUNK):
            chunk = stale[i : i + _CHUNK]
            conn.execute(f"DELETE FROM sync_outbox WHERE id IN ({','.join('?' * len(chunk))})", chunk)
    conn.execute("UPDATE sync_outbox SET batch_id = NULL WHERE batch_id = ? AND parked IS NULL", (batch_id,))
    conn.execute("DELETE FROM sync_batches WHERE batch_id = ?", (batch_id,))


def unpark(conn: sqlite3.Connection, *, kind: str | None = None) -> int:
    """Queue parked rows again (after the centre was fixed); returns how many. Caller holds the transaction."""
    where = "parked IS NOT NULL" + (" AND kind = ?" if kind else "")
    args = (kind,) if kind else ()
    # A pending newer version of the same record wins over the parked one, the newest parked over older ones.
    conn.execute(
        f"""DELETE FROM sync_outbox WHERE {where} AND id < (
               SELECT max(o.id) FROM sync_outbox o WHERE o.kind = sync_outbox.kind AND o.key = sync_outbox.key
               AND o.parked IS NOT NULL)""",
        args,
    )
    conn.execute(
        f"""DELETE FROM sync_outbox WHERE {where} AND EXISTS (
               SELECT 1 FROM sync_outbox o WHERE o.kind = sync_outbox.kind AND o.key = sync_outbox.key
               AND o.batch_id IS NULL AND o.parked IS NULL)""",
        args,
    )
    return conn.execute(
        f"UPDATE sync_outbox SET parked = NULL, park_reason = NULL, batch_id = NULL WHERE {where}", args
    ).rowcount


# -- opt-outs and consents (used by enqueueing and by pushback) -------------------------------


def optout_keys(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT device_key FROM optout_keys")}


def record_consent(conn: sqlite3.Connection, device: str, *, granted: float | None = None, source: str = "hub") -> None:
    """Record a personal-data processing consent for a device: its phone hash may then be synced."""
    now = time.time()
    conn.execute(
        """INSERT INTO consents (device, granted, withdrawn, source, updated) VALUES (?, ?, NULL, ?, ?)
           ON CONFLICT (device) DO UPDATE SET granted = excluded.granted, withdrawn = NULL,
               source = excluded.source, updated = excluded.updated""",
        (device, now if granted is None else granted, source, now),
    )


# -- what enqueue_changes finds --------------------------------------------------------------


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


# The phone hash the telecom partner shared for a device at its latest match. The partner
# returns one only where the subscriber allows it to be shared (docs/o2o.md), so it arrives
# with its own consent; a withdrawal recorded on the hub still stops it.
_PHONES_SQL = """SELECT device_key, phone_md5, max(matched_at) AS matched_at FROM o2o_targets
                 WHERE phone_md5 IS NOT NULL GROUP BY device_key"""


def _shared_phones(conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, tuple[str, float]]:
    if not keys or not has_table(conn, "o2o_targets"):
        return {}
    marks = ",".join("?" * len(keys))
    return {
        r[0]: (r[1], float(r[2] or 0.0))
        for r in conn.execute(f"SELECT * FROM ({_PHONES_SQL}) WHERE device_key IN ({marks})", list(keys))
        if r[1]
    }


def _profile_state_sql(conn: sqlite3.Connection) -> str:
    # One string per device of everything a profile is built from: comparing it with the
    # string stored at the previous run finds changed devices in one SQL pass, including late
    # visits that raise visit_count without moving last_seen.
    segs = has_table(conn, "segment_members")
    seg_join = (
        """LEFT JOIN (SELECT device_key, group_concat(segment_id || '@' || since, ',') AS segs
                      FROM (SELECT device_key, segment_id, since FROM segment_members
                            ORDER BY device_key, segment_id)
                      GROUP BY device_key) m ON m.device_key = d.device_key"""
        if segs
        else ""
    )
    seg_col = "coalesce(m.segs, '')" if segs else "''"
    phones = has_table(conn, "o2o_targets")
    phone_join = f"LEFT JOIN ({_PHONES_SQL}) ph ON ph.device_key = d.device_key" if phones else ""
    phone_col = "coalesce(ph.phone_md5, '') || '|' || coalesce(cw.withdrawn, '')" if phones else "''"
    withdrawn_join = "LEFT JOIN consents cw ON cw.device = d.device_key AND cw.withdrawn IS NOT NULL" if phones else ""
    return f"""
        SELECT cur.device_key, cur.snapshot FROM (
            SELECT d.device_key,
                   d.visit_count || '|' || d.total_dwell_s || '|' || d.first_seen || '|' || d.last_seen || '|'
                   || coalesce(CASE WHEN length(d.partner_hash) = 32 THEN d.partner_hash END, '') || '|'
                   || d.excluded || '|' || {seg_col} || '|'
                   || coalesce(c.granted, '') || '|' || {phone_col} AS snapshot
            FROM devices d
            {seg_join}
            {phone_join}
            {withdrawn_join}
            LEFT JOIN consents c ON c.device = d.device_key AND c.withdrawn IS NULL AND c.granted IS NOT NULL
            WHERE d.device_key NOT IN (SELECT device_key FROM optout_keys) AND d.excluded = 0
        ) cur
        LEFT JOIN sync_profile_state p ON p.device_key = cur.device_key
        WHERE p.state IS NULL OR p.state != cur.snapshot
    """


def build_profiles(conn: sqlite3.Connection, keys: Sequence[str], site: str) -> dict[str, dict[str, Any]]:
    """Profile records for ``keys`` (devices rows that exist), as sent to the centre."""
    out: dict[str, dict[str, Any]] = {}
    has_segs = has_table(conn, "segment_members") and has_table(conn, "segments")
    for i in range(0, len(keys), _CHUNK):
        chunk = list(keys[i : i + _CHUNK])
        marks = ",".join("?" * len(chunk))
        dwell: dict[str, list[float]] = {}
        for key, d in conn.execute(
            f"SELECT device_key, dwell_s FROM visits WHERE device_key IN ({marks}) AND class = 'visitor'", chunk
        ):
            dwell.setdefault(key, []).append(d)
        members: dict[str, list[tuple[str, str, float]]] = {}
        if has_segs:
            for key, name, kind, since in conn.execute(
                f"""SELECT m.device_key, s.name, s.kind, m.since FROM segment_members m
                    JOIN segments s ON s.id = m.segment_id WHERE m.device_key IN ({marks})""",
                chunk,
            ):
                members.setdefault(key, []).append((name, kind, since))
        consented = {
            r[0]: r[1]
            for r in conn.execute(
                f"SELECT device, granted FROM consents WHERE device IN ({marks}) "
                "AND withdrawn IS NULL AND granted IS NOT NULL",
                chunk,
            )
        }
        withdrawn = {
            r[0]: r[1]
            for r in conn.execute(
                f"SELECT device, withdrawn FROM consents WHERE device IN ({marks}) AND withdrawn IS NOT NULL", chunk
            )
        }
        phones = _shared_phones(conn, chunk)
        for r in conn.execute(
            f"""SELECT device_key, randomized, partner_hash, first_seen, last_seen, visit_count, total_dwell_s,
                       excluded FROM devices WHERE device_key IN ({marks})""",
            chunk,
        ):
            key = r[0]
            visits, total = int(r[5]), float(r[6])
            segs = sorted(members.get(key, []))
            clusters = [n for n, k, _ in segs if k == "cluster"]
            out[key] = {
                "device": key,
                "site": site,
                "randomized": bool(r[1]),
                "first_seen": r[3],
                "last_seen": r[4],
                "visits": visits,
                "dwell_total_s": round(total, 1),
                "dwell_mean_s": round(total / visits, 1) if visits else None,
                # Over the visitor visits still within retention; the lifetime mean is above.
                "dwell_median_s": round(statistics.median(dwell[key]), 1) if dwell.get(key) else None,
                "cluster": clusters[0].removeprefix("cluster: ") if clusters else None,
                "segments": [{"name": n, "kind": k, "since": s} for n, k, s in segs],
                # 152-FZ: a phone hash is personal data, sent only under a recorded consent.
                # Only the MAC MD5 itself: once the O2O module keyed it at rest ("k1:..."), the
                # centre has nothing to match it with (hub/o2o/privacy.py).
                "partner_hash": r[2] if (r[2] and len(r[2]) == 32 and key in consented) else None,
            }
            if key in phones and key not in withdrawn:
                phone, matched_at = phones[key]
                out[key]["phone_md5"] = phone
                if key not in consented:
                    consented[key] = matched_at
                    out[key]["consent_source"] = "partner"
            if key in consented:
                # The centre records the consent from this before it accepts the phone hash.
                out[key]["consent_granted"] = consented[key]
            elif key in withdrawn:
                # Withdrawn here (a local opt-out, a consent withdrawn at the store or the
                # centre): the centre deletes what it holds of the person, wherever it sits.
                out[key]["consent_withdrawn"] = withdrawn[key]
    return out


def _enqueue_profiles(conn: sqlite3.Connection, site: str, now: float) -> int:
    changed = conn.execute(_profile_state_sql(conn)).fetchall()
    n = 0
    for i in range(0, len(changed), _CHUNK):
        chunk = changed[i : i + _CHUNK]
        profiles = build_profiles(conn, [r[0] for r in chunk], site)
        n += enqueue_many(conn, "profile", ((r[0], profiles[r[0]]) for r in chunk if r[0] in profiles), now=now)
        conn.executemany(
            "INSERT INTO sync_profile_state (device_key, state) VALUES (?, ?) "
            "ON CONFLICT (device_key) DO UPDATE SET state = excluded.state",
            [(r[0], r[1]) for r in chunk],
        )
    return n


def _enqueue_segment_changes(conn: sqlite3.Connection, now: float) -> int:
    if not (has_table(conn, "segment_members") and has_table(conn, "segments")):
        return 0
    blocked = optout_keys(conn)
    entries = conn.execute(
        """SELECT m.segment_id, m.device_key, s.name, s.kind, m.since FROM segment_members m
           JOIN segments s ON s.id = m.segment_id
           LEFT JOIN sync_segment_snapshot p ON p.segment_id = m.segment_id AND p.device_key = m.device_key
           WHERE p.device_key IS NULL OR p.since != m.since"""
    ).fetchall()
    exits = conn.execute(
        """SELECT p.segment_id, p.device_key, p.name, p.kind, p.since FROM sync_segment_snapshot p
           LEFT JOIN segment_members m ON m.segment_id = p.segment_id AND m.device_key = p.device_key
           WHERE m.device_key IS NULL OR m.since != p.since"""
    ).fetchall()
    records: list[tuple[str, dict[str, Any]]] = []
    for _, key, name, kind, since in exits:
        if key not in blocked:
            data = {"segment": name, "segment_kind": kind, "device": key, "change": "exit", "ts": now, "since": since}
            records.append((f"{name}|{key}|exit|{since}", data))
    conn.executemany(
        "DELETE FROM sync_segment_snapshot WHERE segment_id = ? AND device_key = ?", [(r[0], r[1]) for r in exits]
    )
    for _, key, name, kind, since in entries:
        if key not in blocked:
            data = {"segment": name, "segment_kind": kind, "device": key, "change": "enter", "ts": since}
            records.append((f"{name}|{key}|enter|{since}", data))
    conn.executemany(
        "INSERT OR REPLACE INTO sync_segment_snapshot (segment_id, device_key, name, kind, since) "
        "VALUES (?, ?, ?, ?, ?)",
        [tuple(r) for r in entries],
    )
    return enqueue_many(conn, "segment_change", records, now=now)


def _enqueue_scenario_results(conn: sqlite3.Connection, site: str, now: float) -> int:
    if not (has_table(conn, "o2o_runs") and has_table(conn, "o2o_scenarios")):
        return 0
    n = 0
    rows = conn.execute(
        """SELECT r.*, s.name AS scenario FROM o2o_runs r JOIN o2o_scenarios s ON s.id = r.scenario_id
           WHERE r.finished IS NOT NULL ORDER BY r.id"""
    )
    names = [d[0] for d in rows.description]
    for row in rows.fetchall():
        data = dict(zip(names, row, strict=True)) | {"site": site}
        day = dt.datetime.fromtimestamp(data["started"], dt.UTC).date().isoformat()
        data["period"] = f"{day}#run-{data['id']}"
        if enqueue_if_changed(conn, "scenario_result", f"{site}|{data['scenario_id']}|{data['id']}", data, now=now):
            n += 1
    return n


def _day_bounds(day: str, tz: zoneinfo.ZoneInfo) -> tuple[float, float]:
    d = dt.date.fromisoformat(day)
    start = dt.datetime.combine(d, dt.time(), tzinfo=tz)
    end = dt.datetime.combine(d + dt.timedelta(days=1), dt.time(), tzinfo=tz)
    return start.timestamp(), end.timestamp()


def daily_aggregate(conn: sqlite3.Connection, site: str, day: str, tz: zoneinfo.ZoneInfo) -> dict[str, Any]:
    """One closed local day of the store: visitors, passers-by, capture rate, dwell, sensors."""
    r = conn.execute(
        """SELECT count(DISTINCT CASE WHEN class = 'visitor' THEN device_key END),
                  count(DISTINCT CASE WHEN class = 'passerby' THEN device_key END),
                  total(class = 'visitor'), total(CASE WHEN class = 'visitor' THEN dwell_s END)
           FROM visits WHERE day = ? AND excluded = 0""",
        (day,),
    ).fetchone()
    visitors, passersby, visits, dwell_sum = int(r[0]), int(r[1]), int(r[2]), float(r[3])
    dwells = [
        d[0]
        for d in conn.execute("SELECT dwell_s FROM visits WHERE day = ? AND excluded = 0 AND class = 'visitor'", (day,))
    ]
    start, end = _day_bounds(day, tz)
    sensors: dict[str, dict[str, Any]] = {}
    for sensor, n, first, last in conn.execute(
        "SELECT sensor, count(*), min(ts), max(ts) FROM presence WHERE site = ? AND ts >= ? AND ts < ? GROUP BY sensor",
        (site, start, end),
    ):
        sensors[sensor] = {"presence_reports": n, "first_report": first, "last_report": last}
    for sensor, n in conn.execute(
        "SELECT best_sensor, count(*) FROM visits WHERE day = ? GROUP BY best_sensor", (day,)
    ):
        sensors.setdefault(sensor, {})["visits"] = n
    return {
        "site": site,
        "day": day,
        "visitors": visitors,
        "passersby": passersby,
        "capture_rate": round(visitors / (visitors + passersby), 4) if visitors + passersby else None,
        "visits": visits,
        "dwell_total_s": round(dwell_sum, 1),
        "dwell_mean_s": round(dwell_sum / visits, 1) if visits else None,
        "dwell_median_s": round(statistics.median(dwells), 1) if dwells else None,
        "sensor_health": {"sensors_reporting": len(sensors), "sensors": sensors},
    }


def closed_days(conn: sqlite3.Connection, tz: zoneinfo.ZoneInfo, now: float, lookback_days: int) -> list[str]:
    """Local days before today that have visits: all of them at the first run, then the last few."""
    today = dt.datetime.fromtimestamp(now, tz).date().isoformat()
    last = get_state(conn, "aggregate_day")
    if last is None:
        rows = conn.execute("SELECT DISTINCT day FROM visits WHERE day < ? ORDER BY day", (today,))
    else:
        since = (dt.date.fromisoformat(today) - dt.timedelta(days=max(lookback_days, 1))).isoformat()
        since = min(since, (dt.date.fromisoformat(last) + dt.timedelta(days=1)).isoformat())
        rows = conn.execute("SELECT DISTINCT day FROM visits WHERE day >= ? AND day < ? ORDER BY day", (since, today))
    return [r[0] for r in rows]


def _enqueue_daily(conn: sqlite3.Connection, site: str, tz: zoneinfo.ZoneInfo, now: float, lookback: int) -> int:
    n = 0
    days = closed_days(conn, tz, now, lookback)
    for day in days:
        if enqueue_if_changed(conn, "daily_aggregate", f"{site}|{day}", daily_aggregate(conn, site, day, tz), now=now):
            n += 1
    if days:
        set_state(conn, "aggregate_day", max(days[-1], get_state(conn, "aggregate_day") or ""))
    return n


def health_summary(conn: sqlite3.Connection, site: str, now: float, heartbeat_s: float) -> dict[str, Any]:
    """The store's sensors right now: totals for the centre's store list, and per-sensor state."""
    stale_after = 3 * heartbeat_s  # the hub's own rule (hub/sensors.py): 3 missed heartbeats
    sensors: dict[str, dict[str, Any]] = {}
    for name, state, last, backlog, dropped, version in conn.execute(
        "SELECT sensor, state, last_message, backlog, dropped, version FROM sensors WHERE site = ? ORDER BY sensor",
        (site,),
    ):
        stale = last is None or now - last > stale_after
        sensors[name] = {"state": state, "stale": stale, "backlog": backlog, "dropped": dropped, "version": version}
    return {
        "site": site,
        "ts": now,
        "sensors_total": len(sensors),
        "sensors_stale": sum(s["stale"] for s in sensors.values()),
        "sensors_failing": sum(s["state"] == "offline" for s in sensors.values()),
        "sensors": sensors,
    }


def _enqueue_health(conn: sqlite3.Connection, site: str, now: float, heartbeat_s: float) -> int:
    data = health_summary(conn, site, now, heartbeat_s)
    if not data["sensors"]:
        return 0
    # Backlog counters move all the time; a new record only when a state or a count changes.
    stable = {k: v for k, v in data.items() if k != "ts"}
    stable["sensors"] = {n: {"state": s["state"], "stale": s["stale"]} for n, s in data["sensors"].items()}
    return int(enqueue_if_changed(conn, "health", site, data, now=now, compare=stable))


def _id_cursor(conn: sqlite3.Connection, name: str, table: str, id_col: str) -> int | None:
    """The stored id cursor, reset when the table's ids went below it (a rebuild renumbered them)."""
    top = conn.execute(f"SELECT max({id_col}) FROM {table}").fetchone()[0]
    cursor = get_state(conn, name)
    if top is None:
        return None
    if cursor is not None and int(cursor) > top:
        return 0  # event keys are deterministic, so anything resent collapses at the centre
    return None if cursor is None else int(cursor)


def _enqueue_visit_events(conn: sqlite3.Connection, now: float, settle_s: float, backfill_days: float) -> int:
    """Visitor visits as profile events, once they can no longer be extended by a merge."""
    cursor = _id_cursor(conn, "visit_event_id", "visits", "id")
    if cursor is None:
        if conn.execute("SELECT 1 FROM visits LIMIT 1").fetchone() is None:
            return 0
        # First run: a bounded backfill, not years of history.
        start = conn.execute(
            "SELECT min(id) FROM visits WHERE first_seen >= ?", (now - backfill_days * 86400.0,)
        ).fetchone()[0]
        cursor = (start - 1) if start is not None else conn.execute("SELECT max(id) FROM visits").fetchone()[0]
    # Ids are in arrival order; stop before the first visit still open to merging, so the cursor
    # never passes a visit that was not sent.
    unsettled = conn.execute(
        "SELECT min(id) FROM visits WHERE id > ? AND last_seen >= ?", (cursor, now - settle_s)
    ).fetchone()[0]
    upper = unsettled if unsettled is not None else conn.execute("SELECT max(id) FROM visits").fetchone()[0] + 1
    rows = conn.execute(
        """SELECT device_key, first_seen, last_seen, dwell_s, best_sensor FROM visits
           WHERE id > ? AND id < ? AND class = 'visitor' AND excluded = 0
             AND device_key NOT IN (SELECT device_key FROM optout_keys)
           ORDER BY id""",
        (cursor, upper),
    ).fetchall()
    records = [
        (
            f"visit:{key}:{first!r}",
            {"type": "visit", "device": key, "ts": first, "last_seen": last, "dwell_s": round(dwell, 1), "zone": zone},
        )
        for key, first, last, dwell, zone in rows
    ]
    set_state(conn, "visit_event_id", max(cursor, upper - 1))
    return enqueue_many(conn, "event", records, now=now)


def _enqueue_o2o_events(conn: sqlite3.Connection, now: float) -> int:
    """Coupons issued and redemptions (the O2O module's tables, when installed) as profile events."""
    n = 0
    blocked = optout_keys(conn)
    if has_table(conn, "o2o_coupons"):
        cursor = _id_cursor(conn, "coupon_event_rowid", "o2o_coupons", "rowid") or 0
        rows = conn.execute(
            """SELECT rowid, code, device_key, issued_at, scenario_id, campaign, kind, value, valid_until
               FROM o2o_coupons WHERE rowid > ? ORDER BY rowid""",
            (cursor,),
        ).fetchall()
        records = [
            (
                f"coupon:{r[1]}",
                {
                    "type": "coupon_issued",
                    "device": r[2],
                    "ts": r[3],
                    "code": r[1],
                    "scenario_id": r[4],
                    "campaign": r[5],
                    "coupon_kind": r[6],
                    "value": r[7],
                    "valid_until": r[8],
                },
            )  # fmt: skip
            for r in rows
            if r[2] and r[2] not in blocked
        ]
        if rows:
            set_state(conn, "coupon_event_rowid", rows[-1][0])
        n += enqueue_many(conn, "event", records, now=now)
    if has_table(conn, "o2o_redemptions") and has_table(conn, "o2o_coupons"):
        cursor = _id_cursor(conn, "redemption_event_id", "o2o_redemptions", "id") or 0
        rows = conn.execute(
            """SELECT r.id, r.code, c.device_key, r.at, r.store, r.amount, r.discount
               FROM o2o_redemptions r JOIN o2o_coupons c ON c.code = r.code WHERE r.id > ? ORDER BY r.id""",
            (cursor,),
        ).fetchall()
        records = [
            (
                f"redemption:{r[0]}:{r[1]}",
                {
                    "type": "redemption",
                    "device": r[2],
                    "ts": r[3],
                    "code": r[1],
                    "store": r[4],
                    "amount": r[5],
                    "discount": r[6],
                },
            )  # fmt: skip
            for r in rows
            if r[2] and r[2] not in blocked
        ]
        if rows:
            set_state(conn, "redemption_event_id", rows[-1][0])
        n += enqueue_many(conn, "event", records, now=now)
    return n


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
    from footfall.cloud_sync import definitions, o2o_results  # they build on this module

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
