"""Opt-outs: a person's hashes removed everywhere on the hub, the segment files included.

A person is what the hub links: their MAC MD5 (raw or keyed), the phone MD5 a partner shared
for it, and the device keys of the visits and targets that carry either. :func:`forget`
grows that set from whatever it is given, then

- puts every one of those hashes on the stop-list (keyed), so no later run targets them;
- deletes their segment rows and blocks their open targets (``pending``/``matched``);
- keys the MAC MD5 and deletes the phone MD5 of their targets, and clears their coupons'
  hash and the partner hash of their visits, sensor visits and devices;
- rewrites every segment file still on disk (snapshots and the older per-run files) without
  their rows, updating the snapshot's rows, bytes and SHA-256, and registers the erasure.

It never commits, so the sync pushback can call :func:`forget_devices` inside the transaction
that applies an opt-out or a consent withdrawal; a local opt-out (``footfall o2o stop add``)
commits around it. Copies an ad platform downloaded earlier are outside the hub's reach; the
register says which snapshots were downloaded, and when.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

from footfall.hub.o2o import adsegment, register
from footfall.hub.o2o.privacy import Subjects, attach, is_keyed, is_raw, key_subject_tables, set_secure_delete

log = logging.getLogger(__name__)

_CHUNK = 500


@dataclass
class ForgetResult:
    hashes: int = 0  # MAC and phone hashes of the person, now on the stop-list (keyed)
    device_keys: int = 0
    targets: int = 0
    segment_rows: int = 0
    visits: int = 0
    files_rewritten: int = 0
    rows_removed: int = 0


def _chunks(values: Iterable[str]) -> Iterable[list[str]]:
    vals = sorted(values)
    for i in range(0, len(vals), _CHUNK):
        yield vals[i : i + _CHUNK]


def _marks(values: list[str]) -> str:
    return ",".join("?" * len(values))


def _expand(conn: sqlite3.Connection, subj: Subjects, macs: set[str], phones: set[str], keys: set[str]) -> set[int]:
    """Grow the person's MAC hashes, phone hashes and device keys from what the hub links; target ids."""
    ids: set[int] = set()
    for _ in range(2):  # keys -> hashes -> keys is as far as the hub links a person
        forms = {f for m in macs for f in subj.forms(m)}
        queries = [("device_key", keys), ("partner_hash", forms), ("phone_md5", {p.lower() for p in phones})]
        for col, values in queries:
            for chunk in _chunks(values):
                for r in conn.execute(
                    f"SELECT id, partner_hash, phone_md5, device_key FROM o2o_targets WHERE {col} IN ({_marks(chunk)})",
                    chunk,
                ):
                    ids.add(r[0])
                    if r[1]:
                        macs.add(r[1])
                    if r[2]:
                        phones.add(r[2])
                    if r[3]:
                        keys.add(r[3])
        for chunk in _chunks({str(i) for i in ids}):
            phones |= {
                r[0]
                for r in conn.execute(
                    f"SELECT msisdn_md5 FROM o2o_segment_rows WHERE target_id IN ({_marks(chunk)})"
                    " AND msisdn_md5 IS NOT NULL",
                    [int(x) for x in chunk],
                )
            }
        for chunk in _chunks(keys):
            for table in ("visits", "devices"):
                macs |= {
                    r[0]
                    for r in conn.execute(
                        f"SELECT DISTINCT partner_hash FROM {table} WHERE device_key IN ({_marks(chunk)})"
                        " AND partner_hash IS NOT NULL AND partner_hash != ''",
                        chunk,
                    )
                }
        for chunk in _chunks(forms):
            keys |= {
                r[0]
                for r in conn.execute(
                    f"SELECT DISTINCT device_key FROM visits WHERE partner_hash IN ({_marks(chunk)})", chunk
                )
            }
    return ids


def forget(
    conn: sqlite3.Connection,
    subjects: Iterable[str] = (),
    *,
    device_keys: Iterable[str] = (),
    reason: str = "opt-out",
    now: float | None = None,
) -> ForgetResult:
    """Remove a person's hashes everywhere on the hub, segment files included; never commits.

    ``subjects``: MAC or phone MD5s (raw or keyed); ``device_keys``: the hub's device keys.
    Raises ``ValueError`` for a subject that is not a hash.
    """
    now = time.time() if now is None else now
    subjects = [s.strip() for s in subjects if s and s.strip()]
    bad = [s for s in subjects if not (is_raw(s) or is_keyed(s))]
    if bad:
        raise ValueError(f"not an MD5 or keyed hash: {bad[0][:40]!r}")
    subj = attach(conn)
    keys = {k for k in device_keys if k}
    # Until expanded we cannot tell a MAC hash from a phone hash: look for each as both.
    macs, phones = set(subjects), {s for s in subjects if is_raw(s)}
    ids = _expand(conn, subj, macs, phones, keys)
    macs = {m.lower() if is_raw(m) else m for m in macs if is_raw(m) or is_keyed(m)}
    phones = {p.lower() for p in phones if is_raw(p)}
    keyed = {subj.key(h) for h in macs | phones}
    res = ForgetResult(hashes=len(keyed), device_keys=len(keys), targets=len(ids))
    withdraw_sharing(conn, keys, now)
    prev = set_secure_delete(conn, True)
    try:
        conn.executemany(
            "INSERT OR IGNORE INTO o2o_stoplist (subject, reason, added) VALUES (?, ?, ?)",
            [(k, reason, now) for k in sorted(keyed)],
        )
        key_subject_tables(conn)
        raw_all = sorted({h for h in macs | phones if is_raw(h)})
        all_forms = sorted(set(raw_all) | keyed)
        for chunk in _chunks(all_forms):
            m = _marks(chunk)
            res.segment_rows += conn.execute(
                f"DELETE FROM o2o_segment_rows WHERE mac_md5 IN ({m}) OR msisdn_md5 IN ({m})", (*chunk, *chunk)
            ).rowcount
            for table in ("visits", "sensor_visits", "devices"):
                n = conn.execute(f"UPDATE {table} SET partner_hash = NULL WHERE partner_hash IN ({m})", chunk).rowcount
                res.visits += n if table == "visits" else 0
        for chunk in _chunks(keys):
            m = _marks(chunk)
            for table, col in (("visits", "device_key"), ("sensor_visits", "device"), ("devices", "device_key")):
                n = conn.execute(
                    f"UPDATE {table} SET partner_hash = NULL WHERE partner_hash IS NOT NULL AND {col} IN ({m})", chunk
                ).rowcount
                res.visits += n if table == "visits" else 0
        for chunk in _chunks({str(i) for i in ids}):
            tids = [int(x) for x in chunk]
            m = _marks(chunk)
            res.segment_rows += conn.execute(f"DELETE FROM o2o_segment_rows WHERE target_id IN ({m})", tids).rowcount
            conn.execute(
                "UPDATE o2o_targets SET partner_hash = o2o_subject(partner_hash), phone_md5 = NULL, updated = ?,"
                " last_error = CASE WHEN status IN ('pending', 'matched') THEN ? ELSE last_error END,"
                " status = CASE WHEN status IN ('pending', 'matched') THEN 'blocked' ELSE status END"
                f" WHERE id IN ({m})",
                (now, f"stop_list: {reason}"[:200], *tids),
            )
            conn.execute(f"UPDATE o2o_coupons SET partner_hash = NULL WHERE target_id IN ({m})", tids)
        # The files: compare raw fields directly, and key them only when a subject is known keyed only.
        raw_set = set(raw_all)
        keyed_only = {k for k in keyed if k not in {subj.key(h) for h in raw_set}}

        def drop(field: str) -> bool:
            f = field.strip().lower()
            return f in raw_set or (bool(keyed_only) and is_raw(f) and subj.key(f) in keyed_only)

        res.files_rewritten, res.rows_removed = adsegment.scrub(conn, drop, now=now)
        if res.rows_removed:
            register.record(
                conn, recipient=adsegment.AD_PLATFORM, kind="erasure", count=res.rows_removed, status="ok",
                actor="o2o-privacy", detail=f"{reason}: rows removed from {res.files_rewritten} segment file(s) still"
                " offered; copies downloaded earlier are the recipient's to delete", now=now, commit=False,
            )  # fmt: skip
    finally:
        set_secure_delete(conn, bool(prev))
    log.info("o2o privacy: forgot a person (%s): %s", reason, res)
    return res


def withdraw_sharing(conn: sqlite3.Connection, device_keys: Iterable[str], now: float) -> None:
    """Record on the devices that their personal data may no longer be shared (an earlier
    withdrawal keeps its date and source): the sync then
    tells the centre (``consent_withdrawn`` in their profiles), which deletes the phone hashes
    it holds for them, wherever else they sit. Never commits."""
    keys = sorted({k for k in device_keys if k})
    if not keys:
        return
    conn.executemany(
        """INSERT INTO consents (device, granted, withdrawn, source, updated) VALUES (?, NULL, ?, 'store', ?)
           ON CONFLICT (device) DO UPDATE SET granted = NULL,
               withdrawn = coalesce(consents.withdrawn, excluded.withdrawn),
               source = CASE WHEN consents.withdrawn IS NULL THEN excluded.source ELSE consents.source END,
               updated = excluded.updated""",
        [(k, now, now) for k in keys],
    )


def forget_devices(
    conn: sqlite3.Connection, device_keys: Iterable[str], *, reason: str = "opt-out (central)", now: float | None = None
) -> ForgetResult:
    """The sync pushback's hook: a device opted out or withdrew consent; inside its transaction."""
    return forget(conn, (), device_keys=device_keys, reason=reason, now=now)


def remove_stop(conn: sqlite3.Connection, subject: str) -> bool:
    """Take a subject off the stop-list in whichever form it is stored; commits."""
    subj = attach(conn)
    with conn:
        forms = subj.forms(subject.strip())
        return conn.execute(f"DELETE FROM o2o_stoplist WHERE subject IN ({_marks(forms)})", forms).rowcount > 0
