"""Cluster segments: behavioural clusters of devices (scikit-learn), named and stored as segments.

:func:`cluster_devices` clusters one row of behaviour per device over the last
``lookback_days`` of store visits (staff and fixed equipment left out): median dwell, typical
hour (on the clock circle: 23:00 is next to 01:00), weekend share, visit days, recency, zones
visited, passer-by share. Features are standardised (``StandardScaler``); KMeans is run for
every k in ``k_range`` (2 to 8 by default, never more than a third of the devices) and the k
with the **highest mean silhouette coefficient** wins, except that the smallest k within
``SILHOUETTE_TOL`` (0.02) of the best is preferred (parsimony: the simpler story).
Each cluster gets a readable label from its centroid in real units compared with the whole
population ("lunch-time regulars", "quick look-ins under 5 min", "weekend browsers"), see
:func:`describe`. :func:`store_clusters` keeps them as ``kind='cluster'`` segments
(``hub/segments.py``).
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from footfall.hub.segments import _set_members

DAY = 86400.0
# Parsimony: a larger k must beat the smaller one's silhouette by more than this to be chosen;
# differences this small are sampling noise and one more cluster is one more thing to explain.
SILHOUETTE_TOL = 0.02


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
