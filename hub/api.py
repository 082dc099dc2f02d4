"""The hub's web app: JSON REST API behind every dashboard chart, CSV export, login, and the
dashboard itself (static files shipped in the package under ``hub/static``, no CDN).

``create_app(db_path, settings)`` builds the FastAPI app. Every ``/api`` route needs a
logged-in session (cookie) or an API key (``Authorization: Bearer`` / ``X-API-Key``); see
``footfall.hub.auth``. Each request borrows a read-only SQLite connection (WAL: readers never
block ingest and ingest never blocks them). A background thread keeps the summary tables
the metrics read up to date (``metrics.refresh_summaries``). OpenAPI schema:
``/openapi.json`` (no Swagger page: it would load its assets from a CDN, and the hub works
with no internet).
"""

import csv
import io
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from footfall.hub import auth, metrics, prometheus, segments, store

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"


@dataclass
class WebSettings:
    """What the web app needs to know about the store and how to behave."""

    tz: str = "UTC"  # the store's time zone: "today" and hours are local
    max_days: int = 400  # longest range for day/week granularity
    max_hour_days: int = 14  # longest range for hourly series (336 bars is already a lot)
    now_window_s: float = 300
    presence_max_age_s: float = 180
    stale_after_s: float = 180  # a sensor silent this long is "stale"
    session_ttl_s: float = auth.SESSION_TTL_S
    secure_cookie: bool = False  # set behind HTTPS so the session cookie never travels in clear
    refresh_interval_s: float = 15.0  # summary refresh period; 0 disables the background thread
    read_pool_size: int = 8
    clock: Callable[[], float] = field(default=time.time)


# ---------------------------------------------------------------- response models (OpenAPI)
class Traffic(BaseModel):
    visitors: int = Field(description="visits by devices that came in (footfall)")
    passersby: int = Field(description="visits by devices heard outside that never came in")
    capture_rate: float | None = Field(description="visitors / (visitors + passers-by)")
    mean_dwell_s: float | None = Field(description="mean visitor dwell, seconds")


class FootfallTotals(Traffic):
    unique_visitors: int | None = Field(description="distinct visitor devices (store-wide only)")


class FootfallPoint(Traffic):
    period: str = Field(description="YYYY-MM-DDTHH (hour), YYYY-MM-DD (day) or the Monday (week)")


class ZoneTraffic(Traffic):
    zone: str


class Footfall(BaseModel):
    start: str
    end: str
    granularity: str
    zone: str | None
    include_excluded: bool
    totals: FootfallTotals
    series: list[FootfallPoint]
    zones: list[ZoneTraffic]
    rolled_up_visits: int = Field(description="visits read from retention's hourly roll-up")


class HistogramBin(BaseModel):
    lo_s: float
    hi_s: float | None
    visits: int


class DwellBucket(BaseModel):
    bucket: str
    lo_s: float
    hi_s: float | None
    visits: int
    share: float | None


class Engagement(BaseModel):
    start: str
    end: str
    zone: str | None
    include_excluded: bool
    visits: int
    mean_dwell_s: float | None
    median_dwell_s: float | None
    buckets: list[DwellBucket]
    histogram: list[HistogramBin]
    rolled_up_visits: int


class FrequencyShare(BaseModel):
    frequency: str
    visitor_days: int
    share: float | None


class GapBucket(BaseModel):
    bucket: str
    min_days: int
    max_days: int | None
    visitor_days: int


class LoyaltyDay(BaseModel):
    day: str
    new: int
    returning: int


class RolledLoyalty(BaseModel):
    new_visitors: int
    returning_visitors: int


class Loyalty(BaseModel):
    start: str
    end: str
    include_excluded: bool
    unique_visitors: int
    new_visitors: int
    returning_visitors: int
    return_rate: float | None
    visitor_days: int
    frequency: list[FrequencyShare]
    days_since_last_visit: list[GapBucket]
    median_days_since_last_visit: int | None
    series: list[LoyaltyDay]
    rolled_up: RolledLoyalty


class ZoneNow(BaseModel):
    zone: str
    inside: int
    devices: int
    age_s: float


class Now(BaseModel):
    now_in_store: int
    source: str = Field(description="'presence' (live sensor counts) or 'recent_visits' (fallback)")
    as_of: float
    window_s: float
    recent_visitors: int
    zones: list[ZoneNow]


class DayTraffic(Traffic):
    date: str


class Change(BaseModel):
    visitors: float | None = Field(description="relative change, 0.1 = +10 %")
    passersby: float | None
    capture_rate_points: float | None = Field(description="difference of capture rates")


class CompareHour(BaseModel):
    hour: int
    today: int
    last_week: int


class Compare(BaseModel):
    as_of: float
    local_time: str
    today: DayTraffic
    last_week_same_time: DayTraffic
    last_week_full_day: DayTraffic
    change: Change
    hourly: list[CompareHour]


class Sensor(BaseModel):
    site: str
    sensor: str
    status: str = Field(description="online, offline or stale")
    state: str | None
    version: str | None
    online_since: float | None
    offline_since: float | None
    last_message: float | None
    last_message_age_s: float | None
    messages: int | None
    message_rate: float | None
    backlog: int | None
    dropped: int | None
    health: dict[str, Any] | None


class Sensors(BaseModel):
    as_of: float
    stale_after_s: float
    online: int
    offline: int
    stale: int
    sensors: list[Sensor]


class Reject(BaseModel):
    reason: str
    count: int
    last_at: float
    last_detail: str | None


class Rejects(BaseModel):
    total: int
    reasons: list[Reject]


class LoginRequest(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)


class Me(BaseModel):
    kind: str
    name: str


class SegmentPoint(BaseModel):
    ts: float = Field(description="time of the recount (unix seconds)")
    members: int


class SegmentProfile(BaseModel):
    devices: int = Field(description="devices the profile describes (members seen in the window; sampled past 5000)")
    median_dwell_min: float = Field(description="median of the devices' median visit dwell, minutes")
    typical_hour: float = Field(description="mean local hour of arrival on the clock circle (12.5 = 12:30)")
    typical_time: str = Field(description="typical_hour as HH:MM")
    visitor_share: float = Field(description="mean share of the devices' visits that came in (1 - passerby_share)")
    passerby_share: float = Field(description="mean share of the devices' visits that only passed by")
    visit_days: float = Field(description="mean distinct visit days per device in the window")
    weekend_share: float = Field(description="mean share of visits on Saturday/Sunday")
    recency_days: float = Field(description="mean days since last seen")
    zones: float = Field(description="mean distinct zones visited")


class Segment(BaseModel):
    id: int
    name: str
    kind: str = Field(description="'rule' (conditions on device fields) or 'cluster' (behavioural clustering)")
    mode: str = Field(description="'dynamic' (re-evaluated at every refresh) or 'static' (members fixed)")
    current: bool = Field(description="false for a cluster that the latest clustering run no longer produced")
    size: int = Field(description="members now")
    updated: float = Field(description="when the members were last set")
    rule: str | None = Field(description="the rule as text (rule segments)")
    definition: dict[str, Any] | None = Field(description="rule JSON and lookback, or the clustering criterion")
    history: list[SegmentPoint] = Field(description="the latest recounts, oldest first")
    profile: SegmentProfile | None


class Segments(BaseModel):
    segments: list[Segment]


class KScore(BaseModel):
    k: int
    silhouette: float


class Cluster(BaseModel):
    id: int
    label: str = Field(description="readable name from the centroid, e.g. 'lunch-time regulars'")
    size: int
    share: float | None = Field(description="size / devices clustered")
    profile: SegmentProfile | None
    history: list[SegmentPoint]


class Clusters(BaseModel):
    as_of: float | None = Field(description="when the latest clustering ran; null if never")
    k: int = Field(description="number of clusters chosen")
    criterion: str | None
    silhouette: float | None = Field(
        description="mean silhouette coefficient of the chosen k (-1..1, higher is better)"
    )
    silhouette_by_k: list[KScore]
    devices: int
    clusters: list[Cluster]


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
    """Background thread running ``metrics.refresh_summaries`` every ``interval_s``."""

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
            stats = metrics.refresh_summaries(conn, now=self.settings.clock(), tz=self.settings.tz, check_days=2)
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


def _csv_response(rows: list[dict[str, Any]], name: str) -> Response:
    out = io.StringIO()
    if rows:
        fields = [k for k, v in rows[0].items() if not isinstance(v, (dict, list))]
        writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
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


def _hhmm(hour: float) -> str:
    minutes = int(round(hour * 60)) % (24 * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _profile_out(p: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored centroid or member profile (``segments.Profile`` fields) in the API's units."""
    if not p or not p.get("size"):
        return None
    return {
        "devices": int(p["size"]),
        "median_dwell_min": p["dwell_min"],
        "typical_hour": p["hour"],
        "typical_time": _hhmm(p["hour"]),
        "visitor_share": round(1.0 - p["passerby_share"], 2),
        "passerby_share": p["passerby_share"],
        "visit_days": p["visit_days"],
        "weekend_share": p["weekend_share"],
        "recency_days": p["recency_days"],
        "zones": p["zones"],
    }


def _rule_text(rule: Any, top: bool = True) -> str:
    if isinstance(rule, dict) and len(rule) == 1 and ("all" in rule or "any" in rule):
        mode = "all" if "all" in rule else "any"
        text = (" AND " if mode == "all" else " OR ").join(_rule_text(r, False) for r in rule[mode])
        return text if top or len(rule[mode]) == 1 else f"({text})"
    value = rule.get("value")
    if isinstance(value, list):
        shown = "[" + ", ".join(str(v) for v in value) + "]"
    elif isinstance(value, bool):
        shown = str(value).lower()
    else:
        shown = str(value)
    return f"{rule.get('field')} {rule.get('op')} {shown}"


def _segments_report(
    conn: sqlite3.Connection, history: int, cache: dict[tuple[Any, ...], dict[str, Any] | None] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(every segment with size, recent recounts and profile; ``segments.list_segments`` rows).

    Rule segments store no profile: theirs is computed from the members' visits as of their
    last recount and kept in ``cache`` until the next one (it only changes when the members
    do); with no cache, rule segments get no profile."""
    rows = segments.list_segments(conn)
    points: dict[int, list[dict[str, float]]] = {}
    for seg_id, ts, members in conn.execute(
        """SELECT segment_id, ts, members FROM (
               SELECT segment_id, ts, members, row_number() OVER (PARTITION BY segment_id ORDER BY ts DESC) AS n
               FROM segment_counts) WHERE n <= ? ORDER BY segment_id, ts""",
        (history,),
    ):
        points.setdefault(seg_id, []).append({"ts": ts, "members": members})
    latest_run = max((r["updated"] for r in rows if r["kind"] == "cluster"), default=None)
    out = []
    for r in rows:
        definition = r["definition"] if isinstance(r["definition"], dict) else None
        if r["kind"] == "cluster":
            profile = _profile_out(r["profile"]) if r["members"] else None
        elif cache is None:
            profile = None
        else:
            key = (r["id"], r["name"], r["updated"], r["members"])
            if key not in cache:
                if len(cache) > 512:
                    cache.clear()
                lookback = float((definition or {}).get("lookback_days", 30.0))
                found = segments.member_profile(conn, r["id"], now=r["updated"], lookback_days=lookback)
                cache[key] = _profile_out(found.__dict__) if found else None
            profile = cache[key]
        out.append(
            {
                "id": r["id"],
                "name": r["name"],
                "kind": r["kind"],
                "mode": "dynamic" if r["dynamic"] else "static",
                "current": r["kind"] != "cluster" or r["updated"] == latest_run,
                "size": r["members"],
                "updated": r["updated"],
                "rule": _rule_text(definition["rule"]) if r["kind"] == "rule" and definition else None,
                "definition": definition,
                "history": points.get(r["id"], []),
                "profile": profile,
            }
        )
    return out, rows


def _clusters_report(segs: list[dict[str, Any]], stored: dict[int, dict[str, Any] | None]) -> dict[str, Any]:
    """The latest clustering run from its ``kind='cluster'`` segments (each stores k and the silhouettes)."""
    current = [s for s in segs if s["kind"] == "cluster" and s["current"]]
    if not current:
        return {
            "as_of": None,
            "k": 0,
            "criterion": None,
            "silhouette": None,
            "silhouette_by_k": [],
            "devices": 0,
            "clusters": [],
        }
    first = stored.get(current[0]["id"]) or {}
    by_k = sorted((int(k), float(v)) for k, v in (first.get("silhouette") or {}).items())
    k = int(first.get("k") or len(current))
    devices = sum(s["size"] for s in current)
    clusters = sorted(current, key=lambda s: (-s["size"], s["name"]))
    return {
        "as_of": current[0]["updated"],
        "k": k,
        "criterion": (current[0]["definition"] or {}).get("criterion"),
        "silhouette": dict(by_k).get(k),
        "silhouette_by_k": [{"k": kk, "silhouette": v} for kk, v in by_k],
        "devices": devices,
        "clusters": [
            {
                "id": s["id"],
                "label": s["name"].removeprefix("cluster: "),
                "size": s["size"],
                "share": round(s["size"] / devices, 4) if devices else None,
                "profile": s["profile"],
                "history": s["history"],
            }
            for s in clusters
        ],
    }


_PROFILE_CSV = (
    "devices",
    "median_dwell_min",
    "typical_time",
    "visitor_share",
    "passerby_share",
    "visit_days",
    "weekend_share",
    "recency_days",
    "zones",
)


def _profile_cells(profile: dict[str, Any] | None) -> dict[str, Any]:
    return {f: (profile or {}).get(f) for f in _PROFILE_CSV}


def _format(fmt: str) -> str:
    if fmt not in ("json", "csv"):
        raise HTTPException(400, f"format must be json or csv, got {fmt!r}")
    return fmt


# ---------------------------------------------------------------- the app
def create_app(db_path: str | Path, settings: WebSettings | None = None) -> FastAPI:
    settings = settings or WebSettings()
    db_path = Path(db_path)
    # Migrate once with a writer; requests then only ever read.
    store.connect(db_path).close()
    pool = ReadPool(db_path, settings.read_pool_size)
    refresher = SummaryRefresher(db_path, settings)
    limiter = auth.LoginLimiter()

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

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
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
        client = request.client.host if request.client else "unknown"
        wait = limiter.retry_after(client, body.username)
        if wait > 0:
            raise HTTPException(
                429, "too many failed logins; try again later", headers={"Retry-After": str(int(wait) + 1)}
            )
        conn = store.connect(db_path)
        try:
            user_id = auth.authenticate(conn, body.username, body.password)
            if user_id is None:
                limiter.failed(client, body.username)
                raise HTTPException(401, "wrong user name or password")
            limiter.succeeded(client, body.username)
            token = auth.create_session(conn, user_id, ttl_s=settings.session_ttl_s)
        finally:
            conn.close()
        response.set_cookie(
            auth.SESSION_COOKIE,
            token,
            max_age=int(settings.session_ttl_s),
            httponly=True,
            samesite="strict",
            secure=settings.secure_cookie,
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
        response.delete_cookie(auth.SESSION_COOKIE, path="/", httponly=True, samesite="strict")
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
        """Devices in the store right now (live presence; recent visits as fallback)."""
        out = metrics.now_in_store(
            conn,
            now=settings.clock(),
            window_s=settings.now_window_s,
            presence_max_age_s=settings.presence_max_age_s,
            include_excluded=include_excluded,
        )
        if _format(format) == "csv":
            return _csv_response(out["zones"] or [{"zone": "store", "inside": out["now_in_store"]}], "now")
        return _json(out)

    @app.get("/api/footfall", response_model=Footfall, tags=["metrics"], dependencies=authed)
    def footfall(
        conn: Conn,
        start: str | None = start_q,
        end: str | None = end_q,
        granularity: str = Query("hour", description="hour, day or week"),
        zone: str | None = Query(None, description="one zone (sensor id); default the whole store"),
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
            conn, s, e, granularity=granularity, zone=zone or None, include_excluded=include_excluded
        )
        if _format(format) == "csv":
            return _csv_response(out["series"], f"footfall-{s}-{e}-{granularity}")
        return _json(out)

    @app.get("/api/engagement", response_model=Engagement, tags=["metrics"], dependencies=authed)
    def engagement(
        conn: Conn,
        start: str | None = start_q,
        end: str | None = end_q,
        zone: str | None = Query(None, description="one zone (sensor id)"),
        include_excluded: bool = excl_q,
        format: str = fmt_q,
    ) -> Any:
        """Dwell-time distribution: histogram, buckets, median and mean."""
        s, e = period(start, end, longest=settings.max_days)
        out = metrics.engagement(conn, s, e, zone=zone or None, include_excluded=include_excluded)
        if _format(format) == "csv":
            return _csv_response(out["buckets"] + [{"bucket": "", **h} for h in out["histogram"]], f"dwell-{s}-{e}")
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
        if _format(format) == "csv":
            return _csv_response(out["series"], f"loyalty-{s}-{e}")
        return _json(out)

    @app.get("/api/compare", response_model=Compare, tags=["metrics"], dependencies=authed)
    def compare(conn: Conn, include_excluded: bool = excl_q, format: str = fmt_q) -> Any:
        """Today so far vs the same weekday last week at the same time of day."""
        out = metrics.compare(conn, now=settings.clock(), tz=settings.tz, include_excluded=include_excluded)
        if _format(format) == "csv":
            return _csv_response(out["hourly"], f"compare-{out['today']['date']}")
        return _json(out)

    @app.get("/api/sensors", response_model=Sensors, tags=["health"], dependencies=authed)
    def sensors(conn: Conn, format: str = fmt_q) -> Any:
        """Sensor health: online, offline or stale, with rates and backlog."""
        out = metrics.sensor_health(conn, now=settings.clock(), stale_after_s=settings.stale_after_s)
        if _format(format) == "csv":
            return _csv_response(out["sensors"], "sensors")
        return _json(out)

    @app.get("/api/rejects", response_model=Rejects, tags=["health"], dependencies=authed)
    def rejects(conn: Conn, format: str = fmt_q) -> Any:
        """Messages ingest rejected, by reason."""
        out = metrics.rejects(conn)
        if _format(format) == "csv":
            return _csv_response(out["reasons"], "rejects")
        return _json(out)

    history_q = Query(30, ge=1, le=1000, description="recounts of each segment's size to return (latest N)")
    # Member profiles of rule segments, keyed by (id, name, updated, size): recomputed after a recount only.
    profile_cache: dict[tuple[Any, ...], dict[str, Any] | None] = {}

    @app.get("/api/segments", response_model=Segments, tags=["segments"], dependencies=authed)
    def segment_list(conn: Conn, history: int = history_q, format: str = fmt_q) -> Any:
        """Rule and cluster segments: size now, size over the latest recounts, behaviour profile."""
        out, _ = _segments_report(conn, history, profile_cache)
        if _format(format) == "csv":
            rows = [
                {
                    "id": s["id"],
                    "name": s["name"],
                    "kind": s["kind"],
                    "mode": s["mode"],
                    "current": s["current"],
                    "size": s["size"],
                    "updated": s["updated"],
                    "rule": s["rule"] or "",
                    "lookback_days": (s["definition"] or {}).get("lookback_days", ""),
                    **_profile_cells(s["profile"]),
                }
                for s in out
            ]
            return _csv_response(rows, "segments")
        return _json({"segments": out})

    @app.get("/api/clusters", response_model=Clusters, tags=["segments"], dependencies=authed)
    def cluster_list(conn: Conn, history: int = history_q, format: str = fmt_q) -> Any:
        """The latest behavioural clustering: k, its silhouette, each cluster's label, size and centroid."""
        segs, rows = _segments_report(conn, history, None)
        out = _clusters_report(segs, {r["id"]: r["profile"] for r in rows if r["kind"] == "cluster"})
        if _format(format) == "csv":
            rows = [
                {
                    "k": out["k"],
                    "silhouette": out["silhouette"],
                    "id": c["id"],
                    "label": c["label"],
                    "size": c["size"],
                    "share": c["share"],
                    **_profile_cells(c["profile"]),
                }
                for c in out["clusters"]
            ]
            return _csv_response(rows, "clusters")
        return _json(out)

    # Fleet health for Prometheus (scrape with an API key as the bearer token).
    @app.get("/metrics", tags=["health"], dependencies=authed, response_class=PlainTextResponse)
    def prometheus_metrics(conn: Conn) -> PlainTextResponse:
        text = prometheus.exposition(conn, now=settings.clock(), stale_after_s=settings.stale_after_s)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    # O2O retargeting: reports behind the hub's login; the POS and share links carry their own keys.
    from footfall.hub.o2o import web as o2o_web

    app.include_router(o2o_web.report_router(db_path), dependencies=authed)
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
