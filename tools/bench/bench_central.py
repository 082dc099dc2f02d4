"""Central service: profile upserts per second into PostgreSQL and SQLite, bytes per profile
on the wire.

Three measurements, each run in this process against both engines:

- **bulk upsert** (``profiles.upsert_profiles``): the store path of a batch's profile records:
  load into a temp table (``COPY`` on PostgreSQL, ``executemany`` on SQLite), one
  ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` into ``profile_stores`` and the
  ``mac_hash`` identifiers of new devices (the chain-wide ``profiles`` is a view). Run three times: new profiles
  (inserts), the same profiles again with a newer timestamp (updates: the usual case), and
  updates from two connections at once ("2 writers": as concurrent hub requests, one encodes
  its rows while the other writes).
- **batch apply** (``wire.decode_envelope`` + ``apply.apply_batch``): the server-side path of
  a batch's JSON after inflating: typed decoding and validation of the records, batch id
  claimed, the upsert, hub counters updated (``bench_sync.py`` measures it over HTTP).
- **wire size**: realistic hub profile records (as ``cloud_sync/profiles.py`` builds them) in
  batches of 500, compact JSON vs gzip (level 6, as the hub sends).

Ratios printed: PostgreSQL vs SQLite, update vs insert, batch apply vs bulk upsert, gzip vs
raw. Rates are per wall-clock second on a shared 2-core machine with PostgreSQL on the
same host, so they include the neighbours' load. Usage::

    .venv/bin/python -m footfall.tools.bench.bench_central --profiles 100000
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from footfall.cloud_sync.central import apply, profiles, schema, validation
from footfall.cloud_sync.central.db import Database
from footfall.cloud_sync.central.testing import postgres_available, throwaway_postgres
from footfall.cloud_sync.central.wire import decode_envelope

BATCH = 5000
WIRE_BATCH = 500
CLUSTERS = ("lunch-time regulars", "quick look-ins under 5 min", "weekend browsers", "evening shoppers")


def hub_profile(rng: random.Random, device: str, store: str, t0: float) -> dict[str, Any]:
    """A profile record shaped like the hub's outbox builds it."""
    visits = rng.randint(1, 30)
    first = t0 - rng.uniform(0, 90 * 86400)
    last = first + rng.uniform(0, 30 * 86400)
    dwell = round(rng.uniform(60, 1800) * visits, 1)
    segs = [{"name": f"cluster: {rng.choice(CLUSTERS)}", "kind": "cluster", "since": round(first, 3)}]
    if rng.random() < 0.3:
        segs.append({"name": "loyal", "kind": "rule", "since": round(last, 3)})
    return {
        "kind": "profile",
        "key": device,
        "data": {
            "device": device,
            "site": store,
            "randomized": rng.random() < 0.6,
            "first_seen": round(first, 3),
            "last_seen": round(last, 3),
            "visits": visits,
            "dwell_total_s": dwell,
            "dwell_mean_s": round(dwell / visits, 1),
            "dwell_median_s": round(dwell / visits * rng.uniform(0.7, 1.1), 1),
            "excluded": False,
            "cluster": segs[0]["name"].removeprefix("cluster: "),
            "segments": segs,
            "partner_hash": None,
        },
    }


def make_records(n: int, stores: int, seed: int = 7) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(seed)
    t0 = 1_790_000_000.0
    # A chain: most devices in one store, some in two or three (what the merge is for).
    devices = [rng.randbytes(16).hex() for _ in range(int(n / 1.3))]
    out = []
    while len(out) < n:
        d = rng.choice(devices)
        store = f"store-{rng.randrange(stores):03d}"
        out.append((store, hub_profile(rng, d, store, t0)))
    return out


def backend_cpu(conn: Any) -> float:
    """CPU seconds used so far by the PostgreSQL backend serving ``conn`` (same host)."""
    pid = conn.scalar("SELECT pg_backend_pid()")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bulk(db: Database, rows: list[tuple]) -> tuple[float, float]:
    """Upsert ``rows`` in bulk batches; (wall seconds, CPU seconds of this process + backend)."""
    with db.connect() as conn:
        server0 = backend_cpu(conn) if db.postgres else 0.0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(0, len(rows), BATCH):
            profiles.upsert_profiles(conn, rows[i : i + BATCH])
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0 + ((backend_cpu(conn) - server0) if db.postgres else 0.0)
    return wall, cpu


def parallel_bulk(db: Database, rows: list[tuple], workers: int) -> float:
    """Wall seconds to upsert ``rows`` from ``workers`` connections at once, each taking whole
    stores, as concurrent hub requests do."""
    shards: list[list[tuple]] = [[] for _ in range(workers)]
    for row in rows:
        shards[sum(row[1].encode()) % workers].append(row)
    conns = [db.open() for _ in range(workers)]

    def work(conn: Any, shard: list[tuple]) -> None:
        for i in range(0, len(shard), BATCH):
            profiles.upsert_profiles(conn, shard[i : i + BATCH])

    threads = [threading.Thread(target=work, args=(c, sh)) for c, sh in zip(conns, shards, strict=True)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    for c in conns:
        c.close()
    return wall


def bench_engine(db: Database, records: list[tuple[str, dict[str, Any]]]) -> dict[str, float]:
    schema.init(db)
    rows = [validation.profile_row(store, rec["key"], rec["data"]) for store, rec in records]
    # The store path keeps the newest row per (device, store); measure on distinct rows.
    rows = list({(r[0], r[1]): r for r in rows}.values())
    n = len(rows)
    out: dict[str, float] = {"rows": n}
    wall, cpu = bulk(db, rows)
    out.update(insert=n / wall, insert_cpu=n / cpu)
    wall, cpu = bulk(db, [r[:9] + (r[9] + 3600.0,) for r in rows])
    out.update(update=n / wall, update_cpu=n / cpu)
    out["update_2"] = n / parallel_bulk(db, [r[:9] + (r[9] + 7200.0,) for r in rows], 2)
    with db.connect() as conn:
        for t in ("profile_stores", "identifiers", "applied_batches"):
            conn.execute(f"DELETE FROM {t}")

    by_store: dict[str, list[dict[str, Any]]] = {}
    for store, rec in records:
        by_store.setdefault(store, []).append(rec)
    batches = []
    for store, recs in by_store.items():
        for i in range(0, len(recs), BATCH):
            doc = {"v": 1, "hub": store, "batch_id": f"{store}-{i}", "seq": i, "records": recs[i : i + BATCH]}
            batches.append((store, json.dumps(doc, separators=(",", ":")).encode()))
    with db.connect() as conn:
        for store in by_store:
            conn.execute(
                "INSERT INTO hubs (hub_id, secret, created) VALUES (?, 'x', 0) ON CONFLICT (hub_id) DO NOTHING",
                (store,),
            )
    start = time.perf_counter()
    for store, raw in batches:
        apply.apply_batch(db, store, decode_envelope(raw))
    out["apply"] = len(records) / (time.perf_counter() - start)
    return out


def wire(records: list[tuple[str, dict[str, Any]]]) -> dict[str, float]:
    raw = gz = n = 0
    for i in range(0, len(records), WIRE_BATCH):
        chunk = [rec for _, rec in records[i : i + WIRE_BATCH]]
        doc = {"v": 1, "hub": "store-000", "batch_id": "x" * 32, "seq": i, "created": 1.0, "records": chunk}
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        raw += len(text)
        gz += len(gzip.compress(text, compresslevel=6))
        n += len(chunk)
    return {"raw": raw / n, "gzip": gz / n}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="central profile upsert rate and wire size")
    p.add_argument("--profiles", type=int, default=100_000)
    p.add_argument("--stores", type=int, default=20)
    p.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin URL")
    args = p.parse_args(argv)
    records = make_records(args.profiles, args.stores)
    print(f"{args.profiles} profile records over {args.stores} stores, bulk batches of {BATCH}")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = bench_engine(Database(Path(tmp) / "central.db"), records)
    if postgres_available(args.pg):
        with throwaway_postgres(args.pg, prefix="footfall_bench") as url:
            db = Database(url)
            results["postgresql"] = bench_engine(db, records)
            db.close()
    else:
        print("PostgreSQL not reachable: skipped")
    print(f"{'engine':<12}{'insert/s':>10}{'(cpu)':>9}{'update/s':>10}{'(cpu)':>9}{'2 writers':>11}{'apply/s':>9}")
    print(f"(apply: decode + validate + apply of batches of {BATCH}, as the centre does after inflating)")
    for engine, r in results.items():
        print(
            f"{engine:<12}{r['insert']:>10,.0f}{r['insert_cpu']:>9,.0f}{r['update']:>10,.0f}{r['update_cpu']:>9,.0f}"
            f"{r['update_2']:>11,.0f}{r['apply']:>9,.0f}"
        )
    print("(cpu): per CPU-second of this process plus, for PostgreSQL, its backend; the others per wall second")
    for engine, r in results.items():
        print(
            f"{engine}: update/insert {r['update'] / r['insert']:.2f}x, "
            f"batch apply/bulk {r['apply'] / r['update']:.2f}x"
        )
    if len(results) == 2:
        pg, lite = results["postgresql"], results["sqlite"]
        keys = ("insert", "insert_cpu", "update", "update_cpu", "update_2", "apply")
        print("postgresql/sqlite: " + ", ".join(f"{k} {pg[k] / lite[k]:.2f}x" for k in keys))
        best = max(pg["insert"], pg["update"], pg["update_2"])
        print(
            f"target >= 20,000/s into PostgreSQL (wall): best measured {best:,.0f}/s "
            f"({'met' if best >= 20_000 else 'NOT met'})"
        )
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    w = wire(records)
    print(
        f"wire: {w['raw']:.0f} B/profile raw JSON, {w['gzip']:.0f} B/profile gzip "
        f"(gzip/raw {w['gzip'] / w['raw']:.2f}x; {1e6 / w['gzip']:,.0f} profiles per MB sent)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
