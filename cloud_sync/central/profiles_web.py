"""Chain-wide profiles for the team: search by device id prefix, one profile in full.

A user limited to some stores sees only those stores' per-store rows and events; a consented
phone hash shows as present, never as its value.

(No ``from __future__ import annotations``: FastAPI must resolve the ``Annotated``
dependencies of deps.py in the routes' signatures.)
"""

import json
from typing import Any

from fastapi import APIRouter, HTTPException, Query

from footfall.cloud_sync.central import auth
from footfall.cloud_sync.central.deps import _DEVICE, Deps


def router(deps: Deps) -> APIRouter:
    """``/api/v1/profiles`` (search) and ``/api/v1/profiles/{device}``."""
    r = APIRouter()
    Conn, Who = deps.Conn, deps.Who

    def store_filter(who: auth.Principal, alias: str = "ps") -> tuple[str, list[str]]:
        if who.stores is None:
            return "", []
        return f" AND {alias}.store IN ({', '.join('?' * len(who.stores))})", list(who.stores)

    @r.get("/api/v1/profiles")
    def search_profiles(
        who: Who, conn: Conn, q: str = Query(..., max_length=128), limit: int = Query(50, ge=1, le=500)
    ) -> dict[str, Any]:
        prefix = q.strip().lower()
        # At least 4 characters: a shorter prefix matches a sixteenth of the chain or more.
        if len(prefix) < 4 or not _DEVICE.match(prefix):
            raise HTTPException(400, "search by at least 4 characters of a device id")
        scope, params = store_filter(who)
        rows = conn.dicts(
            "SELECT p.device, p.first_seen, p.last_seen, p.visits, p.stores FROM profiles p "
            "WHERE p.device LIKE ? AND EXISTS (SELECT 1 FROM profile_stores ps WHERE ps.device = p.device"
            f"{scope}) ORDER BY p.last_seen DESC LIMIT ?",
            [prefix.replace("%", "").replace("_", "") + "%", *params, limit],
        )
        return {"profiles": rows}

    @r.get("/api/v1/profiles/{device}")
    def get_profile(device: str, who: Who, conn: Conn) -> dict[str, Any]:
        scope, params = store_filter(who)
        per_store = conn.dicts(
            "SELECT store, first_seen, last_seen, visits, dwell_s, dwell_median_s, cluster, segments "
            f"FROM profile_stores ps WHERE device = ?{scope} ORDER BY store",
            [device, *params],
        )
        if not per_store:
            raise HTTPException(404, "no such profile")
        for row in per_store:
            row["segments"] = json.loads(row["segments"])
        escope, eparams = store_filter(who, "e")
        if escope:
            escope = f" AND (e.store IS NULL OR (1 = 1{escope}))"
        events = conn.dicts(
            f"SELECT kind, store, ts, data FROM profile_events e WHERE device = ?{escope} ORDER BY ts DESC LIMIT 200",
            [device, *eparams],
        )
        for e in events:
            e["data"] = json.loads(e["data"])
        ids = conn.dicts(
            "SELECT type, value, active, added FROM identifiers WHERE device = ? ORDER BY added", (device,)
        )
        for ident in ids:
            # The team sees that a consented phone hash exists, not the hash itself.
            if ident["type"] != "mac_hash":
                ident["value"] = None
        c = conn.dicts("SELECT pd_consent, given, withdrawn FROM consents WHERE device = ?", (device,))
        return {
            "device": device,
            "first_seen": min(r["first_seen"] for r in per_store),
            "last_seen": max(r["last_seen"] for r in per_store),
            "visits": sum(r["visits"] for r in per_store),
            "stores": per_store,
            "identifiers": ids,
            "consent": c[0] if c else {"pd_consent": 0, "given": None, "withdrawn": None},
            "events": events,
        }

    return r
