"""HTTP side of ``consent.py``: consents and opt-outs recorded by an admin, the shoppers' public
opt-out form, and the retention run.

The form is rate-limited per client address (10 a minute) and never stores, logs or echoes
the MAC typed into it.

(No ``from __future__ import annotations``: FastAPI must resolve the ``Annotated``
dependencies of deps.py in the routes' signatures.)
"""

import threading
import time
from collections import deque
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel

from footfall.cloud_sync.central import consent
from footfall.cloud_sync.central.config import CentralConfig
from footfall.cloud_sync.central.deps import _DEVICE, Deps, need


class OptoutRequest(BaseModel):
    mac: str


class DeviceRequest(BaseModel):
    device: str


def router(cfg: CentralConfig, chain_key: bytes | None, deps: Deps) -> APIRouter:
    """The consent, opt-out and retention routes; ``chain_key`` hashes the form's MACs."""
    r = APIRouter()
    Conn, Who = deps.Conn, deps.Who
    optout_hits: dict[str, deque[float]] = {}
    optout_lock = threading.Lock()

    @r.post("/api/v1/consents")
    def give_consent(body: DeviceRequest, who: Who, conn: Conn) -> dict[str, Any]:
        need(who, "admin")
        consent.record_consent(conn, body.device, source=f"central:{who.name}")
        return {"ok": True}

    @r.post("/api/v1/consents/withdraw")
    def withdraw(body: DeviceRequest, who: Who, conn: Conn) -> dict[str, Any]:
        need(who, "admin")
        return {"ok": True, "deleted": consent.withdraw_consent(conn, body.device)}

    @r.post("/api/v1/optouts")
    def admin_optout(body: DeviceRequest, who: Who, conn: Conn) -> dict[str, Any]:
        need(who, "admin")
        if not _DEVICE.match(body.device):
            raise HTTPException(400, "device id expected")
        return {"ok": True, "new": consent.optout(conn, body.device, source=f"central:{who.name}")}

    @r.post("/api/v1/optout")
    def shopper_optout(body: OptoutRequest, request: Request, conn: Conn) -> dict[str, Any]:
        """The public opt-out form. The MAC is hashed at once; it is never stored, logged or
        echoed (errors say what is wrong, not what was typed)."""
        if chain_key is None:
            raise HTTPException(503, "opt-out is not configured on this server (chain key missing)")
        client = request.client.host if request.client else "?"
        now = time.monotonic()
        with optout_lock:
            hits = optout_hits.setdefault(client, deque())
            while hits and hits[0] < now - 60:
                hits.popleft()
            if len(hits) >= 10:
                raise HTTPException(429, "too many requests, try again in a minute")
            hits.append(now)
            if len(optout_hits) > 10000:
                optout_hits.clear()
        try:
            device = consent.device_from_mac(chain_key, body.mac)
        except ValueError:
            raise HTTPException(400, "not a MAC address: 12 hexadecimal digits, e.g. AA:BB:CC:DD:EE:FF") from None
        consent.optout(conn, device, source="shopper")
        return {"ok": True, "message": "This device will no longer be counted in any of our stores."}

    @r.post("/api/v1/retention/run")
    def retention(who: Who, conn: Conn) -> dict[str, Any]:
        need(who, "admin")
        return consent.enforce_retention(conn, cfg.retention)

    return r
