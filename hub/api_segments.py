"""The dashboard's segment area: rule and cluster segments with sizes, history and profiles.

One module per dashboard area (as datasette keeps one per view): ``hub/api.py`` mounts
:func:`router` behind its login.
"""

import sqlite3
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from footfall.hub import segment_clusters, segments
from footfall.hub.api_models import Clusters, Segments


def _hhmm(hour: float) -> str:
    minutes = int(round(hour * 60)) % (24 * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _profile_out(p: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored centroid or member profile (``segment_clusters.Profile`` fields) in the API's units."""
    if not p or not p.get("size"):
        return None
    return {
        "devices": int(p["size"]),
        "median_dwell_min": p["dwell_min"],
        "typical_hour": p["hour"],
        "typical_time": _hhmm(p["hour"]),
        "visitor_share": round(1.0 - p["passerby_share"], 2),
        "passerby_share": p["passerby_share"],
        "visit_days": p["visit_days"],
        "weekend_share": p["weekend_share"],
        "recency_days": p["recency_days"],
        "zones": p["zones"],
    }


def _rule_text(rule: Any, top: bool = True) -> str:
    if isinstance(rule, dict) and len(rule) == 1 and ("all" in rule or "any" in rule):
        mode = "all" if "all" in rule else "any"
        text = (" AND " if mode == "all" else " OR ").join(_rule_text(r, False) for r in rule[mode])
        return text if top or len(rule[mode]) == 1 else f"({text})"
    value = rule.get("value")
    if isinstance(value, list):
        shown = "[" + ", ".join(str(v) for v in value) + "]"
    elif isinstance(value, bool):
        shown = str(value).lower()
    else:
        shown = str(value)
    return f"{rule.get('field')} {rule.get('op')} {shown}"


def _segments_report(
    conn: sqlite3.Connection, history: int, cache: dict[tuple[Any, ...], dict[str, Any] | None] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(every segment with size, recent recounts and profile; ``segments.list_segments`` rows).

    Rule segments store no profile: theirs is computed from the members' visits as of their
    last recount and kept in ``cache`` until the next one (it only changes when the members
    do); with no cache, rule segments get no profile."""
    rows = segments.list_segments(conn)
    points: dict[int, list[dict[str, float]]] = {}
    for seg_id, ts, members in conn.execute(
        """SELECT segment_id, ts, members FROM (
               SELECT segment_id, ts, members, row_number() OVER (PARTITION BY segment_id ORDER BY ts DESC) AS n
               FROM segment_counts) WHERE n <= ? ORDER BY segment_id, ts""",
        (history,),
    ):
        points.setdefault(seg_id, []).append({"ts": ts, "members": members})
    latest_run = max((r["updated"] for r in rows if r["kind"] == "cluster"), default=None)
    out = []
    for r in rows:
        definition = r["definition"] if isinstance(r["definition"], dict) else None
        if r["kind"] == "cluster":
            profile = _profile_out(r["profile"]) if r["members"] else None
        elif cache is None:
            profile = None
        else:
            key = (r["id"], r["name"], r["updated"], r["members"])
            if key not in cache:
                if len(cache) > 512:
                    cache.clear()
                lookback = float((definition or {}).get("lookback_days", 30.0))
                found = segment_clusters.member_profile(conn, r["id"], now=r["updated"], lookback_days=lookback)
                cache[key] = _profile_out(found.__dict__) if found else None
            profile = cache[key]
        out.append(
            {
                "id": r["id"],
                "name": r["name"],
                "kind": r["kind"],
                "mode": "dynamic" if r["dynamic"] else "static",
                "current": r["kind"] != "cluster" or r["updated"] == latest_run,
                "size": r["members"],
                "updated": r["updated"],
                "rule": _rule_text(definition["rule"]) if r["kind"] == "rule" and definition else None,
                "definition": definition,
                "history": points.get(r["id"], []),
                "profile": profile,
            }
        )
    return out, rows


def _clusters_report(segs: list[dict[str, Any]], stored: dict[int, dict[str, Any] | None]) -> dict[str, Any]:
    """The latest clustering run from its ``kind='cluster'`` segments (each stores k and the silhouettes)."""
    current = [s for s in segs if s["kind"] == "cluster" and s["current"]]
    if not current:
        return {
            "as_of": None,
            "k": 0,
            "criterion": None,
            "silhouette": None,
            "silhouette_by_k": [],
            "devices": 0,
            "clusters": [],
        }
    first = stored.get(current[0]["id"]) or {}
    by_k = sorted((int(k), float(v)) for k, v in (first.get("silhouette") or {}).items())
    k = int(first.get("k") or len(current))
    devices = sum(s["size"] for s in current)
    clusters = sorted(current, key=lambda s: (-s["size"], s["name"]))
    return {
        "as_of": current[0]["updated"],
        "k": k,
        "criterion": (current[0]["definition"] or {}).get("criterion"),
        "silhouette": dict(by_k).get(k),
        "silhouette_by_k": [{"k": kk, "silhouette": v} for kk, v in by_k],
        "devices": devices,
        "clusters": [
            {
                "id": s["id"],
                "label": s["name"].removeprefix("cluster: "),
                "size": s["size"],
                "share": round(s["size"] / devices, 4) if devices else None,
                "profile": s["profile"],
                "history": s["history"],
            }
            for s in clusters
        ],
    }


_PROFILE_CSV = (
    "devices",
    "median_dwell_min",
    "typical_time",
    "visitor_share",
    "passerby_share",
    "visit_days",
    "weekend_share",
    "recency_days",
    "zones",
)


def _profile_cells(profile: dict[str, Any] | None) -> dict[str, Any]:
    return {f: (profile or {}).get(f) for f in _PROFILE_CSV}


def router(
    pool: Any, fmt: Callable[[str], str], csv_response: Callable[..., Any], as_json: Callable[..., Any]
) -> APIRouter:
    """The /api/segments and /api/clusters routes (authentication is added by the caller)."""
    r = APIRouter()

    def db() -> Iterator[sqlite3.Connection]:
        with pool.connection() as conn:
            yield conn

    Conn = Annotated[sqlite3.Connection, Depends(db)]
    fmt_q = Query("json", description="json or csv")
    _format, _csv_response, _json = fmt, csv_response, as_json

    history_q = Query(30, ge=1, le=1000, description="recounts of each segment's size to return (latest N)")
    # Member profiles of rule segments, keyed by (id, name, updated, size): recomputed after a recount only.
    profile_cache: dict[tuple[Any, ...], dict[str, Any] | None] = {}

    @r.get("/api/segments", response_model=Segments, tags=["segments"])
    def segment_list(conn: Conn, history: int = history_q, format: str = fmt_q) -> Any:
        """Rule and cluster segments: size now, size over the latest recounts, behaviour profile."""
        out, _ = _segments_report(conn, history, profile_cache)
        if _format(format) == "csv":
            rows = [
                {
                    "id": s["id"],
                    "name": s["name"],
                    "kind": s["kind"],
                    "mode": s["mode"],
                    "current": s["current"],
                    "size": s["size"],
                    "updated": s["updated"],
                    "rule": s["rule"] or "",
                    "lookback_days": (s["definition"] or {}).get("lookback_days", ""),
                    **_profile_cells(s["profile"]),
                }
                for s in out
            ]
            fields = ["id", "name", "kind", "mode", "current", "size", "updated", "rule", "lookback_days"]
            return _csv_response(rows, "segments", [*fields, *_PROFILE_CSV])
        return _json({"segments": out})

    @r.get("/api/clusters", response_model=Clusters, tags=["segments"])
    def cluster_list(conn: Conn, history: int = history_q, format: str = fmt_q) -> Any:
        """The latest behavioural clustering: k, its silhouette, each cluster's label, size and centroid."""
        segs, rows = _segments_report(conn, history, None)
        out = _clusters_report(segs, {r["id"]: r["profile"] for r in rows if r["kind"] == "cluster"})
        if _format(format) == "csv":
            rows = [
                {
                    "k": out["k"],
                    "silhouette": out["silhouette"],
                    "id": c["id"],
                    "label": c["label"],
                    "size": c["size"],
                    "share": c["share"],
                    **_profile_cells(c["profile"]),
                }
                for c in out["clusters"]
            ]
            fields = ["k", "silhouette", "id", "label", "size", "share", *_PROFILE_CSV]
            return _csv_response(rows, "clusters", fields)
        return _json(out)

    return r
