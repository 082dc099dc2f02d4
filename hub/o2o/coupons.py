"""Personal coupons: generation, issue, validation and exactly-once redemption.

Codes come from :mod:`secrets` (never from a seeded or time-based generator): a code of the
default length 10 over the default 32-character alphabet carries 9 random characters, 2^45
(3.5e13) possibilities, plus one **check character** (Luhn mod N) so that a mistyped code is
caught by :meth:`Generator.well_formed` (till software) before any lookup. Barcode generators give EAN-13 codes
(prefix ``2``, the GS1 range for in-store numbers, and the standard EAN check digit).

Generators follow the CDP's fields (seed 003): ``length`` (default 10), ``charset``,
``type`` (``code`` or ``barcode``), ``bindings_limit`` (how many coupons the generator may bind
to devices in total; 0 = no limit) and validity by ``end_date`` or ``ttl_days``.

Short codes are guessable at the POS: :mod:`footfall.hub.o2o.guessing` says how many may be
outstanding for a format, ``scenarios.add`` refuses settings past it and :func:`issue` stops
there.

Redemption is atomic and exactly once under any concurrency: ``BEGIN IMMEDIATE`` takes
SQLite's write lock before the coupon is read, and the update is conditional
(``... WHERE redeemed_at IS NULL``) with its row count checked, so two tills racing on one code
get one success and one ``already_redeemed``.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import string
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from footfall.hub.o2o import guessing

# 32 characters without 0/O and 1/I: codes are read aloud and typed at tills; an even size
# lets the Luhn mod N check catch every single-character error and nearly every adjacent swap.
DEFAULT_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CHARSETS = {
    "default": DEFAULT_ALPHABET,
    "upper": string.ascii_uppercase,
    "lower": string.ascii_lowercase,
    "digits": string.digits,
    "alnum": string.ascii_uppercase + string.digits,
}
DAY = 86400.0
log = logging.getLogger(__name__)


class CouponError(Exception):
    """A POS-facing error: ``code`` is machine-readable, ``str()`` is for the cashier."""

    status = {
        "unknown": 404,
        "expired": 410,
        "not_yet_valid": 409,
        "already_redeemed": 409,
        "not_redeemed": 409,
        "wrong_store": 403,
        "below_minimum": 422,
        "bad_amount": 422,
        "receipt_mismatch": 409,
    }

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def http_status(self) -> int:
        return self.status.get(self.code, 400)


def alphabet(charset: str) -> str:
    chars = CHARSETS.get(charset, charset)
    if len(set(chars)) != len(chars) or len(chars) < 10:
        raise ValueError("charset must be a known name or at least 10 distinct characters")
    return chars


def check_char(body: str, chars: str) -> str:
    """Luhn mod N check character: catches every single-character error and adjacent swaps."""
    n = len(chars)
    total, factor = 0, 2
    for ch in reversed(body):
        addend = factor * chars.index(ch)
        total += addend // n + addend % n
        factor = 1 if factor == 2 else 2
    return chars[(n - total % n) % n]


def ean13_check(digits12: str) -> str:
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits12))
    return str((10 - total % 10) % 10)


@dataclass
class Generator:
    """A coupon rule: what the coupon is worth and how its codes look."""

    kind: str = "percent"  # percent | fixed
    value: float = 10.0
    min_purchase: float = 0.0
    ttl_days: float | None = 7.0
    end_date: str | None = None  # YYYY-MM-DD (UTC end of day); wins over ttl_days when earlier
    stores: list[str] = field(default_factory=list)  # empty: valid in every store
    length: int = 10
    charset: str = "default"
    type: str = "code"  # code | barcode
    bindings_limit: int = 0
    campaign: str = ""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        if self.kind not in ("percent", "fixed"):
            raise ValueError("coupon kind must be percent or fixed")
        if self.value <= 0 or (self.kind == "percent" and self.value > 100):
            raise ValueError("coupon value must be > 0 (and <= 100 for percent)")
        if self.min_purchase < 0:
            raise ValueError("min_purchase must be >= 0")
        if self.type not in ("code", "barcode"):
            raise ValueError("coupon type must be code or barcode")
        if self.type == "code":
            alphabet(self.charset)
            if not 6 <= self.length <= 32:
                raise ValueError("code length must be 6..32")
        if self.ttl_days is None and self.end_date is None:
            raise ValueError("a coupon needs ttl_days or end_date")
        if self.end_date is not None:
            datetime.strptime(self.end_date, "%Y-%m-%d")
        if self.bindings_limit < 0:
            raise ValueError("bindings_limit must be >= 0")

    def new_code(self) -> str:
        if self.type == "barcode":
            body = "2" + "".join(secrets.choice(string.digits) for _ in range(11))
            return body + ean13_check(body)
        chars = alphabet(self.charset)
        body = "".join(secrets.choice(chars) for _ in range(self.length - 1))
        return body + check_char(body, chars)

    def well_formed(self, code: str) -> bool:
        if self.type == "barcode":
            return len(code) == 13 and code.isdigit() and ean13_check(code[:12]) == code[12]
        chars = alphabet(self.charset)
        return len(code) == self.length and all(c in chars for c in code) and check_char(code[:-1], chars) == code[-1]

    def valid_until(self, issued: float) -> float:
        ends = []
        if self.ttl_days is not None:
            ends.append(issued + self.ttl_days * DAY)
        if self.end_date is not None:
            d = datetime.strptime(self.end_date, "%Y-%m-%d").replace(tzinfo=UTC)
            ends.append(d.timestamp() + DAY)
        return min(ends)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalize(code: str) -> str:
    return code.strip().replace(" ", "").replace("-", "")


def discount_for(kind: str, value: float, amount: float) -> float:
    d = amount * value / 100.0 if kind == "percent" else value
    return round(min(d, amount), 2)


def issue(
    conn: sqlite3.Connection,
    gen: Generator,
    *,
    scenario_id: int | None,
    device_key: str | None,
    partner_hash: str | None,
    target_id: int | None = None,
    now: float | None = None,
) -> str:
    """Create one personal coupon bound to device, scenario and campaign; returns its code.

    Runs inside the caller's transaction when there is one (the runner issues the coupon and
    records it on the target together).
    """
    now = time.time() if now is None else now
    _check_guessable(conn, gen, now)
    if gen.bindings_limit:
        n = conn.execute(
            "SELECT count(*) FROM o2o_coupons WHERE scenario_id IS ? AND campaign = ?", (scenario_id, gen.campaign)
        ).fetchone()[0]
        if n >= gen.bindings_limit:
            raise CouponError("limit", f"coupon generator bindings limit {gen.bindings_limit} reached")
    for _ in range(20):
        code = gen.new_code()
        try:
            conn.execute(
                "INSERT INTO o2o_coupons (code, scenario_id, campaign, target_id, device_key, partner_hash, kind,"
                " value, min_purchase, valid_from, valid_until, stores, issued_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    code,
                    scenario_id,
                    gen.campaign,
                    target_id,
                    device_key,
                    partner_hash,
                    gen.kind,
                    gen.value,
                    gen.min_purchase,
                    now,
                    gen.valid_until(now),
                    json.dumps(gen.stores) if gen.stores else None,
                    now,
                ),
            )
            return code
        except sqlite3.IntegrityError:
            continue  # a collision: astronomically rare, but draw again rather than fail
    raise RuntimeError("could not draw a unique coupon code")


# Formats whose bound is above this many outstanding codes are not counted at each issue: no
# hub holds that many, and the count is a scan of the coupon table.
_COUNT_BELOW = 10_000_000


def _check_guessable(conn: sqlite3.Connection, gen: Generator, now: float) -> None:
    """Refuse to issue past the guessing bound: settings stored before the rule existed, or an
    unlimited generator that outgrew ``PLANNED_OUTSTANDING``, must not silently get weaker."""
    limit = guessing.max_outstanding(gen)
    if limit >= _COUNT_BELOW:
        return
    n = guessing.outstanding_like(conn, gen, now=now)
    if n + 1 > limit:
        log.warning("coupon not issued: %d outstanding codes of campaign %r's format, bound %d", n, gen.campaign, limit)
        raise CouponError(
            "too_guessable",
            f"{n} codes of this format are outstanding, the most a POS guesser allows is {limit}: "
            "use longer codes (docs/operator-guide.md, POS limits)",
        )


def exists(conn: sqlite3.Connection, code: str) -> bool:
    """Whether a code was ever issued, as :func:`validate` and :func:`redeem` look it up; no
    side effects, so the POS can decide on a rate limit before anything happens."""
    try:
        _load(conn, normalize(code))
    except CouponError:
        return False
    return True


def _load(conn: sqlite3.Connection, code: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM o2o_coupons WHERE code = ?", (code,)).fetchone()
    if row is None and code != code.upper():
        # Cashiers type in any case; default-alphabet codes are upper case.
        row = conn.execute("SELECT * FROM o2o_coupons WHERE code = ?", (code.upper(),)).fetchone()
    if row is None:
        raise CouponError("unknown", "unknown coupon code")
    return row


def _check(row: sqlite3.Row, store: str, now: float, amount: float | None) -> None:
    stores = json.loads(row["stores"]) if row["stores"] else None
    if stores and store not in stores:
        raise CouponError("wrong_store", f"coupon is not valid in store {store!r}")
    if now < row["valid_from"]:
        raise CouponError("not_yet_valid", "coupon is not valid yet")
    if now >= row["valid_until"]:
        raise CouponError("expired", "coupon has expired")
    if row["redeemed_at"] is not None:
        raise CouponError("already_redeemed", "coupon was already redeemed")
    if amount is not None:
        if not (amount >= 0 and amount < 1e9):
            raise CouponError("bad_amount", "receipt amount must be a non-negative number")
        if amount < row["min_purchase"]:
            raise CouponError("below_minimum", f"receipt below the minimum purchase of {row['min_purchase']:g}")


def validate(
    conn: sqlite3.Connection, code: str, store: str, *, amount: float | None = None, now: float | None = None
) -> dict[str, Any]:
    """What the till shows before redeeming: the coupon and the discount for ``amount``."""
    now = time.time() if now is None else now
    row = _load(conn, normalize(code))
    _check(row, store, now, amount)
    out = {
        "code": row["code"],
        "kind": row["kind"],
        "value": row["value"],
        "min_purchase": row["min_purchase"],
        "valid_until": row["valid_until"],
        "campaign": row["campaign"],
    }
    if amount is not None:
        out["discount"] = discount_for(row["kind"], row["value"], amount)
    return out


def redeem(
    conn: sqlite3.Connection,
    code: str,
    store: str,
    amount: float,
    *,
    receipt_id: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Redeem exactly once; raises :class:`CouponError` (``already_redeemed`` for the losers)."""
    now = time.time() if now is None else now
    code = normalize(code)
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = _load(conn, code)
        code = row["code"]
        _check(row, store, now, amount)
        discount = discount_for(row["kind"], row["value"], amount)
        cur = conn.execute(
            "UPDATE o2o_coupons SET redeemed_at = ?, redeemed_store = ?, receipt_id = ?, amount = ?, discount = ?"
            " WHERE code = ? AND redeemed_at IS NULL",
            (now, store, receipt_id, amount, discount, code),
        )
        if cur.rowcount != 1:
            raise CouponError("already_redeemed", "coupon was already redeemed")
        rid = conn.execute(
            "INSERT INTO o2o_redemptions (code, store, receipt_id, amount, discount, at) VALUES (?,?,?,?,?,?)",
            (code, store, receipt_id, amount, discount, now),
        ).lastrowid
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return {"code": code, "redemption_id": rid, "amount": amount, "discount": discount, "to_pay": amount - discount}


def cancel(
    conn: sqlite3.Connection,
    code: str,
    store: str,
    *,
    receipt_id: str | None = None,
    reason: str = "",
    now: float | None = None,
) -> dict[str, Any]:
    """Undo a redemption (a returned purchase or a till mistake): the coupon can be used again."""
    now = time.time() if now is None else now
    code = normalize(code)
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = _load(conn, code)
        code = row["code"]
        if row["redeemed_at"] is None:
            raise CouponError("not_redeemed", "coupon is not redeemed")
        if row["redeemed_store"] != store:
            raise CouponError("wrong_store", "coupon was redeemed in another store")
        if receipt_id is not None and row["receipt_id"] not in (None, receipt_id):
            raise CouponError("receipt_mismatch", "coupon was redeemed on another receipt")
        cur = conn.execute(
            "UPDATE o2o_coupons SET redeemed_at = NULL, redeemed_store = NULL, receipt_id = NULL, amount = NULL,"
            " discount = NULL WHERE code = ? AND redeemed_at = ?",
            (code, row["redeemed_at"]),
        )
        if cur.rowcount != 1:
            raise CouponError("not_redeemed", "coupon is not redeemed")
        conn.execute(
            "UPDATE o2o_redemptions SET cancelled_at = ?, cancel_reason = ? WHERE code = ? AND cancelled_at IS NULL",
            (now, reason, code),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return {"code": code, "cancelled": True}


def issued_codes(conn: sqlite3.Connection, scenario_id: int) -> Sequence[str]:
    return [r[0] for r in conn.execute("SELECT code FROM o2o_coupons WHERE scenario_id = ?", (scenario_id,))]
