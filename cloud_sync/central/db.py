"""One SQL code path over SQLite (embedded default) and PostgreSQL (production).

Every statement is written once, with ``?`` placeholders, in the subset both engines share
(``INSERT ... ON CONFLICT ... DO UPDATE``, ``RETURNING``, ``DOUBLE PRECISION``, integers as
booleans). The adapter only rewrites placeholders for psycopg and fills two DDL slots
(``{serial}``, ``{key}``, ``{create_view}``). The one deliberate fork is :meth:`Connection.load_rows`, the bulk
load into a temp table: ``COPY`` on PostgreSQL (binary when the column types are given),
``executemany`` on SQLite; what follows the load is shared SQL again.

Connections come from a small pool so FastAPI's worker threads never share one; SQLite runs
in WAL mode with a busy timeout so readers do not block the writer.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Identifier columns (hex ids, store ids) compare byte-wise: with the "C" collation PostgreSQL
# uses memcmp instead of strcoll in every index probe and sort (SQLite's default is binary).
KEY_POSTGRES = 'TEXT COLLATE "C"'


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_value(value: Any) -> str:
    """A value in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float):
        return repr(value)
    return str(value)


class Prepared:
    """Rows encoded for one engine's bulk load (see :meth:`Connection.prepare_rows`)."""

    __slots__ = ("payload",)

    def __init__(self, payload: Any) -> None:
        self.payload = payload


class Connection:
    """A thin wrapper that speaks ``?`` placeholders to either engine."""

    def __init__(self, raw: Any, postgres: bool) -> None:
        self.raw = raw
        self.postgres = postgres
        self._sql_cache: dict[str, str] = {}
        self._depth = 0

    def _sql(self, sql: str) -> str:
        if not self.postgres:
            return sql
        out = self._sql_cache.get(sql)
        if out is None:
            # psycopg treats % as a placeholder marker, so literal percent signs are doubled.
            out = sql.replace("%", "%%").replace("?", "%s")
            self._sql_cache[sql] = out
        return out

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cur = self.raw.cursor()
        cur.execute(self._sql(sql), tuple(params))
        return cur

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        cur = self.raw.cursor()
        cur.executemany(self._sql(sql), list(rows))

    def executescript(self, script: str) -> None:
        for stmt in script.split(";"):
            if stmt.strip():
                self.raw.cursor().execute(stmt)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return list(self.execute(sql, params).fetchall())

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        return self.execute(sql, params).fetchone()

    def scalar(self, sql: str, params: Sequence[Any] = (), default: Any = None) -> Any:
        row = self.one(sql, params)
        return default if row is None or row[0] is None else row[0]

    def dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """Atomic block; nested calls join the outer transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self._depth = 1
        try:
            if self.postgres:
                with self.raw.transaction():
                    yield self
            else:
                # IMMEDIATE: take the write lock up front, so two writers queue on the busy
                # timeout instead of failing half-way with "database is locked".
                self.raw.execute("BEGIN IMMEDIATE")
                try:
                    yield self
                except BaseException:
                    self.raw.execute("ROLLBACK")
                    raise
                self.raw.execute("COMMIT")
        finally:
            self._depth = 0

    def prepare_rows(self, rows: Iterable[Sequence[Any]]) -> Prepared:
        """Encode rows for :meth:`load_rows` ahead of time, e.g. before taking a lock, so the
        Python work of one request overlaps the database work of another."""
        if self.postgres:
            # One COPY text block rather than write_row per row: far less Python per row.
            return Prepared(b"".join(("\t".join(map(_copy_value, row)) + "\n").encode() for row in rows))
        return Prepared(list(rows))

    def load_rows(
        self,
        table: str,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]] | Prepared,
        *,
        types: Sequence[str] | None = None,
    ) -> None:
        """Bulk-load rows into a (temp) table: COPY on PostgreSQL, executemany on SQLite.

        With ``types`` (PostgreSQL type names, one per column) the COPY is binary: psycopg's C
        dumpers write each row, with no text formatting of floats in Python (several times
        faster than the text block of :meth:`prepare_rows`). Values must then match the types
        (a float for ``float8``, an int for ``int8``, a str or None for ``text``)."""
        cols = ", ".join(columns)
        if self.postgres and types is not None and not isinstance(rows, Prepared):
            with self.raw.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(list(types))
                for row in rows:
                    copy.write_row(row)
            return
        data = rows if isinstance(rows, Prepared) else self.prepare_rows(rows)
        if self.postgres:
            with self.raw.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                copy.write(data.payload)
        else:
            rows = data.payload
            marks = ", ".join("?" * len(columns))
            self.raw.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)

    def close(self) -> None:
        self.raw.close()


class Database:
    """A database URL (``postgresql://...`` or a SQLite file path / ``sqlite:///path``) and a
    pool of connections to it."""

    def __init__(self, url: str | Path, *, pool_size: int = 4) -> None:
        text = str(url)
        self.postgres = is_postgres(text)
        self.url = text.removeprefix("sqlite:///") if not self.postgres else text
        self._pool: queue.LifoQueue[Connection] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._opened = 0
        self.pool_size = pool_size

    @property
    def engine(self) -> str:
        return "postgresql" if self.postgres else "sqlite"

    def ddl(self, script: str) -> str:
        serial = "BIGSERIAL PRIMARY KEY" if self.postgres else "INTEGER PRIMARY KEY"
        # PostgreSQL has no CREATE VIEW IF NOT EXISTS, SQLite no CREATE OR REPLACE VIEW.
        view = "CREATE OR REPLACE VIEW" if self.postgres else "CREATE VIEW IF NOT EXISTS"
        key = KEY_POSTGRES if self.postgres else "TEXT"
        return script.replace("{serial}", serial).replace("{key}", key).replace("{create_view}", view)

    def open(self) -> Connection:
        if self.postgres:
            import psycopg

            raw = psycopg.connect(self.url, autocommit=True)
            return Connection(raw, True)
        if self.url != ":memory:":
            Path(self.url).parent.mkdir(parents=True, exist_ok=True)
        raw = sqlite3.connect(self.url, isolation_level=None, check_same_thread=False, timeout=30)
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("PRAGMA synchronous=NORMAL")
        raw.execute("PRAGMA foreign_keys=ON")
        return Connection(raw, False)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """Borrow a pooled connection; a connection left broken by an error is discarded."""
        try:
            conn = self._pool.get_nowait()
        except queue.Empty:
            conn = self.open()
        ok = False
        try:
            yield conn
            ok = True
        finally:
            if ok and conn._depth == 0 and self._pool.qsize() < self.pool_size:
                self._pool.put(conn)
            elif ok and conn._depth == 0:
                conn.close()
            else:
                self._recycle(conn)

    def _recycle(self, conn: Connection) -> None:
        # After an exception a PostgreSQL connection may sit in a failed state; a fresh one is
        # cheaper to reason about than a reset.
        if conn.postgres and conn.raw.info.transaction_status != 0:
            conn.close()
            return
        if self._pool.qsize() < self.pool_size:
            self._pool.put(conn)
        else:
            conn.close()

    def close(self) -> None:
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                return
