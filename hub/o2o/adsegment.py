"""The ad-platform segment: one accumulated segment per scenario, a full snapshot every run.

Seed 004: a subscriber the partner knows but may not message is added to a segment of hashes
that is handed to the ad platform every 30 minutes; seed 000 gives the format: CSV, one
``msisdn`` column of phone MD5s (lowercase hex), files under 100 MB.

**Members.** A scenario's segment rows (``o2o_segment_rows``: known, not messageable, with
the phone MD5 the partner shared) added within :func:`membership_s` (the scenario's
``cap_days``, the period in which that person is not targeted again; at least its
``lookback_s``), one row per phone, minus the stop-list, local consent withdrawals and
unsubscriptions from the scenario's category, central opt-outs (``optout_keys``) and
withdrawals (``consents``), and phones the hub has since deleted. A target without a phone
MD5 cannot be a row (the platform matches on ``msisdn``): it is counted, never written empty.

**Snapshots.** Every run writes the full current segment (:func:`refresh`), sorted, split at
``max_file_bytes`` with the header in every part, unless it is byte-identical to the latest
one. Each snapshot is recorded (``o2o_snapshots``: rows, bytes, SHA-256 of the parts in
order, the newest live link's expiry) and entered in the data transfer register. A
superseded snapshot stays ``superseded_keep_s`` (an hour) for downloads pinned to it, then
its files are deleted; so is a snapshot no live link can reach, and one the runner has not
refreshed for ``stale_s`` (its members may have left the window).

**Links.** A share link is a guest link to the scenario's *current* snapshot (the platform
refreshes from the same URL). Each expires after ``link_ttl_s`` (3 days); a new one is made
when the newest live one is past ``1 / live_links`` of its life, so at most ``live_links``
(2) are live per scenario, and at most ``link_cap`` are made per ``link_period_s`` over all
scenarios (25 per 3 days, seed 000). ``GET /api/o2o/segments/{token}?part=N`` serves part
N; ``&snapshot=ID`` pins the parts of one download to one snapshot (the response headers
name it). An expired link answers 410, an unknown one 404.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from footfall.hub.o2o import register, tables
from footfall.hub.o2o.scenarios import Scenario

log = logging.getLogger(__name__)

DAY = 86400.0
AD_PLATFORM = "ad_platform"
HEADER = b"msisdn\r\n"
ROW_BYTES = 34  # 32 hex digits and CRLF
DEFAULT_MEMBERSHIP_S = 7 * DAY
ORP_MIN_ROWS = 5000  # seed 000: a segment for ORP must hold more than 5,000 subscribers


@dataclass
class ExportSettings:
    directory: Path = Path("o2o_exports")
    max_file_bytes: int = 100 * 1024 * 1024
    link_ttl_s: float = 3 * DAY
    live_links: int = 2
    link_cap: int = 25
    link_period_s: float = 3 * DAY
    superseded_keep_s: float = 3600.0
    stale_s: float = DAY

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        if self.max_file_bytes < len(HEADER) + 2 * ROW_BYTES:
            raise ValueError(f"max_file_bytes must be at least {len(HEADER) + 2 * ROW_BYTES} (the header and two rows)")
        if self.link_ttl_s <= 0 or self.link_period_s <= 0 or self.live_links < 1 or self.link_cap < 1:
            raise ValueError("link_ttl_s and link_period_s must be > 0, live_links and link_cap >= 1")
        if self.superseded_keep_s < 0 or self.stale_s <= 0:
            raise ValueError("superseded_keep_s must be >= 0 and stale_s > 0")


@dataclass
class SnapshotResult:
    snapshot_id: int | None = None
    rows: int = 0
    bytes: int = 0
    sha256: str = ""
    parts: int = 0
    unchanged: bool = False
    without_phone: int = 0  # members the partner shared no phone MD5 for: cannot be rows
    link_expires: float | None = None
    links: list[dict[str, Any]] = field(default_factory=list)  # new tokens, in clear only here
    warning: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "links"}


def link_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def membership_s(sc: Scenario) -> float:
    return max(sc.cap_days * DAY, sc.lookback_s)


# o2o_subject() is registered by privacy.attach(); the stop-list and consent hold keyed subjects.
_MEMBERS = """
SELECT DISTINCT r.msisdn_md5 FROM o2o_segment_rows r JOIN o2o_targets t ON t.id = r.target_id
WHERE r.scenario_id = :sc AND r.added > :since AND length(r.msisdn_md5) = 32 AND t.phone_md5 = r.msisdn_md5
  AND NOT EXISTS (SELECT 1 FROM o2o_stoplist s
                  WHERE s.subject IN (r.msisdn_md5, o2o_subject(r.msisdn_md5), r.mac_md5, o2o_subject(r.mac_md5)))
  AND NOT EXISTS (SELECT 1 FROM o2o_consent c
                  WHERE c.subject IN (r.msisdn_md5, o2o_subject(r.msisdn_md5), r.mac_md5, o2o_subject(r.mac_md5))
                    AND (c.state = 'withdrawn' OR (c.state = 'unsubscribed' AND c.category IN ('*', :category))))
  AND t.device_key NOT IN (SELECT device_key FROM optout_keys)
  AND t.device_key NOT IN (SELECT device FROM consents WHERE withdrawn IS NOT NULL)
ORDER BY r.msisdn_md5
"""


def _write_parts(directory: Path, stem: str, hashes: Any, max_bytes: int) -> tuple[list[dict[str, Any]], str]:
    """Parts of at most ``max_bytes``, each with the header; (files, SHA-256 of the parts in order)."""
    directory.mkdir(parents=True, exist_ok=True)
    total = hashlib.sha256()
    files: list[dict[str, Any]] = []
    per_part = (max_bytes - len(HEADER)) // ROW_BYTES
    part: list[bytes] = []

    def flush() -> None:
        data = HEADER + b"".join(part)
        path = directory / f".{stem}-{len(files) + 1:03d}.csv.tmp"
        with open(path, "wb") as f:
            f.write(data)
        total.update(data)
        files.append(
            {"path": str(path), "rows": len(part), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        )
        part.clear()

    for (h,) in hashes:
        part.append(h.lower().encode() + b"\r\n")
        if len(part) == per_part:
            flush()
    if part or not files:
        flush()
    return files, total.hexdigest()


def _current(conn: sqlite3.Connection, scenario_id: int) -> sqlite3.Row | None:
    """The scenario's newest snapshot if it is still offered (its files not deleted)."""
    row = conn.execute(
        "SELECT * FROM o2o_snapshots WHERE scenario_id = ? ORDER BY id DESC LIMIT 1", (scenario_id,)
    ).fetchone()
    return row if row is not None and row["deleted"] is None else None


def _links(conn: sqlite3.Connection, sc: Scenario, ex: ExportSettings, now: float, res: SnapshotResult) -> None:
    live = [r[0] for r in conn.execute(
        "SELECT expires FROM o2o_share_links WHERE scenario_id = ? AND expires > ? ORDER BY expires DESC", (sc.id, now)
    )]  # fmt: skip
    if live and (len(live) >= ex.live_links or live[0] - now > ex.link_ttl_s * (1 - 1 / ex.live_links)):
        res.link_expires = live[0]
        return
    since = now - ex.link_period_s
    made = conn.execute("SELECT count(*) FROM o2o_share_links WHERE created > ?", (since,)).fetchone()[0]
    if made >= ex.link_cap:
        log.warning("share link cap reached (%d per %.0f s): scenario %s gets no new link", ex.link_cap,
                    ex.link_period_s, sc.name)  # fmt: skip
        res.warning = "link cap reached: no new share link"
        res.link_expires = live[0] if live else None
        return
    token = secrets.token_urlsafe(24)
    with conn:
        conn.execute(
            "INSERT INTO o2o_share_links (link_hash, scenario_id, created, expires) VALUES (?, ?, ?, ?)",
            (link_hash(token), sc.id, now, now + ex.link_ttl_s),
        )
    res.link_expires = now + ex.link_ttl_s
    res.links.append({"scenario": sc.name, "token": token, "expires": now + ex.link_ttl_s})


def refresh(
    conn: sqlite3.Connection, sc: Scenario, run_id: int | None, ex: ExportSettings, *, now: float,
    actor: str = "o2o-runner",
) -> SnapshotResult:  # fmt: skip
    """Write the scenario's full segment if it changed, keep its links, register it; commits."""
    tables.ensure(conn)
    res = SnapshotResult()
    since = now - membership_s(sc)
    with conn:
        conn.execute("DELETE FROM o2o_segment_rows WHERE scenario_id = ? AND added <= ?", (sc.id, since))
    res.without_phone = conn.execute(
        "SELECT count(DISTINCT partner_hash) FROM o2o_targets WHERE scenario_id = ? AND status = 'segment'"
        " AND coalesce(matched_at, assigned_at) > ? AND phone_md5 IS NULL",
        (sc.id, since),
    ).fetchone()[0]
    latest = _current(conn, sc.id)
    directory = ex.directory.resolve() / f"scenario-{sc.id}"
    members = conn.execute(_MEMBERS, {"sc": sc.id, "since": since, "category": sc.category})
    files, digest = _write_parts(directory, f"run-{run_id}", members, ex.max_file_bytes)
    rows, size = sum(f["rows"] for f in files), sum(f["bytes"] for f in files)
    if (latest is not None and latest["sha256"] == digest) or (rows == 0 and (latest is None or latest["rows"] == 0)):
        # Same content as the one offered (or nothing ever to offer): no new snapshot.
        for f in files:
            Path(f["path"]).unlink(missing_ok=True)
        res.unchanged = latest is not None
        if latest is None:
            return res
        res.snapshot_id, res.rows, res.bytes, res.sha256 = (latest[k] for k in ("id", "rows", "bytes", "sha256"))
        res.parts = len(json.loads(latest["files"]))
    else:
        with conn:
            snap_id = conn.execute(
                "INSERT INTO o2o_snapshots (scenario_id, run_id, created, rows, bytes, sha256, files)"
                " VALUES (?, ?, ?, ?, ?, ?, '[]')",
                (sc.id, run_id, now, rows, size, digest),
            ).lastrowid
            for i, f in enumerate(files, 1):
                final = directory / f"snapshot-{snap_id}-{i:03d}.csv"
                Path(f["path"]).replace(final)
                f["path"] = str(final)
            conn.execute("UPDATE o2o_snapshots SET files = ? WHERE id = ?", (json.dumps(files), snap_id))
            conn.execute(
                "UPDATE o2o_snapshots SET superseded = ? WHERE scenario_id = ? AND id != ? AND superseded IS NULL",
                (now, sc.id, snap_id),
            )
        res.snapshot_id, res.rows, res.bytes, res.sha256, res.parts = snap_id, rows, size, digest, len(files)
    if res.rows:
        _links(conn, sc, ex, now, res)
    if not res.unchanged or res.links:
        with conn:
            conn.execute("UPDATE o2o_snapshots SET link_expires = ? WHERE id = ?", (res.link_expires, res.snapshot_id))
        if res.link_expires is not None:
            detail = {"snapshot": res.snapshot_id, "rows": res.rows, "bytes": res.bytes, "sha256": res.sha256,
                      "parts": res.parts, "link_expires": res.link_expires, "new_link": bool(res.links)}  # fmt: skip
            register.record(
                conn, recipient=AD_PLATFORM, kind="segment", count=res.rows, status="ok", scenario_id=sc.id,
                run_id=run_id, actor=actor, detail=json.dumps(detail, sort_keys=True), now=now,
            )  # fmt: skip
    if 0 < res.rows <= ORP_MIN_ROWS and res.warning is None:
        res.warning = f"{res.rows} rows: ORP takes segments of more than {ORP_MIN_ROWS}"
    return res


def _delete_files(conn: sqlite3.Connection, snap: sqlite3.Row, now: float) -> int:
    n = 0
    for f in json.loads(snap["files"]):
        try:
            os.unlink(f["path"])
            n += 1
        except FileNotFoundError:
            pass
    conn.execute("UPDATE o2o_snapshots SET deleted = ? WHERE id = ?", (now, snap["id"]))
    return n


def cleanup(conn: sqlite3.Connection, ex: ExportSettings | None = None, *, now: float | None = None) -> int:
    """Delete the files no one can or should download any more; returns files deleted; commits."""
    ex = ex or ExportSettings()
    now = time.time() if now is None else now
    tables.ensure(conn)
    n = 0
    with conn:
        # The watermark is the scenario's last run: a snapshot it has not refreshed is stale.
        ran = {r[0]: r[1] for r in conn.execute("SELECT id, watermark FROM o2o_scenarios WHERE enabled = 1")}
        live = {
            r[0] for r in conn.execute("SELECT DISTINCT scenario_id FROM o2o_share_links WHERE expires > ?", (now,))
        }
        for snap in conn.execute("SELECT * FROM o2o_snapshots WHERE deleted IS NULL").fetchall():
            sup, sc_id = snap["superseded"], snap["scenario_id"]
            gone = (
                (sup is not None and sup + ex.superseded_keep_s <= now)
                or sc_id not in ran
                or (ran[sc_id] or snap["created"]) + ex.stale_s <= now
                or (sc_id not in live and snap["created"] + ex.superseded_keep_s <= now)
            )
            if gone:
                n += _delete_files(conn, snap, now)
        # Per-run delta files of the version before snapshots: gone once their link expired.
        for e in conn.execute(
            "SELECT id, files FROM o2o_exports WHERE link_status != 'deleted' AND (link_status = 'waiting'"
            " OR link_expires <= ?)",
            (now,),
        ).fetchall():
            for f in json.loads(e["files"]):
                try:
                    os.unlink(f["path"])
                    n += 1
                except FileNotFoundError:
                    pass
            conn.execute("UPDATE o2o_exports SET link_status = 'deleted' WHERE id = ?", (e["id"],))
    return n


def scrub(conn: sqlite3.Connection, drop: Callable[[str], bool], *, now: float) -> tuple[int, int]:
    """Rewrite every segment file still on disk without the rows ``drop`` picks; never commits.

    Returns (files rewritten, rows removed). Covers snapshots and the older per-run files.
    """
    tables.ensure(conn)
    rewritten = removed = 0

    def rewrite(path: Path) -> tuple[int, dict[str, Any]] | None:
        try:
            lines = path.read_bytes().splitlines(keepends=True)
        except FileNotFoundError:
            return None
        keep = lines[:1] + [ln for ln in lines[1:] if not any(drop(x) for x in ln.decode().strip().split(",") if x)]
        gone = len(lines) - len(keep)
        if not gone:
            return None
        data = b"".join(keep)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return gone, {"rows": len(keep) - 1, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    for table, live_sql in (("o2o_snapshots", "deleted IS NULL"), ("o2o_exports", "link_status != 'deleted'")):
        for row in conn.execute(f"SELECT id, files FROM {table} WHERE {live_sql}").fetchall():
            files, gone_here = json.loads(row["files"]), 0
            for f in files:
                done = rewrite(Path(f["path"]))
                if done:
                    gone_here += done[0]
                    f.update(done[1])
                    rewritten += 1
            if not gone_here:
                continue
            removed += gone_here
            if table == "o2o_snapshots":
                total = hashlib.sha256()
                for f in files:
                    with contextlib.suppress(FileNotFoundError):
                        total.update(Path(f["path"]).read_bytes())
                conn.execute(
                    "UPDATE o2o_snapshots SET files = ?, rows = rows - ?, bytes = ?, sha256 = ?,"
                    " purged_rows = purged_rows + ? WHERE id = ?",
                    (json.dumps(files), gone_here, sum(f.get("bytes", 0) for f in files), total.hexdigest(),
                     gone_here, row["id"]),
                )  # fmt: skip
            else:
                conn.execute(
                    "UPDATE o2o_exports SET files = ?, rows = rows - ? WHERE id = ?",
                    (json.dumps(files), gone_here, row["id"]),
                )
    return rewritten, removed


class ShareError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def resolve(
    conn: sqlite3.Connection, token: str, part: int, *, snapshot: int | None = None, now: float | None = None
) -> tuple[Path, dict[str, str]]:
    """The file a share link serves for ``part``, with headers naming the snapshot; or :class:`ShareError`."""
    now = time.time() if now is None else now
    tables.ensure(conn)
    lh = link_hash(token)
    link = conn.execute("SELECT scenario_id, expires FROM o2o_share_links WHERE link_hash = ?", (lh,)).fetchone()
    if link is None:
        return _resolve_legacy(conn, lh, part, now)
    if link["expires"] <= now:
        raise ShareError(410, "share link has expired")
    enabled = conn.execute("SELECT enabled FROM o2o_scenarios WHERE id = ?", (link["scenario_id"],)).fetchone()
    if enabled is None or not enabled[0]:
        raise ShareError(410, "the scenario of this segment is stopped")
    if snapshot is not None:
        snap = conn.execute(
            "SELECT * FROM o2o_snapshots WHERE id = ? AND scenario_id = ? AND deleted IS NULL",
            (snapshot, link["scenario_id"]),
        ).fetchone()
        if snap is None:
            raise ShareError(410, f"snapshot {snapshot} is no longer offered: download the current one")
    else:
        snap = _current(conn, link["scenario_id"])
        if snap is None:
            raise ShareError(410, "no current segment (not refreshed recently)")
    files = json.loads(snap["files"])
    if part > len(files):
        raise ShareError(404, f"this segment has {len(files)} part(s)")
    f = files[part - 1]
    path = Path(f["path"])
    if not path.is_file():
        raise ShareError(410, "segment file is gone")
    register.record(
        conn, recipient=AD_PLATFORM, kind="segment_download", count=int(f["rows"]), status="ok",
        scenario_id=link["scenario_id"], actor="share-link", now=now,
        detail=json.dumps({"snapshot": snap["id"], "part": part, "sha256": f["sha256"]}, sort_keys=True),
    )  # fmt: skip
    headers = {
        "X-Footfall-Snapshot": str(snap["id"]),
        "X-Footfall-Parts": str(len(files)),
        "X-Footfall-Rows": str(f["rows"]),
        "X-Footfall-Sha256": f["sha256"],
    }
    return path, headers


def _resolve_legacy(conn: sqlite3.Connection, lh: str, part: int, now: float) -> tuple[Path, dict[str, str]]:
    row = conn.execute("SELECT files, link_expires FROM o2o_exports WHERE link_hash = ?", (lh,)).fetchone()
    if row is None:
        raise ShareError(404, "unknown share link")
    if row["link_expires"] <= now:
        raise ShareError(410, "share link has expired")
    files = json.loads(row["files"])
    if part > len(files):
        raise ShareError(404, f"this segment has {len(files)} part(s)")
    path = Path(files[part - 1]["path"])
    if not path.is_file():
        raise ShareError(410, "segment file is gone")
    return path, {"X-Footfall-Parts": str(len(files))}
