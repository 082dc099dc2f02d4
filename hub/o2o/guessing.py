"""How hard coupon codes are to guess at the POS, and the code settings that are refused.

The POS limits (:class:`PosLimits`, enforced by ``hub/o2o/pos.py``) let one POS key make at
most ``key_failures`` lookups of unknown codes per ``window_s``, then lock it for a window: at
most ``G = key_failures * (86400 / window_s + 1)`` wrong guesses a day (2,900 with the defaults).
A guess hits one of ``N`` outstanding codes (not redeemed, not expired) out of a code space of
``S`` well-formed codes with probability ``N / S``, so an attacker holding one key finds at least
one code in a day with probability

    P = 1 - (1 - N / S) ** G        (about G * N / S while that is small)

**The rule**: code settings are refused when ``P`` exceeds ``MAX_DAILY_FIND`` (1 %), i.e. far
below "likely". ``S`` is ``len(alphabet) ** (length - 1)`` for codes (the last character is a
check character, which a guesser computes for free) and ``10 ** 11`` for EAN-13 barcodes (a
fixed ``2`` prefix and a check digit). ``N`` counts every outstanding code of the same length,
whatever the scenario (a guess can hit any of them), plus what the new settings may add: their
``bindings_limit``, or ``PLANNED_OUTSTANDING`` (10,000) when they have none.

Examples with the default limits: 8 digits (``S`` = 10**7) allow 34 outstanding codes, so
5,000 are refused (``P`` = 77 %); the default 10 characters over 32 (``S`` = 3.5e13) allow about
120 million; EAN-13 barcodes about 350,000.

The bound is for one key; an attacker with keys of k stores gets k times the guesses (the
per-address limit stops k keys used from one address). Raising the POS limits above the
defaults raises ``G``: ``pos_router`` warns when its limits are looser than the ones this
rule assumes.
"""

from __future__ import annotations

import math
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from footfall.hub.o2o.coupons import Generator

DAY = 86400.0
MAX_DAILY_FIND = 0.01
PLANNED_OUTSTANDING = 10_000


@dataclass(frozen=True)
class PosLimits:
    """Unknown-code lookups (validate, redeem and cancel alike) allowed before a lockout."""

    key_failures: int = 20  # per POS key, from any address: a stolen key used from many places
    address_failures: int = 30  # per client address, any keys: several keys tried from one place
    window_s: float = 600.0  # sliding window, and how long a lockout lasts

    def guesses_per_day(self) -> float:
        """The most unknown codes one key can try in a day: a full window's worth, then locked."""
        return self.key_failures * (DAY / self.window_s + 1)


DEFAULT_LIMITS = PosLimits()


class WeakCodesError(ValueError):
    """Code settings a POS guesser would break; the message says why and what would do."""


def code_space(gen: Generator) -> int:
    """How many well-formed codes the generator can produce (what a guesser has to search)."""
    from footfall.hub.o2o.coupons import alphabet

    if gen.type == "barcode":
        return 10**11
    return len(alphabet(gen.charset)) ** (gen.length - 1)


def find_probability(outstanding: int, space: int, guesses: float) -> float:
    """Chance that ``guesses`` random well-formed codes hit at least one of ``outstanding``."""
    if outstanding <= 0:
        return 0.0
    if outstanding >= space:
        return 1.0
    return -math.expm1(guesses * math.log1p(-outstanding / space))


def max_outstanding(gen: Generator, limits: PosLimits = DEFAULT_LIMITS, bound: float = MAX_DAILY_FIND) -> int:
    """The most codes of this format that may be outstanding at once under the rule."""
    return int(code_space(gen) * -math.expm1(math.log1p(-bound) / limits.guesses_per_day()))


def outstanding_like(conn: sqlite3.Connection, gen: Generator, *, now: float | None = None) -> int:
    """Codes a guess in ``gen``'s format could hit: unredeemed, unexpired, of the same length
    (over-counts other alphabets of that length, which only makes the rule stricter)."""
    now = time.time() if now is None else now
    length = 13 if gen.type == "barcode" else gen.length
    return conn.execute(
        "SELECT count(*) FROM o2o_coupons WHERE redeemed_at IS NULL AND valid_until > ? AND length(code) = ?",
        (now, length),
    ).fetchone()[0]


def check_strength(
    gen: Generator, outstanding: int, *, limits: PosLimits = DEFAULT_LIMITS, bound: float = MAX_DAILY_FIND
) -> None:
    """Raise :class:`WeakCodesError` when ``outstanding`` codes of ``gen``'s format would be
    found by a guesser within the POS limits with probability above ``bound`` in a day."""
    space = code_space(gen)
    guesses = limits.guesses_per_day()
    p = find_probability(outstanding, space, guesses)
    if p <= bound:
        return
    fmt = "EAN-13 barcodes" if gen.type == "barcode" else f"{gen.length}-character codes over {gen.charset!r}"
    advice = f"keep at most {max_outstanding(gen, limits, bound):,} outstanding (bindings_limit)"
    if gen.type == "code":
        from footfall.hub.o2o.coupons import alphabet

        n = len(alphabet(gen.charset))
        need = next(
            (L for L in range(gen.length + 1, 33) if find_probability(outstanding, n ** (L - 1), guesses) <= bound),
            None,
        )
        if need is not None:
            advice = f"use length >= {need}, or {advice}"
    raise WeakCodesError(
        f"coupon codes too easy to guess: {fmt} give {space:,} possible codes; with {outstanding:,} outstanding, "
        f"a till key within the POS limits ({guesses:,.0f} unknown codes a day) finds one with probability "
        f"{p:.0%} a day, above the {bound:.0%} allowed: {advice}"
    )


def check_settings(conn: sqlite3.Connection, gen: Generator, *, now: float | None = None) -> None:
    """Configuration-time check: what is outstanding now plus what these settings may add."""
    planned = gen.bindings_limit or PLANNED_OUTSTANDING
    check_strength(gen, outstanding_like(conn, gen, now=now) + planned)
