"""Fast generator of a realistic store database: N visits over D days, ending now.

A busy store: trading hours with a lunch and an after-work peak, busier weekends, a
capture rate near 30 %, loyal regulars among many one-off visitors, four zones, a dozen
staff phones and a few fixed devices (excluded). Visits are generated with numpy, loaded
with ``executemany`` in one transaction with the summary triggers dropped, then the summary
tables are rebuilt in bulk (``summaries.rebuild_summaries``) -- 5 million visits in a few
minutes. The file is cached under /tmp by its parameters, so repeated runs reuse it.

    python -m footfall.tools.bench.seed_store --visits 5000000 --days 365
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from footfall.hub import store, summaries

ZONES = ("entrance", "floor", "fitting", "checkout")
SITE = "store1"
# Share of the day's visitors starting in each local hour (trading 08-21 with lunch and 17-18 peaks).
_HOURS = np.array([0, 0, 0, 0, 0, 0, 0.2, 0.5, 2, 4, 6, 7.5, 9, 8.5, 7, 6.5, 7, 8.5, 9, 7.5, 5, 2.5, 0.8, 0.2])
_WEEKDAY = np.array([0.85, 0.85, 0.9, 0.95, 1.1, 1.4, 0.9])  # Monday..Sunday


# Part of the cache file name: bump when the generator or the summaries change. Newer schema
# migrations alone need no bump: opening the cached file migrates it.
SEED_FORMAT = 3


def default_path(visits: int, days: int, end: date, seed: int, tz: str) -> Path:
    tag = tz.replace("/", "_")
    return Path(f"/tmp/footfall-seed-v{SEED_FORMAT}-{visits}-{days}-{end.isoformat()}-{seed}-{tag}.db")


def _midnights(days: list[date], tz: ZoneInfo) -> np.ndarray:
    return np.array([datetime(d.year, d.month, d.day, tzinfo=tz).timestamp() for d in days])


def generate(visits: int, days: int, *, end: date, now: float, tz: ZoneInfo, seed: int = 1) -> dict[str, np.ndarray]:
    """Column arrays of the visits; the last day is cut at ``now`` (nothing from the future)."""
    rng = np.random.default_rng(seed)
    day_list = [end - timedelta(days=days - 1 - i) for i in range(days)]
    weights = np.array(
        [
            _WEEKDAY[d.weekday()] * (1.0 + 0.15 * np.sin(2 * np.pi * (d.timetuple().tm_yday - 80) / 365))
            for d in day_list
        ]
    )
    per_day = rng.multinomial(visits, weights / weights.sum())
    day_idx = np.repeat(np.arange(days), per_day)
    n = len(day_idx)
    hour = rng.choice(24, size=n, p=_HOURS / _HOURS.sum())
    midnight = _midnights(day_list, tz)
    first = midnight[day_idx] + hour * 3600 + rng.uniform(0, 3600, n)
    visitor = rng.random(n) < 0.3
    dwell = np.where(
        visitor,
        np.clip(rng.lognormal(np.log(14 * 60), 0.9, n), 60, 8 * 3600),
        np.clip(rng.lognormal(np.log(45), 0.6, n), 5, 290),
    )
    # Devices: regulars (a Zipf-like pool) and a stream of one-off phones (fresh ids).
    regular = rng.random(n) < np.where(visitor, 0.45, 0.12)
    pool = 40_000
    reg_ids = np.minimum((rng.pareto(1.2, n) * 2000).astype(np.int64), pool - 1)
    keys = np.where(regular, reg_ids, pool + np.arange(n))
    zone = np.where(
        visitor, rng.choice(4, size=n, p=[0.2, 0.45, 0.15, 0.2]), rng.choice(4, size=n, p=[0.85, 0.15, 0, 0])
    )
    excluded = np.zeros(n, dtype=np.int64)
    # Staff: 12 phones on about 5 days a week from 8:30 for 8 hours; 3 fixed devices all day.
    staff_day, staff_key, staff_first, staff_dwell = [], [], [], []
    for d in range(days):
        for s in range(12):
            if rng.random() < 5 / 7:
                staff_day.append(d)
                staff_key.append(10_000_000_000 + s)
                staff_first.append(midnight[d] + 8.5 * 3600 + rng.uniform(0, 1800))
                staff_dwell.append(8 * 3600 + rng.uniform(-1800, 1800))
        for f in range(3):
            staff_day.append(d)
            staff_key.append(20_000_000_000 + f)
            staff_first.append(midnight[d] + 60)
            staff_dwell.append(86000)
    ns = len(staff_day)
    # The generated hour is the local hour (exact but on the two DST-change days).
    staff_hour = [int((f - midnight[d]) // 3600) for f, d in zip(staff_first, staff_day, strict=True)]
    cols = {
        "hour": np.concatenate([hour, staff_hour]),
        "day_idx": np.concatenate([day_idx, staff_day]),
        "first": np.concatenate([first, staff_first]),
        "dwell": np.concatenate([dwell, staff_dwell]),
        "visitor": np.concatenate([visitor, np.ones(ns, dtype=bool)]),
        "key": np.concatenate([keys, staff_key]),
        "zone": np.concatenate([zone, np.ones(ns, dtype=np.int64)]),
        "excluded": np.concatenate([excluded, np.ones(ns, dtype=np.int64)]),
    }
    keep = cols["first"] + np.minimum(cols["dwell"], 600) <= now
    order = np.argsort(cols["first"][keep], kind="stable")
    out = {k: v[keep][order] for k, v in cols.items()}
    out["day_list"] = np.array([d.isoformat() for d in day_list])
    return out


def _chunks(cols: dict[str, np.ndarray], now: float, size: int = 250_000):
    """Row tuples for ``executemany`` in chunks (bounded memory), built column-wise: a
    Python loop per row is the slow part."""
    n = len(cols["first"])
    for lo in range(0, n, size):
        part = {k: (v if k == "day_list" else v[lo : lo + size]) for k, v in cols.items()}
        yield list(_rows(part, now, lo))


def _rows(cols: dict[str, np.ndarray], now: float, offset: int = 0):
    first = cols["first"]
    last = np.minimum(first + cols["dwell"], now)
    dwell = last - first
    visitor = cols["visitor"]
    keys = np.char.mod("%016x", cols["key"]).tolist()
    n = len(first)
    zone_idx = cols["zone"]
    zones = np.array(ZONES)[zone_idx].tolist()
    sensors_json = np.array([json.dumps([z]) for z in ZONES])[zone_idx].tolist()
    cls = np.where(visitor, "visitor", "passerby").tolist()
    days = cols["day_list"][cols["day_idx"]].tolist()
    return zip(
        [SITE] * n,
        keys,  # device: raw hashes are never needed by the dashboard
        keys,
        [1] * n,
        first.tolist(),
        last.tolist(),
        dwell.tolist(),
        np.where(visitor, dwell * 0.9, 0.0).tolist(),
        cls,
        (dwell > 4 * 3600).astype(int).tolist(),
        cols["excluded"].astype(int).tolist(),
        zones,
        (-55 - (offset + np.arange(n)) % 30).tolist(),
        sensors_json,
        [1] * n,
        days,
        cols["hour"].astype(int).tolist(),
        strict=True,
    )


def build(
    path: Path, visits: int, days: int, *, tz: str = "Europe/Paris", seed: int = 1, now: float | None = None
) -> Path:
    """Write a seeded store database at ``path`` (replacing it) and return the path."""
    now = time.time() if now is None else now
    zone = ZoneInfo(tz)
    end = datetime.fromtimestamp(now, zone).date()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = store.connect(path)
    # Load with no triggers and no secondary indexes on visits: building an index once by
    # sorting is far faster than five million random B-tree inserts.
    triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
    for name, _ in triggers:
        conn.execute(f"DROP TRIGGER {name}")
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'visits' AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -400000")
    cols = generate(visits, days, end=end, now=now, tz=zone, seed=seed)
    chunks = _chunks(cols, now)
    sql = (
        "INSERT INTO visits (site, device, device_key, randomized, first_seen, last_seen, dwell_s, inside_s, class, "
        "long_stay, excluded, best_sensor, best_rssi, sensors, n_sensor_visits, day, hour) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    with conn:
        for chunk in chunks:
            conn.executemany(sql, chunk)
    with conn:
        for _, index_sql in indexes:
            conn.execute(index_sql)
    with conn:
        conn.execute(
            "INSERT INTO devices (device_key, randomized, first_seen, last_seen, visit_count, total_dwell_s, excluded, "
            "excluded_reason) SELECT device_key, max(randomized), min(first_seen), max(last_seen), count(*), "
            "sum(dwell_s), max(excluded), CASE WHEN max(excluded) THEN 'staff' END FROM visits GROUP BY device_key"
        )
        for i, z in enumerate(ZONES):
            state = "online" if i < 3 else "offline"
            conn.execute(
                "INSERT INTO sensors (site, sensor, state, version, online_since, offline_since, last_message, "
                "messages, message_rate, backlog, dropped, health) VALUES (?, ?, ?, '0.1.0', ?, ?, ?, ?, ?, 0, 0, ?)",
                (
                    SITE,
                    z,
                    state,
                    now - 86400 * 3,
                    now - 1800 if state == "offline" else None,
                    now - 20 if state == "online" else now - 1800,
                    12345 + i,
                    2.5,
                    json.dumps({"cpu_temp_c": 51.0, "frames_per_s": 40.0}),
                ),
            )
        # Live presence every 30 s for the last hour from the three online sensors.
        rng = np.random.default_rng(seed + 1)
        for z in ZONES[:3]:
            for k in range(120):
                ts = now - 3600 + 30 * k
                inside = int(rng.integers(20, 60))
                conn.execute(
                    "INSERT INTO presence VALUES (?, ?, ?, ?, ?)",
                    (SITE, z, ts, inside + int(rng.integers(30, 90)), inside),
                )
        conn.execute("INSERT INTO ingest_rejects VALUES ('schema', 17, ?, 'missing field ''dwell_s''')", (now - 600,))
        conn.execute("INSERT INTO ingest_rejects VALUES ('garbage', 4, ?, 'not JSON')", (now - 7200,))
    summaries.rebuild_summaries(conn)
    with conn:
        for _, trigger_sql in triggers:
            conn.execute(trigger_sql)
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


def seeded(visits: int, days: int, *, tz: str = "Europe/Paris", seed: int = 1, fresh: bool = False) -> Path:
    """The cached seeded database for these parameters (built on first use, today's date)."""
    now = time.time()
    end = datetime.fromtimestamp(now, ZoneInfo(tz)).date()
    path = default_path(visits, days, end, seed, tz)
    done = Path(f"{path}.done")
    if fresh or not done.exists():
        done.unlink(missing_ok=True)
        build(path, visits, days, tz=tz, seed=seed, now=now)
        done.write_text(str(now))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=5_000_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--tz", default="Europe/Paris")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write here instead of the /tmp cache")
    parser.add_argument("--fresh", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if args.out:
        path = build(args.out, args.visits, args.days, tz=args.tz, seed=args.seed)
    else:
        path = seeded(args.visits, args.days, tz=args.tz, seed=args.seed, fresh=args.fresh)
    conn = sqlite3.connect(path)
    n = conn.execute("SELECT count(*) FROM visits").fetchone()[0]
    print(f"{path}: {n} visits, {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
