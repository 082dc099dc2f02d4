"""Cross-store segments: JSON rules compiled to parameterised SQL, recounted into versions.

A rule is a condition or an ``all``/``any``/``not`` group of them::

    {"all": [{"field": "stores_visited", "days": 30, "op": ">=", "value": 2},
             {"any": [{"field": "events", "kind": "redemption", "days": 90, "op": ">=", "value": 1},
                      {"field": "cluster", "op": "in", "value": ["lunch-time regulars"]}]}]}

Fields (:data:`FIELDS`) are a fixed whitelist of SQL expressions over a profile ``p``; every
value, day count and store id travels as a parameter, never inside the SQL text. A segment
may be scoped to some stores: only profiles seen there are members and per-store figures
count only those stores (a store-limited manager's segment sees nothing of other stores).

Each recount appends a version: its size, the delta against the previous version and the
CSV of members (device ids), like the CDP segments of seed 003.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from footfall.cloud_sync.central.db import Connection

MAX_DEPTH = 6
MAX_CONDITIONS = 50
DAY = 86400.0
NUMERIC_OPS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
SET_OPS = ("in", "not_in")
BOOL_FIELDS = ("consent", "has_phone")
TEXT_FIELDS = ("store", "cluster", "segment")
NUMBER_FIELDS = ("visits", "dwell_s", "stores_visited", "days_since_last_seen", "days_since_first_seen", "events")
FIELDS = NUMBER_FIELDS + TEXT_FIELDS + BOOL_FIELDS
_SEG_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class RuleError(ValueError):
    """A rule that does not compile; the message names the offending condition's path."""


def _scope(stores: Sequence[str] | None, alias: str = "ps") -> tuple[str, list[Any]]:
    if not stores:
        return "", []
    return f" AND {alias}.store IN ({', '.join('?' * len(stores))})", list(stores)


@dataclass
class Compiled:
    sql: str
    params: list[Any]


class _Compiler:
    def __init__(self, stores: Sequence[str] | None, now: float) -> None:
        self.stores = list(stores) if stores else None
        self.now = now
        self.count = 0

    def node(self, rule: Any, path: str, depth: int) -> tuple[str, list[Any]]:
        if depth > MAX_DEPTH:
            raise RuleError(f"{path}: nested deeper than {MAX_DEPTH}")
        if not isinstance(rule, Mapping):
            raise RuleError(f"{path}: a condition is an object")
        groups = [k for k in ("all", "any", "not") if k in rule]
        if groups:
            if len(rule) != 1:
                raise RuleError(f"{path}: a group has exactly one of all/any/not")
            key = groups[0]
            if key == "not":
                sql, params = self.node(rule["not"], f"{path}.not", depth + 1)
                return f"NOT ({sql})", params
            items = rule[key]
            if not isinstance(items, list) or not items:
                raise RuleError(f"{path}.{key}: a non-empty list of conditions")
            parts, params = [], []
            for i, item in enumerate(items):
                sql, p = self.node(item, f"{path}.{key}[{i}]", depth + 1)
                parts.append(f"({sql})")
                params += p
            return (" AND " if key == "all" else " OR ").join(parts), params
        self.count += 1
        if self.count > MAX_CONDITIONS:
            raise RuleError(f"{path}: more than {MAX_CONDITIONS} conditions")
        return self.condition(rule, path)

    def _days(self, rule: Mapping[str, Any], path: str, required: bool = False) -> float | None:
        days = rule.get("days")
        if days is None:
            if required:
                raise RuleError(f"{path}: days is required")
            return None
        if isinstance(days, bool) or not isinstance(days, int | float) or not 0 < days <= 3660:
            raise RuleError(f"{path}: days must be a number in (0, 3660]")
        return float(days)

    def condition(self, rule: Mapping[str, Any], path: str) -> tuple[str, list[Any]]:
        field = rule.get("field")
        op = rule.get("op")
        value = rule.get("value")
        allowed = {"field", "op", "value", "days", "kind"}
        if set(rule) - allowed:
            raise RuleError(f"{path}: unknown keys {sorted(set(rule) - allowed)}")
        if field not in FIELDS:
            raise RuleError(f"{path}: unknown field {field!r}; fields: {', '.join(FIELDS)}")
        scope_sql, scope_params = _scope(self.stores)
        if field in BOOL_FIELDS:
            if op != "=" or not isinstance(value, bool):
                raise RuleError(f"{path}: {field} takes op '=' and true or false")
            exists = {
                "consent": "EXISTS (SELECT 1 FROM consents c WHERE c.device = p.device AND c.pd_consent = 1)",
                "has_phone": "EXISTS (SELECT 1 FROM identifiers i WHERE i.device = p.device "
                "AND i.type = 'phone_md5' AND i.active = 1)",
            }[field]
            return (exists if value else f"NOT {exists}"), []
        if field in TEXT_FIELDS:
            if op in SET_OPS:
                if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                    raise RuleError(f"{path}: {op} takes a non-empty list of strings")
                values = value
            elif op in ("=", "!="):
                if not isinstance(value, str):
                    raise RuleError(f"{path}: {field} compares with a string")
                values = [value]
            else:
                raise RuleError(f"{path}: {field} takes =, !=, in or not_in")
            column = {"store": "ps.store", "cluster": "ps.cluster"}.get(field)
            if column:
                test, params = f"{column} IN ({', '.join('?' * len(values))})", list(values)
            else:
                # Segment names sit in a JSON list; LIKE with an escape char keeps % and _ literal.
                escaped = [json.dumps(v).replace("!", "!!").replace("%", "!%").replace("_", "!_") for v in values]
                test = " OR ".join("ps.segments LIKE ? ESCAPE '!'" for _ in values)
                params = [f"%{e}%" for e in escaped]
            sql = f"EXISTS (SELECT 1 FROM profile_stores ps WHERE ps.device = p.device{scope_sql} AND ({test}))"
            negate = op in ("!=", "not_in")
            return (f"NOT {sql}" if negate else sql), scope_params + params
        if op not in NUMERIC_OPS:
            raise RuleError(f"{path}: {field} takes one of {', '.join(NUMERIC_OPS)}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RuleError(f"{path}: {field} compares with a number")
        days = self._days(rule, path, required=field == "events")
        params: list[Any] = []
        if field in ("visits", "dwell_s") and not self.stores and days is None:
            expr = f"p.{field}"
        elif field in ("visits", "dwell_s", "stores_visited"):
            agg = "COUNT(*)" if field == "stores_visited" else f"COALESCE(SUM(ps.{field}), 0)"
            since = ""
            if days is not None:
                since = " AND ps.last_seen >= ?"
                params.append(self.now - days * DAY)
            expr = f"(SELECT {agg} FROM profile_stores ps WHERE ps.device = p.device{since}{scope_sql})"
            params += scope_params
        elif field == "days_since_last_seen":
            expr = "((? - p.last_seen) / 86400.0)"
            params.append(self.now)
        elif field == "days_since_first_seen":
            expr = "((? - p.first_seen) / 86400.0)"
            params.append(self.now)
        else:  # events
            kind = rule.get("kind")
            if not isinstance(kind, str) or not kind:
                raise RuleError(f"{path}: events needs a kind (visit, redemption, coupon_issued, ...)")
            store_sql, store_params = _scope(self.stores, "e")
            expr = (
                "(SELECT COUNT(*) FROM profile_events e WHERE e.device = p.device AND e.kind = ? "
                f"AND e.ts >= ?{store_sql})"
            )
            params += [kind, self.now - days * DAY, *store_params]
        return f"{expr} {NUMERIC_OPS[op]} ?", [*params, value]


def compile_rule(rule: Any, *, stores: Sequence[str] | None = None, now: float | None = None) -> Compiled:
    """``SELECT p.device FROM profiles p WHERE ...`` for the rule, with its parameters."""
    now = time.time() if now is None else now
    where, params = _Compiler(stores, now).node(rule, "rule", 0)
    scope_sql, scope_params = _scope(stores)
    if stores:
        where = f"({where}) AND EXISTS (SELECT 1 FROM profile_stores ps WHERE ps.device = p.device{scope_sql})"
        params = params + scope_params
    sql = (
        f"SELECT p.device FROM profiles p WHERE ({where}) "
        "AND NOT EXISTS (SELECT 1 FROM optouts o WHERE o.device = p.device) ORDER BY p.device"
    )
    return Compiled(sql, params)


@dataclass(frozen=True)
class Version:
    segment_id: str
    version: int
    ts: float
    size: int
    delta: int


def create_segment(
    conn: Connection,
    segment_id: str,
    name: str,
    rule: Any,
    *,
    stores: Sequence[str] | None = None,
    created_by: str = "",
) -> None:
    if not isinstance(segment_id, str) or not _SEG_ID.match(segment_id):
        raise RuleError("segment id: 1-64 of a-z 0-9 _ -, starting with a letter or digit")
    compile_rule(rule, stores=stores)
    if conn.one("SELECT 1 FROM segments WHERE id = ?", (segment_id,)):
        raise RuleError(f"segment {segment_id!r} exists")
    conn.execute(
        "INSERT INTO segments (id, name, rule, stores, created, created_by) VALUES (?, ?, ?, ?, ?, ?)",
        (
            segment_id,
            name or segment_id,
            json.dumps(rule, sort_keys=True),
            None if not stores else ",".join(sorted(set(stores))),
            time.time(),
            created_by,
        ),
    )


def get_segment(conn: Connection, segment_id: str) -> dict[str, Any] | None:
    rows = conn.dicts("SELECT id, name, rule, stores, created, created_by FROM segments WHERE id = ?", (segment_id,))
    if not rows:
        return None
    seg = rows[0]
    seg["rule"] = json.loads(seg["rule"])
    seg["stores"] = seg["stores"].split(",") if seg["stores"] else None
    return seg


def list_segments(conn: Connection) -> list[dict[str, Any]]:
    out = []
    for seg in conn.dicts("SELECT id, name, rule, stores, created, created_by FROM segments ORDER BY id"):
        seg["rule"] = json.loads(seg["rule"])
        seg["stores"] = seg["stores"].split(",") if seg["stores"] else None
        latest = conn.one(
            "SELECT version, ts, size, delta FROM segment_versions WHERE segment_id = ? ORDER BY version DESC LIMIT 1",
            (seg["id"],),
        )
        seg["latest"] = dict(zip(("version", "ts", "size", "delta"), latest, strict=True)) if latest else None
        out.append(seg)
    return out


def recount(conn: Connection, segment_id: str, *, now: float | None = None) -> Version:
    """Evaluate the rule now and append a version with size, delta and the member CSV."""
    now = time.time() if now is None else now
    seg = get_segment(conn, segment_id)
    if seg is None:
        raise KeyError(segment_id)
    compiled = compile_rule(seg["rule"], stores=seg["stores"], now=now)
    members = [r[0] for r in conn.all(compiled.sql, compiled.params)]
    with conn.transaction():
        prev = conn.one(
            "SELECT version, size FROM segment_versions WHERE segment_id = ? ORDER BY version DESC LIMIT 1",
            (segment_id,),
        )
        version = 1 if prev is None else prev[0] + 1
        delta = len(members) - (0 if prev is None else prev[1])
        csv = "device\n" + "".join(f"{m}\n" for m in members)
        conn.execute(
            "INSERT INTO segment_versions (segment_id, version, ts, size, delta, members_csv) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (segment_id, version, now, len(members), delta, csv),
        )
    return Version(segment_id, version, now, len(members), delta)


def versions(conn: Connection, segment_id: str) -> list[dict[str, Any]]:
    return conn.dicts(
        "SELECT version, ts, size, delta FROM segment_versions WHERE segment_id = ? ORDER BY version", (segment_id,)
    )


def members(conn: Connection, segment_id: str, version: int | None = None) -> list[str]:
    """Members of a version (the latest by default), minus any device opted out since."""
    if version is None:
        row = conn.one(
            "SELECT members_csv FROM segment_versions WHERE segment_id = ? ORDER BY version DESC LIMIT 1",
            (segment_id,),
        )
    else:
        row = conn.one(
            "SELECT members_csv FROM segment_versions WHERE segment_id = ? AND version = ?", (segment_id, version)
        )
    if row is None:
        raise KeyError(f"segment {segment_id!r} has no recount{'' if version is None else f' v{version}'}")
    return [line for line in row[0].splitlines()[1:] if line]
