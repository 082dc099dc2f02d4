"""Store-and-forward queue on disk: outgoing MQTT messages wait here until the broker has them.

One SQLite file (WAL, ``synchronous=NORMAL``): a committed message survives the agent being
killed; after a power cut the last few hundred milliseconds of commits may be lost, which is the
price of not calling fsync on every message on an SD card or router flash.

The queue is bounded by ``max_bytes`` (payload + topic bytes) and optionally ``max_messages``.
When a put goes over a bound, the oldest messages are dropped, cheapest first: presence, health
and status (periodic, superseded by the next one) before visits (the data the customer pays for).
Drops go down to 90% of the bound so that a full buffer drops in chunks with one warning each
rather than one row and one log line per new message. Drop counts per topic kind are kept in
the same file, so they survive restarts and reach the hub in health messages.

One process owns a buffer file at a time (an advisory lock next to it): two agents draining one
queue would double-send and corrupt the counters.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from footfall import topics

log = logging.getLogger(__name__)

# Priority 0 is dropped first when the buffer is full; visits are the valuable data.
_KEEP_LONGEST = {"visit": 1}
_LOW_WATER = 0.9
_PUT_DEFAULTS = (None, None, 1, False, None)
_IN_CHUNK = 500  # bound on "?" placeholders per statement

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    msg_id TEXT,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_priority ON outbox(priority, seq);
CREATE TABLE IF NOT EXISTS dropped (
    kind TEXT PRIMARY KEY,
    count INTEGER NOT NULL
);
"""


class DiskBufferError(RuntimeError):
    """The buffer file cannot be opened or written; ``str()`` says which file and why."""


@dataclass(frozen=True, slots=True)
class BufferedMessage:
    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    msg_id: str | None
    created: float


def topic_kind(topic: str) -> str:
    parsed = topics.parse(topic)
    return parsed[2] if parsed else topic.rsplit("/", 1)[-1] or "other"


class DiskBuffer:
    """FIFO of outgoing messages in one SQLite file; thread-safe, one owning process."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_bytes: int = 50_000_000,
        max_messages: int | None = None,
        *,
        recover: bool = False,
        check: bool = True,
    ) -> None:
        """Open or create the buffer at ``path``.

        A file that is not a readable SQLite database raises :class:`DiskBufferError`; with
        ``recover=True`` it is instead renamed to ``<path>.corrupt-<unix time>`` (kept for a
        post-mortem) and a fresh buffer is started, so a sensor keeps working after flash
        corruption at the cost of the messages that were waiting. ``check`` runs SQLite's
        ``quick_check`` on open, which reads the whole file once.
        """
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if max_messages is not None and max_messages <= 0:
            raise ValueError("max_messages must be positive or None")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self._lock = threading.RLock()
        self._lockfile = self._take_lock()
        try:
            try:
                self._conn = self._open(check)
            except DiskBufferError:
                if not recover:
                    raise
                aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
                log.error("disk buffer %s is unreadable; moved aside to %s and starting empty", self.path, aside)
                for suffix in ("", "-wal", "-shm"):
                    src = Path(f"{self.path}{suffix}")
                    if src.exists():
                        src.rename(f"{aside}{suffix}")
                self._conn = self._open(check)
            row = self._conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(seq), 0) FROM outbox")
            self._count, self._bytes, self._last_seq = row.fetchone()
            self._dropped: dict[str, int] = dict(self._conn.execute("SELECT kind, count FROM dropped").fetchall())
        except BaseException:
            self._lockfile.close()
            raise

    # -- opening -------------------------------------------------------------------------------

    def _take_lock(self) -> Any:
        lock_path = Path(f"{self.path}.lock")
        try:
            lockfile = open(lock_path, "a+b")  # noqa: SIM115 - held for the buffer's lifetime
        except OSError as exc:
            raise DiskBufferError(f"cannot open disk buffer {self.path}: {exc}") from None
        try:
            fcntl.flock(lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lockfile.close()
            raise DiskBufferError(
                f"disk buffer {self.path} is in use by another process (lock {lock_path}); "
                "two agents must not drain one queue"
            ) from None
        return lockfile

    def _open(self, check: bool) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = None
        try:
            # Autocommit mode: transactions are explicit, so a batch is exactly one commit.
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # Keep the WAL from staying at its high-water mark after a long outage.
            conn.execute("PRAGMA journal_size_limit=4194304")
            if check:
                result = conn.execute("PRAGMA quick_check").fetchone()[0]
                if result != "ok":
                    raise sqlite3.DatabaseError(f"quick_check: {result}")
            conn.executescript(_SCHEMA)
            return conn
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise DiskBufferError(
                f"disk buffer {self.path} is not a usable SQLite database ({exc}); "
                "move it aside or open with recover=True to start an empty buffer"
            ) from None

    # -- writing -------------------------------------------------------------------------------

    def put(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, msg_id: str | None = None) -> int:
        """Append one message and commit; return its sequence number."""
        return self.put_many([(topic, payload, qos, retain, msg_id)])[0]

    def put_many(self, items: Iterable[Sequence[Any]]) -> list[int]:
        """Append ``(topic, payload[, qos[, retain[, msg_id]]])`` tuples in one transaction."""
        now = time.time()
        rows = []
        for item in items:
            if not 2 <= len(item) <= 5:
                raise ValueError("each item is (topic, payload[, qos[, retain[, msg_id]]])")
            topic, payload, qos, retain, msg_id = (*item, *_PUT_DEFAULTS[len(item) :])
            if not isinstance(payload, (bytes, bytearray, memoryview)):
                raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
            if qos not in (0, 1, 2):
                raise ValueError(f"qos must be 0, 1 or 2, got {qos!r}")
            size = len(payload) + len(topic.encode())
            if size > self.max_bytes:
                raise ValueError(f"message of {size} bytes can never fit a buffer of max_bytes={self.max_bytes}")
            kind = topic_kind(topic)
            rows.append((topic, kind, _KEEP_LONGEST.get(kind, 0), bytes(payload), size, qos, int(retain), msg_id, now))
        if not rows:
            return []
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.executemany(
                        "INSERT INTO outbox (topic, kind, priority, payload, size, qos, retain, msg_id, created)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                    # We hold the write lock, so AUTOINCREMENT handed out one contiguous range.
                    last = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()[0]
                    seqs = list(range(last - len(rows) + 1, last + 1))
                    added = sum(r[4] for r in rows)
                    dropped = self._enforce_bounds(self._count + len(rows), self._bytes + added)
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise DiskBufferError(f"cannot write to disk buffer {self.path}: {exc}") from None
            self._last_seq = seqs[-1]
            self._count += len(rows) - dropped[0]
            self._bytes += added - dropped[1]
            if dropped[2]:
                for kind, n in dropped[2].items():
                    self._dropped[kind] = self._dropped.get(kind, 0) + n
                self._log_drop(dropped)
        return seqs

    def _enforce_bounds(self, count: int, nbytes: int) -> tuple[int, int, dict[str, int], tuple[int, int]]:
        """Inside the caller's transaction: drop oldest rows, cheapest first, until under 90%.

        Returns (rows dropped, bytes dropped, rows dropped per kind, (first seq, last seq)).
        """
        over_messages = self.max_messages is not None and count > self.max_messages
        if nbytes <= self.max_bytes and not over_messages:
            return 0, 0, {}, (0, 0)
        target_bytes = int(self.max_bytes * _LOW_WATER)
        target_count = int(self.max_messages * _LOW_WATER) if self.max_messages is not None else None
        victims: list[tuple[int, str, int]] = []
        freed_rows = freed_bytes = 0
        for priority in (0, 1):
            cursor = self._conn.execute(
                "SELECT seq, kind, size FROM outbox WHERE priority = ? ORDER BY seq", (priority,)
            )
            for seq, kind, size in cursor:
                if nbytes - freed_bytes <= target_bytes and (
                    target_count is None or count - freed_rows <= target_count
                ):
                    break
                victims.append((seq, kind, size))
                freed_rows += 1
                freed_bytes += size
            cursor.close()
        per_kind: dict[str, int] = {}
        for _, kind, _ in victims:
            per_kind[kind] = per_kind.get(kind, 0) + 1
        self._conn.executemany("DELETE FROM outbox WHERE seq = ?", [(v[0],) for v in victims])
        self._conn.executemany(
            "INSERT INTO dropped (kind, count) VALUES (?, ?) ON CONFLICT(kind) DO UPDATE SET count = count + ?",
            [(kind, n, n) for kind, n in per_kind.items()],
        )
        seqs = [v[0] for v in victims]
        return freed_rows, freed_bytes, per_kind, (min(seqs, default=0), max(seqs, default=0))

    def _log_drop(self, dropped: tuple[int, int, dict[str, int], tuple[int, int]]) -> None:
        rows, nbytes, per_kind, (first, last) = dropped
        what = ", ".join(f"{n} {kind}" for kind, n in sorted(per_kind.items()))
        log.warning(
            "disk buffer %s full (max_bytes=%d, max_messages=%s): dropped the %d oldest messages "
            "(%s; %d bytes; seq %d..%d); backlog now %d messages, %d bytes",
            self.path,
            self.max_bytes,
            self.max_messages,
            rows,
            what,
            nbytes,
            first,
            last,
            self._count,
            self._bytes,
        )

    # -- reading and acknowledging -------------------------------------------------------------

    def peek(self, n: int, after: int = 0) -> list[BufferedMessage]:
        """The oldest ``n`` messages with ``seq > after``, in order; nothing is removed."""
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT seq, topic, payload, qos, retain, msg_id, created FROM outbox"
                    " WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after, n),
                ).fetchall()
            except sqlite3.Error as exc:
                raise DiskBufferError(f"cannot read disk buffer {self.path}: {exc}") from None
        return [BufferedMessage(s, t, p, q, bool(r), m, c) for s, t, p, q, r, m, c in rows]

    def ack(self, seq: int) -> bool:
        """Delete one delivered message; False when it was already gone (acked or dropped)."""
        return self.ack_many([seq]) == 1

    def ack_many(self, seqs: Iterable[int]) -> int:
        """Delete delivered messages in one transaction; return how many were still there."""
        params = list(dict.fromkeys(int(s) for s in seqs))
        if not params:
            return 0
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    removed = freed = 0
                    for i in range(0, len(params), _IN_CHUNK):
                        chunk = params[i : i + _IN_CHUNK]
                        marks = ",".join("?" * len(chunk))
                        n, size = self._conn.execute(
                            f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox WHERE seq IN ({marks})", chunk
                        ).fetchone()
                        self._conn.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", chunk)
                        removed += n
                        freed += size
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise DiskBufferError(f"cannot write to disk buffer {self.path}: {exc}") from None
            self._count -= removed
            self._bytes -= freed
        return removed

    # -- state ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    @property
    def backlog_bytes(self) -> int:
        return self._bytes

    @property
    def last_seq(self) -> int:
        """Highest sequence number ever committed (0 when the buffer has never held anything)."""
        return self._last_seq

    @property
    def dropped(self) -> dict[str, int]:
        """Messages dropped for space since the file was created, per topic kind."""
        with self._lock:
            return dict(self._dropped)

    def stats(self) -> dict[str, Any]:
        """Backlog and drop counts; ``dropped_visits`` apart because a dropped visit is lost data
        (presence and health are superseded by the next one), and a replay's exit status says so."""
        with self._lock:
            return {
                "backlog": self._count,
                "backlog_bytes": self._bytes,
                "dropped": sum(self._dropped.values()),
                "dropped_visits": self._dropped.get("visit", 0),
                "dropped_by_kind": dict(self._dropped),
            }

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None  # type: ignore[assignment]
            self._lockfile.close()

    def __enter__(self) -> DiskBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
