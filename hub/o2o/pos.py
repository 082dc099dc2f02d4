"""POS API: tills validate, redeem and cancel coupons with their store's API key.

Mount with ``app.include_router(pos.pos_router(db_path))``; endpoints (JSON bodies, header
``X-POS-Key: <key>`` or ``Authorization: Bearer <key>``; the key decides the store)::

    POST /api/o2o/pos/validate {"code", "amount"?}                 -> coupon and discount
    POST /api/o2o/pos/redeem   {"code", "amount", "receipt_id"?}   -> discount, to_pay
    POST /api/o2o/pos/cancel   {"code", "receipt_id"?, "reason"?}  -> {"cancelled": true}

Errors are ``{"error": <code>, "detail": <text for the cashier>}`` with status 404
``unknown``, 410 ``expired``, 409 ``already_redeemed``/``not_redeemed``/``not_yet_valid``,
403 ``wrong_store``, 422 ``below_minimum``/``bad_amount``, 401 ``bad_key``.

Each request uses its own SQLite connection so that redemptions from many tills serialize
on SQLite's write lock (``BEGIN IMMEDIATE``) and nowhere else.
"""

import hashlib
import logging
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from footfall.hub.o2o import coupons

log = logging.getLogger(__name__)
KEY_PREFIX = "pos_"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(conn: sqlite3.Connection, store: str) -> str:
    """A new POS key for ``store``; only its hash is kept, so show it once."""
    if not store or len(store) > 100:
        raise ValueError("store id must be 1..100 characters")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with conn:
        conn.execute(
            "INSERT INTO o2o_pos_keys (store, prefix, key_hash, created) VALUES (?, ?, ?, ?)",
            (store, key[:10], _hash(key), time.time()),
        )
    return key


def revoke_keys(conn: sqlite3.Connection, store: str) -> int:
    with conn:
        return conn.execute(
            "UPDATE o2o_pos_keys SET revoked = ? WHERE store = ? AND revoked IS NULL", (time.time(), store)
        ).rowcount


def store_for_key(conn: sqlite3.Connection, key: str | None) -> str | None:
    if not key:
        return None
    row = conn.execute(
        "SELECT store FROM o2o_pos_keys WHERE key_hash = ? AND revoked IS NULL", (_hash(key),)
    ).fetchone()
    return row[0] if row else None


def open_conn(db_path: str | Path) -> sqlite3.Connection:
    # Long busy timeout: fifty tills on one code queue on the write lock for milliseconds each.
    conn = sqlite3.connect(db_path, timeout=30, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    return conn


class ValidateBody(BaseModel):
    code: str = Field(..., min_length=1, max_length=64)
    amount: float | None = Field(None, ge=0, lt=1e9)


class RedeemBody(BaseModel):
    code: str = Field(..., min_length=1, max_length=64)
    amount: float = Field(..., ge=0, lt=1e9)
    receipt_id: str | None = Field(None, max_length=100)


class CancelBody(BaseModel):
    code: str = Field(..., min_length=1, max_length=64)
    receipt_id: str | None = Field(None, max_length=100)
    reason: str = Field("", max_length=500)


def _error(code: str, detail: str, status: int) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


def pos_router(db_path: str | Path, clock: Callable[[], float] = time.time) -> APIRouter:
    router = APIRouter(prefix="/api/o2o/pos", tags=["o2o-pos"])
    # Refusals by reason (bad keys, unknown codes...): a spike of "unknown" is someone guessing codes.
    errors: Counter[str] = Counter()
    router.errors = errors  # type: ignore[attr-defined]

    def db() -> Iterator[sqlite3.Connection]:
        conn = open_conn(db_path)
        try:
            yield conn
        finally:
            conn.close()

    Conn = Annotated[sqlite3.Connection, Depends(db)]

    def pos_store(
        conn: Conn,
        x_pos_key: Annotated[str | None, Header()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> str | None:
        key = x_pos_key
        if not key and authorization and authorization.lower().startswith("bearer "):
            key = authorization[7:].strip()
        return store_for_key(conn, key)

    Store = Annotated[str | None, Depends(pos_store)]

    def guarded(store: str | None, fn: Any) -> Any:
        if store is None:
            errors["bad_key"] += 1
            return _error("bad_key", "missing, unknown or revoked POS key", 401)
        try:
            return fn()
        except coupons.CouponError as exc:
            errors[exc.code] += 1
            if errors[exc.code] in (1, 10, 100, 1000) or errors[exc.code] % 10000 == 0:
                log.warning("POS refusals %r: %d so far", exc.code, errors[exc.code])
            return _error(exc.code, str(exc), exc.http_status)

    @router.get("/errors")
    def refusals(store: Store) -> Any:
        """Refusal counts by reason since the hub started (any valid POS key may read them)."""
        if store is None:
            return _error("bad_key", "missing, unknown or revoked POS key", 401)
        return dict(errors)

    @router.post("/validate")
    def validate(body: ValidateBody, conn: Conn, store: Store) -> Any:
        return guarded(store, lambda: coupons.validate(conn, body.code, store, amount=body.amount, now=clock()))

    @router.post("/redeem")
    def redeem(body: RedeemBody, conn: Conn, store: Store) -> Any:
        return guarded(
            store, lambda: coupons.redeem(conn, body.code, store, body.amount, receipt_id=body.receipt_id, now=clock())
        )

    @router.post("/cancel")
    def cancel(body: CancelBody, conn: Conn, store: Store) -> Any:
        return guarded(
            store,
            lambda: coupons.cancel(conn, body.code, store, receipt_id=body.receipt_id, reason=body.reason, now=clock()),
        )

    return router
