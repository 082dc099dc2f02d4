"""POS API: tills validate, redeem and cancel coupons with their store's API key.

Mount with ``app.include_router(pos.pos_router(db_path))``; endpoints (JSON bodies, header
``X-POS-Key: <key>`` or ``Authorization: Bearer <key>``; the key decides the store)::

    POST /api/o2o/pos/validate {"code", "amount"?}                 -> coupon and discount
    POST /api/o2o/pos/redeem   {"code", "amount", "receipt_id"?}   -> discount, to_pay
    POST /api/o2o/pos/cancel   {"code", "receipt_id"?, "reason"?}  -> {"cancelled": true}

Errors are ``{"error": <code>, "detail": <text for the cashier>}`` with status 404
``unknown``, 410 ``expired``, 409 ``already_redeemed``/``not_redeemed``/``not_yet_valid``,
403 ``wrong_store``, 422 ``below_minimum``/``bad_amount``, 401 ``bad_key``, 429 ``rate_limited``.

Each request uses its own SQLite connection so that redemptions from many tills serialize
on SQLite's write lock (``BEGIN IMMEDIATE``) and nowhere else.

Guessing limits (:class:`~footfall.hub.o2o.guessing.PosLimits`): validate, redeem and cancel
all answer whether a code exists, so all three count a lookup of an unknown code as a failed
attempt, per POS key and per client address (``forwarded.client_address``: the socket peer, or
``X-Forwarded-For`` from ``FOOTFALL_TRUSTED_PROXIES``). 20 failures of one key, or 30 from one
address, in 10 minutes lock that key or address for 10 minutes: every lookup, of real codes
too, gets 429 ``rate_limited`` with ``Retry-After`` and learns nothing, and one WARNING line
names the key (id, prefix, store) or address and only a code's first two characters. The
existence lookup has no side effects and runs first; the lockout test and the count of its
failure are then one step under the limiter's lock (``failure_limiter.FailureLimiter``), so parallel
guesses get at most the limit answered while parallel tills on real codes never wait for each
other. Refusals: ``GET /api/o2o/pos/limits`` (and ``rate_limited`` in ``/errors``).
"""

import hashlib
import logging
import math
import os
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from footfall.hub import failure_limiter, forwarded
from footfall.hub.o2o import coupons, guessing

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


@dataclass(frozen=True)
class Till:
    """The POS key a request came with: its store, and how logs and limits name it."""

    store: str
    key_id: int
    prefix: str

    @property
    def label(self) -> str:
        return f"#{self.key_id} {self.prefix}... (store {self.store!r})"


def till_for_key(conn: sqlite3.Connection, key: str | None) -> Till | None:
    if not key:
        return None
    row = conn.execute(
        "SELECT id, store, prefix FROM o2o_pos_keys WHERE key_hash = ? AND revoked IS NULL", (_hash(key),)
    ).fetchone()
    return Till(row[1], int(row[0]), row[2]) if row else None


def code_hint(code: str) -> str:
    """A code as logs may show it: two characters say which format was tried, not which code."""
    code = coupons.normalize(code)
    return f"code {code[:2]!r}... ({len(code)} chars)"


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


def pos_router(
    db_path: str | Path,
    clock: Callable[[], float] = time.time,
    *,
    limits: guessing.PosLimits | None = None,
    limit_clock: Callable[[], float] = time.monotonic,
    trusted_proxies: Sequence[str] | None = None,
) -> APIRouter:
    """``limits`` default to :data:`guessing.DEFAULT_LIMITS`; ``trusted_proxies`` to
    ``FOOTFALL_TRUSTED_PROXIES``, as the hub's logins (hub/api.py mounts this router as is)."""
    router = APIRouter(prefix="/api/o2o/pos", tags=["o2o-pos"])
    # Refusals by reason (bad keys, unknown codes...): a spike of "unknown" is someone guessing codes.
    errors: Counter[str] = Counter()
    router.errors = errors  # type: ignore[attr-defined]
    limits = limits or guessing.DEFAULT_LIMITS
    if limits.guesses_per_day() > guessing.DEFAULT_LIMITS.guesses_per_day():
        log.warning(
            "POS limits allow %.0f unknown codes a day per key, more than the %.0f the code-strength rule assumes",
            limits.guesses_per_day(), guessing.DEFAULT_LIMITS.guesses_per_day(),
        )  # fmt: skip
    limiter = failure_limiter.FailureLimiter(
        {"key": limits.key_failures, "address": limits.address_failures},
        limits.window_s,
        clock=limit_clock,
        what="POS coupon lookups",
        logger=log,
    )
    router.limiter = limiter  # type: ignore[attr-defined]
    if trusted_proxies is None:
        trusted_proxies = [p for p in os.environ.get("FOOTFALL_TRUSTED_PROXIES", "").split(",") if p.strip()]
    trusted = forwarded.parse_networks(trusted_proxies)

    def db() -> Iterator[sqlite3.Connection]:
        conn = open_conn(db_path)
        try:
            yield conn
        finally:
            conn.close()

    Conn = Annotated[sqlite3.Connection, Depends(db)]

    def pos_till(
        conn: Conn,
        x_pos_key: Annotated[str | None, Header()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Till | None:
        key = x_pos_key
        if not key and authorization and authorization.lower().startswith("bearer "):
            key = authorization[7:].strip()
        return till_for_key(conn, key)

    TillDep = Annotated[Till | None, Depends(pos_till)]

    def bad_key() -> JSONResponse:
        errors["bad_key"] += 1
        return _error("bad_key", "missing, unknown or revoked POS key", 401)

    def guarded(fn: Any) -> Any:
        try:
            return fn()
        except coupons.CouponError as exc:
            errors[exc.code] += 1
            if errors[exc.code] in (1, 10, 100, 1000) or errors[exc.code] % 10000 == 0:
                log.warning("POS refusals %r: %d so far", exc.code, errors[exc.code])
            return _error(exc.code, str(exc), exc.http_status)

    def limited(request: Request, conn: sqlite3.Connection, till: Till, code: str, fn: Any) -> Any:
        """Run ``fn`` unless the key or address is locked out; an unknown code is a failure."""
        address = forwarded.client_address(
            request.client.host if request.client else None, request.headers.getlist("x-forwarded-for"), trusted
        )
        # Looked up before the limiter decides and without side effects, so a locked key's
        # redemption never happens and the refusal is the same whether the code exists or not.
        found = coupons.exists(conn, code)
        verdict = limiter.admit(
            {"key": till.label, "address": address}, failed=not found, detail=f"last {code_hint(code)}"
        )
        if not verdict.allowed:
            errors["rate_limited"] += 1
            wait = math.ceil(verdict.retry_after)
            who = "POS key" if verdict.reason == "key" else "client address"
            detail = f"too many unknown coupon codes from this {who}; try again in {wait} s"
            return JSONResponse(
                {"error": "rate_limited", "detail": detail},
                status_code=429,
                headers={"Retry-After": str(wait)},
            )
        return guarded(fn)

    @router.get("/errors")
    def refusals(till: TillDep) -> Any:
        """Refusal counts by reason since the hub started (any valid POS key may read them)."""
        if till is None:
            return bad_key()
        return dict(errors)

    @router.get("/limits")
    def limit_report(till: TillDep) -> Any:
        """The guessing limits and what they refused since the hub started: counts only, so any
        valid POS key may read them without learning other stores' keys or addresses."""
        if till is None:
            return bad_key()
        return {
            "key_failures": limits.key_failures,
            "address_failures": limits.address_failures,
            "window_s": limits.window_s,
            "guesses_per_day_per_key": round(limits.guesses_per_day()),
            "refused": dict(limiter.refused),
            "lockouts": dict(limiter.lockouts),
            "locked_now": limiter.locked_now(),
        }

    @router.post("/validate")
    def validate(body: ValidateBody, conn: Conn, till: TillDep, request: Request) -> Any:
        if till is None:
            return bad_key()
        return limited(
            request, conn, till, body.code,
            lambda: coupons.validate(conn, body.code, till.store, amount=body.amount, now=clock()),
        )  # fmt: skip

    @router.post("/redeem")
    def redeem(body: RedeemBody, conn: Conn, till: TillDep, request: Request) -> Any:
        if till is None:
            return bad_key()
        return limited(
            request, conn, till, body.code,
            lambda: coupons.redeem(conn, body.code, till.store, body.amount, receipt_id=body.receipt_id, now=clock()),
        )  # fmt: skip

    @router.post("/cancel")
    def cancel(body: CancelBody, conn: Conn, till: TillDep, request: Request) -> Any:
        if till is None:
            return bad_key()
        # Limited too: "unknown" against "not_redeemed" tells a guesser as much as validate does.
        return limited(
            request, conn, till, body.code,
            lambda: coupons.cancel(
                conn, body.code, till.store, receipt_id=body.receipt_id, reason=body.reason, now=clock()
            ),
        )  # fmt: skip

    return router
