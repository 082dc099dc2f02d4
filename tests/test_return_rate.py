"""The return rate's earlier visits: what the hub's estimate counted as a visit, not only what an
agent classed one (docs/metrics.md, "Return rate"). Real SQLite files, the hub's own schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from footfall.hub import link, retention, store
from footfall.hub.config import HubConfig

DAY = 86400.0
T0 = 1_793_000_000.0  # 2026-10-26 UTC


def _visit(conn: sqlite3.Connection, key: str, day: str, cls: str) -> None:
    conn.execute(
        """INSERT INTO visits (site, device, device_key, randomized, first_seen, last_seen, dwell_s, inside_s,
                               class, long_stay, best_sensor, sensors, n_sensor_visits, day, hour)
           VALUES ('st', ?, ?, 0, ?, ?, 60, 0, ?, 0, 's1', '["s1"]', 1, ?, 12)""",
        (key, key, T0, T0 + 60, cls, day),
    )


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    c = store.connect(tmp_path / "hub.db")
    # a: came yesterday for two minutes, which the agent classed a passer-by and the hub's
    # estimate a visit; b: a visit by both; c: walked past yesterday (neither); d: new today;
    # e: counted by the estimate today only (today is not "before").
    _visit(c, "a", "2026-10-26", "passerby")
    _visit(c, "b", "2026-10-26", "visitor")
    _visit(c, "c", "2026-10-26", "passerby")
    c.executemany(
        "INSERT INTO estimated_visitors (device_key, day) VALUES (?, ?)",
        [("a", "2026-10-26"), ("b", "2026-10-26"), ("e", "2026-10-27")],
    )
    return c


def test_an_earlier_visit_is_one_the_estimate_or_the_agent_counted(conn: sqlite3.Connection) -> None:
    out = link._returning(conn, "2026-10-27", ["a", "b", "c", "d", "e"])
    assert out["return_rate"] == 0.4 and out["return_rate_heard"] == 5
    assert out["return_rate_low"] < 0.4 < out["return_rate_high"]
    # A database linked before the estimate kept its visitors still reads the agents' class.
    conn.execute("DELETE FROM estimated_visitors")
    assert link._returning(conn, "2026-10-27", ["a", "b", "c", "d"])["return_rate"] == 0.25
    assert link._returning(conn, "2026-10-27", [])["return_rate"] is None


def test_the_estimated_visitors_are_kept_as_long_as_the_visits(conn: sqlite3.Connection) -> None:
    config = HubConfig(site="st")
    config.retention.raw_days = 1
    retention.apply(conn, config, now=T0 + 1.5 * DAY)  # cutoff: 2026-10-26 is kept
    assert conn.execute("SELECT count(*) FROM estimated_visitors").fetchone()[0] == 3
    retention.apply(conn, config, now=T0 + 2.5 * DAY)
    assert [r[0] for r in conn.execute("SELECT day FROM estimated_visitors")] == ["2026-10-27"]
