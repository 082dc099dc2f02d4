"""Schema migrations keep what is stored (hub/store.py)."""

from __future__ import annotations

import json
import operator
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from footfall import payloads, topics
from footfall.hub import ingest, ingest_writer, store
from footfall.hub.config import HubConfig
from footfall.hub.ingest import ingest_many

SITE = "st"
T0 = float(int(time.time()) - 86400)


def messages(n: int, start: int = 0, v2: bool = False) -> list[tuple[str, bytes]]:
    """Visits of version 1, or 2 with the burst and minute evidence."""
    out = []
    for i in range(start, start + n):
        first = T0 + i * 7.5
        evidence: dict[str, Any] = {}
        if v2:
            minutes = int((first + 90) // 60) - int(first // 60) + 1
            evidence = {"bursts": 2, "burst_offsets": [0.0, 45.25], "rssi_minutes": [-50] + [None] * (minutes - 1)}
        payload = payloads.visit_payload(
            site=SITE,
            sensor="s1",
            device=f"{i % 13:032x}",
            randomized=False,
            first_seen=first,
            last_seen=first + 90,
            inside_s=80,
            sightings=9,
            rssi_max=-50,
            rssi_mean=-55.0,
            visit_class="visitor",
            long_stay=False,
            fingerprint="fp",
            ie_ids=[0, 1],
            **evidence,
        )
        out.append((topics.topic(SITE, "s1", "visit"), payloads.dumps(payload)))
    return out


V2_COLUMNS = ("bursts", "burst_offsets", "rssi_minutes")  # migration 10


@contextmanager
def old_ingest() -> Iterator[None]:
    """Ingest as a build before migration 10 did: without the version 2 visit columns."""
    columns = [c for c in ingest.SENSOR_VISIT_COLUMNS if c not in V2_COLUMNS]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ingest_writer, "_row_values", operator.itemgetter(*columns))
        mp.setattr(
            ingest_writer,
            "_INSERT_SENSOR_VISIT",
            f"INSERT INTO sensor_visits ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        )
        yield


def test_migration_9_keeps_rows_and_still_drops_duplicates(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "hub.db")
    conn.row_factory = sqlite3.Row
    assert store.migrate(conn, to=8) == 8
    cfg = HubConfig(site=SITE, db=str(tmp_path / "hub.db"))
    with old_ingest():
        assert Counter(ingest_many(conn, messages(40), cfg)) == {"stored": 40}
    before = {
        table: sorted(map(tuple, conn.execute(f"SELECT * FROM {table}")))
        for table in ("sensor_visits", "visits", "devices")
    }
    columns = {table: [r[1] for r in conn.execute(f"PRAGMA table_info({table})")] for table in before}

    assert store.migrate(conn) == len(store.MIGRATIONS)
    after_cols = [r[1] for r in conn.execute("PRAGMA table_info(devices)")]
    for table, rows in before.items():
        order = after_cols if table == "devices" else columns[table]
        assert sorted(map(tuple, conn.execute(f"SELECT {', '.join(order)} FROM {table}"))) == rows, table
    assert "sensor_visits_key" in {r[1] for r in conn.execute("PRAGMA index_list(sensor_visits)")}
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("SELECT rowid FROM devices")  # WITHOUT ROWID: one b-tree

    # Replays of what the old schema stored are duplicates; new visits still merge and count.
    outcomes = Counter(ingest_many(conn, messages(40) + messages(10, start=40), cfg))
    assert outcomes == {"duplicate": 40, "stored": 10}
    assert conn.execute("SELECT count(*) FROM sensor_visits").fetchone()[0] == 50
    assert (
        conn.execute("SELECT sum(visit_count) FROM devices").fetchone()[0]
        == conn.execute("SELECT count(*) FROM visits").fetchone()[0]
    )


def test_migration_10_adds_the_version_2_columns_to_a_database_of_version_1_visits(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "hub.db")
    conn.row_factory = sqlite3.Row
    assert store.migrate(conn, to=9) == 9
    cfg = HubConfig(site=SITE, db=str(tmp_path / "hub.db"))
    with old_ingest():
        assert Counter(ingest_many(conn, messages(30), cfg)) == {"stored": 30}
    old_columns = [r[1] for r in conn.execute("PRAGMA table_info(sensor_visits)")]
    before = sorted(map(tuple, conn.execute("SELECT * FROM sensor_visits")))

    assert store.migrate(conn) == len(store.MIGRATIONS)
    columns = {r[1]: r[2] for r in conn.execute("PRAGMA table_info(sensor_visits)")}
    assert {name: columns[name] for name in V2_COLUMNS} == {
        "bursts": "INTEGER",
        "burst_offsets": "TEXT",
        "rssi_minutes": "TEXT",
    }
    assert sorted(map(tuple, conn.execute(f"SELECT {', '.join(old_columns)} FROM sensor_visits"))) == before
    assert (
        conn.execute(
            "SELECT count(*) FROM sensor_visits WHERE bursts IS NULL AND burst_offsets IS NULL AND rssi_minutes IS NULL"
        ).fetchone()[0]
        == 30
    )

    # Version 1 replays stay duplicates; version 1 and 2 visits are stored side by side.
    v2 = messages(10, start=30, v2=True)
    outcomes = Counter(ingest_many(conn, messages(30) + messages(5, start=40) + v2, cfg))
    assert outcomes == {"duplicate": 30, "stored": 15}
    rows = conn.execute(
        "SELECT first_seen, last_seen, bursts, burst_offsets, rssi_minutes FROM sensor_visits WHERE bursts IS NOT NULL"
    ).fetchall()
    assert len(rows) == 10
    for first, last, bursts, offsets, minutes in rows:
        assert (bursts, offsets) == (2, "[0.0,45.2]")  # compact JSON, as channels
        assert json.loads(minutes) == [-50] + [None] * int(last // 60 - first // 60)
        assert " " not in minutes
    assert conn.execute("SELECT count(*) FROM sensor_visits WHERE bursts IS NULL").fetchone()[0] == 35
