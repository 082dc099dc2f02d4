"""HTTP side of ``o2o.py``: O2O results across stores, and the register of exports.

(No ``from __future__ import annotations``: FastAPI must resolve the ``Annotated``
dependencies of deps.py in the routes' signatures.)
"""

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse, Response

from footfall.cloud_sync.central import o2o, segments
from footfall.cloud_sync.central.deps import Deps, need


def router(deps: Deps) -> APIRouter:
    """``/api/v1/o2o/results`` and ``/api/v1/exports``."""
    r = APIRouter()
    Conn, Who = deps.Conn, deps.Who

    @r.get("/api/v1/o2o/results")
    def o2o_results(
        who: Who,
        conn: Conn,
        start: str = Query(...),
        end: str = Query(...),
        scenario: str | None = None,
        format: str = Query("json", pattern="^(json|csv)$"),
    ) -> Response:
        need(who, "readonly")
        try:
            res = o2o.results(conn, start, end, who.stores, scenario)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        if format == "csv":
            return Response(
                o2o.to_csv(res["rows"] + res["totals"]),
                media_type="text/csv",
                headers={"Content-Disposition": f'attachment; filename="o2o_{start}_{end}.csv"'},
            )
        return JSONResponse(res)

    @r.get("/api/v1/exports")
    def exports_register(who: Who, conn: Conn, format: str = Query("json", pattern="^(json|csv)$")) -> Response:
        need(who, "readonly")
        visible = None
        if who.stores is not None:
            visible = {s["id"] for s in segments.list_segments(conn) if who.covers(s["stores"])}
        rows = o2o.exports(conn, visible)
        if format == "csv":
            return Response(o2o.to_csv(rows, o2o.EXPORT_COLUMNS), media_type="text/csv")
        return JSONResponse({"exports": rows})

    return r
