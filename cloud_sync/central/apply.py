"""Apply a hub's batch exactly once: its plan (``validation.py``) run in one transaction.

Idempotency works at two levels: ``applied_batches`` remembers every batch id (a resent batch
answers ``duplicate`` and touches nothing), and each record is an upsert keyed by
(device, store) with last-writer-wins on the hub's ``updated`` timestamp, so even a batch
re-cut with a different id cannot move data backwards.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from footfall.cloud_sync.central.db import Connection, Database
from footfall.cloud_sync.central.profiles import _devices_in, add_events, erase_personal, upsert_profiles, write_lock
from footfall.cloud_sync.central.validation import ApplyResult, Personal, Plan, plan_records


def _optout_set(conn: Connection, devices: Iterable[str]) -> set[str]:
    return _devices_in(conn, "SELECT device FROM optouts WHERE device IN ({marks})", devices)


def run_plan(conn: Connection, plan: Plan, *, now: float | None = None) -> ApplyResult:
    """Apply a plan inside the caller's transaction (which holds :func:`write_lock`)."""
    now = time.time() if now is None else now
    result = plan.result
    out = _optout_set(conn, plan.devices.values())
    dropped = {i for i, d in plan.devices.items() if d in out}
    result.dropped_optout += len(dropped)
    for i, op in plan.ops:
        if i not in dropped:
            op(conn)
            result.accepted += 1
    events = [row for i, row in plan.events if i not in dropped]
    add_events(conn, events)
    result.accepted += len(events)
    rows = [row for i, row in plan.profiles if i not in dropped]
    upsert_profiles(conn, rows, now=now)
    result.accepted += len(rows)
    result.dropped_no_consent += _apply_personal(conn, [p for i, p in plan.personal if i not in dropped], now)
    return result


def apply_records(conn: Connection, store: str, records: Sequence[Any], *, now: float | None = None) -> ApplyResult:
    """Validate and apply one batch's records inside the caller's transaction."""
    return run_plan(conn, plan_records(store, records, now=now), now=now)


def _apply_personal(conn: Connection, items: Sequence[Personal], now: float) -> int:
    """Record the consents, then the identifiers of the devices that have a consent on record,
    in a few statements for the whole batch. Returns how many records carried identifiers but
    no consent (dropped). As record by record: a device named twice in one batch is done one
    record at a time, so a consent in a later record never covers an earlier one."""
    if len({p.device for p in items}) < len(items):
        return sum(_apply_personal(conn, [p], now) for p in items)
    for p in items:
        if p.withdrawn is not None:
            erase_personal(conn, [p.device], p.withdrawn)
    items = [p for p in items if p.withdrawn is None]
    consents = [(p.device, p.given, p.source) for p in items if p.given is not None]
    if consents:
        conn.executemany(
            "INSERT INTO consents (device, pd_consent, given, withdrawn, source) VALUES (?, 1, ?, NULL, ?) "
            "ON CONFLICT (device) DO UPDATE SET pd_consent = 1, given = excluded.given, withdrawn = NULL, "
            "source = excluded.source WHERE consents.withdrawn IS NULL OR consents.withdrawn < excluded.given",
            consents,
        )
    wanted = [p for p in items if p.found]
    if not wanted:
        return 0
    ok = _devices_in(
        conn, "SELECT device FROM consents WHERE pd_consent <> 0 AND device IN ({marks})", [p.device for p in wanted]
    )
    # add_identifier() for each, in key order (concurrent batches then never deadlock on them):
    # the other identifiers of the type become inactive, this one is added or re-activated.
    ids = sorted((p.device, id_type, value) for p in wanted if p.device in ok for id_type, value in p.found)
    if ids:
        conn.executemany("UPDATE identifiers SET active = 0 WHERE device = ? AND type = ? AND value <> ?", ids)
        conn.executemany(
            "INSERT INTO identifiers (device, type, value, active, added) VALUES (?, ?, ?, 1, ?) "
            "ON CONFLICT (device, type, value) DO UPDATE SET active = 1",
            [(*i, now) for i in ids],
        )
    return sum(p.device not in ok for p in wanted)


def apply_batch(db: Database, hub: str, batch: Mapping[str, Any], *, now: float | None = None) -> ApplyResult:
    """Apply a validated batch exactly once: the batch id is claimed first in the same
    transaction, so a concurrent or later replay finds it taken and changes nothing.
    Records are validated before the transaction starts."""
    now = time.time() if now is None else now
    plan = plan_records(hub, batch["records"], now=now)
    for attempt in range(4):
        try:
            return _apply_planned(db, hub, batch, plan, now)
        except Exception as exc:
            # PostgreSQL may still pick a victim among concurrent batches (deadlock 40P01,
            # serialization 40001): the transaction rolled back whole, so running it again is safe.
            if getattr(exc, "sqlstate", None) not in ("40P01", "40001") or attempt == 3:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _apply_planned(db: Database, hub: str, batch: Mapping[str, Any], plan: Plan, now: float) -> ApplyResult:
    with db.connect() as conn, conn.transaction():
        write_lock(conn)
        claimed = conn.execute(
            "INSERT INTO applied_batches (batch_id, hub_id, seq, received, records) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (batch_id) DO NOTHING",
            (batch["batch_id"], hub, int(batch["seq"]), now, len(batch["records"])),
        ).rowcount
        if not claimed:
            conn.execute("UPDATE hubs SET last_sync = ? WHERE hub_id = ?", (now, hub))
            return ApplyResult(duplicate=True)
        result = run_plan(conn, plan, now=now)
        conn.execute(
            "UPDATE hubs SET last_sync = ?, last_seq = CASE WHEN last_seq > ? THEN last_seq ELSE ? END, "
            "batches = batches + 1, records = records + ? WHERE hub_id = ?",
            (now, int(batch["seq"]), int(batch["seq"]), result.accepted, hub),
        )
        return result
