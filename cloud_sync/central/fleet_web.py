"""HTTP side of the fleet view: hubs post their fleet report, the team reads page, JSON and CSV.

- ``POST /api/v1/sync/fleet``: signed like every sync request (401 otherwise), gzip JSON or
  plain, bounded before and after inflating (413/400), validated whole (400 with the reason,
  counted as ``bad_fleet_report``), then stored as the store's latest report.
- ``GET /api/v1/fleet`` (``?format=csv``, ``&table=stores`` for the store rows): login or API
  key; a user limited to some stores sees only those.
- ``GET /fleet``: the page (static/fleet.html), which signs in like the others.

The report's content and the worst-first rules are in ``fleet.py``.

(No ``from __future__ import annotations``: FastAPI must resolve the ``Annotated`` dependency
built inside :func:`router`, as in deps.py.)
"""

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from footfall.cloud_sync import signing
from footfall.cloud_sync.central import auth, fleet
from footfall.cloud_sync.central.config import CentralConfig
from footfall.cloud_sync.central.db import Connection, Database

STATIC = Path(__file__).parent / "static"


class FleetMetrics:
    """Reports stored and refused, for the centre's ``/metrics``; ages are read from the DB."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reports: Counter[str] = Counter()

    def count(self, result: str) -> None:
        with self.lock:
            self.reports[result] += 1

    def lines(self, conn: Connection) -> list[str]:
        now = time.time()
        with self.lock:
            out = [
                "# HELP footfall_central_fleet_reports_total Fleet reports from hubs, stored or refused.",
                "# TYPE footfall_central_fleet_reports_total counter",
                *(
                    f'footfall_central_fleet_reports_total{{result="{r}"}} {self.reports[r]}'
                    for r in ("stored", "refused")
                ),
            ]
        rows = conn.all("SELECT store, received, sensors_down FROM fleet_reports ORDER BY store")
        out += [
            "# HELP footfall_central_fleet_report_age_seconds Seconds since each store's last fleet report.",
            "# TYPE footfall_central_fleet_report_age_seconds gauge",
            *(f'footfall_central_fleet_report_age_seconds{{store="{s}"}} {round(now - r, 1)}' for s, r, _ in rows),
            "# HELP footfall_central_fleet_sensors_down Sensors offline or never seen, as each store last reported.",
            "# TYPE footfall_central_fleet_sensors_down gauge",
            *(f'footfall_central_fleet_sensors_down{{store="{s}"}} {d}' for s, _, d in rows),
        ]
        return out


def router(
    database: Database,
    cfg: CentralConfig,
    principal: Callable[..., auth.Principal],
    authenticate_hub: Callable[[Connection, Request, bytes], str],
    reject: Callable[[int, str, str], JSONResponse],
    inflate: Callable[[bytes, str, int], bytes],
    counters: FleetMetrics,
) -> APIRouter:
    """The fleet routes; sync_web.py passes its hub authentication, rejection counter and inflater."""
    r = APIRouter()
    Who = Annotated[auth.Principal, Depends(principal)]
    thresholds = fleet.Thresholds(stale_after_s=cfg.fleet_stale_after_h * 3600, warn_s=cfg.fleet_warn_days * 86400)

    def refuse(message: str) -> JSONResponse:
        counters.count("refused")
        return reject(400, "bad_fleet_report", f"fleet report refused: {message}")

    def handle(request: Request, body: bytes) -> Response:
        with database.connect() as conn:
            try:
                hub = authenticate_hub(conn, request, body)
            except signing.SignatureError as exc:
                return reject(401, exc.reason, f"authentication failed: {exc.reason}")
        encoding = request.headers.get("content-encoding", "").strip().lower()
        try:
            raw = inflate(body, encoding, fleet.MAX_INFLATED_BYTES)
        except ValueError as exc:  # bad or truncated gzip, over the bound
            return refuse(str(exc))
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError):
            return refuse("body is not JSON (or is nested too deep)")
        try:
            report = fleet.validate(doc, hub)
        except fleet.FleetError as exc:
            return refuse(str(exc))
        with database.connect() as conn:
            fleet.store_report(conn, hub, report, received=time.time())
        counters.count("stored")
        return JSONResponse({"stored": True, "sensors": len(report["sensors"])})

    @r.post("/api/v1/sync/fleet")
    async def sync_fleet(request: Request) -> Response:
        limit = fleet.MAX_REPORT_BYTES
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            counters.count("refused")
            return reject(413, "too_large", f"fleet report over {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                counters.count("refused")
                return reject(413, "too_large", f"fleet report over {limit} bytes")
        return await run_in_threadpool(handle, request, bytes(body))

    def read_view(who: auth.Principal) -> dict[str, Any]:
        with database.connect() as conn:
            return fleet.view(conn, time.time(), thresholds, who.sees)

    @r.get("/api/v1/fleet")
    def fleet_api(
        who: Who,
        format: str = Query("json", pattern="^(json|csv)$"),
        table: str = Query("sensors", pattern="^(sensors|stores)$"),
    ) -> Response:
        data = read_view(who)
        if format == "json":
            return JSONResponse(data)
        columns = fleet.SENSOR_COLUMNS if table == "sensors" else fleet.STORE_COLUMNS
        return Response(
            fleet.to_csv(data[table], columns),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="fleet-{table}.csv"'},
        )

    @r.get("/fleet", include_in_schema=False)
    def fleet_page() -> FileResponse:
        return FileResponse(STATIC / "fleet.html")

    return r
