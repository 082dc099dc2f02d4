"""The service's pages, sign-in and its own health: the static pages, login/logout/me,
``/healthz`` and ``/metrics``.

Logins are limited per (user, address) as on the hub (``footfall.hub.login_limits``), the address
taken from X-Forwarded-For only behind the proxies named in ``FOOTFALL_TRUSTED_PROXIES``.

(No ``from __future__ import annotations``: FastAPI must resolve the ``Annotated``
dependencies of deps.py in the routes' signatures.)
"""

import math
import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from footfall.cloud_sync.central import auth
from footfall.cloud_sync.central.config import CentralConfig
from footfall.cloud_sync.central.db import Database
from footfall.cloud_sync.central.deps import Deps
from footfall.cloud_sync.central.metrics import Metrics
from footfall.hub import forwarded
from footfall.hub.login_limits import LoginLimiter

STATIC = Path(__file__).parent / "static"


class LoginRequest(BaseModel):
    # Bounded: every name tried is remembered by the login limiter for its window.
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)


def router(database: Database, cfg: CentralConfig, metrics: Metrics, deps: Deps) -> APIRouter:
    """The pages, the session routes, ``/healthz`` and ``/metrics`` (app.py mounts ``/static``)."""
    r = APIRouter()
    Conn, Who = deps.Conn, deps.Who

    @r.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @r.get("/login", include_in_schema=False)
    def login_page() -> FileResponse:
        return FileResponse(STATIC / "login.html")

    @r.get("/o2o", include_in_schema=False)
    def o2o_page() -> FileResponse:
        return FileResponse(STATIC / "o2o.html")

    @r.get("/optout", include_in_schema=False)
    def optout_page() -> FileResponse:
        return FileResponse(STATIC / "optout.html")

    @r.get("/healthz")
    def healthz(conn: Conn) -> dict[str, str]:
        conn.scalar("SELECT 1")
        return {"status": "ok", "engine": database.engine}

    @r.get("/metrics")
    def prometheus(conn: Conn) -> PlainTextResponse:
        return PlainTextResponse(metrics.render(conn), media_type="text/plain; version=0.0.4")

    limiter = LoginLimiter()
    # Central runs behind a TLS proxy on the same machine: without its X-Forwarded-For every
    # login would count against 127.0.0.1, and one attacker's wrong passwords would lock out
    # every user. Followed only from the proxies named in FOOTFALL_TRUSTED_PROXIES.
    trusted_proxies = forwarded.parse_networks(os.environ.get("FOOTFALL_TRUSTED_PROXIES", "").split(","))

    @r.post("/api/v1/login")
    def login(body: LoginRequest, request: Request, response: Response, conn: Conn) -> dict[str, Any]:
        client = forwarded.client_address(
            request.client.host if request.client else None, request.headers.getlist("x-forwarded-for"), trusted_proxies
        )
        # Counted per (user, address) and taken before the password check: see hub/login_limits.py.
        attempt = limiter.begin(body.username, client)
        if not attempt.allowed:
            raise HTTPException(429, f"too many failed logins, retry in {math.ceil(attempt.retry_after)} s")
        verdict: bool | None = None
        try:
            user_id = auth.authenticate(conn, body.username, body.password)
            verdict = user_id is not None
            if user_id is None:
                raise HTTPException(401, "wrong user name or password")
        finally:
            limiter.finish(attempt, verdict)
        token = auth.create_session(conn, user_id)
        response.set_cookie(
            auth.SESSION_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=cfg.secure_cookie,
            max_age=int(auth.SESSION_TTL_S),
        )
        return {"ok": True}

    @r.post("/api/v1/logout")
    def logout(request: Request, conn: Conn) -> JSONResponse:
        auth.end_session(conn, request.cookies.get(auth.SESSION_COOKIE))
        resp = JSONResponse({"ok": True})
        resp.delete_cookie(auth.SESSION_COOKIE)
        return resp

    @r.get("/api/v1/me")
    def me(who: Who) -> dict[str, Any]:
        return {"name": who.name, "kind": who.kind, "role": who.role, "stores": who.stores}

    return r
