"""Profile events for the centre: visitor visits once settled (no merge can extend them any
more), coupons issued and redemptions (the O2O module's tables, when installed).

Each source is read by an id cursor kept in ``sync_state``; event keys are deterministic, so
anything sent twice collapses at the centre. The first run backfills a bounded period only.
"""

from __future__ import annotations

import sqlite3

from footfall.cloud_sync.outbox import enqueue_many, get_state, has_table, optout_keys, set_state


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
