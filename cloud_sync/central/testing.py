"""Helpers for tests and benchmarks that need a real central service: a throwaway PostgreSQL
database, a uvicorn server on a free port in a thread, signed sync requests.

Used by ``tests/test_central*.py``, ``tools/bench/bench_central.py`` and the hub side's
end-to-end tests; nothing here is imported by the service itself.
"""

from __future__ import annotations

import gzip
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from footfall.cloud_sync import signing

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres_available(url: str = PG_ADMIN_URL) -> bool:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3):
            return True
    except Exception:
        return False


@contextmanager
def throwaway_postgres(admin_url: str = PG_ADMIN_URL, prefix: str = "footfall_test") -> Iterator[str]:
    """Create ``<prefix>_<random>``, yield its URL, drop it afterwards."""
    import psycopg

    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1 in a daemon thread; ``stop()`` and ``start()``
    again on the same port (to simulate the centre going down and coming back)."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> ServerThread:
        import uvicorn

        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            if self._thread is not None:
                self._thread.join(10)
            self._server = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def batch_body(hub: str, batch_id: str, seq: int, records: list[dict[str, Any]]) -> bytes:
    doc = {"v": 1, "hub": hub, "batch_id": batch_id, "seq": seq, "created": time.time(), "records": records}
    return gzip.compress(json.dumps(doc, separators=(",", ":")).encode())


def signed_batch(
    hub: str, secret: str | bytes, batch_id: str, seq: int, records: list[dict[str, Any]], **kw: Any
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a ``POST /api/v1/sync/batches`` exactly as a hub sends it."""
    key = secret.encode() if isinstance(secret, str) else secret
    body = batch_body(hub, batch_id, seq, records)
    headers = signing.sign_headers(key, hub, "POST", "/api/v1/sync/batches", body, **kw)
    headers.update({"Content-Type": "application/json", "Content-Encoding": "gzip", "Idempotency-Key": batch_id})
    return body, headers


def signed_get(hub: str, secret: str | bytes, path_with_query: str, **kw: Any) -> dict[str, str]:
    key = secret.encode() if isinstance(secret, str) else secret
    return signing.sign_headers(key, hub, "GET", path_with_query, b"", **kw)


def profile_record(device: str, **data: Any) -> dict[str, Any]:
    base = {"device": device, "first_seen": 1_790_000_000.0, "last_seen": 1_790_003_600.0, "visits": 1}
    return {"kind": "profile", "key": device, "data": {**base, **data}}


def reset(db: Any) -> None:
    """Empty every table of the central schema (a session-wide test database between tests)."""
    import re

    from footfall.cloud_sync.central import schema

    ddl = schema.SCHEMA + "".join(text for _, text in schema.MIGRATIONS)
    # meta stays: it records which migrations the schema already has.
    tables = [t for t in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", ddl) if t != "meta"]
    # DELETE rather than TRUNCATE: on a handful of rows it is several times faster.
    with db.connect() as conn, conn.transaction():
        for t in tables:
            conn.execute(f"DELETE FROM {t}")
