"""What the central app's route groups share: a pooled connection per request, the caller
(a session cookie or an API key) and the role check, as FastAPI dependencies.

Built once per app (:class:`Deps`), so every route of a request uses one connection, however
many of its dependencies ask for it.

(No ``from __future__ import annotations``: FastAPI must resolve the ``Annotated``
dependencies built inside :class:`Deps`, here and in the ``*_web.py`` routes that use them.)
"""

import re
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from footfall.cloud_sync.central import auth
from footfall.cloud_sync.central.db import Connection, Database

_DEVICE = re.compile(r"^[0-9A-Za-z_.:-]{1,128}$")


class Deps:
    """``Conn`` and ``Who`` for the routes' signatures; ``principal`` for routers that build
    their own ``Who`` (fleet_web.py)."""

    def __init__(self, database: Database) -> None:
        def conn_dep() -> Iterator[Connection]:
            with database.connect() as conn:
                yield conn

        Conn = Annotated[Connection, Depends(conn_dep)]

        def principal(request: Request, conn: Conn) -> auth.Principal:
            who = auth.session_principal(conn, request.cookies.get(auth.SESSION_COOKIE))
            if who is None:
                header = request.headers.get("authorization", "")
                key = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key")
                who = auth.api_key_principal(conn, key)
            if who is None:
                raise HTTPException(401, "login or an API key required")
            return who

        Who = Annotated[auth.Principal, Depends(principal)]

        self.Conn = Conn
        self.principal = principal
        self.Who = Who


def need(who: auth.Principal, role: str) -> None:
    if not who.allows(role):
        raise HTTPException(403, f"needs the {role} role")
