"""HTTP side of hub sync: batches in, pushback out, both signed by the hub.

Sync (``docs/sync-protocol.md``): the body is read with a size bound before anything else
(413), then the HMAC signature, timestamp window and nonce are checked (401, each reason
counted), then the gzip body is inflated with a second bound and the envelope validated
(400), then the batch is applied exactly once (``apply.apply_batch``). Nonces live in the
database, so several service processes behind a load balancer share one replay cache.

The fleet report (``POST /api/v1/sync/fleet``, fleet_web.py) is checked by the same hub
authentication and bounds, so its router is built here.
"""

import asyncio
import json
import logging
import re
import time
import zlib
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from footfall.cloud_sync import signing
from footfall.cloud_sync.central import apply, fleet_web, pushback, wire
from footfall.cloud_sync.central.config import CentralConfig
from footfall.cloud_sync.central.db import Connection, Database
from footfall.cloud_sync.central.deps import Deps
from footfall.cloud_sync.central.metrics import Metrics

log = logging.getLogger(__name__)
_BATCH_ID = re.compile(r"^[0-9A-Za-z_.:-]{1,128}$")


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


def router(database: Database, cfg: CentralConfig, metrics: Metrics, deps: Deps) -> APIRouter:
    """The sync routes, and the fleet report's, which share their hub authentication."""
    r = APIRouter()
    principal = deps.principal

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
        result = apply.apply_batch(database, hub, batch)
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

    @r.post("/api/v1/sync/batches")
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
            cursor, items = pushback.pushback_since(conn, hub, since)
        with metrics.lock:
            metrics.pushback += 1
        return JSONResponse({"cursor": cursor, "items": items})

    fleet_counters = fleet_web.FleetMetrics()
    metrics.extra.append(fleet_counters.lines)
    r.include_router(fleet_web.router(database, cfg, principal, authenticate_hub, reject, _inflate, fleet_counters))

    @r.get("/api/v1/sync/pushback")
    async def sync_pushback(request: Request, since: int = Query(0, ge=0)) -> Response:
        body = await request.body()
        if body:
            return reject(400, "malformed", "pushback takes no body")
        return await run_in_threadpool(handle_pushback, request, since)

    return r
