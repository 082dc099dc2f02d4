"""Apply the items the central service pushes back (``pushback.py`` pulls them).

- ``optout`` (``device``: the chain-wide hashed id): recorded in ``optouts``; the device and every
  ``device_key`` it was linked to are recorded in ``optout_keys`` (never enqueued again); their
  profile, memberships, consent and phone hashes are deleted from the hub and from the outbox
  (a formed batch holding them is released and re-cut). Then the whole opt-out list goes to
  every sensor of the site (``sensor_optouts.py``).
- ``consent_withdrawn``: phone hashes of the device deleted everywhere on the hub; only the
  fact and the date of withdrawal are kept (``consents``); its profile is re-queued without it.
- Both put the device's partner hashes on the O2O stop-list (``o2o_stoplist``) first, when the
  O2O module's tables exist, so no campaign contacts that person again.
- ``consent_granted`` (an extension of the protocol): a consent recorded centrally.
- ``segment_definition`` / ``scenario_settings``: versioned; applied to the hub's rule segments
  and O2O scenarios, the outcome reported back (``definitions.py``).

Unknown or malformed items are counted (``pushback_rejected``) and skipped, never fatal.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from footfall.cloud_sync import definitions, outbox, profiles

log = logging.getLogger(__name__)

_DEVICE = re.compile(r"^[0-9a-f]{8,128}$")


@dataclass
class ApplyResult:
    optouts: int = 0
    consents_withdrawn: int = 0
    consents_granted: int = 0
    segment_definitions: int = 0
    scenario_settings: int = 0
    definitions_refused: int = 0
    rejected: int = 0
    devices_forgotten: int = 0

    def add(self, other: ApplyResult) -> None:
        for f in self.__dataclass_fields__:
            setattr(self, f, getattr(self, f) + getattr(other, f))


def _device(item: Mapping[str, Any]) -> str:
    device = item.get("device")
    if not isinstance(device, str) or not _DEVICE.match(device.lower()):
        raise ValueError("device must be a hashed device id (hex)")
    return device.lower()


def _ts(item: Mapping[str, Any], now: float) -> float:
    ts = item.get("ts")
    return float(ts) if isinstance(ts, (int, float)) and not isinstance(ts, bool) else now


def linked_keys(conn: sqlite3.Connection, device: str) -> set[str]:
    """The device id itself and every ``device_key`` the hub's estimator linked it to."""
    keys = {device}
    keys |= {r[0] for r in conn.execute("SELECT DISTINCT device_key FROM visits WHERE device = ?", (device,))}
    return keys


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def _release_batches_touching(conn: sqlite3.Connection, keys: Sequence[str]) -> None:
    """A formed batch holding any of these devices must not go out as it is: re-cut it."""
    m = _marks(keys)
    batches = {
        r[0]
        for r in conn.execute(
            f"""SELECT DISTINCT batch_id FROM sync_outbox WHERE batch_id IS NOT NULL AND parked IS NULL
                AND (key IN ({m}) OR json_extract(data, '$.device') IN ({m}))""",
            (*keys, *keys),
        )
    }
    for batch_id in batches:
        outbox.release_batch(conn, batch_id)


def _drop_from_outbox(conn: sqlite3.Connection, keys: Sequence[str]) -> None:
    m = _marks(keys)
    conn.execute(
        f"""DELETE FROM sync_outbox WHERE kind IN ('profile', 'segment_change', 'event')
            AND batch_id IS NULL AND (key IN ({m}) OR json_extract(data, '$.device') IN ({m}))""",
        (*keys, *keys),
    )
    conn.execute(
        f"""DELETE FROM sync_outbox WHERE parked IS NOT NULL AND kind IN ('profile', 'segment_change', 'event')
            AND (key IN ({m}) OR json_extract(data, '$.device') IN ({m}))""",
        (*keys, *keys),
    )


def _stop_list(conn: sqlite3.Connection, device: str, keys: Sequence[str], reason: str, now: float) -> None:
    """Put the device's partner hashes on the O2O stop-list (when that module is installed).

    The hashes are deleted from the hub right after, so without this the O2O runner could not
    tell that a target it already holds belongs to someone who opted out or withdrew consent.
    """
    if not outbox.has_table(conn, "o2o_stoplist"):
        return
    m = _marks(keys)
    hashes = {r[0] for r in conn.execute(f"SELECT partner_hash FROM devices WHERE device_key IN ({m})", keys)}
    hashes |= {
        r[0]
        for r in conn.execute(
            f"SELECT DISTINCT partner_hash FROM visits WHERE device_key IN ({m}) OR device = ?", (*keys, device)
        )
    }
    conn.executemany(
        "INSERT OR IGNORE INTO o2o_stoplist (subject, reason, added) VALUES (?, ?, ?)",
        [(h.lower(), reason, now) for h in hashes if h],
    )
    # Everything else of the person's on the O2O side: targets, segment rows, and the rows of
    # segment files already written (rewritten in place), inside this transaction.
    from footfall.hub.o2o import optout, privacy

    try:
        optout.forget_devices(conn, keys, reason=reason, now=now)
    except privacy.PrivacyError as exc:
        # Without the O2O key the keyed stop-list cannot be written: everything else of the
        # opt-out is applied now (the hashes are cleared below), the O2O part is retried at
        # every pull until the key is back (retry_o2o_forget).
        log.error("sync pushback: O2O part of an opt-out deferred: %s", exc)
        outbox.count(conn, "o2o_forget_deferred", 1, now)
        pending = set(json.loads(outbox.get_state(conn, O2O_PENDING) or "[]"))
        outbox.set_state(conn, O2O_PENDING, json.dumps(sorted(pending | set(keys))))


O2O_PENDING = "o2o_forget_pending"


def retry_o2o_forget(conn: sqlite3.Connection, now: float) -> int:
    """The O2O part of opt-outs deferred for a missing key, once the key is back; returns how
    many device keys were done."""
    keys = json.loads(outbox.get_state(conn, O2O_PENDING) or "[]")
    if not keys:
        return 0
    from footfall.hub.o2o import optout, privacy

    try:
        optout.forget_devices(conn, keys, reason="opt-out (central, deferred)", now=now)
    except privacy.PrivacyError:
        return 0
    outbox.set_state(conn, O2O_PENDING, "[]")
    return len(keys)


def _strip_phone_hashes(conn: sqlite3.Connection, device: str, keys: Sequence[str]) -> None:
    m = _marks(keys)
    conn.execute(f"UPDATE devices SET partner_hash = NULL WHERE device_key IN ({m})", keys)
    conn.execute(
        f"UPDATE visits SET partner_hash = NULL WHERE partner_hash IS NOT NULL AND (device_key IN ({m}) OR device = ?)",
        (*keys, device),
    )
    conn.execute(
        f"UPDATE sensor_visits SET partner_hash = NULL WHERE partner_hash IS NOT NULL AND device IN ({m})", keys
    )
    # The phone hashes the telecom partner shared, kept by the O2O module.
    if outbox.has_table(conn, "o2o_targets"):
        conn.execute(f"UPDATE o2o_targets SET phone_md5 = NULL WHERE device_key IN ({m})", keys)


def apply_optout(conn: sqlite3.Connection, device: str, *, ts: float, now: float, source: str = "central") -> int:
    """Record an opt-out and forget the device's profile data; returns the keys forgotten."""
    keys = sorted(linked_keys(conn, device))
    conn.execute(
        "INSERT INTO optouts (device, ts, received, source) VALUES (?, ?, ?, ?) ON CONFLICT (device) DO NOTHING",
        (device, ts, now, source),
    )
    conn.executemany(
        "INSERT INTO optout_keys (device_key, device) VALUES (?, ?) ON CONFLICT (device_key) DO NOTHING",
        [(k, device) for k in keys],
    )
    _release_batches_touching(conn, keys)
    _drop_from_outbox(conn, keys)
    _stop_list(conn, device, keys, "opt-out (central)", now)
    _strip_phone_hashes(conn, device, keys)
    m = _marks(keys)
    gone = conn.execute(f"DELETE FROM devices WHERE device_key IN ({m})", keys).rowcount
    if outbox.has_table(conn, "segment_members"):
        conn.execute(f"DELETE FROM segment_members WHERE device_key IN ({m})", keys)
    if outbox.has_table(conn, "estimated_visitors"):
        conn.execute(f"DELETE FROM estimated_visitors WHERE device_key IN ({m})", keys)
    conn.execute(f"DELETE FROM sync_profile_state WHERE device_key IN ({m})", keys)
    conn.execute(f"DELETE FROM sync_segment_snapshot WHERE device_key IN ({m})", keys)
    conn.execute(f"DELETE FROM consents WHERE device IN ({m})", keys)
    return gone


def apply_consent_withdrawn(conn: sqlite3.Connection, device: str, *, ts: float, now: float, site: str) -> None:
    keys = sorted(linked_keys(conn, device))
    conn.executemany(
        """INSERT INTO consents (device, granted, withdrawn, source, updated) VALUES (?, NULL, ?, 'central', ?)
           ON CONFLICT (device) DO UPDATE SET granted = NULL, withdrawn = excluded.withdrawn,
               source = excluded.source, updated = excluded.updated""",
        [(k, ts, now) for k in keys],
    )
    _release_batches_touching(conn, keys)
    _stop_list(conn, device, keys, "personal-data consent withdrawn (central)", now)
    _strip_phone_hashes(conn, device, keys)
    # Pending profiles are rebuilt now (without the hash), not at the next enqueue run.
    pending = [
        r[0]
        for r in conn.execute(
            f"SELECT key FROM sync_outbox WHERE kind = 'profile' AND batch_id IS NULL AND key IN ({_marks(keys)})", keys
        )
    ]
    for key, profile in profiles.build_profiles(conn, pending, site).items():
        outbox.enqueue(conn, "profile", key, profile, now=now)


def apply_items(conn: sqlite3.Connection, items: Iterable[Any], site: str, *, now: float | None = None) -> ApplyResult:
    """Apply pushback items (caller holds the transaction)."""
    now = time.time() if now is None else now
    res = ApplyResult()
    for item in items:
        try:
            if not isinstance(item, Mapping):
                raise ValueError("item is not an object")
            kind = item.get("kind")
            if kind == "optout":
                res.devices_forgotten += apply_optout(conn, _device(item), ts=_ts(item, now), now=now)
                res.optouts += 1
            elif kind == "consent_withdrawn":
                apply_consent_withdrawn(conn, _device(item), ts=_ts(item, now), now=now, site=site)
                res.consents_withdrawn += 1
            elif kind == "consent_granted":
                device = _device(item)
                if conn.execute("SELECT 1 FROM optouts WHERE device = ?", (device,)).fetchone():
                    raise ValueError("consent for an opted-out device")
                # Every key the hub linked to the device: the phone hash a partner shared may
                # sit on any of them.
                for key in sorted(linked_keys(conn, device)):
                    outbox.record_consent(conn, key, granted=_ts(item, now), source="central")
                res.consents_granted += 1
            elif kind in ("segment_definition", "scenario_settings"):
                ident = item.get("id")
                body = item.get("definition" if kind == "segment_definition" else "settings")
                version = item.get("version")
                if not isinstance(ident, (str, int)) or isinstance(ident, bool) or not isinstance(body, Mapping):
                    raise ValueError("needs an id and an object")
                if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
                    raise ValueError("version must be a positive integer")
                outcome = definitions.apply(conn, kind, str(ident), version, body, now)
                if outcome == "refused":
                    res.definitions_refused += 1
                elif kind == "segment_definition":
                    res.segment_definitions += 1
                else:
                    res.scenario_settings += 1
            else:
                raise ValueError(f"unknown kind {kind!r}")
        except sqlite3.OperationalError:
            raise  # the database, not the item: the whole page is applied again next cycle
        except Exception as exc:  # noqa: BLE001 - one bad item must not block the items behind it
            res.rejected += 1
            outbox.count(conn, "pushback_rejected", 1, now)
            if isinstance(exc, (ValueError, TypeError)):
                log.warning("sync pushback: item skipped: %s", exc)
            else:
                log.exception("sync pushback: item skipped")
    return res
