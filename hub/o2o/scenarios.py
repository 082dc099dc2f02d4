"""O2O scenarios: who to retarget, with what message and coupon, how often, and who is held out.

A scenario (``o2o_scenarios``; its settings are one JSON document, :class:`Scenario`):

``target``         ``passersby`` (walked past in the window), ``short_visits`` (came in and
                   stayed under ``max_dwell_s``, 300 s by default) or ``segment:<name>`` (the
                   members of a segment from ``hub/segments.py``, seen in the window).
``message``        the SMS template: ``{code}``, ``{discount}``, ``{valid_until}``, ``{store}``.
``coupon``         a :class:`~footfall.hub.o2o.coupons.Generator` (value, minimum, validity...);
                   :func:`add` refuses code settings a POS guesser would break
                   (:mod:`footfall.hub.o2o.guessing`).
``interval_s``     a run every 30 minutes by default; ``retry_s`` after a failed run.
``cap_days``/``cap_contacts``  at most ``cap_contacts`` messages per device in ``cap_days``
                   (over all scenarios), and a device is targeted by one scenario at most once
                   in ``cap_days``.
``quiet_hours``    (start, end) local hours without advertising messages (21-9 by default).
``control_share``  share of devices held out as the control group: a device's group is
                   HMAC-SHA256(scenario salt, partner hash), so it never changes between runs
                   and uplift can be measured against it.
``attribution_days``  a contacted device's visit within this many days counts for the scenario.
``price_match``/``price_sms``/``margin``/``fixed_cost``  for the ROMI report.

Eligibility (:func:`candidates` then the runner): globally administered MACs only (a visit
with a ``partner_hash``; randomized MACs cannot match a partner and never have one), not staff
or fixed equipment (``excluded``), not on the stop-list, not capped, not in the control group.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import secrets
import sqlite3
import time
import zoneinfo
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from footfall.hub.o2o import guessing
from footfall.hub.o2o.coupons import Generator

BUILTIN_TARGETS = ("passersby", "short_visits")


@dataclass
class Scenario:
    name: str
    target: str = "short_visits"
    message: str = "Come back to {store}: {discount} off with code {code}, valid until {valid_until}."
    coupon: Generator = field(default_factory=Generator)
    store_name: str = "our store"
    channel: str = "sms"
    category: str = "promo"
    interval_s: float = 1800.0
    retry_s: float = 300.0
    lookback_s: float = 86400.0  # first run: visits this far back
    max_dwell_s: float = 300.0
    cap_days: float = 7.0
    cap_contacts: int = 1
    quiet_hours: tuple[float, float] | None = (21.0, 9.0)
    timezone: str = "UTC"
    control_share: float = 0.1
    control_salt: str = field(default_factory=lambda: secrets.token_hex(16))
    attribution_days: float = 7.0
    pending_ttl_s: float = 86400.0  # a target the partner never answered for is dropped after this
    price_match: float = 0.0
    price_sms: float = 0.0
    margin: float = 1.0  # share of revenue counted as return (1.0 = revenue-based ROMI)
    fixed_cost: float = 0.0
    id: int | None = None
    enabled: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.coupon, dict):
            self.coupon = Generator(**self.coupon)
        if self.quiet_hours is not None:
            self.quiet_hours = (float(self.quiet_hours[0]), float(self.quiet_hours[1]))
        self.check()

    def check(self) -> None:
        if not self.name or len(self.name) > 100:
            raise ValueError("scenario name must be 1..100 characters")
        if self.target not in BUILTIN_TARGETS and not self.target.startswith("segment:"):
            raise ValueError(f"target must be one of {BUILTIN_TARGETS} or segment:<name>")
        if not 0 <= self.control_share < 1:
            raise ValueError("control_share must be in [0, 1)")
        if self.interval_s <= 0 or self.retry_s <= 0:
            raise ValueError("interval_s and retry_s must be > 0")
        if self.cap_days < 0 or self.cap_contacts < 1:
            raise ValueError("cap_days must be >= 0 and cap_contacts >= 1")
        if self.quiet_hours is not None and not all(0 <= h <= 24 for h in self.quiet_hours):
            raise ValueError("quiet hours must be local hours 0..24")
        try:
            self.render(code="X", discount="1", valid_until="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"message template: unknown placeholder {exc}") from None

    def render(self, **values: str) -> str:
        return self.message.format(store=self.store_name, **values)

    def in_control(self, partner_hash: str) -> bool:
        if self.control_share <= 0:
            return False
        digest = hmac.new(self.control_salt.encode(), partner_hash.encode(), hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.control_share

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("id")
        d.pop("enabled")
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Scenario:
        d = json.loads(row["config"])
        d["coupon"] = Generator(**d["coupon"])
        return cls(**d, id=row["id"], enabled=bool(row["enabled"]))


# Settings that come as JSON (from the centre): what each field must be, checked before a
# Scenario is built, so a string where a number belongs is refused here rather than failing
# every later run (or every report) of the store.
_NUMBERS = ("interval_s", "retry_s", "lookback_s", "max_dwell_s", "cap_days", "control_share", "attribution_days",
            "pending_ttl_s", "price_match", "price_sms", "margin", "fixed_cost")  # fmt: skip
_TEXTS = ("name", "target", "message", "store_name", "channel", "category", "timezone", "control_salt")
_COUPON_NUMBERS = ("value", "min_purchase", "ttl_days")
_COUPON_INTS = ("length", "bindings_limit")
_COUPON_TEXTS = ("kind", "end_date", "charset", "type", "campaign")


def _number(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{name} must be a number")
    return float(v)


def _integer(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{name} must be a whole number")
    return v


def _coupon_settings(base: dict[str, Any], body: Any) -> Generator:
    if not isinstance(body, dict):
        raise ValueError("coupon must be an object")
    merged = dict(base) | dict(body)  # fields not given keep the store's
    for k, v in body.items():
        if k in _COUPON_NUMBERS:
            if not (k == "ttl_days" and v is None):
                _number(f"coupon.{k}", v)
        elif k in _COUPON_INTS:
            _integer(f"coupon.{k}", v)
        elif k in _COUPON_TEXTS:
            if not (isinstance(v, str) or (k == "end_date" and v is None)):
                raise ValueError(f"coupon.{k} must be text")
        elif k == "stores":
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ValueError("coupon.stores must be a list of store ids")
        else:
            raise ValueError(f"unknown coupon setting {k!r}")
    return Generator(**merged)


def from_settings(name: str, body: Any, current: Scenario | None = None) -> Scenario:
    """A scenario from JSON settings over ``current`` (or the defaults): every field's type is
    checked, the coupon merged field by field; raises ValueError naming the field."""
    if not isinstance(body, dict):
        raise ValueError("settings must be an object")
    base = json.loads(current.to_json()) if current is not None else {}
    merged: dict[str, Any] = base | {"name": name}
    merged["enabled"] = current.enabled if current is not None else True
    known = {f.name for f in fields(Scenario)} - {"id"}
    for k, v in body.items():
        if k not in known:
            raise ValueError(f"unknown scenario setting {k!r}")
        if k in _NUMBERS:
            merged[k] = _number(k, v)
        elif k == "cap_contacts":
            merged[k] = _integer(k, v)
        elif k in _TEXTS:
            if not isinstance(v, str):
                raise ValueError(f"{k} must be text")
            merged[k] = v
        elif k == "enabled":
            if not isinstance(v, bool):
                raise ValueError("enabled must be true or false")
            merged[k] = v
        elif k == "quiet_hours":
            if v is not None and (not isinstance(v, (list, tuple)) or len(v) != 2):
                raise ValueError("quiet_hours must be [start, end] local hours, or null")
            merged[k] = None if v is None else (_number("quiet_hours", v[0]), _number("quiet_hours", v[1]))
        elif k == "coupon":
            merged[k] = _coupon_settings(base.get("coupon", {}), v)
    try:
        zoneinfo.ZoneInfo(merged.get("timezone", "UTC"))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {merged.get('timezone')!r}") from None
    if isinstance(merged.get("coupon"), dict):
        merged["coupon"] = Generator(**merged["coupon"])
    return Scenario(**merged)


def add(conn: sqlite3.Connection, sc: Scenario, *, now: float | None = None, replace: bool = False) -> int:
    now = time.time() if now is None else now
    # Refused here, when someone configures it, rather than in Scenario.check: a stored scenario
    # must still load (and be fixable) after codes from other scenarios filled the space.
    guessing.check_settings(conn, sc.coupon, now=now)
    # Joins a caller's open transaction (settings from the centre are applied with the rest of
    # a pushback page) instead of committing it half-way.
    with contextlib.nullcontext() if conn.in_transaction else conn:
        if replace:
            row = conn.execute("SELECT id FROM o2o_scenarios WHERE name = ?", (sc.name,)).fetchone()
            if row:
                conn.execute(
                    "UPDATE o2o_scenarios SET config = ?, enabled = ?, updated = ? WHERE id = ?",
                    (sc.to_json(), int(sc.enabled), now, row[0]),
                )
                sc.id = row[0]
                return row[0]
        try:
            sc.id = conn.execute(
                "INSERT INTO o2o_scenarios (name, enabled, config, created, updated, next_run) VALUES (?,?,?,?,?,?)",
                (sc.name, int(sc.enabled), sc.to_json(), now, now, now),
            ).lastrowid
        except sqlite3.IntegrityError:
            raise ValueError(f"scenario {sc.name!r} exists") from None
    return sc.id


def get(conn: sqlite3.Connection, name_or_id: str | int) -> Scenario:
    col = "id" if isinstance(name_or_id, int) else "name"
    row = conn.execute(f"SELECT * FROM o2o_scenarios WHERE {col} = ?", (name_or_id,)).fetchone()
    if row is None:
        raise KeyError(f"no scenario {name_or_id!r}")
    return Scenario.from_row(row)


def list_all(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    out = []
    for row in conn.execute("SELECT * FROM o2o_scenarios ORDER BY id"):
        sc = Scenario.from_row(row)
        out.append(
            {
                "id": sc.id,
                "name": sc.name,
                "enabled": sc.enabled,
                "target": sc.target,
                "interval_s": sc.interval_s,
                "control_share": sc.control_share,
                "next_run": row["next_run"],
                "watermark": row["watermark"],
            }
        )
    return out


def set_enabled(conn: sqlite3.Connection, name: str, enabled: bool) -> None:
    with conn:
        if not conn.execute("UPDATE o2o_scenarios SET enabled = ? WHERE name = ?", (int(enabled), name)).rowcount:
            raise KeyError(f"no scenario {name!r}")


def candidates(conn: sqlite3.Connection, sc: Scenario, start: float, end: float) -> list[dict[str, Any]]:
    """Devices matching the target whose qualifying visit ended in (start, end], one per hash.

    Only visits with a partner hash (global MACs) and not excluded; the latest qualifying
    visit of each device is kept.
    """
    where = ["v.partner_hash IS NOT NULL", "v.randomized = 0", "v.excluded = 0", "v.last_seen > ?", "v.last_seen <= ?"]
    args: list[Any] = [start, end]
    join = ""
    if sc.target == "passersby":
        where.append("v.class = 'passerby'")
    elif sc.target == "short_visits":
        where.append("v.class = 'visitor' AND v.dwell_s < ?")
        args.append(sc.max_dwell_s)
    else:
        seg = sc.target.split(":", 1)[1]
        join = (
            "JOIN segment_members m ON m.device_key = v.device_key "
            "JOIN segments s ON s.id = m.segment_id AND s.name = ?"
        )
        args.insert(0, seg)
    sql = (
        "SELECT v.partner_hash, v.device_key, max(v.last_seen) AS visit_at FROM visits v "
        f"{join} WHERE {' AND '.join(where)} GROUP BY v.partner_hash ORDER BY visit_at"
    )
    try:
        return [dict(r) for r in conn.execute(sql, args)]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            raise ValueError(f"target {sc.target!r} needs hub segments, which this database lacks") from None
        raise
