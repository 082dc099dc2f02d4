"""Partner hashes only while a scenario needs them; keyed at rest otherwise; opt-outs purge everywhere.

A MAC MD5 (the partner hash the sensors compute for globally administered MACs) is reversible:
the 2^24 MACs of one vendor prefix hash in seconds. The hub never has the MAC itself, so it
cannot recompute the MD5 at transfer time; instead it **keeps the unkeyed MD5 only where a
scenario still needs it and replaces it by a keyed hash afterwards**:

- ``visits``, ``sensor_visits``, ``devices``: raw while the visit may still be read by an
  enabled scenario (its next run reads from its watermark minus :data:`LATE_OVERLAP_S`, or
  ``lookback_s`` back on a first run), and always for the newest :data:`RAW_HOLD_S` (a day) so
  that a scenario created today finds today's visits. Older ones are keyed. Exception: a
  device with a recorded personal-data consent (``consents``) keeps its MAC MD5, which the
  sync sends to the centre as an identifier under that consent.
- ``o2o_targets.partner_hash``: raw while the target waits for the partner (``pending``,
  ``matched``: the match and SMS requests carry it), keyed as soon as it is done (the runner
  keys it in the same run). ``o2o_coupons.partner_hash`` and ``o2o_segment_rows.mac_md5``
  are keyed from the start (nothing reads them raw).
- The stop-list and local consent records (``o2o_stoplist``, ``o2o_consent``) hold keyed
  subjects: a raw one written by ``footfall o2o stop``/``consent`` is keyed at the next run.

The phone MD5 a partner shares (``o2o_targets.phone_md5``, ``o2o_segment_rows.msisdn_md5``)
is the identifier the subscriber allowed to be passed on; it stays raw for the ad-platform
segment (while in the scenario's membership window) and the centre's phone export, until
retention (``o2o_days``) or an opt-out/withdrawal removes it.

**Keyed form**: ``k1:`` + HMAC-SHA256(subject key, lowercase MD5), hex (67 characters, so it
can never be mistaken for an MD5 or sent to a partner). The subject key is 32 random bytes
in ``o2o-subject.key`` next to the database (``FOOTFALL_O2O_KEY_FILE`` overrides), mode 0600,
made on first use; its fingerprint is stored in the database, and a missing or different key
file is an error rather than a new key, because every keyed stop-list entry would silently
stop matching. Purged rows are overwritten (``secure_delete``) and the WAL is truncated, so
the MD5 does not linger in free pages.

Opt-outs, which remove a person's hashes everywhere, files included, are in ``optout.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import sqlite3
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from footfall.hub.o2o import adsegment, tables
from footfall.hub.o2o.scenarios import Scenario

log = logging.getLogger(__name__)

DAY = 86400.0
KEY_FILE_ENV = "FOOTFALL_O2O_KEY_FILE"
KEY_FILE_NAME = "o2o-subject.key"
PREFIX = "k1:"
LATE_OVERLAP_S = 600.0  # the runner reads visits this far before its watermark (late visits)
RAW_HOLD_S = DAY
SLICE_SLACK_S = 2 * DAY  # a visit's start may precede its end, and so the last pass, by hours
FULL_SWEEP_S = 7 * DAY  # a backstop: slices and new rowids catch everything in between
OPEN_STATUSES = ("pending", "matched")
_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")


class PrivacyError(RuntimeError):
    """The subject key is missing, unreadable or not the one the database was keyed with."""


def is_raw(value: str | None) -> bool:
    return bool(value) and _MD5.match(value) is not None  # type: ignore[arg-type]


def is_keyed(value: str | None) -> bool:
    return bool(value) and value.startswith(PREFIX) and len(value) == len(PREFIX) + 64  # type: ignore[union-attr]


class Subjects:
    """Keys MD5 subjects with the hub's subject key."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self.key = lru_cache(maxsize=65536)(self._keyed)

    def _keyed(self, value: str) -> str:
        if is_keyed(value):
            return value
        if not is_raw(value):
            raise ValueError(f"not an MD5 hash: {value[:40]!r}")
        return PREFIX + hmac.new(self._key, value.lower().encode(), hashlib.sha256).hexdigest()

    def sql(self, value: Any) -> Any:
        # Anything that is not a raw MD5 (NULL, '', a keyed hash) passes through unchanged.
        return self.key(value) if isinstance(value, str) and is_raw(value) else value

    def forms(self, value: str | None) -> list[str]:
        """The raw and keyed forms to look a subject up by, while both may be stored."""
        if not value:
            return []
        return [value.lower(), self.key(value)] if is_raw(value) else [value]


def key_path(conn: sqlite3.Connection) -> Path:
    env = os.environ.get(KEY_FILE_ENV)
    if env:
        return Path(env)
    for row in conn.execute("PRAGMA database_list"):
        if row[1] == "main":
            if not row[2]:
                raise PrivacyError(f"an in-memory database has no place for the O2O subject key: set {KEY_FILE_ENV}")
            return Path(row[2]).resolve().parent / KEY_FILE_NAME
    raise PrivacyError("no main database")  # pragma: no cover - SQLite always has one


def _fingerprint(key: bytes) -> str:
    return hashlib.sha256(b"footfall-o2o-subject-key:" + key).hexdigest()[:16]


def _read_key(path: Path, stored: str | None) -> bytes:
    if not path.exists():
        if stored is not None:
            raise PrivacyError(
                f"O2O subject key {path} is missing, but this database holds hashes keyed with it (fingerprint "
                f"{stored}): restore the file; a new key would make every keyed stop-list entry unrecognisable"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it a moment ago: read theirs
        else:
            with os.fdopen(fd, "w") as f:
                f.write(os.urandom(32).hex() + "\n")
            log.info("O2O subject key created: %s", path)
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        raise PrivacyError(f"O2O subject key {path} must hold hex digits") from None
    except OSError as exc:
        raise PrivacyError(f"O2O subject key {path} cannot be read: {exc}") from None
    if len(key) < 16:
        raise PrivacyError(f"O2O subject key {path} is too short: at least 32 hex digits")
    return key


def attach(conn: sqlite3.Connection) -> Subjects:
    """The hub's :class:`Subjects`, with ``o2o_subject(x)`` registered as an SQL function."""
    tables.ensure(conn)
    stored = tables.get_state(conn, "subject_key")
    path = key_path(conn)
    key = _read_key(path, stored)
    fp = _fingerprint(key)
    if stored is None:
        tables.set_state(conn, "subject_key", fp)
    elif stored != fp:
        raise PrivacyError(
            f"O2O subject key {path} (fingerprint {fp}) is not the key this database was keyed with ({stored}): "
            "restore the right file"
        )
    subj = Subjects(key)
    conn.create_function("o2o_subject", 1, subj.sql, deterministic=True)
    return subj


def raw_window_start(conn: sqlite3.Connection, now: float) -> float:
    """Visits that ended before this may lose their raw MD5: no enabled scenario will read them."""
    start = now - RAW_HOLD_S
    for row in conn.execute("SELECT * FROM o2o_scenarios WHERE enabled = 1"):
        try:
            sc = Scenario.from_row(row)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("scenario %s has unreadable settings (%s): its window is not held", row["name"], exc)
            continue
        wm = row["watermark"]
        start = min(start, wm - LATE_OVERLAP_S if wm is not None else now - sc.lookback_s)
    return start


@dataclass
class PurgeResult:
    window_start: float = 0.0
    full_sweep: bool = False
    visits_keyed: int = 0
    sensor_visits_keyed: int = 0
    devices_keyed: int = 0
    targets_keyed: int = 0
    targets_expired: int = 0
    coupons_keyed: int = 0
    segment_rows_deleted: int = 0
    subjects_keyed: int = 0

    def changed(self) -> int:
        return sum(v for k, v in asdict(self).items() if k not in ("window_start", "full_sweep"))


_CONSENTED = "(SELECT device FROM consents WHERE granted IS NOT NULL AND withdrawn IS NULL)"


def set_secure_delete(conn: sqlite3.Connection, on: bool) -> int:
    prev = conn.execute("PRAGMA secure_delete").fetchone()[0]
    conn.execute(f"PRAGMA secure_delete = {1 if on else 0}")
    return prev


def checkpoint(conn: sqlite3.Connection) -> None:
    # Old page images with the raw hashes sit in the WAL until it is checkpointed and cut.
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.OperationalError as exc:  # a reader holds it; the next pass retries
        log.debug("wal checkpoint: %s", exc)


def key_subject_tables(conn: sqlite3.Connection) -> int:
    n = conn.execute(
        "INSERT OR IGNORE INTO o2o_stoplist (subject, reason, added)"
        " SELECT o2o_subject(subject), reason, added FROM o2o_stoplist WHERE length(subject) = 32"
    ).rowcount
    conn.execute("DELETE FROM o2o_stoplist WHERE length(subject) = 32")
    n += conn.execute(
        "INSERT INTO o2o_consent (subject, channel, category, state, updated)"
        " SELECT o2o_subject(subject), channel, category, state, updated FROM o2o_consent"
        " WHERE length(subject) = 32 ORDER BY updated"
        " ON CONFLICT (subject, channel, category) DO UPDATE SET state = excluded.state, updated = excluded.updated"
        " WHERE excluded.updated >= o2o_consent.updated"
    ).rowcount
    conn.execute("DELETE FROM o2o_consent WHERE length(subject) = 32")
    return n


def _key_o2o_rows(conn: sqlite3.Connection, now: float, res: PurgeResult) -> None:
    for row in conn.execute("SELECT * FROM o2o_scenarios").fetchall():
        try:
            sc = Scenario.from_row(row)
        except (ValueError, TypeError, KeyError):
            sc = None
        ttl = sc.pending_ttl_s if sc else DAY
        # A target nobody will send any more (scenario stopped, or stuck past its time): done.
        res.targets_expired += conn.execute(
            "UPDATE o2o_targets SET status = 'expired', last_error = 'not sent within pending_ttl_s', updated = ?"
            " WHERE scenario_id = ? AND status IN ('pending', 'matched') AND (assigned_at < ? OR ?)",
            (now, row["id"], now - ttl, not row["enabled"]),
        ).rowcount
        window = adsegment.membership_s(sc) if sc else adsegment.DEFAULT_MEMBERSHIP_S
        res.segment_rows_deleted += conn.execute(
            "DELETE FROM o2o_segment_rows WHERE scenario_id = ? AND added <= ?", (row["id"], now - window)
        ).rowcount
    res.segment_rows_deleted += conn.execute(
        "DELETE FROM o2o_segment_rows WHERE msisdn_md5 IS NULL OR scenario_id NOT IN (SELECT id FROM o2o_scenarios)"
    ).rowcount
    conn.execute("UPDATE o2o_segment_rows SET mac_md5 = o2o_subject(mac_md5) WHERE length(mac_md5) = 32")
    res.targets_keyed += conn.execute(
        "UPDATE o2o_targets SET partner_hash = o2o_subject(partner_hash)"
        " WHERE length(partner_hash) = 32 AND status NOT IN ('pending', 'matched')"
    ).rowcount
    res.coupons_keyed += conn.execute(
        "UPDATE o2o_coupons SET partner_hash = o2o_subject(partner_hash) WHERE length(partner_hash) = 32"
    ).rowcount


def _key_visits(conn: sqlite3.Connection, lo: float, w: float, full: bool, res: PurgeResult) -> tuple[int, int]:
    """Key visits, sensor visits and devices that ended before ``w``; returns the max rowids seen.

    Not a full pass: the ``first_seen`` slice since the last pass (indexed), plus the rows added
    since (rowid above the last pass's maximum), which is how a late-arriving old visit or a
    day rebuilt by the link job shows up.
    """
    consented = tables.has_table(conn, "consents")
    not_c = f" AND device_key NOT IN {_CONSENTED}" if consented else ""
    not_c_sv = f" AND device NOT IN {_CONSENTED}" if consented else ""
    max_v = conn.execute("SELECT coalesce(max(rowid), 0) FROM visits").fetchone()[0]
    max_sv = conn.execute("SELECT coalesce(max(rowid), 0) FROM sensor_visits").fetchone()[0]
    old_v = int(tables.get_state(conn, "raw_visits_rowid") or 0)
    old_sv = int(tables.get_state(conn, "raw_sensor_visits_rowid") or 0)
    keyed = "partner_hash = o2o_subject(partner_hash)"
    where = [("first_seen >= ? AND first_seen < ?", (lo, w))]
    if not full:
        where.append(("rowid > ?", (old_v,)))
    touched: list[str] = []
    for cond, args in where:
        if not full:  # the devices of the visits keyed here (a full pass does all devices)
            sql = f"SELECT DISTINCT device_key FROM visits WHERE {cond} AND last_seen < ? AND length(partner_hash) = 32"
            touched += [r[0] for r in conn.execute(sql, (*args, w))]
        res.visits_keyed += conn.execute(
            f"UPDATE visits SET {keyed} WHERE {cond} AND last_seen < ? AND length(partner_hash) = 32{not_c}",
            (*args, w),
        ).rowcount
    for cond, args in [where[0]] + ([] if full else [("rowid > ?", (old_sv,))]):
        res.sensor_visits_keyed += conn.execute(
            f"UPDATE sensor_visits SET {keyed} WHERE {cond} AND last_seen < ? AND length(partner_hash) = 32{not_c_sv}",
            (*args, w),
        ).rowcount
    if full:
        res.devices_keyed = conn.execute(
            f"UPDATE devices SET {keyed} WHERE last_seen < ? AND length(partner_hash) = 32{not_c}", (w,)
        ).rowcount
    else:
        keys = sorted(set(touched))
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            res.devices_keyed += conn.execute(
                f"UPDATE devices SET {keyed} WHERE device_key IN ({','.join('?' * len(chunk))}) AND last_seen < ?"
                f" AND length(partner_hash) = 32{not_c}",
                (*chunk, w),
            ).rowcount
    return max_v, max_sv


def purge(conn: sqlite3.Connection, *, now: float | None = None, full: bool | None = None) -> PurgeResult:
    """Key every raw MD5 outside the allowed window (see the module docstring); commits.

    Visits are keyed in slices since the last pass (:func:`_key_visits`), with a full pass
    once a week as a backstop (``full``: force it either way).
    """
    now = time.time() if now is None else now
    attach(conn)
    w = raw_window_start(conn, now)
    through, last_full = tables.get_state(conn, "raw_keyed_through"), tables.get_state(conn, "raw_full_sweep")
    if full is None:
        full = through is None or last_full is None or not 0 <= now - float(last_full) < FULL_SWEEP_S
    lo = -1e18 if full else float(through) - SLICE_SLACK_S  # type: ignore[arg-type]
    res = PurgeResult(window_start=w, full_sweep=full)
    prev = set_secure_delete(conn, True)
    try:
        with conn:
            res.subjects_keyed = key_subject_tables(conn)
            _key_o2o_rows(conn, now, res)
            max_v, max_sv = _key_visits(conn, lo, w, full, res)
            tables.set_state(conn, "raw_keyed_through", repr(w))
            tables.set_state(conn, "raw_visits_rowid", str(max_v))
            tables.set_state(conn, "raw_sensor_visits_rowid", str(max_sv))
            if full:
                tables.set_state(conn, "raw_full_sweep", repr(now))
    finally:
        set_secure_delete(conn, bool(prev))
    # Also when nothing changed here: an opt-out applied since (inside the sync's transaction,
    # which cannot checkpoint) left its old page images in the WAL.
    checkpoint(conn)
    if res.changed():
        log.info("o2o privacy: raw MD5s keyed outside the window: %s", res)
    return res


def key_finished(conn: sqlite3.Connection, scenario_id: int) -> int:
    """Key the MAC MD5 of the scenario's targets that are done with the partner (needs :func:`attach`)."""
    prev = set_secure_delete(conn, True)
    try:
        with conn:
            n = conn.execute(
                "UPDATE o2o_targets SET partner_hash = o2o_subject(partner_hash) WHERE scenario_id = ?"
                " AND length(partner_hash) = 32 AND status NOT IN ('pending', 'matched')",
                (scenario_id,),
            ).rowcount
            n += conn.execute(
                "UPDATE o2o_coupons SET partner_hash = o2o_subject(partner_hash) WHERE scenario_id = ?"
                " AND length(partner_hash) = 32",
                (scenario_id,),
            ).rowcount
    finally:
        set_secure_delete(conn, bool(prev))
    return n
