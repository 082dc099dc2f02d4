"""The data transfer register: every hash that leaves the store, and the partner's bill.

One row per transfer (``o2o_transfers``): when, to whom (``recipient``: the partner's name or
``ad_platform``), who sent it (``actor``: the scenario runner, a user), what (``kind``:
``match`` = MAC MD5s sent for matching, ``sms`` = SMS requests, ``segment`` = a new
ad-platform segment snapshot offered through a share link (``detail``: JSON with the snapshot
id, rows, bytes, SHA-256 and the link's expiry), ``segment_download`` = a part of it fetched
through the link, ``erasure`` = rows removed from files still offered after an opt-out), for
which scenario and run, how many hashes, and the outcome (``ok``; ``failed`` = refused before
anything left; ``unknown`` = a timeout: the partner may have received it, so it is registered
and the reconciliation shows it). The snapshots themselves are listed by :func:`snapshots`.

The register holds counts, never hashes; it is kept ``register_days`` (3 years by default,
``hub/o2o/housekeeping.py``) for billing disputes and audits.

Both parties reconcile and bill from it: :func:`summary` totals a period by recipient and
kind; :func:`reconcile` puts our totals next to the partner's own ``/v1/usage`` figures.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any


def record(
    conn: sqlite3.Connection,
    *,
    recipient: str,
    kind: str,
    count: int,
    status: str,
    scenario_id: int | None = None,
    run_id: int | None = None,
    actor: str = "o2o-runner",
    detail: str = "",
    now: float | None = None,
    commit: bool = True,
) -> int:
    """Append one transfer; committed at once so that a later crash cannot lose it (``commit``
    False: part of the caller's transaction, e.g. an opt-out applied by the sync pushback)."""
    sql = (
        "INSERT INTO o2o_transfers (at, recipient, actor, kind, scenario_id, run_id, count, status, detail)"
        " VALUES (?,?,?,?,?,?,?,?,?)"
    )
    args = (time.time() if now is None else now, recipient, actor, kind, scenario_id, run_id, count, status, detail)
    if not commit:
        return conn.execute(sql, args).lastrowid
    with conn:
        return conn.execute(sql, args).lastrowid


def entries(conn: sqlite3.Connection, start: float, end: float) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT t.*, s.name AS scenario FROM o2o_transfers t LEFT JOIN o2o_scenarios s ON s.id = t.scenario_id"
        " WHERE t.at >= ? AND t.at < ? ORDER BY t.at, t.id",
        (start, end),
    )
    return [dict(r) for r in rows]


def snapshots(conn: sqlite3.Connection, start: float, end: float) -> list[dict[str, Any]]:
    """The ad-platform segment snapshots made in the period: rows, bytes, SHA-256, link expiry."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'o2o_snapshots'").fetchone():
        return []
    rows = conn.execute(
        "SELECT n.id, n.scenario_id, s.name AS scenario, n.run_id, n.created, n.rows, n.bytes, n.sha256, n.files,"
        " n.link_expires, n.superseded, n.deleted, n.purged_rows FROM o2o_snapshots n"
        " LEFT JOIN o2o_scenarios s ON s.id = n.scenario_id WHERE n.created >= ? AND n.created < ? ORDER BY n.id",
        (start, end),
    )
    out = []
    for r in rows:
        d = dict(r)
        # Paths are the hub's business; the recipient's view is the parts' sizes and digests.
        d["parts"] = [{k: f[k] for k in ("rows", "bytes", "sha256") if k in f} for f in json.loads(d.pop("files"))]
        out.append(d)
    return out


def summary(conn: sqlite3.Connection, start: float, end: float) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT recipient, kind, status, count(*) AS transfers, sum(count) AS hashes FROM o2o_transfers"
        " WHERE at >= ? AND at < ? GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        (start, end),
    )
    return [dict(r) for r in rows]


def invoice(
    conn: sqlite3.Connection, start: float, end: float, *, recipient: str, price_match: float, price_sms: float
) -> dict[str, Any]:
    """The period's bill as we compute it: matched hashes and SMS the partner accepted.

    Matches are billed per *known* hash (the partner's own price basis in seed 004: a match is
    a MAC it could tie to a subscriber); SMS per message the partner queued.
    """
    matched = conn.execute(
        "SELECT count(*) FROM o2o_targets WHERE known = 1 AND matched_at >= ? AND matched_at < ?", (start, end)
    ).fetchone()[0]
    sent = conn.execute(
        "SELECT count(*) FROM o2o_targets WHERE message_id IS NOT NULL AND messaged_at >= ? AND messaged_at < ?",
        (start, end),
    ).fetchone()[0]
    hashes_sent = conn.execute(
        "SELECT coalesce(sum(count), 0) FROM o2o_transfers WHERE recipient = ? AND kind = 'match'"
        " AND status = 'ok' AND at >= ? AND at < ?",
        (recipient, start, end),
    ).fetchone()[0]
    return {
        "recipient": recipient,
        "start": start,
        "end": end,
        "hashes_sent": hashes_sent,
        "matched": matched,
        "sms": sent,
        "price_match": price_match,
        "price_sms": price_sms,
        "amount_match": round(matched * price_match, 2),
        "amount_sms": round(sent * price_sms, 2),
        "total": round(matched * price_match + sent * price_sms, 2),
    }


def reconcile(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Our invoice figures against the partner's usage report; ``ok`` when they agree."""
    pairs = {"hashes": ("hashes_sent", "hashes"), "known": ("matched", "known"), "sms": ("sms", "sms")}
    diff = {k: int(theirs.get(t, 0)) - int(ours.get(o, 0)) for k, (o, t) in pairs.items()}
    mine = {o: ours.get(o, 0) for o, _ in pairs.values()}
    return {"ours": mine, "theirs": theirs, "difference": diff, "ok": not any(diff.values())}
