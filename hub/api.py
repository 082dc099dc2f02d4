"""The hub's web app: JSON REST API behind every dashboard chart, CSV export, login, and the
dashboard itself (static files shipped in the package under ``hub/static``, no CDN).

``create_app(db_path, settings)`` builds the FastAPI app. Every ``/api`` route needs a
logged-in session (cookie) or an API key (``Authorization: Bearer`` / ``X-API-Key``); see
``footfall.hub.auth``. Each request borrows a read-only SQLite connection (WAL: readers never
block ingest and ingest never blocks them). A background thread keeps the summary tables
the metrics read up to date (``summaries.refresh_summaries``). OpenAPI schema:
``/openapi.json`` (no Swagger page: it would load its assets from a CDN, and the hub works
with no internet).
"""

import csv
import io
import logging
import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from footfall.hub import api_segments, auth, figures, metrics, monitor, prometheus, store, summaries
from footfall.hub.api_models import (
    Compare,
    Engagement,
    Footfall,
    LoginRequest,
    Loyalty,
    Me,
    Method,
    Now,
    Occupancy,
    Reject,
    Rejects,
    Sensor,
    Sensors,
)
from footfall.hub.now import OCCUPANCY_MAX_AGE_S, PRESENCE_MAX_AGE_S, store_now

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
    login_limits: auth.LoginLimits = field(default_factory=auth.LoginLimits)
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


# ---------------------------------------------------------------- helpers
def _parse_day(value: str | None, name: str, default: date) -> date:
    if value is None or value == "":
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise HTTPException(400, f"{name} must be a date as YYYY-MM-DD, got {value!r}") from None


def _csv_response(rows: list[dict[str, Any]], name: str, fields: Sequence[str] = ()) -> Response:
    """``rows`` as a CSV attachment. The header is every key of the rows in the order they first
    appear (rows of different kinds, e.g. a period's total below its daily rows, share the one
    header; a row leaves the other kinds' columns empty), then any of ``fields`` no row has:
    ``fields`` is the header of an export with no rows, so an empty export is a header line,
    never 0 bytes. Nested values (dicts, lists) are left out."""
    nested = {k for r in rows for k, v in r.items() if isinstance(v, (dict, list))}
    header = [k for k in dict.fromkeys([*(k for r in rows for k in r), *fields]) if k not in nested]
    out = io.StringIO()
    if header:
        writer = csv.DictWriter(out, fieldnames=header, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


def _json(out: dict[str, Any]) -> JSONResponse:
    """The metrics already return plain JSON-ready dicts shaped like the response models
    (tests check every one against its model): skipping FastAPI's re-validation of
    hundreds of series points is most of a year-long report's time."""
    return JSONResponse(out)


def _format(fmt: str) -> str:
    if fmt not in ("json", "csv"):
        raise HTTPException(400, f"format must be json or csv, got {fmt!r}")
    return fmt


# ---------------------------------------------------------------- CSV exports
# Each export keeps the columns and rows it always had, in the same order, and adds its headline
# figures after them: a ``row`` column names each row's kind (a detail row's kind is the name of
# its key column: "period", "day", "bucket", "histogram", "zone", "hour"), and the headline rows
# come last ("total", "store", "today", ...; a text key column names them too). Each figure has
# ``_low`` and ``_high`` (its 90 % range, empty where not estimated) and ``_heard`` (what the
# sensors heard) beside ``estimated``, as in the JSON.
_RANGE = ("", "_low", "_high", "_heard")
_TRAFFIC = ("visitors", "passersby", "capture_rate", "mean_dwell_s")


def _figure_cells(src: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name + suffix: src.get(name + suffix) for name in names for suffix in _RANGE}


def _local_time(unix: float | None, tz: str) -> str | None:
    return None if unix is None else datetime.fromtimestamp(unix, metrics._tz(tz)).strftime("%Y-%m-%d %H:%M")


def _columns(model: type[Any], *drop: str) -> list[str]:
    """A report's CSV header when it has no rows: its model's fields."""
    return [name for name in model.model_fields if name not in drop]


def footfall_csv(out: dict[str, Any], tz: str) -> list[dict[str, Any]]:
    """Each period, then the whole range's totals (unique visitors and median dwell are not sums)."""
    t = out["totals"]
    total = {"period": "total", **t, "row": "total", "as_of_time": _local_time(t.get("as_of"), tz)}
    return [{**p, "row": "period"} for p in out["series"]] + [total]


def engagement_csv(out: dict[str, Any]) -> list[dict[str, Any]]:
    """Buckets, the histogram, then the period's visits and median and mean dwell."""
    rows = [{**b, "row": "bucket"} for b in out["buckets"]]
    rows += [{"bucket": "", **h, "row": "histogram"} for h in out["histogram"]]
    total = {"bucket": "total", "visits": out["visits"], "row": "total"}
    rows.append(total | _figure_cells(out, "median_dwell_s", "mean_dwell_s") | {"estimated": out["estimated"]})
    return rows


def loyalty_csv(out: dict[str, Any], days: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each day with its return rate (estimated where the day is, else the heard share), then the
    period's total: its return rate pools the days' followed phones, it is not a mean of days."""
    rows = []
    for p in out["series"]:
        f = days.get(p["day"]) or {}
        if f.get("return_rate") is not None:
            cells, estimated = _figure_cells(f, "return_rate"), True
        else:
            seen = p["new"] + p["returning"]
            rate = round(p["returning"] / seen, 4) if seen else None
            cells, estimated = _figure_cells({"return_rate": rate}, "return_rate"), False
        rows.append({**p, "row": "day", **cells, "estimated": estimated})
    total = {"day": "total", "row": "total", **_figure_cells(out, "return_rate"), "estimated": out["estimated"]}
    for name in ("unique_visitors", "new_visitors", "returning_visitors", "visitor_days"):
        total[name] = out[name]
    total["median_days_since_last_visit"] = out["median_days_since_last_visit"]
    return rows + [total]


def now_csv(out: dict[str, Any], heard: float, tz: str) -> list[dict[str, Any]]:
    """Each zone's live count, then the store: people now with its range and what was heard."""
    as_of = out["as_of_estimate"] if out["as_of_estimate"] is not None else out["as_of"]
    store_row = {"zone": "store", "inside": out["now_in_store"], "devices": None, "age_s": None, "row": "store"}
    store_row |= {
        "now_in_store": out["now_in_store"],
        "now_in_store_low": out["now_in_store_low"],
        "now_in_store_high": out["now_in_store_high"],
        "now_in_store_heard": heard,
        "estimated": out["source"] in ("occupancy", "presence_calibrated"),
        "source": out["source"],
        "as_of": out["as_of"],
        "as_of_estimate": out["as_of_estimate"],
        "as_of_time": _local_time(as_of, tz),
    }
    return [{**z, "row": "zone"} for z in out["zones"]] + [store_row]


def compare_csv(out: dict[str, Any]) -> list[dict[str, Any]]:
    """Visitors per hour on both days, then today, the same weekday last week at the same time and
    last week's whole day, each figure with its range; today's row has the changes."""
    rows = [{**h, "row": "hour"} for h in out["hourly"]]
    for block in ("today", "last_week_same_time", "last_week_full_day"):
        b = out[block]
        row = {"hour": None, "today": None, "last_week": None, "row": block, "date": b["date"]}
        row |= _figure_cells(b, *_TRAFFIC) | {"estimated": b["estimated"]}
        if block == "today":
            row |= {f"change_{k}": v for k, v in out["change"].items()} | {"local_time": out["local_time"]}
        rows.append(row)
    return rows


# ---------------------------------------------------------------- the app
def create_app(db_path: str | Path, settings: WebSettings | None = None) -> FastAPI:
    settings = settings or WebSettings()
    db_path = Path(db_path)
    # Migrate once with a writer; requests then only ever read.
    store.connect(db_path).close()
    pool = ReadPool(db_path, settings.read_pool_size)
    refresher = SummaryRefresher(db_path, settings)
    limiter = auth.LoginLimiter(settings.login_limits)
    trusted_proxies = auth.parse_networks(settings.trusted_proxies)

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
        return auth.forwarded_https(peer, request.headers.getlist("x-forwarded-proto"), trusted_proxies)

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

    def period(start: str | None, end: str | None, *, longest: int) -> tuple[date, date]:
        today = metrics.local_today(settings.clock(), settings.tz)
        s = _parse_day(start, "start", today)
        e = _parse_day(end, "end", s if start else today)
        if e < s:
            raise HTTPException(400, f"end {e} is before start {s}")
        if (e - s).days + 1 > longest:
            raise HTTPException(400, f"range of {(e - s).days + 1} days is too long (at most {longest})")
        return s, e

    def known_zone(conn: sqlite3.Connection, zone: str | None) -> str | None:
        """``zone`` if the store has it; an unknown one is a 404 naming the known zones (a typo
        used to answer all zeros, which reads as a zone where nobody went)."""
        if not zone:
            return None
        zones = metrics.known_zones(conn)
        if zone not in zones:
            known = ", ".join(zones) if zones else "none yet (no sensor has reported)"
            raise HTTPException(404, f"unknown zone {zone!r}; known zones: {known}")
        return zone

    Who = Annotated[auth.Principal, Depends(principal)]
    authed = [Depends(principal)]
    start_q = Query(None, description="first local day, YYYY-MM-DD (default today)")
    end_q = Query(None, description="last local day, inclusive (default: start)")
    fmt_q = Query("json", description="json or csv")
    excl_q = Query(False, description="count staff and fixed devices too")

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
    @app.post("/auth/login", response_model=Me, tags=["auth"])
    def login(body: LoginRequest, request: Request, response: Response) -> Any:
        client = auth.client_address(
            request.client.host if request.client else None,
            request.headers.getlist("x-forwarded-for"),
            trusted_proxies,
        )
        # From app.state, not the closure, so a test can swap in a limiter with its own clock.
        limiter: auth.LoginLimiter = request.app.state.limiter
        # The slot is taken before the password is checked: parallel guesses see each other.
        attempt = limiter.begin(body.username, client)
        if not attempt.allowed:
            raise HTTPException(
                429,
                f"too many failed logins ({attempt.reason}); try again in {math.ceil(attempt.retry_after)} s",
                headers={"Retry-After": str(math.ceil(attempt.retry_after))},
            )
        verdict: bool | None = None  # stays None if the database fails: not the user's guess
        try:
            conn = store.connect(db_path)
            try:
                user_id = auth.authenticate(conn, body.username, body.password)
                verdict = user_id is not None
                if user_id is None:
                    raise HTTPException(401, "wrong user name or password")
                token = auth.create_session(conn, user_id, ttl_s=settings.session_ttl_s)
            finally:
                conn.close()
        finally:
            limiter.finish(attempt, verdict)
        log.info("login: user %r from %s", body.username, client)
        response.set_cookie(
            auth.SESSION_COOKIE,
            token,
            max_age=int(settings.session_ttl_s),
            httponly=True,
            samesite="strict",
            secure=settings.secure_cookie or over_https(request),
            path="/",
        )
        return {"kind": "user", "name": body.username}

    @app.post("/auth/logout", tags=["auth"])
    def logout(request: Request) -> JSONResponse:
        token = request.cookies.get(auth.SESSION_COOKIE)
        if token:
            conn = store.connect(db_path)
            try:
                auth.end_session(conn, token)
            finally:
                conn.close()
        response = JSONResponse({"logged_out": True})
        response.delete_cookie(
            auth.SESSION_COOKIE,
            path="/",
            httponly=True,
            samesite="strict",
            secure=settings.secure_cookie or over_https(request),
        )
        return response

    @app.get("/auth/me", response_model=Me, tags=["auth"])
    def me(who: Who) -> Any:
        return {"kind": who.kind, "name": who.name}

    # -------------------------------------------------------- metrics
    @app.get("/api/ping", tags=["meta"], dependencies=authed)
    def ping(conn: Conn) -> dict[str, int]:
        """A trivial authenticated query: the benchmark's baseline round trip."""
        return {"ok": conn.execute("SELECT 1").fetchone()[0]}

    @app.get("/api/now", response_model=Now, tags=["metrics"], dependencies=authed)
    def now(conn: Conn, format: str = fmt_q, include_excluded: bool = excl_q) -> Any:
        """People in the store now: the estimate at the latest estimated minute (live presence of the
        sensors, or recent visits, until there is one)."""
        clock = settings.clock()
        out = metrics.now_in_store(
            conn,
            now=clock,
            window_s=settings.now_window_s,
            presence_max_age_s=settings.presence_max_age_s,
            include_excluded=include_excluded,
        )
        heard = out["now_in_store"]
        est = store_now(
            conn,
            clock,
            metrics._tz(settings.tz),
            presence_max_age_s=settings.presence_max_age_s,
            occupancy_max_age_s=settings.now_max_age_s,
        )
        out["now_in_store_low"] = out["now_in_store_high"] = out["as_of_estimate"] = None
        if est is not None:
            out["now_in_store"] = est["people"]
            out["now_in_store_low"], out["now_in_store_high"] = est["people_low"], est["people_high"]
            out["as_of_estimate"] = est["as_of"]
            out["source"] = est["source"]
        if _format(format) == "csv":
            return _csv_response(now_csv(out, heard, settings.tz), "now")
        return _json(out)

    @app.get("/api/footfall", response_model=Footfall, tags=["metrics"], dependencies=authed)
    def footfall(
        conn: Conn,
        start: str | None = start_q,
        end: str | None = end_q,
        granularity: str = Query("hour", description="hour, day or week"),
        zone: str | None = Query(None, description="one zone (sensor id); default the whole store; unknown: 404"),
        include_excluded: bool = excl_q,
        format: str = fmt_q,
    ) -> Any:
        """Visitors, passers-by and capture rate by hour, day or week, and by zone."""
        if granularity not in metrics.GRANULARITIES:
            raise HTTPException(
                400, f"granularity must be one of {', '.join(metrics.GRANULARITIES)}, got {granularity!r}"
            )
        longest = settings.max_hour_days if granularity == "hour" else settings.max_days
        s, e = period(start, end, longest=longest)
        out = metrics.footfall(
            conn, s, e, granularity=granularity, zone=known_zone(conn, zone), include_excluded=include_excluded
        )
        out = figures.annotate_footfall(conn, out, s, e)
        if _format(format) == "csv":
            return _csv_response(footfall_csv(out, settings.tz), f"footfall-{s}-{e}-{granularity}")
        return _json(out)

    @app.get("/api/engagement", response_model=Engagement, tags=["metrics"], dependencies=authed)
    def engagement(
        conn: Conn,
        start: str | None = start_q,
        end: str | None = end_q,
        zone: str | None = Query(None, description="one zone (sensor id); unknown: 404"),
        include_excluded: bool = excl_q,
        format: str = fmt_q,
    ) -> Any:
        """Dwell-time distribution: histogram, buckets, median and mean."""
        s, e = period(start, end, longest=settings.max_days)
        out = metrics.engagement(conn, s, e, zone=known_zone(conn, zone), include_excluded=include_excluded)
        out = figures.annotate_engagement(conn, out, s, e)
        if _format(format) == "csv":
            return _csv_response(engagement_csv(out), f"dwell-{s}-{e}")
        return _json(out)

    @app.get("/api/loyalty", response_model=Loyalty, tags=["metrics"], dependencies=authed)
    def loyalty(
        conn: Conn,
        start: str | None = start_q,
        end: str | None = end_q,
        include_excluded: bool = excl_q,
        format: str = fmt_q,
    ) -> Any:
        """New vs returning visitors, return rate, visit frequency, days since last visit."""
        s, e = period(start, end, longest=settings.max_days)
        out = metrics.loyalty(conn, s, e, include_excluded=include_excluded)
        out = figures.annotate_loyalty(conn, out, s, e)
        if _format(format) == "csv":
            return _csv_response(loyalty_csv(out, figures.day_rows(conn, s, e)), f"loyalty-{s}-{e}")
        return _json(out)

    @app.get("/api/compare", response_model=Compare, tags=["metrics"], dependencies=authed)
    def compare(conn: Conn, include_excluded: bool = excl_q, format: str = fmt_q) -> Any:
        """Today so far vs the same weekday last week at the same time of day."""
        clock = settings.clock()
        out = metrics.compare(conn, now=clock, tz=settings.tz, include_excluded=include_excluded)
        out = figures.annotate_compare(conn, out, metrics.local_hour(clock, settings.tz))
        if _format(format) == "csv":
            return _csv_response(compare_csv(out), f"compare-{out['today']['date']}")
        return _json(out)

    @app.get("/api/occupancy", response_model=Occupancy, tags=["metrics"], dependencies=authed)
    def occupancy(
        conn: Conn,
        start: str | None = start_q,
        end: str | None = end_q,
        window: int = Query(600, ge=60, le=86400, description="window length, seconds (a multiple of 60)"),
        format: str = fmt_q,
    ) -> Any:
        """People inside per window (estimated, minute by minute, averaged over each window)."""
        if window % 60:
            raise HTTPException(400, f"window must be a multiple of 60 seconds, got {window}")
        s, e = period(start, end, longest=settings.max_hour_days)
        zone = metrics._tz(settings.tz)
        lo = datetime.combine(s, dt_time(), zone).timestamp()
        hi = datetime.combine(e + timedelta(days=1), dt_time(), zone).timestamp()
        rows = figures.occupancy(conn, lo, hi, window)
        for r in rows:
            r["time"] = datetime.fromtimestamp(r["start"], zone).strftime("%Y-%m-%d %H:%M")
        out = {
            "start": s.isoformat(),
            "end": e.isoformat(),
            "window_s": window,
            "explain": figures.EXPLAIN["occupancy"],
            "series": rows,
        }
        if _format(format) == "csv":
            return _csv_response(rows, f"occupancy-{s}-{e}", ("start", "people", "time"))
        return _json(out)

    @app.get("/api/method", response_model=Method, tags=["metrics"], dependencies=authed)
    def method(conn: Conn, start: str | None = start_q, end: str | None = end_q) -> Any:
        """How each figure is estimated, and what each day's model was fitted on."""
        s, e = period(start, end, longest=settings.max_days)
        days = {d: f.get("model", {}) for d, f in figures.day_rows(conn, s, e).items()}
        cal = figures.latest_calibration(conn)
        calibration = {
            "visitors": cal.visitors,
            "passersby": cal.passersby,
            "source": cal.source or "none: the documented defaults apply",
            "fit": cal.fit,
        }
        return _json({"explain": figures.EXPLAIN, "days": days, "calibration": calibration})

    @app.get("/api/sensors", response_model=Sensors, tags=["health"], dependencies=authed)
    def sensors(conn: Conn, format: str = fmt_q) -> Any:
        """Sensor health: online, offline or stale, with rates and backlog."""
        out = metrics.sensor_health(conn, now=settings.clock(), stale_after_s=settings.stale_after_s)
        if _format(format) == "csv":
            return _csv_response(out["sensors"], "sensors", _columns(Sensor, "health"))
        return _json(out)

    @app.get("/api/rejects", response_model=Rejects, tags=["health"], dependencies=authed)
    def rejects(conn: Conn, format: str = fmt_q) -> Any:
        """Messages ingest rejected, by reason."""
        out = metrics.rejects(conn)
        if _format(format) == "csv":
            return _csv_response(out["reasons"], "rejects", _columns(Reject))
        return _json(out)

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
