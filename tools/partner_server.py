"""Reference telecom partner server: MAC MD5 matching and an SMS outbox (FastAPI + SQLite).

It speaks the protocol documented in ``hub/o2o/partner.py`` so the whole O2O exchange runs for
real in tests and in the demo. Its own SQLite database holds:

``subscribers``  mac_md5 (MD5 of the MAC in ``AA:BB:CC:DD:EE:FF`` form) -> phone, phone_md5,
                 ``messageable`` (the subscriber's advertising SMS consent held by the
                 operator) and ``share_phone`` (may the operator pass the phone MD5 on).
``outbox``       every SMS accepted, keyed by the client's idempotency ``ref``.
``requests``     every match/SMS request received (for ``/v1/usage``, the partner's side of
                 the reconciliation).

:func:`seed_from_groundtruth` fills ``subscribers`` from a simulated day's global MACs with
the seed's realistic rates: 84 % of MAC hashes known (seed 004), of those ~85 % messageable
and ~70 % sharing a phone hash, plus unrelated subscribers so the table is not just the store's.

``footfall o2o partner-serve --db partner.db --port 8600 --api-key KEY [--seed-groundtruth DIR]``
runs it; ``--delay`` slows every answer (to demonstrate client timeouts).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from pydantic import BaseModel, Field

SCHEMA = """
CREATE TABLE IF NOT EXISTS subscribers (
    mac_md5 TEXT PRIMARY KEY,
    phone TEXT NOT NULL,
    phone_md5 TEXT NOT NULL,
    messageable INTEGER NOT NULL,
    share_phone INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY,
    ref TEXT NOT NULL UNIQUE,
    mac_md5 TEXT NOT NULL,
    phone TEXT NOT NULL,
    text TEXT NOT NULL,
    category TEXT NOT NULL,
    system INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    batch_id TEXT,
    hashes INTEGER NOT NULL,
    known INTEGER NOT NULL,
    sms INTEGER NOT NULL
);
"""

KNOWN_SHARE = 0.84
MESSAGEABLE_SHARE = 0.85
SHARE_PHONE_SHARE = 0.7


def mac_md5(mac: str) -> str:
    """MD5 of a MAC in the partner's normal form (upper case, colon separated)."""
    return hashlib.md5(mac.upper().replace("-", ":").encode()).hexdigest()


def connect(path: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.executescript(SCHEMA)
    return conn


def _phone(rng: random.Random) -> str:
    return "+79" + "".join(str(rng.randrange(10)) for _ in range(9))


def seed_subscribers(
    conn: sqlite3.Connection,
    macs: Iterable[str],
    *,
    seed: int = 1,
    known_share: float = KNOWN_SHARE,
    messageable_share: float = MESSAGEABLE_SHARE,
    share_phone_share: float = SHARE_PHONE_SHARE,
    others: int = 1000,
) -> dict[str, int]:
    """Add subscribers for ``known_share`` of ``macs`` (drawn per MAC, stable for a seed)."""
    counts = {"macs": 0, "known": 0, "messageable": 0, "share_phone": 0}
    rows = []
    for mac in sorted(set(m.upper() for m in macs)):
        counts["macs"] += 1
        rng = random.Random(f"{seed}:{mac}")
        if rng.random() >= known_share:
            continue
        phone = _phone(rng)
        msg, share = rng.random() < messageable_share, rng.random() < share_phone_share
        counts["known"] += 1
        counts["messageable"] += msg
        counts["share_phone"] += share
        rows.append((mac_md5(mac), phone, hashlib.md5(phone.encode()).hexdigest(), int(msg), int(share)))
    rng = random.Random(f"{seed}:others")
    for _ in range(others):
        mac = ":".join(f"{rng.randrange(256):02X}" for _ in range(6))
        phone = _phone(rng)
        rows.append((mac_md5(mac), phone, hashlib.md5(phone.encode()).hexdigest(), int(rng.random() < 0.85), 1))
    conn.execute("BEGIN")
    conn.executemany("INSERT OR REPLACE INTO subscribers VALUES (?,?,?,?,?)", rows)
    conn.execute("COMMIT")
    return counts


def global_macs(truth: dict[str, Any]) -> list[str]:
    """The globally administered MACs of a simulator ground truth (the ones a partner can know)."""
    out = set()
    for p in truth["people"]:
        if p["wifi"] and not p["randomized"]:
            for m in p["macs"]:
                first = int(m["mac"][:2], 16)
                if not first & 0x02:
                    out.add(m["mac"].upper())
    return sorted(out)


def seed_from_groundtruth(conn: sqlite3.Connection, truth: dict[str, Any] | str | Path, **kw: Any) -> dict[str, int]:
    if not isinstance(truth, dict):
        p = Path(truth)
        truth = json.loads((p / "groundtruth.json" if p.is_dir() else p).read_text())
    return seed_subscribers(conn, global_macs(truth), **kw)


class MatchRequest(BaseModel):
    batch_id: str = Field("", max_length=200)
    scenario: str = Field("", max_length=200)
    hashes: list[Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]] = Field(..., max_length=1000)


class SmsMessage(BaseModel):
    ref: str = Field(..., min_length=1, max_length=100)
    hash: str = Field(..., pattern=r"^[0-9a-f]{32}$")
    text: str = Field(..., min_length=1, max_length=1000)
    category: str = Field("promo", max_length=50)
    system: bool = False


class SmsRequest(BaseModel):
    messages: list[SmsMessage] = Field(..., max_length=500)


def create_app(db_path: str | Path, api_key: str, *, delay_s: float = 0.0) -> FastAPI:
    app = FastAPI(title="Footfall reference telecom partner", version="1")
    conn = connect(db_path)
    lock = threading.Lock()  # one writer; sqlite3 connections are not for concurrent use
    app.state.conn = conn
    app.state.delay_s = delay_s

    def auth(authorization: Annotated[str | None, Header()] = None) -> None:
        token = (authorization or "")[7:] if (authorization or "").lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), api_key.encode()):
            raise HTTPException(401, "bad API key")

    app.state.delays = {}  # per path, e.g. {"/v1/sms": 2.0}: to exercise client timeouts

    def slow(request: Request) -> None:
        delay = app.state.delays.get(request.url.path, app.state.delay_s)
        if delay:
            time.sleep(delay)

    deps = [Depends(auth), Depends(slow)]

    @app.get("/v1/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/match", dependencies=deps)
    def match(req: MatchRequest) -> dict[str, Any]:
        with lock:
            q = ",".join("?" * len(req.hashes)) or "NULL"
            subs = {
                r["mac_md5"]: r
                for r in conn.execute(f"SELECT * FROM subscribers WHERE mac_md5 IN ({q})", req.hashes).fetchall()
            }
            conn.execute(
                "INSERT INTO requests (at, kind, batch_id, hashes, known, sms) VALUES (?, 'match', ?, ?, ?, 0)",
                (time.time(), req.batch_id, len(req.hashes), len(subs)),
            )
        results = []
        for h in req.hashes:
            s = subs.get(h)
            results.append(
                {
                    "hash": h,
                    "known": s is not None,
                    "messageable": bool(s and s["messageable"]),
                    "phone_md5": s["phone_md5"] if s is not None and s["share_phone"] else None,
                }
            )
        return {"batch_id": req.batch_id, "results": results}

    @app.post("/v1/sms", dependencies=deps)
    def sms(req: SmsRequest) -> dict[str, Any]:
        results, queued = [], 0
        with lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for m in req.messages:
                    prev = conn.execute("SELECT id FROM outbox WHERE ref = ?", (m.ref,)).fetchone()
                    if prev:
                        results.append({"ref": m.ref, "status": "duplicate", "message_id": prev["id"], "reason": None})
                        continue
                    s = conn.execute("SELECT * FROM subscribers WHERE mac_md5 = ?", (m.hash,)).fetchone()
                    if s is None:
                        results.append({"ref": m.ref, "status": "rejected", "message_id": None, "reason": "unknown"})
                        continue
                    if not s["messageable"] and not m.system:
                        results.append({"ref": m.ref, "status": "rejected", "message_id": None, "reason": "no_consent"})
                        continue
                    mid = uuid.uuid4().hex
                    conn.execute(
                        "INSERT INTO outbox VALUES (?,?,?,?,?,?,?,?)",
                        (mid, m.ref, m.hash, s["phone"], m.text, m.category, int(m.system), time.time()),
                    )
                    queued += 1
                    results.append({"ref": m.ref, "status": "queued", "message_id": mid, "reason": None})
                conn.execute(
                    "INSERT INTO requests (at, kind, batch_id, hashes, known, sms) VALUES (?, 'sms', NULL, ?, 0, ?)",
                    (time.time(), len(req.messages), queued),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return {"results": results}

    @app.get("/v1/usage", dependencies=[Depends(auth)])
    def usage(start: float = Query(0.0), end: float = Query(1e12)) -> dict[str, int]:
        with lock:
            r = conn.execute(
                "SELECT total(kind = 'match'), total(CASE WHEN kind = 'match' THEN hashes END), total(known),"
                " total(sms) FROM requests WHERE at >= ? AND at < ?",
                (start, end),
            ).fetchone()
        return {"match_requests": int(r[0]), "hashes": int(r[1]), "known": int(r[2]), "sms": int(r[3])}

    @app.get("/v1/outbox", dependencies=[Depends(auth)])
    def outbox(since: float = Query(0.0)) -> dict[str, Any]:
        """Reference server only: what a real operator would deliver to phones."""
        with lock:
            rows = conn.execute(
                "SELECT id, ref, mac_md5, phone, text, category, system, created FROM outbox WHERE created >= ?"
                " ORDER BY created",
                (since,),
            ).fetchall()
        return {"messages": [dict(r) for r in rows]}

    return app


def serve(db_path: str | Path, api_key: str, host: str = "127.0.0.1", port: int = 8600, delay_s: float = 0.0) -> None:
    import uvicorn

    uvicorn.run(create_app(db_path, api_key, delay_s=delay_s), host=host, port=port, log_level="warning")
