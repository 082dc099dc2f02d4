"""HTTP side of ``definitions.py``: the team sends segment definitions and scenario settings to
the stores (``POST /api/v1/pushback``) and sees which version each store runs.

(No ``from __future__ import annotations``: FastAPI must resolve the ``Annotated``
dependencies of deps.py in the routes' signatures.)
"""

import time
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel

from footfall.cloud_sync import definitions as hub_definitions
from footfall.cloud_sync.central import definitions
from footfall.cloud_sync.central.deps import Deps, need


class PushbackRequest(BaseModel):
    kind: str
    id: str
    body: dict[str, Any]
    store: str | None = None


def router(deps: Deps) -> APIRouter:
    """``POST /api/v1/pushback`` and ``GET /api/v1/definitions``."""
    r = APIRouter()
    Conn, Who = deps.Conn, deps.Who

    @r.post("/api/v1/pushback", status_code=201)
    def add_pushback(body: PushbackRequest, who: Who, conn: Conn) -> dict[str, Any]:
        need(who, "marketing")
        if body.kind not in definitions.KINDS:
            raise HTTPException(400, f"kind must be one of {', '.join(definitions.KINDS)}")
        if not who.covers(None if body.store is None else [body.store]):
            raise HTTPException(403, "that store is outside your stores")
        try:
            hub_definitions.check(body.kind, body.id, body.body)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        item_id, version = definitions.publish(
            conn, body.kind, body.id, body.body, store=body.store, by=who.name, now=time.time()
        )
        return {"id": item_id, "version": version}

    @r.get("/api/v1/definitions")
    def list_definitions(who: Who, conn: Conn) -> dict[str, Any]:
        need(who, "readonly")
        return {"definitions": definitions.overview(conn, who.stores)}

    return r
