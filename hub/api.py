"""The hub's web app: JSON REST API behind every dashboard chart, CSV export, login, and the
dashboard itself (static files shipped in the package under ``hub/static``, no CDN).

``create_app(db_path, settings)`` builds the FastAPI app. Every ``/api`` route needs a
logged-in session (cookie) or an API key (``Authorization: Bearer`` / ``X-API-Key``); see
``footfall.hub.auth``. Each request borrows a read-only SQLite connection (WAL: readers never
block ingest and ingest never blocks them). A background thread keeps the summary tables
the metrics read up to date (``summaries.refresh_summaries``). OpenAPI schema:
``/openapi.json`` (no Swagger page: it would load its assets from a CDN, and the hub works
with no internet).

The routes of each dashboard area are in their own module, mounted here: ``api_auth`` (login),
``api_reports`` (the reports), ``api_health`` (sensors, rejects), ``api_segments``.
"""

import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from footfall.hub import (
    api_auth,
    api_health,
    api_reports,
    api_segments,
    auth,
    forwarded,
    monitor,
    prometheus,
    store,
    summaries,
)
from footfall.hub.api_responses import _csv_response, _format, _json
from footfall.hub.login_limits import LoginLimiter, LoginLimits
from footfall.hub.now import OCCUPANCY_MAX_AGE_S, PRESENCE_MAX_AGE_S

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"


@dataclass
class WebSettings:
    """What the web app needs to know about the store and how to behave."""

    tz: str = "UTC"  # the store's time zone: "today" and hours are local
    max_days: int = 400  # longest range for day/week granularity
    max_hour_days: int = 14  # longest range for hourly series (336 bars is already a lot)
    now_window_s: float = 300
    now_max_age_s: float = OCCUPANCY_MAX_AGE_S  # an occupancy estimate older than this is not "now" any more
    presence_max_age_s: float = PRESENCE_MAX_AGE_S
    stale_after_s: float = 180  # a sensor silent this long is "stale"
    # /metrics: the roster and certificate files to watch (hub/monitor.py); None: the database only.
    monitor_sources: monitor.MonitorSources | None = None
    session_ttl_s: float = auth.SESSION_TTL_S
    # True: every session cookie is Secure. False: those of requests that came over HTTPS are (TLS
    # here, or a trusted proxy's X-Forwarded-Proto: https); a plain-HTTP test or demo still logs in.
    secure_cookie: bool = False
    refresh_interval_s: float = 15.0  # summary refresh period; 0 disables the background thread
    read_pool_size: int = 8
    clock: Callable[[], float] = field(default=time.time)
    login_limits: LoginLimits = field(default_factory=LoginLimits)
    # Reverse proxies (addresses or networks) whose X-Forwarded-For names the real client; with
    # none, a login is counted against the socket peer and the header is ignored.
    trusted_proxies: tuple[str, ...] = field(default_factory=lambda: _env_list("FOOTFALL_TRUSTED_PROXIES"))


def _env_list(name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in os.environ.get(name, "").split(",") if part.strip())


# ---------------------------------------------------------------- database access
class ReadPool:
    """Read-only connections handed out one per request; opening one costs more than a query."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self._idle: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._size = size

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = store.connect(self.path, readonly=True)
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.rollback()
            if self._idle.qsize() < self._size:
                self._idle.put(conn)
            else:
                conn.close()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


class SummaryRefresher:
    """Background thread running ``summaries.refresh_summaries`` every ``interval_s``."""

    def __init__(self, path: Path, settings: WebSettings) -> None:
        self.path = path
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_run: float | None = None
        self.errors = 0

    def run_once(self) -> dict[str, int]:
        conn = store.connect(self.path)
        try:
            stats = summaries.refresh_summaries(conn, now=self.settings.clock(), tz=self.settings.tz, check_days=2)
        finally:
            conn.close()
        self.last_run = time.time()
        return stats

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a locked or damaged database must not kill the web app
                self.errors += 1
                log.exception("summary refresh failed")
            self._stop.wait(self.settings.refresh_interval_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="summary-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


# ---------------------------------------------------------------- the app
def create_app(db_path: str | Path, settings: WebSettings | None = None) -> FastAPI:
    settings = settings or WebSettings()
    db_path = Path(db_path)
    # Migrate once with a writer; requests then only ever read.
    store.connect(db_path).close()
    pool = ReadPool(db_path, settings.read_pool_size)
    refresher = SummaryRefresher(db_path, settings)
    limiter = LoginLimiter(settings.login_limits)
    trusted_proxies = forwarded.parse_networks(settings.trusted_proxies)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.refresh_interval_s > 0:
            refresher.start()
        yield
        refresher.stop()
        pool.close()

    app = FastAPI(
        title="Footfall store hub",
        version="1",
        description="Footfall metrics of one store: the API behind the dashboard. Authenticate with a session "
        "cookie (POST /auth/login) or an API key (Authorization: Bearer <key> or X-API-Key).",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.refresher = refresher
    app.state.pool = pool
    app.state.limiter = limiter

    def over_https(request: Request) -> bool:
        """TLS to us, or to the trusted reverse proxy that forwarded the request."""
        if request.url.scheme == "https":
            return True
        peer = request.client.host if request.client else None
        return forwarded.forwarded_https(peer, request.headers.getlist("x-forwarded-proto"), trusted_proxies)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        if over_https(request):
            # For a year the browser turns any http:// link to this host into https://, so a
            # stripped link cannot hand the manager a look-alike login page in clear text.
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
        )
        if request.url.path.startswith(("/api", "/auth")):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    def db() -> Iterator[sqlite3.Connection]:
        with pool.connection() as conn:
            yield conn

    Conn = Annotated[sqlite3.Connection, Depends(db)]

    def principal(request: Request, conn: Conn) -> auth.Principal:
        header = request.headers.get("authorization", "")
        key = request.headers.get("x-api-key")
        if not key and header.lower().startswith("bearer "):
            key = header[7:].strip()
        if key:
            found = auth.api_key_principal(conn, key)
            if found is None:
                raise HTTPException(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
            return found
        found = auth.session_user(conn, request.cookies.get(auth.SESSION_COOKIE))
        if found is None:
            raise HTTPException(401, "log in or send an API key", headers={"WWW-Authenticate": "Bearer"})
        return found

    Who = Annotated[auth.Principal, Depends(principal)]
    authed = [Depends(principal)]

    # -------------------------------------------------------- pages
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/login", include_in_schema=False)
    def login_page() -> FileResponse:
        return FileResponse(STATIC / "login.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # -------------------------------------------------------- auth
    app.include_router(api_auth.router(db_path, settings, trusted_proxies, over_https, Who))

    # -------------------------------------------------------- metrics
    @app.get("/api/ping", tags=["meta"], dependencies=authed)
    def ping(conn: Conn) -> dict[str, int]:
        """A trivial authenticated query: the benchmark's baseline round trip."""
        return {"ok": conn.execute("SELECT 1").fetchone()[0]}

    app.include_router(api_reports.router(settings, Conn), dependencies=authed)
    app.include_router(api_health.router(settings, Conn), dependencies=authed)
    app.include_router(api_segments.router(pool, _format, _csv_response, _json), dependencies=authed)

    # Fleet health for Prometheus (scrape with an API key as the bearer token).
    @app.get("/metrics", tags=["health"], dependencies=authed, response_class=PlainTextResponse)
    def prometheus_metrics(conn: Conn) -> PlainTextResponse:
        text = prometheus.exposition(
            conn, now=settings.clock(), stale_after_s=settings.stale_after_s, sources=settings.monitor_sources
        )
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    # O2O retargeting: reports behind the hub's login; the POS and share links carry their own keys.
    from footfall.hub.o2o import web as o2o_web

    app.include_router(o2o_web.report_router(db_path, settings.clock), dependencies=authed)
    app.include_router(o2o_web.pos_router(db_path))
    app.include_router(o2o_web.share_router(db_path))

    # /api/<name>/csv: the same data as ?format=csv, for links and spreadsheet imports.
    @app.get("/api/{name}/csv", tags=["metrics"], dependencies=authed)
    def as_csv(name: str, request: Request) -> RedirectResponse:
        if name not in (
            "now",
            "footfall",
            "engagement",
            "loyalty",
            "compare",
            "occupancy",
            "sensors",
            "rejects",
            "segments",
            "clusters",
        ):
            raise HTTPException(404, f"no such report {name!r}")
        params = dict(request.query_params)
        params["format"] = "csv"
        return RedirectResponse(f"/api/{name}?{urlencode(params)}", status_code=307)

    return app
