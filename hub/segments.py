"""Visitor segments: behavioural clusters (scikit-learn) and rule-based segments (SQL).

Both are sets of ``device_key`` (the device estimator's ids, see ``hub/linked_devices.py``) kept in
``segments`` / ``segment_members``, with their sizes over time in ``segment_counts``; the
coupon, partner and sync features read them from there.

**Clusters** (:func:`cluster_devices`): one row of behaviour per device over the last
``lookback_days`` of store visits (staff and fixed equipment left out): median dwell, typical
hour (on the clock circle: 23:00 is next to 01:00), weekend share, visit days, recency, zones
visited, passer-by share. Features are standardised (``StandardScaler``); KMeans is run for
every k in ``k_range`` (2 to 8 by default, never more than a third of the devices) and the k
with the **highest mean silhouette coefficient** wins, except that the smallest k within
``SILHOUETTE_TOL`` (0.02) of the best is preferred (parsimony: the simpler story).
Each cluster gets a readable label from its centroid in real units compared with the whole
population ("lunch-time regulars", "quick look-ins under 5 min", "weekend browsers"), see
:func:`describe`.

**Rules** (:func:`parse_rule`): JSON conditions on device fields with AND/OR groups::

    {"all": [{"field": "dwell_s", "op": "<", "value": 300},
             {"any": [{"field": "passerby_count_7d", "op": ">=", "value": 2},
                      {"field": "zone", "op": "in", "value": ["entrance", "till"]}]}]}

Fields are a fixed whitelist (:data:`FIELDS`) of SQL expressions over ``visits``; values
only ever travel as SQL parameters, never inside the SQL text. Unknown fields, operators,
wrong value types and over-deep nesting raise :class:`RuleError` with the path of the
offending condition. A segment is *static* (members fixed when it is created) or *dynamic*
(re-evaluated by :func:`refresh_segments`); both record their size at every refresh.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DAY = 86400.0
MAX_DEPTH = 8
MAX_CONDITIONS = 100
# Parsimony: a larger k must beat the smaller one's silhouette by more than this to be chosen;
# differences this small are sampling noise and one more cluster is one more thing to explain.
SILHOUETTE_TOL = 0.02


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


# -- stored segments ---------------------------------------------------------------------------
def create_segment(
    conn: sqlite3.Connection,
    name: str,
    rule: Mapping[str, Any] | str,
    *,
    dynamic: bool = True,
    now: float | None = None,
    lookback_days: float = 30.0,
) -> int:
    """Store a rule-based segment and evaluate it once; returns its id."""
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise RuleError("a segment needs a name of 1-200 characters")
    parsed = parse_rule(rule)
    now = time.time() if now is None else now
    definition = json.dumps({"rule": rule_to_json(parsed), "lookback_days": lookback_days})
    with conn:
        try:
            cur = conn.execute(
                "INSERT INTO segments (name, kind, definition, dynamic, created, updated) "
                "VALUES (?, 'rule', ?, ?, ?, ?)",
                (name.strip(), definition, int(dynamic), now, now),
            )
        except sqlite3.IntegrityError:
            raise RuleError(f"a segment named {name.strip()!r} exists already") from None
        seg_id = int(cur.lastrowid)
        _set_members(conn, seg_id, evaluate_rule(conn, parsed, now, lookback_days), now)
    return seg_id


def put_rule_segment(
    conn: sqlite3.Connection,
    name: str,
    rule: Mapping[str, Any] | str,
    *,
    origin: str,
    dynamic: bool = True,
    now: float | None = None,
    lookback_days: float = 30.0,
) -> int:
    """Create or redefine the rule segment ``name`` owned by ``origin`` (e.g. ``central``) and
    evaluate it; returns its size. A segment of that name made by someone else is refused, so
    the centre never overwrites a store manager's segment (or the other way round)."""
    parsed = parse_rule(rule)
    if not 0 < lookback_days <= 3650:
        raise RuleError("lookback_days must be in (0, 3650]")
    now = time.time() if now is None else now
    definition = json.dumps({"rule": rule_to_json(parsed), "lookback_days": lookback_days, "origin": origin})
    row = conn.execute("SELECT id, kind, definition FROM segments WHERE name = ?", (name,)).fetchone()
    if row is not None and (row[1] != "rule" or json.loads(row[2] or "{}").get("origin") != origin):
        raise RuleError(f"a segment named {name!r} exists already and was not made by {origin}")
    if row is None:
        seg_id = int(
            conn.execute(
                "INSERT INTO segments (name, kind, definition, dynamic, created, updated) "
                "VALUES (?, 'rule', ?, ?, ?, ?)",
                (name, definition, int(dynamic), now, now),
            ).lastrowid
        )
    else:
        seg_id = int(row[0])
        conn.execute("UPDATE segments SET definition = ?, dynamic = ? WHERE id = ?", (definition, int(dynamic), seg_id))
    return _set_members(conn, seg_id, evaluate_rule(conn, parsed, now, lookback_days), now)


def _set_members(conn: sqlite3.Connection, seg_id: int, keys: Sequence[str], now: float) -> int:
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _seg_new (device_key TEXT PRIMARY KEY)")
    conn.execute("DELETE FROM _seg_new")
    conn.executemany("INSERT OR IGNORE INTO _seg_new VALUES (?)", [(k,) for k in keys])
    conn.execute(
        "DELETE FROM segment_members WHERE segment_id = ? AND device_key NOT IN (SELECT device_key FROM _seg_new)",
        (seg_id,),
    )
    conn.execute(
        "INSERT OR IGNORE INTO segment_members (segment_id, device_key, since) SELECT ?, device_key, ? FROM _seg_new",
        (seg_id, now),
    )
    n = conn.execute("SELECT count(*) FROM segment_members WHERE segment_id = ?", (seg_id,)).fetchone()[0]
    conn.execute("INSERT OR REPLACE INTO segment_counts (segment_id, ts, members) VALUES (?, ?, ?)", (seg_id, now, n))
    conn.execute("UPDATE segments SET updated = ? WHERE id = ?", (now, seg_id))
    return n


def refresh_segments(conn: sqlite3.Connection, now: float | None = None) -> dict[str, int]:
    """Re-evaluate dynamic rule segments; record every segment's size at ``now``. Returns name -> size."""
    now = time.time() if now is None else now
    sizes: dict[str, int] = {}
    with conn:
        for row in conn.execute("SELECT id, name, kind, definition, dynamic FROM segments ORDER BY id").fetchall():
            seg_id, name, kind, definition, dynamic = row[0], row[1], row[2], row[3], row[4]
            if kind == "rule" and dynamic:
                d = json.loads(definition)
                keys = evaluate_rule(conn, d["rule"], now, d.get("lookback_days", 30.0))
                sizes[name] = _set_members(conn, seg_id, keys, now)
            else:
                n = conn.execute("SELECT count(*) FROM segment_members WHERE segment_id = ?", (seg_id,)).fetchone()[0]
                conn.execute(
                    "INSERT OR REPLACE INTO segment_counts (segment_id, ts, members) VALUES (?, ?, ?)", (seg_id, now, n)
                )
                sizes[name] = n
    return sizes


def segment_members(conn: sqlite3.Connection, name: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT m.device_key FROM segment_members m JOIN segments s ON s.id = m.segment_id "
            "WHERE s.name = ? ORDER BY m.device_key",
            (name,),
        )
    ]


def segment_history(conn: sqlite3.Connection, name: str) -> list[tuple[float, int]]:
    return [
        (r[0], r[1])
        for r in conn.execute(
            "SELECT c.ts, c.members FROM segment_counts c JOIN segments s ON s.id = c.segment_id "
            "WHERE s.name = ? ORDER BY c.ts",
            (name,),
        )
    ]


def list_segments(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Segments with their current size and profile (what the dashboard shows)."""
    out = []
    for r in conn.execute(
        """SELECT s.id, s.name, s.kind, s.definition, s.dynamic, s.profile, s.updated,
                  (SELECT count(*) FROM segment_members m WHERE m.segment_id = s.id)
           FROM segments s ORDER BY s.kind, s.name"""
    ):
        out.append(
            {
                "id": r[0],
                "name": r[1],
                "kind": r[2],
                "definition": json.loads(r[3]) if r[3] else None,
                "dynamic": bool(r[4]),
                "profile": json.loads(r[5]) if r[5] else None,
                "updated": r[6],
                "members": r[7],
            }
        )
    return out


# -- behavioural clusters ------------------------------------------------------------------------
FEATURES = (
    "dwell_min",  # median dwell, minutes (log-scaled for clustering)
    "hour_sin",
    "hour_cos",
    "weekend_share",
    "visit_days",
    "recency_days",
    "zones",
    "passerby_share",
)


@dataclass
class Profile:
    """A cluster's centroid in real units."""

    size: int
    dwell_min: float
    hour: float
    weekend_share: float
    visit_days: float
    recency_days: float
    zones: float
    passerby_share: float


@dataclass
class ClusterResult:
    k: int
    silhouette: dict[int, float]  # k -> mean silhouette coefficient
    keys: list[str]
    labels: list[int]
    names: list[str]  # per cluster
    profiles: list[Profile] = field(default_factory=list)
    criterion: str = "smallest k within SILHOUETTE_TOL of the highest mean silhouette coefficient over k in range"


def device_features(
    conn: sqlite3.Connection, now: float | None = None, lookback_days: float = 30.0
) -> tuple[list[str], np.ndarray]:
    """(device keys, raw feature rows): dwell min, hour, weekend share, visit days, recency, zones, passer-by share."""
    now = time.time() if now is None else now
    rows = conn.execute(
        """SELECT device_key, dwell_s, hour, day, last_seen, best_sensor, class FROM visits
           WHERE excluded = 0 AND first_seen >= ? AND first_seen < ? ORDER BY device_key""",
        (now - lookback_days * DAY, now),
    ).fetchall()
    return _features(rows, now)


def _features(rows: list[Any], now: float) -> tuple[list[str], np.ndarray]:
    """Visit rows sorted by device (key, dwell, hour, day, last_seen, sensor, class) -> feature rows."""
    keys: list[str] = []
    feats: list[list[float]] = []
    i = 0
    while i < len(rows):
        key = rows[i][0]
        j = i
        while j < len(rows) and rows[j][0] == key:
            j += 1
        grp = rows[i:j]
        i = j
        visits = [r for r in grp if r[6] == "visitor"] or grp
        dwell = float(np.median([r[1] for r in visits])) / 60.0
        angles = [2 * math.pi * (r[2] or 0) / 24.0 for r in visits]
        hour = (math.degrees(math.atan2(np.mean(np.sin(angles)), np.mean(np.cos(angles)))) / 15.0) % 24
        days = {r[3] for r in grp if r[6] == "visitor"}
        weekend = float(np.mean([_weekday(r[3]) >= 5 for r in visits]))
        recency = (now - max(r[4] for r in grp)) / DAY
        zones = len({r[5] for r in grp})
        passer = sum(r[6] == "passerby" for r in grp) / len(grp)
        keys.append(key)
        feats.append([dwell, hour, weekend, float(len(days)), recency, float(zones), passer])
    return keys, np.array(feats, dtype=float).reshape(-1, 7)


def summarize(raw: np.ndarray) -> Profile | None:
    """Centroid of feature rows in real units, as :func:`cluster_devices` reports a cluster's."""
    if len(raw) == 0:
        return None
    ang = 2 * np.pi * raw[:, 1] / 24.0
    hour = (math.degrees(math.atan2(np.sin(ang).mean(), np.cos(ang).mean())) / 15.0) % 24
    return Profile(
        size=int(len(raw)),
        dwell_min=round(float(np.median(raw[:, 0])), 1),
        hour=round(float(hour), 1),
        weekend_share=round(float(raw[:, 2].mean()), 2),
        visit_days=round(float(raw[:, 3].mean()), 1),
        recency_days=round(float(raw[:, 4].mean()), 1),
        zones=round(float(raw[:, 5].mean()), 1),
        passerby_share=round(float(raw[:, 6].mean()), 2),
    )


def member_profile(
    conn: sqlite3.Connection, segment_id: int, now: float | None = None, lookback_days: float = 30.0, sample: int = 5000
) -> Profile | None:
    """Behaviour profile of a segment's members (read-only; for rule segments, which store none).

    Members are profiled over their visits in the ``lookback_days`` before ``now``; past
    ``sample`` members, the first ``sample`` by device key (keys are hashes: an unbiased
    sample) are profiled, so a dashboard stays fast on a huge segment. ``size`` is the number
    profiled (members with no visits in the window have no behaviour to describe).
    """
    now = time.time() if now is None else now
    rows = conn.execute(
        """SELECT v.device_key, v.dwell_s, v.hour, v.day, v.last_seen, v.best_sensor, v.class FROM visits v
           JOIN (SELECT device_key FROM segment_members WHERE segment_id = ? ORDER BY device_key LIMIT ?) m
             ON m.device_key = v.device_key
           WHERE v.excluded = 0 AND v.first_seen >= ? AND v.first_seen < ? ORDER BY v.device_key""",
        (segment_id, sample, now - lookback_days * DAY, now),
    ).fetchall()
    return summarize(_features(rows, now)[1])


def _weekday(day: str) -> int:
    import datetime as _dt

    return _dt.date.fromisoformat(day).weekday()


def _matrix(raw: np.ndarray) -> np.ndarray:
    """Raw rows -> clustering features: log dwell, hour on the circle, the rest as is."""
    dwell, hour = raw[:, 0], raw[:, 1]
    ang = 2 * np.pi * hour / 24.0
    return np.column_stack(
        [
            np.log1p(dwell),
            np.sin(ang),
            np.cos(ang),
            raw[:, 2],
            np.log1p(raw[:, 3]),
            np.log1p(raw[:, 4]),
            raw[:, 5],
            raw[:, 6],
        ]
    )


def cluster_devices(
    keys: list[str],
    raw: np.ndarray,
    k_range: tuple[int, int] = (2, 8),
    seed: int = 0,
    sample: int = 5000,
) -> ClusterResult:
    """KMeans on standardised behaviour; k by silhouette over ``k_range`` (inclusive)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    from sklearn.preprocessing import StandardScaler

    n = len(keys)
    if n == 0:
        return ClusterResult(0, {}, [], [], [])
    X = StandardScaler().fit_transform(_matrix(raw))
    k_lo, k_hi = k_range
    k_hi = min(k_hi, max(1, n // 3))
    scores: dict[int, float] = {}
    models: dict[int, Any] = {}
    rng = np.random.default_rng(seed)
    idx = rng.choice(n, size=min(n, sample), replace=False) if n > sample else None
    distinct = len(np.unique(X.round(6), axis=0))
    for k in range(k_lo, k_hi + 1):
        if k >= distinct:
            break
        km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(X)
        labels = km.labels_
        if len(set(labels)) < 2:
            continue
        s = float(silhouette_score(X[idx] if idx is not None else X, labels[idx] if idx is not None else labels))
        scores[k] = round(s, 4)
        models[k] = km
    if not models:
        labels = np.zeros(n, dtype=int)
        k = 1
    else:
        top = max(scores.values())
        k = min(k for k, s in scores.items() if s >= top - SILHOUETTE_TOL)
        labels = models[k].labels_
    profiles = []
    for c in range(k):
        m = raw[labels == c]
        ang = 2 * np.pi * m[:, 1] / 24.0
        hour = (math.degrees(math.atan2(np.sin(ang).mean(), np.cos(ang).mean())) / 15.0) % 24
        profiles.append(
            Profile(
                size=int(len(m)),
                dwell_min=round(float(np.median(m[:, 0])), 1),
                hour=round(float(hour), 1),
                weekend_share=round(float(m[:, 2].mean()), 2),
                visit_days=round(float(m[:, 3].mean()), 1),
                recency_days=round(float(m[:, 4].mean()), 1),
                zones=round(float(m[:, 5].mean()), 1),
                passerby_share=round(float(m[:, 6].mean()), 2),
            )
        )
    overall = Profile(
        size=n,
        dwell_min=float(np.median(raw[:, 0])),
        hour=0.0,
        weekend_share=float(raw[:, 2].mean()),
        visit_days=float(raw[:, 3].mean()),
        recency_days=float(raw[:, 4].mean()),
        zones=float(raw[:, 5].mean()),
        passerby_share=float(raw[:, 6].mean()),
    )
    names = _unique([describe(p, overall) for p in profiles])
    return ClusterResult(k, scores, list(keys), [int(x) for x in labels], names, profiles)


def describe(p: Profile, overall: Profile | None = None) -> str:
    """A readable name for a cluster from its centroid: [when] [who], e.g. "lunch-time regulars"."""
    words: list[str] = []
    if overall is not None and p.recency_days > max(14.0, 2 * overall.recency_days):
        words.append("lapsed")
    if p.weekend_share >= 0.6:
        words.append("weekend")
    elif 11.0 <= p.hour < 14.5:
        words.append("lunch-time")
    elif p.hour < 11.0 and p.hour >= 5.0:
        words.append("morning")
    elif 17.0 <= p.hour < 22.0:
        words.append("evening")
    elif overall is not None and p.weekend_share <= 0.1 and overall.weekend_share > 0.25:
        words.append("weekday")
    if p.passerby_share >= 0.6:
        noun = "passers-by"
    elif p.visit_days >= 4:
        noun = "regulars"
    elif p.dwell_min < 5:
        noun = "quick look-ins under 5 min"
    elif p.dwell_min >= 30:
        noun = "long stays over 30 min"
    elif p.visit_days >= 2:
        noun = "returning browsers"
    else:
        noun = "browsers"
    if p.zones >= 2.5 and noun not in ("passers-by",):
        noun += " across zones"
    return " ".join(words + [noun])


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out


def store_clusters(conn: sqlite3.Connection, result: ClusterResult, now: float | None = None) -> dict[str, int]:
    """Keep the clusters as ``kind='cluster'`` segments (replacing the previous run's); name -> size."""
    now = time.time() if now is None else now
    sizes: dict[str, int] = {}
    with conn:
        old = {r[0]: r[1] for r in conn.execute("SELECT name, id FROM segments WHERE kind = 'cluster'")}
        names = {f"cluster: {n}" for n in result.names}
        for name, seg_id in old.items():
            if name not in names:
                conn.execute("DELETE FROM segment_members WHERE segment_id = ?", (seg_id,))
                conn.execute(
                    "INSERT OR REPLACE INTO segment_counts (segment_id, ts, members) VALUES (?, ?, 0)", (seg_id, now)
                )
        for c, cname in enumerate(result.names):
            name = f"cluster: {cname}"
            profile = json.dumps(result.profiles[c].__dict__ | {"k": result.k, "silhouette": result.silhouette})
            definition = json.dumps({"criterion": result.criterion, "features": list(FEATURES)})
            if name in old:
                seg_id = old[name]
                conn.execute(
                    "UPDATE segments SET profile = ?, definition = ? WHERE id = ?", (profile, definition, seg_id)
                )
            else:
                seg_id = int(
                    conn.execute(
                        """INSERT INTO segments (name, kind, definition, dynamic, profile, created, updated)
                           VALUES (?, 'cluster', ?, 1, ?, ?, ?)""",
                        (name, definition, profile, now, now),
                    ).lastrowid
                )
            members = [k for k, lab in zip(result.keys, result.labels, strict=True) if lab == c]
            sizes[name] = _set_members(conn, seg_id, members, now)
    return sizes


def run_clustering(
    conn: sqlite3.Connection, now: float | None = None, lookback_days: float = 30.0, k_range: tuple[int, int] = (2, 8)
) -> ClusterResult:
    """Features from the database, clusters, stored as segments: what the hub runs nightly."""
    keys, raw = device_features(conn, now, lookback_days)
    result = cluster_devices(keys, raw, k_range)
    if result.k:
        store_clusters(conn, result, now)
    return result
