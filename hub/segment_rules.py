"""Rule segments' rules: JSON conditions on device fields, checked and compiled to SQL.

A rule (:func:`parse_rule`) is JSON conditions on device fields with AND/OR groups::

    {"all": [{"field": "dwell_s", "op": "<", "value": 300},
             {"any": [{"field": "passerby_count_7d", "op": ">=", "value": 2},
                      {"field": "zone", "op": "in", "value": ["entrance", "till"]}]}]}

Fields are a fixed whitelist (:data:`FIELDS`) of SQL expressions over ``visits``; values
only ever travel as SQL parameters, never inside the SQL text. Unknown fields, operators,
wrong value types and over-deep nesting raise :class:`RuleError` with the path of the
offending condition. ``hub/segments.py`` stores the segments these rules define.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DAY = 86400.0
MAX_DEPTH = 8
MAX_CONDITIONS = 100


class RuleError(ValueError):
    """A segment rule that cannot be evaluated; ``str()`` says which condition and why."""


# -- device fields ----------------------------------------------------------------------------
# name -> (SQL aggregate over the device's visits in the lookback window, type, description).
# ``:now`` is bound at evaluation time; everything else is fixed text.
FIELDS: dict[str, tuple[str, str, str]] = {
    "dwell_s": ("avg(dwell_s)", "number", "mean store-visit dwell (s)"),
    "max_dwell_s": ("max(dwell_s)", "number", "longest store visit (s)"),
    "last_dwell_s": (
        "(SELECT x.dwell_s FROM visits x WHERE x.device_key = v.device_key ORDER BY x.first_seen DESC LIMIT 1)",
        "number",
        "dwell of the latest visit (s)",
    ),
    "visit_count": ("sum(class = 'visitor')", "number", "visitor visits in the lookback"),
    "visit_count_7d": ("sum(class = 'visitor' AND first_seen >= :now - 7 * 86400)", "number", "visits, 7 days"),
    "visit_count_30d": ("sum(class = 'visitor' AND first_seen >= :now - 30 * 86400)", "number", "visits, 30 days"),
    "passerby_count_7d": ("sum(class = 'passerby' AND first_seen >= :now - 7 * 86400)", "number", "passes, 7 days"),
    "passerby_count_30d": ("sum(class = 'passerby' AND first_seen >= :now - 30 * 86400)", "number", "passes, 30d"),
    "visit_days": ("count(DISTINCT CASE WHEN class = 'visitor' THEN day END)", "number", "distinct visit days"),
    "recency_days": ("(:now - max(last_seen)) / 86400.0", "number", "days since last seen"),
    "tenure_days": ("(:now - min(first_seen)) / 86400.0", "number", "days since first seen (in lookback)"),
    "weekend_share": ("avg(strftime('%w', day) IN ('0', '6'))", "number", "share of visits on Sat/Sun"),
    "hour": ("avg(hour)", "number", "mean local hour of arrival"),
    "zones": ("count(DISTINCT best_sensor)", "number", "distinct zones (sensors) visited"),
    "randomized": ("max(randomized)", "bool", "uses randomized MACs"),
    "has_partner": ("max(partner_hash IS NOT NULL)", "bool", "has a partner hash"),
    # Set-valued: a condition on it holds when ANY visit of the device matches.
    "zone": ("best_sensor", "set", "a zone (sensor) the device was strongest at"),
    "segment": ("segment", "set", "member of the segment with this name"),
}
NUMBER_OPS = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "=": "=", "==": "=", "!=": "!="}
SET_OPS = ("=", "==", "!=", "in", "not in")


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any


@dataclass(frozen=True)
class Group:
    mode: str  # "all" | "any"
    items: tuple[Condition | Group, ...]


Rule = Condition | Group


def parse_rule(obj: Any, *, _path: str = "rule", _depth: int = 0, _count: list[int] | None = None) -> Rule:
    """Validate a JSON rule (dict or JSON text); raise :class:`RuleError` saying what is wrong where."""
    if _count is None:
        _count = [0]
        if isinstance(obj, (str, bytes)):
            try:
                obj = json.loads(obj)
            except json.JSONDecodeError as exc:
                raise RuleError(f"rule is not JSON: {exc}") from None
    if _depth > MAX_DEPTH:
        raise RuleError(f"{_path}: groups nested deeper than {MAX_DEPTH}")
    if not isinstance(obj, dict):
        raise RuleError(f"{_path}: expected an object, got {type(obj).__name__}")
    groups = [k for k in ("all", "any") if k in obj]
    if groups:
        if len(obj) != 1:
            raise RuleError(f"{_path}: a group has exactly one key, 'all' or 'any' (got {sorted(obj)})")
        mode = groups[0]
        items = obj[mode]
        if not isinstance(items, list) or not items:
            raise RuleError(f"{_path}.{mode}: expected a non-empty list of conditions")
        return Group(
            mode,
            tuple(
                parse_rule(it, _path=f"{_path}.{mode}[{i}]", _depth=_depth + 1, _count=_count)
                for i, it in enumerate(items)
            ),
        )
    extra = set(obj) - {"field", "op", "value"}
    if extra or not {"field", "op", "value"} <= set(obj):
        raise RuleError(f"{_path}: a condition has keys field, op, value (got {sorted(obj)})")
    _count[0] += 1
    if _count[0] > MAX_CONDITIONS:
        raise RuleError(f"rule has more than {MAX_CONDITIONS} conditions")
    name, op, value = obj["field"], obj["op"], obj["value"]
    if name not in FIELDS:
        raise RuleError(f"{_path}: unknown field {name!r}; known fields: {', '.join(sorted(FIELDS))}")
    kind = FIELDS[name][1]
    if not isinstance(op, str):
        raise RuleError(f"{_path}: op must be a string")
    op = op.strip().lower()
    if kind == "set":
        if op not in SET_OPS:
            raise RuleError(f"{_path}: unknown op {op!r} for {name!r}; use one of {', '.join(SET_OPS)}")
        values = value if op in ("in", "not in") else [value]
        if op in ("in", "not in") and (not isinstance(value, list) or not value):
            raise RuleError(f"{_path}: {op!r} needs a non-empty list of strings")
        if not all(isinstance(x, str) for x in values):
            raise RuleError(f"{_path}: {name!r} compares with strings")
        return Condition(name, op, tuple(values))
    if op not in NUMBER_OPS:
        raise RuleError(f"{_path}: unknown op {op!r} for {name!r}; use one of {', '.join(NUMBER_OPS)}")
    if kind == "bool":
        if not isinstance(value, bool) or op not in ("=", "==", "!="):
            raise RuleError(f"{_path}: {name!r} is true/false and takes '=' or '!='")
        return Condition(name, op, int(value))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RuleError(f"{_path}: {name!r} compares with a finite number, got {value!r}")
    return Condition(name, op, value)


def rule_to_json(rule: Rule) -> Any:
    if isinstance(rule, Group):
        return {rule.mode: [rule_to_json(i) for i in rule.items]}
    value = list(rule.value) if isinstance(rule.value, tuple) else rule.value
    if FIELDS[rule.field][1] == "set" and rule.op not in ("in", "not in"):
        value = value[0]
    if FIELDS[rule.field][1] == "bool":
        value = bool(value)
    return {"field": rule.field, "op": rule.op, "value": value}


def _compile(rule: Rule, params: list[Any], used: set[str]) -> str:
    if isinstance(rule, Group):
        joiner = " AND " if rule.mode == "all" else " OR "
        return "(" + joiner.join(_compile(i, params, used) for i in rule.items) + ")"
    kind = FIELDS[rule.field][1]
    if kind == "set":
        marks = ", ".join("?" * len(rule.value))
        params.extend(rule.value)
        negate = rule.op in ("!=", "not in")
        if rule.field == "zone":
            inner = f"EXISTS (SELECT 1 FROM visits z WHERE z.device_key = d.device_key AND z.best_sensor IN ({marks}))"
        else:
            inner = (
                "EXISTS (SELECT 1 FROM segment_members m JOIN segments s ON s.id = m.segment_id "
                f"WHERE m.device_key = d.device_key AND s.name IN ({marks}))"
            )
        return f"(NOT {inner})" if negate else inner
    used.add(rule.field)
    params.append(rule.value)
    return f"(d.{rule.field} {NUMBER_OPS[rule.op]} ?)"


def compile_rule(
    rule: Rule, now: float, lookback_days: float = 30.0, include_excluded: bool = False
) -> tuple[str, list[Any]]:
    """(SQL selecting ``device_key``, parameters) for a parsed rule at time ``now``."""
    params: list[Any] = []
    used: set[str] = set()
    where = _compile(rule, params, used)
    # Aggregates only for the fields used (plus nothing): a rule on two fields scans once.
    cols = "".join(f", {FIELDS[f][0].replace(':now', '?')} AS {f}" for f in sorted(used))
    now_params = [now for f in sorted(used) for _ in range(FIELDS[f][0].count(":now"))]
    excl = "" if include_excluded else " AND excluded = 0"
    sql = (
        f"WITH d AS (SELECT device_key{cols} FROM visits v WHERE first_seen >= ? AND first_seen < ?{excl} "
        f"GROUP BY device_key) SELECT device_key FROM d WHERE {where} ORDER BY device_key"
    )
    return sql, now_params + [now - lookback_days * DAY, now] + params


def evaluate_rule(
    conn: sqlite3.Connection,
    rule: Rule | Mapping[str, Any] | str,
    now: float | None = None,
    lookback_days: float = 30.0,
) -> list[str]:
    if not isinstance(rule, (Condition, Group)):
        rule = parse_rule(rule)
    sql, params = compile_rule(rule, time.time() if now is None else now, lookback_days)
    return [r[0] for r in conn.execute(sql, params)]
