"""One scenario run: pick eligible devices, match them with the partner, message or segment them.

A run (every ``interval_s``, 30 minutes by default; :func:`run_due` starts the due ones):

1. **Targets.** Devices of the target seen since the last run (with a 10-minute overlap for
   visits that arrive late) become ``o2o_targets`` rows: ``control`` (held out, stable per
   device) or ``pending``. Skipped and counted: stop-listed (``opted_out``), targeted by this
   scenario within ``cap_days`` already, or messaged ``cap_contacts`` times within ``cap_days``
   by any scenario (``capped``).
2. **Match.** All ``pending`` targets of the scenario (this run's and earlier failed runs') go to
   the partner in batches. Only an answer changes a target: known and messageable becomes
   ``matched``; unknown or not messageable becomes ``segment`` (an ad-platform segment row).
   If the partner is down or slow the targets stay ``pending`` (attempts and error noted), the
   run ends ``failed`` and the scenario is due again after ``retry_s``.
3. **Message.** Each ``matched`` target passes the consent checks (``consent.py``; quiet hours
   defer, the others block), gets its personal coupon (issued once, kept across retries) and
   an SMS request with an idempotency ``ref``; only the partner's ``queued``/``duplicate``
   answer makes it ``messaged``. A failed send leaves it ``matched`` for the next run.
4. **Segment export.** New segment rows are written as CSV (``mac_md5,msisdn``; ``msisdn`` is
   the phone MD5 when the partner shared one), split to stay under ``max_file_bytes`` (100 MB,
   the ad platform's limit), with a share link valid 3 days, at most ``link_cap`` links per
   ``link_period_s`` (25 per 3 days, seed 000); over the cap the export waits for a later run.

Every request that carries hashes is entered in the data transfer register first-hand.
Target statuses: pending, control, matched, messaged, segment, blocked, rejected, expired.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from footfall.hub.o2o import consent, coupons, register
from footfall.hub.o2o.partner import MATCH_BATCH, SMS_BATCH, PartnerClient, PartnerError
from footfall.hub.o2o.scenarios import Scenario, candidates

log = logging.getLogger(__name__)

DAY = 86400.0
LATE_OVERLAP_S = 600.0
AD_PLATFORM = "ad_platform"


@dataclass
class ExportSettings:
    directory: Path = Path("o2o_exports")
    max_file_bytes: int = 100 * 1024 * 1024
    link_ttl_s: float = 3 * DAY
    link_cap: int = 25
    link_period_s: float = 3 * DAY


@dataclass
class RunResult:
    scenario: str
    run_id: int
    status: str = "ok"
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    links: list[dict[str, Any]] = field(default_factory=list)  # the only place share tokens appear in clear

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "run_id": self.run_id,
            "status": self.status,
            "error": self.error,
            **self.counts,
            "links": self.links,
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


def _ref(code: str) -> str:
    # Unique per coupon (codes are unique) without putting the code itself in the ref.
    return hashlib.sha256(b"o2o-sms-ref:" + code.encode()).hexdigest()[:24]


def _assign(conn: sqlite3.Connection, sc: Scenario, run_id: int, now: float, start: float, c: dict[str, int]) -> None:
    cands = candidates(conn, sc, start, now)
    c["candidates"] = len(cands)
    cap_from = now - sc.cap_days * DAY
    with conn:
        for cand in cands:
            h = cand["partner_hash"]
            if consent.on_stop_list(conn, [h]):
                c["opted_out"] += 1
                continue
            if conn.execute(
                "SELECT 1 FROM o2o_targets WHERE scenario_id = ? AND partner_hash = ? AND assigned_at > ?"
                " AND status != 'expired' LIMIT 1",
                (sc.id, h, cap_from),
            ).fetchone():
                continue  # already targeted by this scenario in the cap window (or seen in the overlap)
            contacts = conn.execute(
                "SELECT count(*) FROM o2o_targets WHERE partner_hash = ? AND messaged_at > ?", (h, cap_from)
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
    conn: sqlite3.Connection, sc: Scenario, run_id: int, client: PartnerClient, now: float, c: dict[str, int]
) -> None:
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
                status = "matched" if m.known and m.messageable else "segment"
                c["matched"] += m.known
                c["messageable"] += m.known and m.messageable
                conn.execute(
                    "UPDATE o2o_targets SET status = ?, known = ?, messageable = ?, phone_md5 = ?, matched_at = ?,"
                    " sent_at = ?, attempts = attempts + 1, last_error = NULL, updated = ? WHERE id = ?",
                    (status, int(m.known), int(m.messageable), m.phone_md5, now, now, now, row["id"]),
                )
                if status == "segment":
                    conn.execute(
                        "INSERT INTO o2o_segment_rows (scenario_id, target_id, mac_md5, msisdn_md5, added)"
                        " VALUES (?,?,?,?,?)",
                        (sc.id, row["id"], row["partner_hash"], m.phone_md5, now),
                    )
                    c["segment_rows"] += 1


def _fmt_discount(gen: coupons.Generator) -> str:
    return f"{gen.value:g}%" if gen.kind == "percent" else f"{gen.value:g}"


def _message(
    conn: sqlite3.Connection, sc: Scenario, run_id: int, client: PartnerClient, now: float, c: dict[str, int]
) -> None:
    rows = conn.execute(
        "SELECT * FROM o2o_targets WHERE scenario_id = ? AND status = 'matched' ORDER BY id", (sc.id,)
    ).fetchall()
    outgoing: list[tuple[int, dict[str, Any]]] = []
    with conn:
        for t in rows:
            d = consent.check(
                conn, [t["partner_hash"], t["phone_md5"]], channel=sc.channel, category=sc.category,
                partner_consent=bool(t["messageable"]), now=now, quiet=sc.quiet_hours, tz=sc.timezone,
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


def _new_link(conn: sqlite3.Connection, ex: ExportSettings, now: float) -> tuple[str, str] | None:
    used = conn.execute(
        "SELECT count(*) FROM o2o_exports WHERE link_hash IS NOT NULL AND link_expires - ? > ?",
        (ex.link_ttl_s, now - ex.link_period_s),
    ).fetchone()[0]
    if used >= ex.link_cap:
        return None
    token = secrets.token_urlsafe(24)
    return token, hashlib.sha256(token.encode()).hexdigest()


def link_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _write_files(directory: Path, stem: str, rows: list[sqlite3.Row], max_bytes: int) -> list[dict[str, Any]]:
    """CSV files of at most ``max_bytes`` each, every one with the header."""
    directory.mkdir(parents=True, exist_ok=True)
    header = "mac_md5,msisdn\r\n"
    files: list[dict[str, Any]] = []
    buf, n_rows = io.StringIO(), 0

    def flush() -> None:
        nonlocal buf, n_rows
        path = directory / f"{stem}-{len(files) + 1:03d}.csv"
        data = (header + buf.getvalue()).encode()
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        files.append({"path": str(path), "rows": n_rows, "bytes": len(data)})
        buf, n_rows = io.StringIO(), 0

    if max_bytes < 200:
        raise ValueError("max_file_bytes is too small for one row")
    for r in rows:
        line = io.StringIO()
        csv.writer(line, lineterminator="\r\n").writerow([r["mac_md5"], r["msisdn_md5"] or ""])
        text = line.getvalue()
        if n_rows and len(header) + buf.tell() + len(text) > max_bytes:
            flush()
        buf.write(text)
        n_rows += 1
    if n_rows:
        flush()
    return files


def _export(
    conn: sqlite3.Connection, sc: Scenario, run_id: int, ex: ExportSettings, now: float, actor: str, res: RunResult
) -> None:
    c = res.counts
    rows = conn.execute(
        "SELECT id, mac_md5, msisdn_md5 FROM o2o_segment_rows WHERE scenario_id = ? AND export_id IS NULL ORDER BY id",
        (sc.id,),
    ).fetchall()
    if rows:
        files = _write_files(ex.directory / f"scenario-{sc.id}", f"run-{run_id}", rows, ex.max_file_bytes)
        with conn:
            export_id = conn.execute(
                "INSERT INTO o2o_exports (scenario_id, run_id, created, files, rows, link_status) VALUES (?,?,?,?,?,?)",
                (sc.id, run_id, now, json.dumps(files), len(rows), "waiting"),
            ).lastrowid
            conn.executemany(
                "UPDATE o2o_segment_rows SET export_id = ? WHERE id = ?", [(export_id, r["id"]) for r in rows]
            )
        c["exported_rows"] += len(rows)
    # Share links: this run's export and any earlier one that waited for the link cap.
    for e in conn.execute(
        "SELECT id, rows, files FROM o2o_exports WHERE scenario_id = ? AND link_status = 'waiting' ORDER BY id",
        (sc.id,),
    ).fetchall():
        link = _new_link(conn, ex, now)
        if link is None:
            log.warning("share link cap reached (%d per %.0f s): export %d waits", ex.link_cap, ex.link_period_s, e[0])
            break
        token, lhash = link
        with conn:
            conn.execute(
                "UPDATE o2o_exports SET link_hash = ?, link_expires = ?, link_status = 'shared' WHERE id = ?",
                (lhash, now + ex.link_ttl_s, e["id"]),
            )
        register.record(
            conn, recipient=AD_PLATFORM, kind="segment", count=e["rows"], status="ok", scenario_id=sc.id,
            run_id=run_id, actor=actor, detail=f"export {e['id']}, link expires in {ex.link_ttl_s / DAY:g} days",
            now=now,
        )  # fmt: skip
        res.links.append(
            {"export_id": e["id"], "token": token, "expires": now + ex.link_ttl_s, "parts": len(json.loads(e["files"]))}
        )


def run_scenario(
    conn: sqlite3.Connection,
    sc: Scenario,
    client: PartnerClient,
    *,
    now: float | None = None,
    export: ExportSettings | None = None,
    actor: str = "o2o-runner",
) -> RunResult:
    now = time.time() if now is None else now
    export = export or ExportSettings()
    assert sc.id is not None, "scenario must be stored first"
    row = conn.execute("SELECT watermark FROM o2o_scenarios WHERE id = ?", (sc.id,)).fetchone()
    start = (row["watermark"] - LATE_OVERLAP_S) if row["watermark"] is not None else now - sc.lookback_s
    with conn:
        run_id = conn.execute(
            "INSERT INTO o2o_runs (scenario_id, started, now, status, window_from, window_to) VALUES (?,?,?,?,?,?)",
            (sc.id, time.time(), now, "running", start, now),
        ).lastrowid
    res = RunResult(sc.name, run_id, counts=dict.fromkeys(COUNTS, 0))
    c = res.counts
    try:
        _assign(conn, sc, run_id, now, start, c)
        if consent.in_quiet_hours(now, sc.quiet_hours, sc.timezone):
            # No advertising now: keep the queue for the first run after the quiet hours.
            c["deferred"] += conn.execute(
                "SELECT count(*) FROM o2o_targets WHERE scenario_id = ? AND status IN ('pending', 'matched')", (sc.id,)
            ).fetchone()[0]
        else:
            _match(conn, sc, run_id, client, now, c)
            _message(conn, sc, run_id, client, now, c)
        _export(conn, sc, run_id, export, now, actor, res)
    except PartnerError as exc:
        res.status, res.error = "failed", f"{exc.kind}: {exc}"
    except Exception as exc:  # a bug or a full disk must not kill the scheduler; the run says why
        log.exception("o2o run %d of %s failed", run_id, sc.name)
        res.status, res.error = "error", repr(exc)
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
    """Run every enabled scenario whose time has come (or all of them with ``force``)."""
    now = time.time() if now is None else now
    out = []
    for row in conn.execute("SELECT * FROM o2o_scenarios WHERE enabled = 1 ORDER BY id").fetchall():
        if only is not None and row["name"] != only:
            continue
        if force or row["next_run"] is None or row["next_run"] <= now:
            out.append(run_scenario(conn, Scenario.from_row(row), client, now=now, export=export, actor=actor))
    return out
