"""HTTP side of cross-store segments: create, recount, versions, export, push to a CDP.

Rules and versions are ``segments.py``; files ``export.py``; the CDP push ``cdp.py``. Every
export and push is entered in the register of exports (``o2o.record_export``).

(No ``from __future__ import annotations``: FastAPI must resolve the ``Annotated``
dependencies of deps.py in the routes' signatures.)
"""

import io
import json
import zipfile
from tempfile import TemporaryDirectory
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel

from footfall.cloud_sync.central import auth, cdp, export, o2o, segments
from footfall.cloud_sync.central.config import CentralConfig
from footfall.cloud_sync.central.db import Connection
from footfall.cloud_sync.central.deps import Deps, need


class SegmentRequest(BaseModel):
    id: str
    name: str = ""
    rule: Any
    stores: list[str] | None = None


def router(cfg: CentralConfig, deps: Deps) -> APIRouter:
    """``/api/v1/segments`` and the routes of one segment."""
    r = APIRouter()
    Conn, Who = deps.Conn, deps.Who

    def visible_segment(conn: Connection, who: auth.Principal, segment_id: str) -> dict[str, Any]:
        seg = segments.get_segment(conn, segment_id)
        if seg is None or not who.covers(seg["stores"]):
            raise HTTPException(404, "no such segment")
        return seg

    @r.get("/api/v1/segments")
    def list_segments(who: Who, conn: Conn) -> dict[str, Any]:
        return {"segments": [s for s in segments.list_segments(conn) if who.covers(s["stores"])]}

    @r.post("/api/v1/segments", status_code=201)
    def create_segment(body: SegmentRequest, who: Who, conn: Conn) -> dict[str, Any]:
        need(who, "marketing")
        scope = body.stores if body.stores else (list(who.stores) if who.stores else None)
        if not who.covers(scope):
            raise HTTPException(403, "the segment's stores are outside your stores")
        try:
            segments.create_segment(conn, body.id, body.name, body.rule, stores=scope, created_by=who.name)
        except segments.RuleError as exc:
            raise HTTPException(400, str(exc)) from None
        return segments.get_segment(conn, body.id) or {}

    @r.post("/api/v1/segments/{segment_id}/recount")
    def recount(segment_id: str, who: Who, conn: Conn) -> dict[str, Any]:
        need(who, "marketing")
        visible_segment(conn, who, segment_id)
        v = segments.recount(conn, segment_id)
        return {"segment": segment_id, "version": v.version, "size": v.size, "delta": v.delta, "ts": v.ts}

    @r.get("/api/v1/segments/{segment_id}/versions")
    def segment_versions(segment_id: str, who: Who, conn: Conn) -> dict[str, Any]:
        seg = visible_segment(conn, who, segment_id)
        return {"segment": seg, "versions": segments.versions(conn, segment_id)}

    @r.get("/api/v1/segments/{segment_id}/export")
    def export_segment(
        segment_id: str,
        who: Who,
        conn: Conn,
        format: str = Query("csv", pattern="^(csv|json|msisdn)$"),
        version: int | None = None,
    ) -> Response:
        need(who, "marketing")
        seg = visible_segment(conn, who, segment_id)
        try:
            if format != "msisdn":
                text = export.generic(conn, segment_id, format, version=version, stores=seg["stores"])
                media = "application/json" if format == "json" else "text/csv"
                body = text.encode()
                n = int(json.loads(text)["count"]) if format == "json" else max(0, text.count("\n") - 1)
                o2o.record_export(conn, who=who.name, segment=segment_id, version=version, fmt=format, rows=n,
                                  payload=body)  # fmt: skip
                return Response(
                    text,
                    media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{segment_id}.{format}"'},
                )
            with TemporaryDirectory() as tmp:
                result = export.supplier_csv(conn, segment_id, tmp, version=version)
                blob = b"".join(f.read_bytes() for f in result.files)
                o2o.record_export(conn, who=who.name, segment=segment_id, version=version, fmt="msisdn",
                                  rows=result.count, payload=blob, files=len(result.files),
                                  warning=result.warnings[0] if result.warnings else None)  # fmt: skip
                headers = {"X-Footfall-Count": str(result.count)}
                if result.warnings:
                    headers["X-Footfall-Warning"] = result.warnings[0]
                if len(result.files) == 1:
                    headers["Content-Disposition"] = f'attachment; filename="{result.files[0].name}"'
                    return Response(result.files[0].read_bytes(), media_type="text/csv", headers=headers)
                buf = io.BytesIO()
                with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                    for f in result.files:
                        zf.write(f, f.name)
                headers["Content-Disposition"] = f'attachment; filename="{segment_id}.zip"'
                return Response(buf.getvalue(), media_type="application/zip", headers=headers)
        except KeyError as exc:
            raise HTTPException(409, str(exc).strip("'\"")) from None

    @r.post("/api/v1/segments/{segment_id}/push")
    def push_segment(segment_id: str, who: Who, conn: Conn, connector: str = "main") -> dict[str, Any]:
        need(who, "marketing")
        seg = visible_segment(conn, who, segment_id)
        target = cfg.cdp.get(connector)
        if target is None:
            raise HTTPException(404, f"no CDP connector {connector!r} configured")
        try:
            r = cdp.push_segment(conn, segment_id, target, stores=seg["stores"])
        except KeyError as exc:
            raise HTTPException(409, str(exc).strip("'\"")) from None
        except cdp.CdpError as exc:
            raise HTTPException(502, str(exc)) from None
        o2o.record_export(conn, who=who.name, segment=segment_id, version=None, fmt=f"cdp:{connector}",
                          rows=r.sent, files=r.batches)  # fmt: skip
        return {"export_id": r.export_id, "queued": r.queued, "sent": r.sent, "batches": r.batches}

    return r
