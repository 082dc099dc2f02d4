"""O2O HTTP routers for the hub app, and a standalone app for tests and the demo.

Mounting into the hub app (``hub/api.py``)::

    from footfall.hub.o2o import web as o2o_web
    app.include_router(o2o_web.report_router(db_path), dependencies=authed)  # hub login/API key
    app.include_router(o2o_web.pos_router(db_path))     # own auth: per-store POS keys
    app.include_router(o2o_web.share_router(db_path))   # own auth: the share-link token

``report_router``: ``GET /api/o2o/report`` (json|csv), ``/api/o2o/invoice``,
``/api/o2o/register``, ``/api/o2o/scenarios``, ``/api/o2o/runs``, the dealership attribution
``GET /api/o2o/exposure[/{campaign}]`` and ``POST /api/o2o/exposure/{campaign}`` (an exposure
log as CSV, ``exposure.py``) and the page ``GET /o2o``.
``share_router``: ``GET /api/o2o/segments/{token}?part=N[&snapshot=ID]`` serves part N of the
scenario's current ad-platform segment snapshot until the link expires (3 days; 410 after,
404 for an unknown link); see ``adsegment.py``.

Report days are the store's local days (the hub's ``timezone``), as on the rest of the dashboard;
the page prints times in that zone, the JSON and CSV carry UNIX seconds and ``*_utc`` ISO times
with the zone in ``tz`` (docs/metrics.md).
"""

import csv
import dataclasses
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta, tzinfo
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, Response

from footfall.hub import auth, localtime, store
from footfall.hub.analysis import day_bounds
from footfall.hub.o2o import adsegment, register, reports
from footfall.hub.o2o.pos import open_conn, pos_router

__all__ = ["create_app", "pos_router", "report_router", "share_router"]


# Report periods are whole local days from 1970-01-01 to a year past today: a later end date
# is a typo (the page's dates went out of Python's range past 9999 and answered a 500).
FIRST_DAY = date(1970, 1, 1)
MAX_DAYS_AHEAD = 366
MAX_EXPOSURE_BYTES = 50_000_000  # about a million exposure rows per request


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


def _period(start: str | None, end: str | None, now: float, tz: tzinfo) -> tuple[date, date, float, float]:
    """Days YYYY-MM-DD in the store's zone, end inclusive (default: the last 30 days), and
    their UNIX bounds: local midnight to local midnight, so a DST day is 23 or 25 hours."""
    today = localtime.local_today(now, tz)
    last = today + timedelta(days=MAX_DAYS_AHEAD)
    e = _day("end", end, FIRST_DAY, last) if end else today
    s = _day("start", start, FIRST_DAY, last) if start else max(FIRST_DAY, e - timedelta(days=29))
    if e < s:
        raise _invalid("end", end, f"end {e} is before start {s}")
    # The dashboard's own local-day bounds (hub/analysis.py), so an O2O day is a dashboard day.
    return s, e, day_bounds(s.isoformat(), tz)[0], day_bounds(e.isoformat(), tz)[1]


def _zone_dep(tz: str | None) -> Callable[[Request], tzinfo]:
    """The store's zone: ``tz`` if given, else the hub app's ``settings.tz`` (hub/api.py keeps
    its settings in ``app.state``), read per request so the router needs no settings of its own."""

    def zone(request: Request) -> tzinfo:
        name = tz if tz is not None else getattr(getattr(request.app.state, "settings", None), "tz", None)
        return localtime._tz(name)

    return zone


def _db_dep(db_path: str | Path):
    def db() -> Iterator[sqlite3.Connection]:
        conn = open_conn(db_path)
        try:
            yield conn
        finally:
            conn.close()

    return db


def report_router(db_path: str | Path, clock: Callable[[], float] = time.time, tz: str | None = None) -> APIRouter:
    """The O2O reports; ``tz`` is the store's zone (default: the hub app's ``settings.tz``, else UTC)."""
    router = APIRouter(tags=["o2o"])
    Conn = Annotated[sqlite3.Connection, Depends(_db_dep(db_path))]
    Zone = Annotated[tzinfo, Depends(_zone_dep(tz))]
    start_q = Query(
        None, description="first day YYYY-MM-DD in the store's time zone (default: 29 days before end), from 1970-01-01"
    )
    end_q = Query(None, description="last local day, inclusive (default: today), at most a year past today")

    @router.get("/api/o2o/report")
    def report(
        conn: Conn, zone: Zone, start: str | None = start_q, end: str | None = end_q, scenario: str | None = None,
        format: str = Query("json"),
    ) -> Any:  # fmt: skip
        s, e, t0, t1 = _period(start, end, clock(), zone)
        rows = reports.report(conn, t0, t1, scenario, tz=zone)
        if format == "csv":
            return Response(
                reports.to_csv(rows), media_type="text/csv",
                headers={"Content-Disposition": "attachment; filename=o2o-report.csv"},
            )  # fmt: skip
        if format != "json":
            raise HTTPException(400, "format must be json or csv")
        return {**reports.period_fields(t0, t1, zone), "start_day": s.isoformat(), "end_day": e.isoformat(),
                "scenarios": rows}  # fmt: skip

    @router.get("/api/o2o/invoice")
    def invoice(
        conn: Conn, zone: Zone, start: str | None = start_q, end: str | None = end_q, partner: str = "partner"
    ) -> Any:
        _, _, t0, t1 = _period(start, end, clock(), zone)
        return reports.partner_invoice(conn, t0, t1, partner) | reports.period_fields(t0, t1, zone)

    @router.get("/api/o2o/register")
    def transfers(conn: Conn, zone: Zone, start: str | None = start_q, end: str | None = end_q) -> Any:
        _, _, t0, t1 = _period(start, end, clock(), zone)
        return {
            **reports.period_fields(t0, t1, zone),
            "entries": register.entries(conn, t0, t1),
            "summary": register.summary(conn, t0, t1),
            "snapshots": register.snapshots(conn, t0, t1),
        }

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

    # Dealerships (seed 004, case 2): the media partner's exposure log in, attribution out
    # (hub/o2o/exposure.py; the same as `footfall o2o exposure import|report`).
    @router.get("/api/o2o/exposure")
    def exposure_campaigns(conn: Conn) -> Any:
        rows = conn.execute(
            "SELECT campaign, count(DISTINCT subject), count(*), min(ts), max(ts) FROM ad_exposures GROUP BY campaign"
            " ORDER BY campaign"
        )
        return {"campaigns": [dict(zip(("campaign", "exposed", "exposures", "first", "last"), r, strict=True))
                              for r in rows]}  # fmt: skip

    @router.get("/api/o2o/exposure/{campaign}")
    def exposure_report(
        conn: Conn,
        campaign: str,
        window_days: float = Query(7.0, gt=0, le=90),
        pre_days: float = Query(90.0, gt=0, le=730),
    ) -> Any:
        from footfall.hub.o2o import exposure

        try:
            return exposure.report(conn, campaign, window_days=window_days, pre_days=pre_days)
        except KeyError:
            raise HTTPException(404, f"no exposures for campaign {campaign!r}") from None

    @router.post("/api/o2o/exposure/{campaign}")
    async def exposure_import(request: Request, campaign: str) -> Any:
        from footfall.hub.o2o import exposure

        body = await request.body()
        if len(body) > MAX_EXPOSURE_BYTES:
            raise HTTPException(413, f"an exposure log is at most {MAX_EXPOSURE_BYTES // 1_000_000} MB per request")
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise HTTPException(400, "the exposure log must be UTF-8 CSV") from None
        conn = open_conn(db_path)
        try:
            res = exposure.import_exposures(conn, text, campaign, now=clock())
        except (ValueError, csv.Error) as exc:
            raise HTTPException(400, str(exc)) from None
        finally:
            conn.close()
        return dataclasses.asdict(res)

    @router.get("/o2o", response_class=HTMLResponse, include_in_schema=False)
    def page(conn: Conn, zone: Zone, start: str | None = start_q, end: str | None = end_q) -> Any:
        now = clock()
        s, e, t0, t1 = _period(start, end, now, zone)
        rows, invoice = reports.report(conn, t0, t1, tz=zone), reports.partner_invoice(conn, t0, t1)
        return HTMLResponse(reports.html_page(rows, invoice, tz=zone, days=(s, e), now=now))

    return router


def share_router(db_path: str | Path, clock: Callable[[], float] = time.time) -> APIRouter:
    router = APIRouter(tags=["o2o-share"])
    Conn = Annotated[sqlite3.Connection, Depends(_db_dep(db_path))]

    @router.get("/api/o2o/segments/{token}")
    def download(token: str, conn: Conn, part: int = Query(1, ge=1), snapshot: int | None = Query(None, ge=1)) -> Any:
        try:
            path, headers = adsegment.resolve(conn, token, part, snapshot=snapshot, now=clock())
        except adsegment.ShareError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return FileResponse(path, media_type="text/csv", filename=path.name, headers=headers)

    return router


def create_app(db_path: str | Path, *, clock: Callable[[], float] = time.time, tz: str = "UTC") -> FastAPI:
    """Standalone O2O app: reports behind hub API keys, POS and share links with their own auth;
    ``tz`` is the store's zone, as the hub's ``timezone`` setting."""
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

    app.include_router(report_router(db_path, clock, tz), dependencies=[Depends(principal)])
    app.include_router(pos_router(db_path, clock))
    app.include_router(share_router(db_path, clock))
    return app
