"""DiskBuffer: a real SQLite file, real process kills."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from footfall import payloads, topics
from footfall.edge_agent.buffer import DiskBuffer, DiskBufferError

VISIT = topics.topic("s1", "n1", "visit")
PRESENCE = topics.topic("s1", "n1", "presence")
HEALTH = topics.topic("s1", "n1", "health")


ROW = 128  # bytes a row counts for: payload + topic


def body(i: int, size: int = 100) -> bytes:
    return f"{i:08d}".encode().ljust(size, b".")


def msg(topic: str, i: int) -> tuple[str, bytes]:
    """A message that counts exactly ROW bytes whatever its topic."""
    return topic, body(i, ROW - len(topic))


def test_fifo_put_peek_ack(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path / "q.db") as buf:
        assert len(buf) == 0 and buf.backlog_bytes == 0 and buf.peek(10) == []
        seqs = [buf.put(VISIT, body(i), msg_id=f"id{i}") for i in range(5)]
        seqs += buf.put_many([(PRESENCE, body(5)), (PRESENCE, body(6), 0, True, "id6")])
        assert seqs == sorted(seqs) and len(set(seqs)) == 7
        assert len(buf) == 7
        assert buf.backlog_bytes == 5 * (100 + len(VISIT)) + 2 * (100 + len(PRESENCE))
        rows = buf.peek(3)
        assert [r.payload for r in rows] == [body(0), body(1), body(2)]
        assert rows[0].topic == VISIT and rows[0].qos == 1 and rows[0].retain is False and rows[0].msg_id == "id0"
        last = buf.peek(10, after=seqs[5])
        assert len(last) == 1 and last[0].qos == 0 and last[0].retain is True and last[0].msg_id == "id6"
        assert buf.ack(seqs[1]) is True
        assert buf.ack(seqs[1]) is False  # already gone
        assert buf.ack_many([seqs[0], seqs[2], 999_999]) == 2
        assert [r.seq for r in buf.peek(10)] == seqs[3:]
        assert len(buf) == 4 and buf.backlog_bytes == 2 * (100 + len(VISIT)) + 2 * (100 + len(PRESENCE))
        assert buf.last_seq == seqs[-1]


def test_bad_input_is_refused_clearly(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path / "q.db", max_bytes=1000) as buf:
        with pytest.raises(TypeError, match="bytes"):
            buf.put(VISIT, "text")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="qos"):
            buf.put(VISIT, b"x", qos=3)
        with pytest.raises(ValueError, match="never fit"):
            buf.put(VISIT, b"x" * 2000)
        with pytest.raises(ValueError, match="topic, payload"):
            buf.put_many([(VISIT,)])
        assert len(buf) == 0


def test_survives_reopen_with_counters(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    with DiskBuffer(path, max_messages=10) as buf:
        buf.put_many([(PRESENCE, body(i)) for i in range(12)])
        dropped = buf.dropped
        kept = [r.payload for r in buf.peek(100)]
    assert dropped == {"presence": 12 - len(kept)}
    with DiskBuffer(path, max_messages=10) as buf:
        assert [r.payload for r in buf.peek(100)] == kept
        assert buf.dropped == dropped
        assert buf.stats() == {
            "backlog": len(kept),
            "backlog_bytes": len(kept) * (100 + len(PRESENCE)),
            "dropped": 12 - len(kept),
            "dropped_visits": 0,
            "dropped_by_kind": dropped,
        }
        # Sequence numbers are never reused, even after everything was acked.
        top = buf.last_seq
        buf.ack_many(r.seq for r in buf.peek(100))
    with DiskBuffer(path) as buf:
        assert len(buf) == 0 and buf.put(VISIT, b"x") == top + 1


def test_full_buffer_drops_oldest_presence_before_visits(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with DiskBuffer(tmp_path / "q.db", max_bytes=20 * ROW) as buf:
        # Oldest first: 5 visits, then 10 presence, 5 health: exactly full.
        buf.put_many([msg(VISIT, i) for i in range(5)])
        buf.put_many([msg(PRESENCE, 100 + i) for i in range(10)])
        buf.put_many([msg(HEALTH, 200 + i) for i in range(5)])
        assert len(buf) == 20 and buf.backlog_bytes == 20 * ROW and buf.dropped == {}
        with caplog.at_level(logging.WARNING, logger="footfall.edge_agent.buffer"):
            buf.put(*msg(VISIT, 5))
        # Over the bound: down to 90% (18 rows), the oldest non-visits go first.
        assert len(buf) == 18 and buf.backlog_bytes == 18 * ROW
        assert buf.dropped == {"presence": 3}
        left = [r.payload for r in buf.peek(100)]
        expect = [msg(VISIT, i) for i in range(5)] + [msg(PRESENCE, 100 + i) for i in range(3, 10)]
        expect += [msg(HEALTH, 200 + i) for i in range(5)] + [msg(VISIT, 5)]
        assert left == [m[1] for m in expect]
        warning = " ".join(r.getMessage() for r in caplog.records)
        assert "dropped the 3 oldest messages" in warning and "3 presence" in warning

        # Only visits left: then the oldest visits go.
        buf.ack_many(r.seq for r in buf.peek(100) if not r.topic.endswith("visit"))
        buf.put_many([msg(VISIT, 300 + i) for i in range(20)])
        assert buf.dropped == {"presence": 3, "visit": 8}
        left = [r.payload for r in buf.peek(100)]
        all_visits = [msg(VISIT, i)[1] for i in range(6)] + [msg(VISIT, 300 + i)[1] for i in range(20)]
        assert left == all_visits[8:]  # the newest survive
        assert buf.stats()["dropped"] == 11
        # the lost data apart from the superseded kinds, and kept across a reopen like the rest
        assert buf.stats()["dropped_visits"] == 8
    with DiskBuffer(tmp_path / "q.db", max_bytes=20 * ROW) as buf:
        assert buf.stats()["dropped_visits"] == 8


def test_corrupt_file_gives_a_clear_error_and_can_be_recovered(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    path.write_bytes(b"this is not an sqlite database at all" * 100)
    with pytest.raises(DiskBufferError, match=r"q\.db is not a usable SQLite database.*recover=True"):
        DiskBuffer(path)
    assert path.read_bytes().startswith(b"this is not")  # never touched without recover
    with DiskBuffer(path, recover=True) as buf:
        assert len(buf) == 0
        buf.put(VISIT, b"fresh")
    aside = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")


def test_damaged_pages_are_detected_on_open(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    with DiskBuffer(path) as buf:
        buf.put_many([(VISIT, body(i, 2000)) for i in range(200)])
    # Fold the WAL in so the damage below hits the only copy of those pages.
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(2 * page, len(data) - page, 7 * page):
        data[offset : offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(DiskBufferError, match="not a usable SQLite database"):
        DiskBuffer(path)


def test_unopenable_path(tmp_path: Path) -> None:
    with pytest.raises(DiskBufferError, match="cannot open disk buffer"):
        DiskBuffer(tmp_path / "missing-dir" / "q.db")
    (tmp_path / "adir").mkdir()
    with pytest.raises(DiskBufferError, match="adir"):
        DiskBuffer(tmp_path / "adir")


def test_one_owner_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    first = DiskBuffer(path)
    with pytest.raises(DiskBufferError, match="in use by another process"):
        DiskBuffer(path)
    first.close()
    DiskBuffer(path).close()


_WRITER = textwrap.dedent(
    """
    import sys
    from footfall.edge_agent.buffer import DiskBuffer
    buf = DiskBuffer(sys.argv[1])
    i = 0
    while True:
        # Batches of 10 in one transaction: after a kill a batch is all there or not at all.
        rows = [("footfall/s1/n1/visit", b"%08d" % (i + k) + b"." * 500, 1, False, str(i + k)) for k in range(10)]
        buf.put_many(rows)
        i += 10
        print(i, flush=True)
    """
)


def test_sigkill_mid_write_keeps_everything_committed(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    committed = 0
    for line in proc.stdout:
        committed = int(line)
        if committed >= 3000:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with DiskBuffer(path) as buf:  # opens (quick_check passes) and the dead writer's lock is gone
        rows = buf.peek(10**6)
        ids = [int(r.msg_id) for r in rows]
        # Everything the writer saw committed is there, in order, with no torn batch.
        assert len(ids) >= committed and len(ids) % 10 == 0
        assert ids == list(range(len(ids)))
        assert rows[0].payload.startswith(b"00000000")
        assert buf.backlog_bytes == sum(len(r.payload) + len(r.topic) for r in rows)
        buf.put(VISIT, payloads.dumps({"after": "restart"}))
        assert len(buf) == len(ids) + 1
