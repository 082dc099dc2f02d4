"""The stores as their hubs report them: sync state, sensor health, latest and past days;
and the hubs themselves (admin).

(No ``from __future__ import annotations``: FastAPI must resolve the ``Annotated``
dependencies of deps.py in the routes' signatures.)
"""

import time
from typing import Any

from fastapi import APIRouter, HTTPException, Query

from footfall.cloud_sync.central.deps import Deps, need


def router(deps: Deps) -> APIRouter:
    """``/api/v1/stores``, ``/api/v1/stores/{store}/daily`` and ``/api/v1/hubs``."""
    r = APIRouter()
    Conn, Who = deps.Conn, deps.Who

    @r.get("/api/v1/stores")
    def stores(who: Who, conn: Conn) -> dict[str, Any]:
        now = time.time()
        out = []
        health = {r["store"]: r for r in conn.dicts("SELECT * FROM store_health")}
        counts = dict(conn.all("SELECT store, COUNT(*) FROM profile_stores GROUP BY store"))
        for hub in conn.dicts(
            "SELECT hub_id, name, disabled, last_sync, last_seq, batches, records FROM hubs ORDER BY hub_id"
        ):
            if not who.sees(hub["hub_id"]):
                continue
            h = health.get(hub["hub_id"])
            day = conn.dicts(
                "SELECT day, visitors, passersby, capture_rate, dwell_median_s FROM daily_aggregates "
                "WHERE store = ? ORDER BY day DESC LIMIT 1",
                (hub["hub_id"],),
            )
            out.append(
                {
                    **hub,
                    "last_sync_age_s": None if hub["last_sync"] is None else round(now - hub["last_sync"], 1),
                    "profiles": counts.get(hub["hub_id"], 0),
                    "sensors": None
                    if h is None
                    else {
                        "total": h["sensors_total"],
                        "stale": h["sensors_stale"],
                        "failing": h["sensors_failing"],
                        "reported": h["ts"],
                    },
                    "latest_day": day[0] if day else None,
                }
            )
        return {"stores": out}

    @r.get("/api/v1/stores/{store}/daily")
    def store_daily(store: str, who: Who, conn: Conn, days: int = Query(30, ge=1, le=400)) -> dict[str, Any]:
        if not who.sees(store):
            raise HTTPException(404, "no such store")
        rows = conn.dicts(
            "SELECT day, visitors, passersby, capture_rate, dwell_median_s FROM daily_aggregates "
            "WHERE store = ? ORDER BY day DESC LIMIT ?",
            (store, days),
        )
        return {"store": store, "days": rows[::-1]}

    @r.get("/api/v1/hubs")
    def hubs(who: Who, conn: Conn) -> dict[str, Any]:
        need(who, "admin")
        return {
            "hubs": conn.dicts(
                "SELECT hub_id, name, created, disabled, last_sync, last_seq, batches, records "
                "FROM hubs ORDER BY hub_id"
            )
        }

    return r
