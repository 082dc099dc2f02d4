"""O2O HTTP routers for the hub app, and a standalone app for tests and the demo.

Mounting into the hub app (``hub/api.py``)::

    from footfall.hub.o2o import web as o2o_web
    app.include_router(o2o_web.report_router(db_path), dependencies=authed)  # hub login/API key
    app.include_router(o2o_web.pos_router(db_path))     # own auth: per-store POS keys
    app.include_router(o2o_web.share_router(db_path))   # own auth: the share-link token

``report_router``: ``GET /api/o2o/report`` (json|csv), ``/api/o2o/invoice``,
``/api/o2o/register``, ``/api/o2o/scenarios``, ``/api/o2o/runs`` and the page ``GET /o2o``.
``share_router``: ``GET /api/o2o/segments/{token}?part=N`` serves an ad-platform segment CSV
until its link expires (3 days).
"""

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, Response

from footfall.hub import auth, store
from footfall.hub.o2o import register, reports
from footfall.hub.o2o.pos import open_conn, pos_router
from footfall.hub.o2o.runner import link_hash

__all__ = ["create_app", "pos_router", "report_router", "share_router"]


# Report periods are whole UTC days from the UNIX epoch to a year past today: a later end date
# is a typo (the page's dates went out of Python's range past 9999 and answered a 500).
FIRST_DAY = date(1970, 1, 1)
MAX_DAYS_AHEAD = 366


def _invalid(name: str, value: str | None, message: str) -> RequestValidationError:
    """A 422 in FastAPI's own shape, as if the query parameter had failed its declared type."""
    return RequestValidationError([{"type": "value_error", "loc": ("query", name), "msg": message, "input": value}])


def _day(name: str, value: str, first: date, last: date) -> date:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise _invalid(name, value, f"{name} must be a date as YYYY-MM-DD, got {value!r}") from None
    if not first <= day <= last:
        raise _invalid(name, value, f"{name} must be a day from {first} to {last} (a year past today), got {day}")
    return day


def _period(start: str | None, end: str | None, now: float) -> tuple[float, float]:
    """Days YYYY-MM-DD (UTC), end inclusive; default: the last 30 days."""
    today = datetime.fromtimestamp(now, UTC).date()
    last = today + timedelta(days=MAX_DAYS_AHEAD)
    e = _day("end", end, FIRST_DAY, last) if end else today
    s = _day("start", start, FIRST_DAY, last) if start else max(FIRST_DAY, e - timedelta(days=29))
    if e < s:
        raise _invalid("end", end, f"end {e} is before start {s}")
    t0 = datetime(s.year, s.month, s.day, tzinfo=UTC).timestamp()
    t1 = datetime(e.year, e.month, e.day, tzinfo=UTC).timestamp() + 86400
    return t0, t1


def _db_dep(db_path: str | Path):
    def db() -> Iterator[sqlite3.Connection]:
        conn = open_conn(db_path)
        try:
            yield conn
        finally:
            conn.close()

    return db


def report_router(db_path: str | Path, clock: Callable[[], float] = time.time) -> APIRouter:
    router = APIRouter(tags=["o2o"])
    Conn = Annotated[sqlite3.Connection, Depends(_db_dep(db_path))]
    start_q = Query(None, description="first UTC day YYYY-MM-DD (default: 29 days before end), from 1970-01-01")
    end_q = Query(None, description="last UTC day, inclusive (default: today), at most a year past today")

    @router.get("/api/o2o/report")
    def report(
        conn: Conn, start: str | None = start_q, end: str | None = end_q, scenario: str | None = None,
        format: str = Query("json"),
    ) -> Any:  # fmt: skip
        t0, t1 = _period(start, end, clock())
        rows = reports.report(conn, t0, t1, scenario)
        if format == "csv":
            return Response(
                reports.to_csv(rows), media_type="text/csv",
                headers={"Content-Disposition": "attachment; filename=o2o-report.csv"},
            )  # fmt: skip
        if format != "json":
            raise HTTPException(400, "format must be json or csv")
        return {"start": t0, "end": t1, "scenarios": rows}

    @router.get("/api/o2o/invoice")
    def invoice(conn: Conn, start: str | None = start_q, end: str | None = end_q, partner: str = "partner") -> Any:
        t0, t1 = _period(start, end, clock())
        return reports.partner_invoice(conn, t0, t1, partner)

    @router.get("/api/o2o/register")
    def transfers(conn: Conn, start: str | None = start_q, end: str | None = end_q) -> Any:
        t0, t1 = _period(start, end, clock())
        return {"entries": register.entries(conn, t0, t1), "summary": register.summary(conn, t0, t1)}

    @router.get("/api/o2o/scenarios")
    def scenarios(conn: Conn) -> Any:
        from footfall.hub.o2o import scenarios as sc_mod

        return {"scenarios": sc_mod.list_all(conn)}

    @router.get("/api/o2o/runs")
    def runs(conn: Conn, limit: int = Query(50, ge=1, le=1000)) -> Any:
        rows = conn.execute(
            "SELECT r.*, s.name AS scenario FROM o2o_runs r JOIN o2o_scenarios s ON s.id = r.scenario_id"
            " ORDER BY r.id DESC LIMIT ?",
            (limit,),
        )
        return {"runs": [dict(r) for r in rows]}

    @router.get("/o2o", response_class=HTMLResponse, include_in_schema=False)
    def page(conn: Conn, start: str | None = start_q, end: str | None = end_q) -> Any:
        t0, t1 = _period(start, end, clock())
        return HTMLResponse(reports.html_page(reports.report(conn, t0, t1), reports.partner_invoice(conn, t0, t1)))

    return router


def share_router(db_path: str | Path, clock: Callable[[], float] = time.time) -> APIRouter:
    router = APIRouter(tags=["o2o-share"])
    Conn = Annotated[sqlite3.Connection, Depends(_db_dep(db_path))]

    @router.get("/api/o2o/segments/{token}")
    def download(token: str, conn: Conn, part: int = Query(1, ge=1)) -> Any:
        row = conn.execute(
            "SELECT files, link_expires FROM o2o_exports WHERE link_hash = ?", (link_hash(token),)
        ).fetchone()
        if row is None:
            raise HTTPException(404, "unknown share link")
        if row["link_expires"] <= clock():
            raise HTTPException(410, "share link has expired")
        files = json.loads(row["files"])
        if part > len(files):
            raise HTTPException(404, f"this segment has {len(files)} part(s)")
        path = Path(files[part - 1]["path"])
        if not path.is_file():
            raise HTTPException(410, "segment file is gone")
        return FileResponse(path, media_type="text/csv", filename=path.name)

    return router


def create_app(db_path: str | Path, *, clock: Callable[[], float] = time.time) -> FastAPI:
    """Standalone O2O app: reports behind hub API keys, POS and share links with their own auth."""
    store.connect(db_path).close()
    app = FastAPI(title="Footfall O2O", version="1")

    def principal(request: Request) -> None:
        header = request.headers.get("authorization", "")
        key = request.headers.get("x-api-key") or (header[7:].strip() if header.lower().startswith("bearer ") else None)
        conn = open_conn(db_path)
        try:
            if not key or auth.api_key_principal(conn, key) is None:
                raise HTTPException(401, "send a hub API key", headers={"WWW-Authenticate": "Bearer"})
        finally:
            conn.close()

    app.include_router(report_router(db_path, clock), dependencies=[Depends(principal)])
    app.include_router(pos_router(db_path, clock))
    app.include_router(share_router(db_path, clock))
    return app
