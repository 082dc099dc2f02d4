"""Logging in and out of the dashboard: the session cookie, behind the login limits.

``hub/auth.py`` checks the password and keeps the sessions; ``hub/login_limits.py`` counts the
wrong ones. ``hub/api.py`` mounts :func:`router`.
"""

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from footfall.hub import auth, forwarded, store
from footfall.hub.api_models import LoginRequest, Me
from footfall.hub.login_limits import LoginLimiter

if TYPE_CHECKING:
    from footfall.hub.api import WebSettings

# Not __name__: the login lines keep the logger name they have always had, which log filters
# and alerts match.
log = logging.getLogger("footfall.hub.api")


def router(
    db_path: Path,
    settings: "WebSettings",
    trusted_proxies: Sequence[forwarded.IPNetwork],
    over_https: Callable[[Request], bool],
    Who: Any,
) -> APIRouter:
    """/auth/login, /auth/logout and /auth/me; ``Who`` is the app's dependency naming the caller."""
    routes = APIRouter()

    @routes.post("/auth/login", response_model=Me, tags=["auth"])
    def login(body: LoginRequest, request: Request, response: Response) -> Any:
        client = forwarded.client_address(
            request.client.host if request.client else None,
            request.headers.getlist("x-forwarded-for"),
            trusted_proxies,
        )
        # From app.state, not the closure, so a test can swap in a limiter with its own clock.
        limiter: LoginLimiter = request.app.state.limiter
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

    @routes.post("/auth/logout", tags=["auth"])
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

    @routes.get("/auth/me", response_model=Me, tags=["auth"])
    def me(who: Who) -> Any:
        return {"kind": who.kind, "name": who.name}

    return routes
