"""One scenario run: pick eligible devices, match them with the partner, message or segment them.

A run (every ``interval_s``, 30 minutes by default; :func:`run_due` starts the due ones):

1. **Targets.** Devices of the target seen since the last run (with a 10-minute overlap for
   visits that arrive late) become ``o2o_targets`` rows: ``control`` (held out, stable per
   device) or ``pending``. Skipped and counted: stop-listed (``opted_out``), targeted by this
   scenario within ``cap_days`` already, or messaged ``cap_contacts`` times within ``cap_days``
   by any scenario (``capped``).
2. **Match.** All ``pending`` targets of the scenario (this run's and earlier failed runs') go to
   the partner in batches. Only an answer changes a target: known and messageable becomes
   ``matched``; known but not messageable becomes ``segment`` (seed 004: "accumulate a segment
   of hashes"), a member of the ad-platform segment when the partner shared its phone MD5;
   unknown becomes ``unknown`` (no contact needed). If the partner is down or slow the targets
   stay ``pending`` (attempts and error noted), the run ends ``failed`` and the scenario is
   due again after ``retry_s``.
3. **Message.** Each ``matched`` target passes the consent checks (``consent.py``; quiet hours
   defer, the others block), gets its personal coupon (issued once, kept across retries) and
   an SMS request with an idempotency ``ref``; only the partner's ``queued``/``duplicate``
   answer makes it ``messaged``. A failed send leaves it ``matched`` for the next run.
4. **Keying.** A target done with the partner keeps only the keyed form of its MAC MD5
   (``privacy.py``); the partner's phone MD5 stays for the segment and the centre.
5. **Segment.** The scenario's whole current segment is written as a snapshot and offered
   through expiring share links (``adsegment.py``), every run, even a failed one.

Every request that carries hashes is entered in the data transfer register first-hand.
Target statuses: pending, control, matched, messaged, segment, unknown, blocked, rejected, expired.
:func:`run_due` first keys the raw MD5s no enabled scenario needs any more and afterwards deletes
segment files nobody can download (``housekeeping.py`` does both hourly as well).
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from footfall.hub.o2o import adsegment, consent, coupons, privacy, register
from footfall.hub.o2o.adsegment import AD_PLATFORM, ExportSettings, link_hash
from footfall.hub.o2o.partner import MATCH_BATCH, SMS_BATCH, PartnerClient, PartnerError
from footfall.hub.o2o.privacy import LATE_OVERLAP_S, Subjects
from footfall.hub.o2o.scenarios import Scenario, candidates

__all__ = ["AD_PLATFORM", "COUNTS", "ExportSettings", "RunResult", "link_hash", "run_due", "run_scenario"]

log = logging.getLogger(__name__)

DAY = 86400.0


@dataclass
class RunResult:
    scenario: str
    run_id: int
    status: str = "ok"
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    links: list[dict[str, Any]] = field(default_factory=list)  # the only place share tokens appear in clear
    snapshot: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "run_id": self.run_id,
            "status": self.status,
            "error": self.error,
            **self.counts,
            "links": self.links,
            "snapshot": self.snapshot,
        }


COUNTS = (
    "candidates",
    "eligible",
    "control",
    "capped",
    "opted_out",
    "deferred",
    "sent_to_partner",
    "matched",
    "messageable",
    "blocked",
    "messaged",
    "coupons",
    "segment_rows",
    "exported_rows",
)
# Reported with the run (JSON) but not stored in ``o2o_runs``.
EXTRA_COUNTS = ("unknown", "segment_no_phone", "stale_hash")


def _ref(code: str) -> str:
    # Unique per coupon (codes are unique) without putting the code itself in the ref.
    return hashlib.sha256(b"o2o-sms-ref:" + code.encode()).hexdigest()[:24]


def _assign(
    conn: sqlite3.Connection, sc: Scenario, run_id: int, now: float, start: float, c: dict[str, int], subj: Subjects
) -> None:
    cands = candidates(conn, sc, start, now)
    c["candidates"] = len(cands)
    cap_from = now - sc.cap_days * DAY
    with conn:
        for cand in cands:
            h = cand["partner_hash"]
            if not privacy.is_raw(h):
                c["stale_hash"] += 1  # keyed already: the visit is older than any scenario's window
                continue
            h = h.lower()
            forms = subj.forms(h)  # earlier targets and the stop-list hold the keyed form
            if consent.on_stop_list(conn, forms):
                c["opted_out"] += 1
                continue
            if conn.execute(
                "SELECT 1 FROM o2o_targets WHERE scenario_id = ? AND partner_hash IN (?, ?) AND assigned_at > ?"
                " AND status != 'expired' LIMIT 1",
                (sc.id, *forms, cap_from),
            ).fetchone():
                continue  # already targeted by this scenario in the cap window (or seen in the overlap)
            contacts = conn.execute(
                "SELECT count(*) FROM o2o_targets WHERE partner_hash IN (?, ?) AND messaged_at > ?", (*forms, cap_from)
            ).fetchone()[0]
            if contacts >= sc.cap_contacts:
                c["capped"] += 1
                continue
            status = "control" if sc.in_control(h) else "pending"
            c["control" if status == "control" else "eligible"] += 1
            conn.execute(
                "INSERT INTO o2o_targets (scenario_id, run_id, partner_hash, device_key, visit_at, assigned_at, status,"
                " updated) VALUES (?,?,?,?,?,?,?,?)",
                (sc.id, run_id, h, cand["device_key"], cand["visit_at"], now, status, now),
            )
        conn.execute(
            "UPDATE o2o_targets SET status = 'expired', updated = ? WHERE scenario_id = ? AND status = 'pending'"
            " AND assigned_at < ?",
            (now, sc.id, now - sc.pending_ttl_s),
        )


def _fail_targets(conn: sqlite3.Connection, ids: list[int], error: str, now: float) -> None:
    with conn:
        conn.executemany(
            "UPDATE o2o_targets SET attempts = attempts + 1, last_error = ?, updated = ? WHERE id = ?",
            [(error, now, i) for i in ids],
        )


def _match(
    conn: sqlite3.Connection, sc: Scenario, run_id: int, client: PartnerClient, now: float, c: dict[str, int],
    subj: Subjects,
) -> None:  # fmt: skip
    pending = conn.execute(
        "SELECT id, partner_hash FROM o2o_targets WHERE scenario_id = ? AND status = 'pending' ORDER BY id", (sc.id,)
    ).fetchall()
    partner = client.config.name
    for i in range(0, len(pending), MATCH_BATCH):
        batch = pending[i : i + MATCH_BATCH]
        hashes = sorted({r["partner_hash"] for r in batch})
        try:
            results = client.match(hashes, batch_id=f"{sc.id}-{run_id}-{i // MATCH_BATCH}", scenario=sc.name)
        except PartnerError as exc:
            # A timeout may have delivered the hashes: register it as 'unknown', never as 'ok'.
            status = "unknown" if exc.kind in ("timeout", "protocol") else "failed"
            register.record(
                conn, recipient=partner, kind="match", count=len(hashes), status=status, scenario_id=sc.id,
                run_id=run_id, detail=str(exc), now=now,
            )  # fmt: skip
            _fail_targets(conn, [r["id"] for r in batch], str(exc), now)
            raise
        register.record(
            conn, recipient=partner, kind="match", count=len(hashes), status="ok", scenario_id=sc.id, run_id=run_id,
            now=now,
        )  # fmt: skip
        by_hash = {r.hash: r for r in results}
        c["sent_to_partner"] += len(batch)
        with conn:
            for row in batch:
                m = by_hash[row["partner_hash"]]
                status = ("matched" if m.messageable else "segment") if m.known else "unknown"
                c["unknown"] += not m.known
                c["matched"] += m.known
                c["messageable"] += m.known and m.messageable
                conn.execute(
                    "UPDATE o2o_targets SET status = ?, known = ?, messageable = ?, phone_md5 = ?, matched_at = ?,"
                    " sent_at = ?, attempts = attempts + 1, last_error = NULL, updated = ? WHERE id = ?",
                    (status, int(m.known), int(m.messageable), m.phone_md5, now, now, now, row["id"]),
                )
                if status == "segment" and m.phone_md5 is None:
                    c["segment_no_phone"] += 1  # the platform matches on msisdn: no row without one
                elif status == "segment":
                    conn.execute(
                        "INSERT INTO o2o_segment_rows (scenario_id, target_id, mac_md5, msisdn_md5, added)"
                        " VALUES (?,?,?,?,?)",
                        (sc.id, row["id"], subj.key(row["partner_hash"]), m.phone_md5, now),
                    )
                    c["segment_rows"] += 1


def _fmt_discount(gen: coupons.Generator) -> str:
    return f"{gen.value:g}%" if gen.kind == "percent" else f"{gen.value:g}"


def _message(
    conn: sqlite3.Connection, sc: Scenario, run_id: int, client: PartnerClient, now: float, c: dict[str, int],
    subj: Subjects,
) -> None:  # fmt: skip
    rows = conn.execute(
        "SELECT * FROM o2o_targets WHERE scenario_id = ? AND status = 'matched' ORDER BY id", (sc.id,)
    ).fetchall()
    outgoing: list[tuple[int, dict[str, Any]]] = []
    with conn:
        for t in rows:
            subjects = [*subj.forms(t["partner_hash"]), *subj.forms(t["phone_md5"])]
            d = consent.check(
                conn, subjects, channel=sc.channel, category=sc.category, partner_consent=bool(t["messageable"]),
                now=now, quiet=sc.quiet_hours, tz=sc.timezone,
            )  # fmt: skip
            if not d.ok:
                if d.defer:
                    c["deferred"] += 1
                else:
                    c["blocked"] += 1
                    conn.execute(
                        "UPDATE o2o_targets SET status = 'blocked', last_error = ?, updated = ? WHERE id = ?",
                        (d.reason, now, t["id"]),
                    )
                continue
            code = t["coupon_code"]
            if code is None:
                try:
                    code = coupons.issue(
                        conn, sc.coupon, scenario_id=sc.id, device_key=t["device_key"], partner_hash=t["partner_hash"],
                        target_id=t["id"], now=now,
                    )  # fmt: skip
                except coupons.CouponError as exc:
                    c["blocked"] += 1
                    conn.execute(
                        "UPDATE o2o_targets SET status = 'blocked', last_error = ?, updated = ? WHERE id = ?",
                        (str(exc), now, t["id"]),
                    )
                    continue
                conn.execute("UPDATE o2o_targets SET coupon_code = ? WHERE id = ?", (code, t["id"]))
                c["coupons"] += 1
            until = conn.execute("SELECT valid_until FROM o2o_coupons WHERE code = ?", (code,)).fetchone()[0]
            text = sc.render(
                code=code,
                discount=_fmt_discount(sc.coupon),
                valid_until=datetime.fromtimestamp(until, UTC).strftime("%d.%m.%Y"),
            )
            outgoing.append(
                (t["id"], {"ref": _ref(code), "hash": t["partner_hash"], "text": text, "category": sc.category,
                           "system": False})
            )  # fmt: skip
    partner = client.config.name
    for i in range(0, len(outgoing), SMS_BATCH):
        batch = outgoing[i : i + SMS_BATCH]
        try:
            results = client.send_sms([m for _, m in batch])
        except PartnerError as exc:
            status = "unknown" if exc.kind in ("timeout", "protocol") else "failed"
            register.record(
                conn, recipient=partner, kind="sms", count=len(batch), status=status, scenario_id=sc.id, run_id=run_id,
                detail=str(exc), now=now,
            )  # fmt: skip
            _fail_targets(conn, [tid for tid, _ in batch], str(exc), now)
            raise
        register.record(
            conn, recipient=partner, kind="sms", count=len(batch), status="ok", scenario_id=sc.id, run_id=run_id,
            now=now,
        )  # fmt: skip
        by_ref = {r.ref: r for r in results}
        with conn:
            for tid, m in batch:
                r = by_ref[m["ref"]]
                if r.status in ("queued", "duplicate"):
                    c["messaged"] += 1
                    conn.execute(
                        "UPDATE o2o_targets SET status = 'messaged', message_id = ?, messaged_at = ?,"
                        " last_error = NULL, updated = ? WHERE id = ?",
                        (r.message_id, now, now, tid),
                    )
                else:
                    conn.execute(
                        "UPDATE o2o_targets SET status = 'rejected', last_error = ?, updated = ? WHERE id = ?",
                        (r.reason or r.status, now, tid),
                    )
                    # The subscriber will never see this coupon: end it so it cannot be used or guessed.
                    conn.execute(
                        "UPDATE o2o_coupons SET valid_until = ? WHERE target_id = ? AND redeemed_at IS NULL", (now, tid)
                    )


def run_scenario(
    conn: sqlite3.Connection,
    sc: Scenario,
    client: PartnerClient,
    *,
    now: float | None = None,
    export: ExportSettings | None = None,
    actor: str = "o2o-runner",
    subjects: Subjects | None = None,
) -> RunResult:
    """One run (see the module docstring); raises :class:`privacy.PrivacyError` without the subject key."""
    now = time.time() if now is None else now
    export = export or ExportSettings()
    assert sc.id is not None, "scenario must be stored first"
    subj = subjects or privacy.attach(conn)
    row = conn.execute("SELECT watermark FROM o2o_scenarios WHERE id = ?", (sc.id,)).fetchone()
    start = (row["watermark"] - LATE_OVERLAP_S) if row["watermark"] is not None else now - sc.lookback_s
    with conn:
        run_id = conn.execute(
            "INSERT INTO o2o_runs (scenario_id, started, now, status, window_from, window_to) VALUES (?,?,?,?,?,?)",
            (sc.id, time.time(), now, "running", start, now),
        ).lastrowid
    res = RunResult(sc.name, run_id, counts=dict.fromkeys(COUNTS + EXTRA_COUNTS, 0))
    c = res.counts
    try:
        _assign(conn, sc, run_id, now, start, c, subj)
        if consent.in_quiet_hours(now, sc.quiet_hours, sc.timezone):
            # No advertising now: keep the queue for the first run after the quiet hours.
            c["deferred"] += conn.execute(
                "SELECT count(*) FROM o2o_targets WHERE scenario_id = ? AND status IN ('pending', 'matched')", (sc.id,)
            ).fetchone()[0]
        else:
            _match(conn, sc, run_id, client, now, c, subj)
            _message(conn, sc, run_id, client, now, c, subj)
    except PartnerError as exc:
        res.status, res.error = "failed", f"{exc.kind}: {exc}"
    except Exception as exc:  # a bug or a full disk must not kill the scheduler; the run says why
        log.exception("o2o run %d of %s failed", run_id, sc.name)
        res.status, res.error = "error", repr(exc)
    # Also after a partner failure: the answers that did come are final, and the segment is
    # refreshed every interval whatever the partner does.
    try:
        privacy.key_finished(conn, sc.id)
        snap = adsegment.refresh(conn, sc, run_id, export, now=now, actor=actor)
        res.links, res.snapshot = snap.links, snap.as_dict()
        c["exported_rows"] = snap.rows
    except Exception as exc:
        log.exception("o2o run %d of %s: segment snapshot failed", run_id, sc.name)
        if res.status == "ok":
            res.status, res.error = "error", f"segment snapshot: {exc!r}"
    next_run = now + (sc.interval_s if res.status == "ok" else sc.retry_s)
    with conn:
        conn.execute(
            f"UPDATE o2o_runs SET finished = ?, status = ?, error = ?, {', '.join(f'{k} = ?' for k in COUNTS)}"
            " WHERE id = ?",
            (time.time(), res.status, res.error, *(c[k] for k in COUNTS), run_id),
        )
        # The watermark moves even when the partner failed: the targets are queued as pending.
        conn.execute("UPDATE o2o_scenarios SET watermark = ?, next_run = ? WHERE id = ?", (now, next_run, sc.id))
    log.info("o2o run %d %s: %s %s", run_id, sc.name, res.status, c)
    return res


def run_due(
    conn: sqlite3.Connection,
    client: PartnerClient,
    *,
    now: float | None = None,
    export: ExportSettings | None = None,
    force: bool = False,
    only: str | None = None,
    actor: str = "o2o-runner",
) -> list[RunResult]:
    """Run every enabled scenario whose time has come (or all of them with ``force``).

    Raises :class:`privacy.PrivacyError` when the subject key is missing or not the database's.
    """
    now = time.time() if now is None else now
    export = export or ExportSettings()
    privacy.purge(conn, now=now)  # also registers o2o_subject() on this connection
    subj = privacy.attach(conn)
    out = []
    for row in conn.execute("SELECT * FROM o2o_scenarios WHERE enabled = 1 ORDER BY id").fetchall():
        if only is not None and row["name"] != only:
            continue
        if force or row["next_run"] is None or row["next_run"] <= now:
            out.append(
                run_scenario(conn, Scenario.from_row(row), client, now=now, export=export, actor=actor, subjects=subj)
            )
    adsegment.cleanup(conn, export, now=now)
    return out
