"""The central service's FastAPI app: hub sync, the marketing team's pages and API, metrics.

``create_app(cfg)`` returns the app; ``app.state.db`` is the :class:`Database`,
``app.state.metrics`` the in-process counters behind ``/metrics`` (metrics.py).

The routes live with what they serve, one router each: ``sync_web`` (hub sync, and the fleet
report through ``fleet_web``), ``pages_web`` (pages, sign-in, health, metrics), ``stores_web``,
``profiles_web``, ``segments_web``, ``o2o_web``, ``definitions_web``, ``consent_web``; the
dependencies they share are ``deps``. Here they are put together behind the headers every
reply carries.
"""

import gzip
import json
import time
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from footfall.cloud_sync import signing
from footfall.cloud_sync.central import (
    consent_web,
    definitions_web,
    o2o_web,
    pages_web,
    profiles_web,
    schema,
    segments_web,
    stores_web,
    sync_web,
)
from footfall.cloud_sync.central.config import CentralConfig
from footfall.cloud_sync.central.db import Database
from footfall.cloud_sync.central.deps import Deps
from footfall.cloud_sync.central.metrics import Metrics
from footfall.cloud_sync.central.pages_web import STATIC


def create_app(cfg: CentralConfig | None = None, *, db: Database | None = None) -> FastAPI:
    cfg = cfg or CentralConfig()
    # Enough pooled connections for the batches applied at once plus the pages.
    database = db or Database(cfg.db, pool_size=max(1, cfg.sync_concurrency) + 4)
    schema.init(database)
    metrics = Metrics()
    chain_key = cfg.chain_key()
    app = FastAPI(title="Footfall central", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.db = database
    app.state.metrics = metrics
    app.state.cfg = cfg

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        state = request.state  # created before the route runs, so what authenticate_hub puts there shows here
        response = await call_next(request)
        # The centre's clock on every reply, signed for a hub it knows (cloud_sync/clock.py):
        # how a hub with a wrong clock finds out, and by how much, even from a 401.
        server_time = f"{time.time():.3f}"
        response.headers[signing.SERVER_TIME_HEADER] = server_time
        hub_secret = getattr(state, "hub_secret", None)
        nonce = request.headers.get(signing.NONCE_HEADER, "").strip()
        if hub_secret is not None and nonce:
            hub, secret = hub_secret
            response.headers[signing.SERVER_SIGNATURE_HEADER] = signing.server_time_signature(
                secret, hub, nonce, server_time
            )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"
        )
        return response

    deps = Deps(database)
    app.include_router(sync_web.router(database, cfg, metrics, deps))
    app.include_router(pages_web.router(database, cfg, metrics, deps))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)

    app.include_router(stores_web.router(deps))
    app.include_router(profiles_web.router(deps))
    app.include_router(segments_web.router(cfg, deps))
    app.include_router(o2o_web.router(deps))
    app.include_router(definitions_web.router(deps))
    app.include_router(consent_web.router(cfg, chain_key, deps))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    return app


def gzip_json(obj: Any) -> bytes:
    """The sync wire format: compact JSON, gzip (helper for tests and the benchmark)."""
    return gzip.compress(json.dumps(obj, separators=(",", ":")).encode(), compresslevel=6)
