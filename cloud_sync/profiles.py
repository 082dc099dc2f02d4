"""Profile records for the centre: each device's profile as the centre stores it
(:func:`build_profiles`), queued for the devices whose profile changed since the last run.

152-FZ: the partner's hashes go only under a recorded consent, and a withdrawal made here
goes with the record, so the centre deletes what it holds of the person. Pushback rebuilds
the pending profiles of a device whose consent the centre withdrew (``pushback_items.py``).
"""

from __future__ import annotations

import sqlite3
import statistics
from collections.abc import Sequence
from typing import Any

from footfall.cloud_sync.outbox import _CHUNK, enqueue_many, has_table

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
