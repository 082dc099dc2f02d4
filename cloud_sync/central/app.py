"""The central service's FastAPI app: hub sync, the marketing team's pages and API, metrics.

``create_app(cfg)`` returns the app; ``app.state.db`` is the :class:`Database`,
``app.state.metrics`` the in-process counters behind ``/metrics``.

Sync (``docs/sync-protocol.md``): the body is read with a size bound before anything else
(413), then the HMAC signature, timestamp window and nonce are checked (401, each reason
counted), then the gzip body is inflated with a second bound and the envelope validated
(400), then the batch is applied exactly once (``model.apply_batch``). Nonces live in the
database, so several service processes behind a load balancer share one replay cache.

(No ``from __future__ import annotations`` here: FastAPI must resolve the ``Annotated``
dependencies defined inside :func:`create_app`.)
"""

import asyncio
import gzip
import io
import json
import logging
import math
import os
import re
import threading
import time
import zipfile
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from footfall.cloud_sync import definitions as hub_definitions
from footfall.cloud_sync import signing
from footfall.cloud_sync.central import (
    auth,
    cdp,
    consent,
    definitions,
    export,
    fleet_web,
    model,
    o2o,
    segments,
    wire,
)
from footfall.cloud_sync.central.config import CentralConfig
from footfall.cloud_sync.central.db import Connection, Database
from footfall.hub import forwarded
from footfall.hub.login_limits import LoginLimiter

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
_BATCH_ID = re.compile(r"^[0-9A-Za-z_.:-]{1,128}$")
_DEVICE = re.compile(r"^[0-9A-Za-z_.:-]{1,128}$")


class Metrics:
    """Counters for ``/metrics`` (Prometheus text exposition); gauges are read from the DB."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batches: Counter[str] = Counter()  # accepted / duplicate
        self.rejected: Counter[str] = Counter()  # by reason
        self.records: Counter[str] = Counter()
        self.pushback = 0
        self._profiles: tuple[float, int] = (0.0, 0)
        # More families from routers of their own (fleet_web.py), rendered after these.
        self.extra: list[Callable[[Connection], list[str]]] = []

    def profiles(self, conn: Connection) -> int:
        # The profile count aggregates the whole profile_stores table: at most once a minute,
        # not at every scrape.
        at, n = self._profiles
        if time.monotonic() - at > 60:
            n = int(conn.scalar("SELECT COUNT(DISTINCT device) FROM profile_stores", default=0))
            self._profiles = (time.monotonic(), n)
        return n

    def reject(self, reason: str) -> None:
        with self.lock:
            self.rejected[reason] += 1

    def render(self, conn: Connection) -> str:
        now = time.time()
        out = [
            "# HELP footfall_central_batches_total Sync batches applied or recognised as duplicates.",
            "# TYPE footfall_central_batches_total counter",
        ]
        with self.lock:
            for result in ("accepted", "duplicate"):
                out.append(f'footfall_central_batches_total{{result="{result}"}} {self.batches[result]}')
            out += [
                "# HELP footfall_central_batches_rejected_total Sync requests rejected, by reason.",
                "# TYPE footfall_central_batches_rejected_total counter",
            ]
            for reason, n in sorted(self.rejected.items()):
                out.append(f'footfall_central_batches_rejected_total{{reason="{reason}"}} {n}')
            out += [
                "# HELP footfall_central_records_total Records of applied batches, by outcome.",
                "# TYPE footfall_central_records_total counter",
            ]
            for outcome, n in sorted(self.records.items()):
                out.append(f'footfall_central_records_total{{outcome="{outcome}"}} {n}')
            out += [
                "# HELP footfall_central_pushback_requests_total Pushback polls answered.",
                "# TYPE footfall_central_pushback_requests_total counter",
                f"footfall_central_pushback_requests_total {self.pushback}",
            ]
        out += [
            "# HELP footfall_central_profiles Chain-wide profiles stored.",
            "# TYPE footfall_central_profiles gauge",
            f"footfall_central_profiles {self.profiles(conn)}",
            "# HELP footfall_central_optouts Devices opted out.",
            "# TYPE footfall_central_optouts gauge",
            f"footfall_central_optouts {conn.scalar('SELECT COUNT(*) FROM optouts', default=0)}",
            "# HELP footfall_central_hub_last_sync_age_seconds Seconds since each hub last synced (-1: never).",
            "# TYPE footfall_central_hub_last_sync_age_seconds gauge",
        ]
        for hub, last in conn.all("SELECT hub_id, last_sync FROM hubs WHERE disabled = 0 ORDER BY hub_id"):
            age = -1 if last is None else round(now - last, 1)
            out.append(f'footfall_central_hub_last_sync_age_seconds{{hub="{hub}"}} {age}')
        for lines in self.extra:
            out += lines(conn)
        return "\n".join(out) + "\n"


class LoginRequest(BaseModel):
    # Bounded: every name tried is remembered by the login limiter for its window.
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)


class SegmentRequest(BaseModel):
    id: str
    name: str = ""
    rule: Any
    stores: list[str] | None = None


class PushbackRequest(BaseModel):
    kind: str
    id: str
    body: dict[str, Any]
    store: str | None = None


class OptoutRequest(BaseModel):
    mac: str


class DeviceRequest(BaseModel):
    device: str


class _BadBatch(ValueError):
    pass


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("", "identity"):
        if len(body) > limit:
            raise _BadBatch("body over the size bound")
        return body
    if encoding != "gzip":
        raise _BadBatch(f"unsupported Content-Encoding {encoding!r}")
    # Bounded inflate: a small gzip bomb must not become gigabytes in memory.
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise _BadBatch(f"bad gzip body: {exc}") from None
    if len(out) > limit:
        raise _BadBatch("inflated body over the size bound")
    if not d.eof:
        raise _BadBatch("truncated gzip body")
    return out


def _envelope(raw: bytes, hub: str, idem: str | None, max_records: int) -> dict[str, Any]:
    # The typed decoder (wire.py) first; a body it does not take is decoded again as plain JSON,
    # so anything malformed is refused with the same reason either way.
    batch = wire.decode_envelope(raw)
    if batch is None:
        try:
            batch = json.loads(raw)
        except ValueError:
            raise _BadBatch("body is not JSON") from None
    if not isinstance(batch, dict):
        raise _BadBatch("body must be a JSON object")
    if batch.get("v") != 1:
        raise _BadBatch("unsupported version (v must be 1)")
    if batch.get("hub") != hub:
        raise _BadBatch("hub in body does not match the signed hub header")
    batch_id = batch.get("batch_id")
    if not isinstance(batch_id, str) or not _BATCH_ID.match(batch_id):
        raise _BadBatch("batch_id must be 1-128 characters of [0-9A-Za-z_.:-]")
    if idem is not None and idem != batch_id:
        raise _BadBatch("Idempotency-Key does not match batch_id")
    seq = batch.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise _BadBatch("seq must be a non-negative integer")
    records = batch.get("records")
    if not isinstance(records, list):
        raise _BadBatch("records must be a list")
    if len(records) > max_records:
        raise _BadBatch(f"more than {max_records} records")
    return batch


def _raw_path(request: Request) -> str:
    path = request.scope.get("raw_path") or request.url.path.encode()
    qs = request.scope.get("query_string") or b""
    return path.decode("latin-1") + ("?" + qs.decode("latin-1") if qs else "")


def create_app(cfg: CentralConfig | None = None, *, db: Database | None = None) -> FastAPI:
    cfg = cfg or CentralConfig()
    # Enough pooled connections for the batches applied at once plus the pages.
    database = db or Database(cfg.db, pool_size=max(1, cfg.sync_concurrency) + 4)
    model.init(database)
    metrics = Metrics()
    chain_key = cfg.chain_key()
    app = FastAPI(title="Footfall central", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.db = database
    app.state.metrics = metrics
    app.state.cfg = cfg
    optout_hits: dict[str, deque[float]] = {}
    optout_lock = threading.Lock()

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        state = request.state  # created before the route runs, so what authenticate_hub puts there shows here
        response = await call_next(request)
        # The centre's clock on every reply, signed for a hub it knows (cloud_sync/clock.py):
        # how a hub with a wrong clock finds out, and by how much, even from a 401.
        server_time = f"{time.time():.3f}"
        response.headers[signing.SERVER_TIME_HEADER] = server_time
        hub_secret = getattr(state, "hub_secret", None)
        nonce = request.headers.get(signing.NONCE_HEADER, "").strip()
        if hub_secret is not None and nonce:
            hub, secret = hub_secret
            response.headers[signing.SERVER_SIGNATURE_HEADER] = signing.server_time_signature(
                secret, hub, nonce, server_time
            )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"
        )
        return response

    def conn_dep() -> Iterator[Connection]:
        with database.connect() as conn:
            yield conn

    Conn = Annotated[Connection, Depends(conn_dep)]

    def principal(request: Request, conn: Conn) -> auth.Principal:
        who = auth.session_principal(conn, request.cookies.get(auth.SESSION_COOKIE))
        if who is None:
            header = request.headers.get("authorization", "")
            key = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key")
            who = auth.api_key_principal(conn, key)
        if who is None:
            raise HTTPException(401, "login or an API key required")
        return who

    Who = Annotated[auth.Principal, Depends(principal)]

    def need(who: auth.Principal, role: str) -> None:
        if not who.allows(role):
            raise HTTPException(403, f"needs the {role} role")

    def visible_segment(conn: Connection, who: auth.Principal, segment_id: str) -> dict[str, Any]:
        seg = segments.get_segment(conn, segment_id)
        if seg is None or not who.covers(seg["stores"]):
            raise HTTPException(404, "no such segment")
        return seg

    # ---- sync -------------------------------------------------------------------------

    def authenticate_hub(conn: Connection, request: Request, body: bytes) -> str:
        hub = signing.hub_of(request.headers)
        row = conn.one("SELECT secret, disabled FROM hubs WHERE hub_id = ?", (hub,)) if hub else None
        if row is None or row[1]:
            raise signing.SignatureError("unknown_hub")
        # Whatever the verdict, the reply carries the centre's time signed with this hub's
        # secret: a hub whose clock is off can only learn it from a 401 it can trust.
        request.state.hub_secret = (hub, row[0].encode())
        signing.verify(
            row[0].encode(),
            request.headers,
            request.method,
            _raw_path(request),
            body,
            window_s=cfg.timestamp_window_s,
        )
        nonce = request.headers[signing.NONCE_HEADER].strip().lower()
        now = time.time()
        fresh = conn.execute(
            "INSERT INTO nonces (hub_id, nonce, ts) VALUES (?, ?, ?) ON CONFLICT (hub_id, nonce) DO NOTHING",
            (hub, nonce, now),
        ).rowcount
        if not fresh:
            raise signing.SignatureError("replay")
        if int(nonce[:2], 16) == 0:  # about one request in 256 prunes the cache
            conn.execute("DELETE FROM nonces WHERE ts < ?", (now - 2 * cfg.timestamp_window_s,))
        return hub

    def reject(status: int, reason: str, message: str) -> JSONResponse:
        metrics.reject(reason)
        body: dict[str, Any] = {"error": message, "reason": reason}
        if status == 401:
            body["server_time"] = round(time.time(), 3)  # signed in the headers when the hub is known
        return JSONResponse(body, status_code=status)

    def handle_batch(request: Request, body: bytes) -> JSONResponse:
        with database.connect() as conn:
            try:
                hub = authenticate_hub(conn, request, body)
            except signing.SignatureError as exc:
                log.warning("sync batch refused: %s", exc)
                return reject(401, exc.reason, f"authentication failed: {exc.reason}")
        try:
            raw = _inflate(body, request.headers.get("content-encoding", "").strip().lower(), cfg.max_inflated_bytes)
            batch = _envelope(raw, hub, request.headers.get("idempotency-key"), cfg.max_records)
        except _BadBatch as exc:
            log.warning("malformed batch from %s: %s", hub, exc)
            return reject(400, "malformed", str(exc))
        result = model.apply_batch(database, hub, batch)
        with metrics.lock:
            metrics.batches["duplicate" if result.duplicate else "accepted"] += 1
            metrics.records["accepted"] += result.accepted
            metrics.records["rejected"] += result.rejected
            metrics.records["dropped_optout"] += result.dropped_optout
            metrics.records["dropped_no_consent"] += result.dropped_no_consent
        answer: dict[str, Any] = {"accepted": result.accepted, "duplicate": result.duplicate, "seq": batch["seq"]}
        if result.rejected:
            answer.update(rejected=result.rejected, errors=result.errors)
        return JSONResponse(answer)

    slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    def sync_slots() -> asyncio.Semaphore:
        # One per event loop: a semaphore that ever had a waiter is bound to its loop, and the
        # same app may be served again from a new loop (a restarted test server).
        loop = asyncio.get_running_loop()
        if loop not in slots:
            slots.clear()
            slots[loop] = asyncio.Semaphore(max(1, cfg.sync_concurrency))
        return slots[loop]

    @app.post("/api/v1/sync/batches")
    async def sync_batches(request: Request) -> Response:
        limit = cfg.max_batch_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return reject(413, "too_large", f"batch over {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return reject(413, "too_large", f"batch over {limit} bytes")
        # Admission control: at most sync_concurrency batches per process at once (more would
        # only queue inside PostgreSQL, on a connection each); the others wait their turn here,
        # and after sync_wait_s (below the hub's read timeout) are told to come back later.
        turn = sync_slots()
        try:
            await asyncio.wait_for(turn.acquire(), cfg.sync_wait_s)
        except TimeoutError:
            busy = reject(503, "busy", "the centre is busy; retry later")
            busy.headers["Retry-After"] = "10"
            return busy
        try:
            return await run_in_threadpool(handle_batch, request, bytes(body))
        finally:
            turn.release()

    def handle_pushback(request: Request, since: int) -> JSONResponse:
        with database.connect() as conn:
            try:
                hub = authenticate_hub(conn, request, b"")
            except signing.SignatureError as exc:
                return reject(401, exc.reason, f"authentication failed: {exc.reason}")
            cursor, items = model.pushback_since(conn, hub, since)
        with metrics.lock:
            metrics.pushback += 1
        return JSONResponse({"cursor": cursor, "items": items})

    fleet_counters = fleet_web.FleetMetrics()
    metrics.extra.append(fleet_counters.lines)
    app.include_router(fleet_web.router(database, cfg, principal, authenticate_hub, reject, _inflate, fleet_counters))

    @app.get("/api/v1/sync/pushback")
    async def sync_pushback(request: Request, since: int = Query(0, ge=0)) -> Response:
        body = await request.body()
        if body:
            return reject(400, "malformed", "pushback takes no body")
        return await run_in_threadpool(handle_pushback, request, since)

    # ---- pages, session, metrics ----------------------------------------------------

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/login", include_in_schema=False)
    def login_page() -> FileResponse:
        return FileResponse(STATIC / "login.html")

    @app.get("/o2o", include_in_schema=False)
    def o2o_page() -> FileResponse:
        return FileResponse(STATIC / "o2o.html")

    @app.get("/optout", include_in_schema=False)
    def optout_page() -> FileResponse:
        return FileResponse(STATIC / "optout.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz")
    def healthz(conn: Conn) -> dict[str, str]:
        conn.scalar("SELECT 1")
        return {"status": "ok", "engine": database.engine}

    @app.get("/metrics")
    def prometheus(conn: Conn) -> PlainTextResponse:
        return PlainTextResponse(metrics.render(conn), media_type="text/plain; version=0.0.4")

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)

    limiter = LoginLimiter()
    # Central runs behind a TLS proxy on the same machine: without its X-Forwarded-For every
    # login would count against 127.0.0.1, and one attacker's wrong passwords would lock out
    # every user. Followed only from the proxies named in FOOTFALL_TRUSTED_PROXIES.
    trusted_proxies = forwarded.parse_networks(os.environ.get("FOOTFALL_TRUSTED_PROXIES", "").split(","))

    @app.post("/api/v1/login")
    def login(body: LoginRequest, request: Request, response: Response, conn: Conn) -> dict[str, Any]:
        client = forwarded.client_address(
            request.client.host if request.client else None, request.headers.getlist("x-forwarded-for"), trusted_proxies
        )
        # Counted per (user, address) and taken before the password check: see hub/login_limits.py.
        attempt = limiter.begin(body.username, client)
        if not attempt.allowed:
            raise HTTPException(429, f"too many failed logins, retry in {math.ceil(attempt.retry_after)} s")
        verdict: bool | None = None
        try:
            user_id = auth.authenticate(conn, body.username, body.password)
            verdict = user_id is not None
            if user_id is None:
                raise HTTPException(401, "wrong user name or password")
        finally:
            limiter.finish(attempt, verdict)
        token = auth.create_session(conn, user_id)
        response.set_cookie(
            auth.SESSION_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=cfg.secure_cookie,
            max_age=int(auth.SESSION_TTL_S),
        )
        return {"ok": True}

    @app.post("/api/v1/logout")
    def logout(request: Request, conn: Conn) -> JSONResponse:
        auth.end_session(conn, request.cookies.get(auth.SESSION_COOKIE))
        resp = JSONResponse({"ok": True})
        resp.delete_cookie(auth.SESSION_COOKIE)
        return resp

    @app.get("/api/v1/me")
    def me(who: Who) -> dict[str, Any]:
        return {"name": who.name, "kind": who.kind, "role": who.role, "stores": who.stores}

    # ---- stores and health ------------------------------------------------------------

    @app.get("/api/v1/stores")
    def stores(who: Who, conn: Conn) -> dict[str, Any]:
        now = time.time()
        out = []
        health = {r["store"]: r for r in conn.dicts("SELECT * FROM store_health")}
        counts = dict(conn.all("SELECT store, COUNT(*) FROM profile_stores GROUP BY store"))
        for hub in conn.dicts(
            "SELECT hub_id, name, disabled, last_sync, last_seq, batches, records FROM hubs ORDER BY hub_id"
        ):
            if not who.sees(hub["hub_id"]):
                continue
            h = health.get(hub["hub_id"])
            day = conn.dicts(
                "SELECT day, visitors, passersby, capture_rate, dwell_median_s FROM daily_aggregates "
                "WHERE store = ? ORDER BY day DESC LIMIT 1",
                (hub["hub_id"],),
            )
            out.append(
                {
                    **hub,
                    "last_sync_age_s": None if hub["last_sync"] is None else round(now - hub["last_sync"], 1),
                    "profiles": counts.get(hub["hub_id"], 0),
                    "sensors": None
                    if h is None
                    else {
                        "total": h["sensors_total"],
                        "stale": h["sensors_stale"],
                        "failing": h["sensors_failing"],
                        "reported": h["ts"],
                    },
                    "latest_day": day[0] if day else None,
                }
            )
        return {"stores": out}

    @app.get("/api/v1/stores/{store}/daily")
    def store_daily(store: str, who: Who, conn: Conn, days: int = Query(30, ge=1, le=400)) -> dict[str, Any]:
        if not who.sees(store):
            raise HTTPException(404, "no such store")
        rows = conn.dicts(
            "SELECT day, visitors, passersby, capture_rate, dwell_median_s FROM daily_aggregates "
            "WHERE store = ? ORDER BY day DESC LIMIT ?",
            (store, days),
        )
        return {"store": store, "days": rows[::-1]}

    # ---- profiles ---------------------------------------------------------------------

    def store_filter(who: auth.Principal, alias: str = "ps") -> tuple[str, list[str]]:
        if who.stores is None:
            return "", []
        return f" AND {alias}.store IN ({', '.join('?' * len(who.stores))})", list(who.stores)

    @app.get("/api/v1/profiles")
    def search_profiles(
        who: Who, conn: Conn, q: str = Query(..., max_length=128), limit: int = Query(50, ge=1, le=500)
    ) -> dict[str, Any]:
        prefix = q.strip().lower()
        # At least 4 characters: a shorter prefix matches a sixteenth of the chain or more.
        if len(prefix) < 4 or not _DEVICE.match(prefix):
            raise HTTPException(400, "search by at least 4 characters of a device id")
        scope, params = store_filter(who)
        rows = conn.dicts(
            "SELECT p.device, p.first_seen, p.last_seen, p.visits, p.stores FROM profiles p "
            "WHERE p.device LIKE ? AND EXISTS (SELECT 1 FROM profile_stores ps WHERE ps.device = p.device"
            f"{scope}) ORDER BY p.last_seen DESC LIMIT ?",
            [prefix.replace("%", "").replace("_", "") + "%", *params, limit],
        )
        return {"profiles": rows}

    @app.get("/api/v1/profiles/{device}")
    def get_profile(device: str, who: Who, conn: Conn) -> dict[str, Any]:
        scope, params = store_filter(who)
        per_store = conn.dicts(
            "SELECT store, first_seen, last_seen, visits, dwell_s, dwell_median_s, cluster, segments "
            f"FROM profile_stores ps WHERE device = ?{scope} ORDER BY store",
            [device, *params],
        )
        if not per_store:
            raise HTTPException(404, "no such profile")
        for row in per_store:
            row["segments"] = json.loads(row["segments"])
        escope, eparams = store_filter(who, "e")
        if escope:
            escope = f" AND (e.store IS NULL OR (1 = 1{escope}))"
        events = conn.dicts(
            f"SELECT kind, store, ts, data FROM profile_events e WHERE device = ?{escope} ORDER BY ts DESC LIMIT 200",
            [device, *eparams],
        )
        for e in events:
            e["data"] = json.loads(e["data"])
        ids = conn.dicts(
            "SELECT type, value, active, added FROM identifiers WHERE device = ? ORDER BY added", (device,)
        )
        for ident in ids:
            # The team sees that a consented phone hash exists, not the hash itself.
            if ident["type"] != "mac_hash":
                ident["value"] = None
        c = conn.dicts("SELECT pd_consent, given, withdrawn FROM consents WHERE device = ?", (device,))
        return {
            "device": device,
            "first_seen": min(r["first_seen"] for r in per_store),
            "last_seen": max(r["last_seen"] for r in per_store),
            "visits": sum(r["visits"] for r in per_store),
            "stores": per_store,
            "identifiers": ids,
            "consent": c[0] if c else {"pd_consent": 0, "given": None, "withdrawn": None},
            "events": events,
        }

    # ---- segments ---------------------------------------------------------------------

    @app.get("/api/v1/segments")
    def list_segments(who: Who, conn: Conn) -> dict[str, Any]:
        return {"segments": [s for s in segments.list_segments(conn) if who.covers(s["stores"])]}

    @app.post("/api/v1/segments", status_code=201)
    def create_segment(body: SegmentRequest, who: Who, conn: Conn) -> dict[str, Any]:
        need(who, "marketing")
        scope = body.stores if body.stores else (list(who.stores) if who.stores else None)
        if not who.covers(scope):
            raise HTTPException(403, "the segment's stores are outside your stores")
        try:
            segments.create_segment(conn, body.id, body.name, body.rule, stores=scope, created_by=who.name)
        except segments.RuleError as exc:
            raise HTTPException(400, str(exc)) from None
        return segments.get_segment(conn, body.id) or {}

    @app.post("/api/v1/segments/{segment_id}/recount")
    def recount(segment_id: str, who: Who, conn: Conn) -> dict[str, Any]:
        need(who, "marketing")
        visible_segment(conn, who, segment_id)
        v = segments.recount(conn, segment_id)
        return {"segment": segment_id, "version": v.version, "size": v.size, "delta": v.delta, "ts": v.ts}

    @app.get("/api/v1/segments/{segment_id}/versions")
    def segment_versions(segment_id: str, who: Who, conn: Conn) -> dict[str, Any]:
        seg = visible_segment(conn, who, segment_id)
        return {"segment": seg, "versions": segments.versions(conn, segment_id)}

    @app.get("/api/v1/segments/{segment_id}/export")
    def export_segment(
        segment_id: str,
        who: Who,
        conn: Conn,
        format: str = Query("csv", pattern="^(csv|json|msisdn)$"),
        version: int | None = None,
    ) -> Response:
        need(who, "marketing")
        seg = visible_segment(conn, who, segment_id)
        try:
            if format != "msisdn":
                text = export.generic(conn, segment_id, format, version=version, stores=seg["stores"])
                media = "application/json" if format == "json" else "text/csv"
                body = text.encode()
                n = int(json.loads(text)["count"]) if format == "json" else max(0, text.count("\n") - 1)
                o2o.record_export(conn, who=who.name, segment=segment_id, version=version, fmt=format, rows=n,
                                  payload=body)  # fmt: skip
                return Response(
                    text,
                    media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{segment_id}.{format}"'},
                )
            with TemporaryDirectory() as tmp:
                result = export.supplier_csv(conn, segment_id, tmp, version=version)
                blob = b"".join(f.read_bytes() for f in result.files)
                o2o.record_export(conn, who=who.name, segment=segment_id, version=version, fmt="msisdn",
                                  rows=result.count, payload=blob, files=len(result.files),
                                  warning=result.warnings[0] if result.warnings else None)  # fmt: skip
                headers = {"X-Footfall-Count": str(result.count)}
                if result.warnings:
                    headers["X-Footfall-Warning"] = result.warnings[0]
                if len(result.files) == 1:
                    headers["Content-Disposition"] = f'attachment; filename="{result.files[0].name}"'
                    return Response(result.files[0].read_bytes(), media_type="text/csv", headers=headers)
                buf = io.BytesIO()
                with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                    for f in result.files:
                        zf.write(f, f.name)
                headers["Content-Disposition"] = f'attachment; filename="{segment_id}.zip"'
                return Response(buf.getvalue(), media_type="application/zip", headers=headers)
        except KeyError as exc:
            raise HTTPException(409, str(exc).strip("'\"")) from None

    @app.post("/api/v1/segments/{segment_id}/push")
    def push_segment(segment_id: str, who: Who, conn: Conn, connector: str = "main") -> dict[str, Any]:
        need(who, "marketing")
        seg = visible_segment(conn, who, segment_id)
        target = cfg.cdp.get(connector)
        if target is None:
            raise HTTPException(404, f"no CDP connector {connector!r} configured")
        try:
            r = cdp.push_segment(conn, segment_id, target, stores=seg["stores"])
        except KeyError as exc:
            raise HTTPException(409, str(exc).strip("'\"")) from None
        except cdp.CdpError as exc:
            raise HTTPException(502, str(exc)) from None
        o2o.record_export(conn, who=who.name, segment=segment_id, version=None, fmt=f"cdp:{connector}",
                          rows=r.sent, files=r.batches)  # fmt: skip
        return {"export_id": r.export_id, "queued": r.queued, "sent": r.sent, "batches": r.batches}

    # ---- O2O results across stores, and the register of exports -----------------------

    @app.get("/api/v1/o2o/results")
    def o2o_results(
        who: Who,
        conn: Conn,
        start: str = Query(...),
        end: str = Query(...),
        scenario: str | None = None,
        format: str = Query("json", pattern="^(json|csv)$"),
    ) -> Response:
        need(who, "readonly")
        try:
            res = o2o.results(conn, start, end, who.stores, scenario)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        if format == "csv":
            return Response(
                o2o.to_csv(res["rows"] + res["totals"]),
                media_type="text/csv",
                headers={"Content-Disposition": f'attachment; filename="o2o_{start}_{end}.csv"'},
            )
        return JSONResponse(res)

    @app.get("/api/v1/exports")
    def exports_register(who: Who, conn: Conn, format: str = Query("json", pattern="^(json|csv)$")) -> Response:
        need(who, "readonly")
        visible = None
        if who.stores is not None:
            visible = {s["id"] for s in segments.list_segments(conn) if who.covers(s["stores"])}
        rows = o2o.exports(conn, visible)
        if format == "csv":
            return Response(o2o.to_csv(rows, o2o.EXPORT_COLUMNS), media_type="text/csv")
        return JSONResponse({"exports": rows})

    # ---- pushback to hubs -------------------------------------------------------------

    @app.post("/api/v1/pushback", status_code=201)
    def add_pushback(body: PushbackRequest, who: Who, conn: Conn) -> dict[str, Any]:
        need(who, "marketing")
        if body.kind not in definitions.KINDS:
            raise HTTPException(400, f"kind must be one of {', '.join(definitions.KINDS)}")
        if not who.covers(None if body.store is None else [body.store]):
            raise HTTPException(403, "that store is outside your stores")
        try:
            hub_definitions.check(body.kind, body.id, body.body)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        item_id, version = definitions.publish(
            conn, body.kind, body.id, body.body, store=body.store, by=who.name, now=time.time()
        )
        return {"id": item_id, "version": version}

    @app.get("/api/v1/definitions")
    def list_definitions(who: Who, conn: Conn) -> dict[str, Any]:
        need(who, "readonly")
        return {"definitions": definitions.overview(conn, who.stores)}

    # ---- consent and opt-out ----------------------------------------------------------

    @app.post("/api/v1/consents")
    def give_consent(body: DeviceRequest, who: Who, conn: Conn) -> dict[str, Any]:
        need(who, "admin")
        consent.record_consent(conn, body.device, source=f"central:{who.name}")
        return {"ok": True}

    @app.post("/api/v1/consents/withdraw")
    def withdraw(body: DeviceRequest, who: Who, conn: Conn) -> dict[str, Any]:
        need(who, "admin")
        return {"ok": True, "deleted": consent.withdraw_consent(conn, body.device)}

    @app.post("/api/v1/optouts")
    def admin_optout(body: DeviceRequest, who: Who, conn: Conn) -> dict[str, Any]:
        need(who, "admin")
        if not _DEVICE.match(body.device):
            raise HTTPException(400, "device id expected")
        return {"ok": True, "new": consent.optout(conn, body.device, source=f"central:{who.name}")}

    @app.post("/api/v1/optout")
    def shopper_optout(body: OptoutRequest, request: Request, conn: Conn) -> dict[str, Any]:
        """The public opt-out form. The MAC is hashed at once; it is never stored, logged or
        echoed (errors say what is wrong, not what was typed)."""
        if chain_key is None:
            raise HTTPException(503, "opt-out is not configured on this server (chain key missing)")
        client = request.client.host if request.client else "?"
        now = time.monotonic()
        with optout_lock:
            hits = optout_hits.setdefault(client, deque())
            while hits and hits[0] < now - 60:
                hits.popleft()
            if len(hits) >= 10:
                raise HTTPException(429, "too many requests, try again in a minute")
            hits.append(now)
            if len(optout_hits) > 10000:
                optout_hits.clear()
        try:
            device = consent.device_from_mac(chain_key, body.mac)
        except ValueError:
            raise HTTPException(400, "not a MAC address: 12 hexadecimal digits, e.g. AA:BB:CC:DD:EE:FF") from None
        consent.optout(conn, device, source="shopper")
        return {"ok": True, "message": "This device will no longer be counted in any of our stores."}

    @app.post("/api/v1/retention/run")
    def retention(who: Who, conn: Conn) -> dict[str, Any]:
        need(who, "admin")
        return consent.enforce_retention(conn, cfg.retention)

    @app.get("/api/v1/hubs")
    def hubs(who: Who, conn: Conn) -> dict[str, Any]:
        need(who, "admin")
        return {
            "hubs": conn.dicts(
                "SELECT hub_id, name, created, disabled, last_sync, last_seq, batches, records "
                "FROM hubs ORDER BY hub_id"
            )
        }

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    return app


def gzip_json(obj: Any) -> bytes:
    """The sync wire format: compact JSON, gzip (helper for tests and the benchmark)."""
    return gzip.compress(json.dumps(obj, separators=(",", ":")).encode(), compresslevel=6)
