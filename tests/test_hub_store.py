"""Schema migrations keep what is stored (hub/store.py)."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from footfall import schema, topics
from footfall.hub import store
from footfall.hub.config import HubConfig
from footfall.hub.ingest import ingest_many

SITE = "st"
T0 = float(int(time.time()) - 86400)


def messages(n: int, start: int = 0) -> list[tuple[str, bytes]]:
    out = []
    for i in range(start, start + n):
        first = T0 + i * 7.5
        payload = schema.visit_payload(
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
        )
        out.append((topics.topic(SITE, "s1", "visit"), schema.dumps(payload)))
    return out


def test_migration_9_keeps_rows_and_still_drops_duplicates(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "hub.db")
    conn.row_factory = sqlite3.Row
    assert store.migrate(conn, to=8) == 8
    cfg = HubConfig(site=SITE, db=str(tmp_path / "hub.db"))
    assert Counter(ingest_many(conn, messages(40), cfg)) == {"stored": 40}
    before = {
        table: sorted(map(tuple, conn.execute(f"SELECT * FROM {table}")))
        for table in ("sensor_visits", "visits", "devices")
    }

    assert store.migrate(conn) == len(store.MIGRATIONS)
    after_cols = [r[1] for r in conn.execute("PRAGMA table_info(devices)")]
    for table, rows in before.items():
        order = after_cols if table == "devices" else "*"
        cols = ", ".join(order) if table == "devices" else order
        assert sorted(map(tuple, conn.execute(f"SELECT {cols} FROM {table}"))) == rows, table
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
