"""What ``bench_sync`` measures: one batch's stages, the bulk-upsert baseline, one hub, the load test.

With ``--size``, also the fill of a big central database and the reads over it.
"""

from __future__ import annotations

import gzip
import multiprocessing as mp
import random
import threading
import time
from pathlib import Path
from typing import Any

from footfall.cloud_sync import outbox, signing
from footfall.cloud_sync.central import apply, auth, profiles, validation
from footfall.cloud_sync.central.db import Database
from footfall.cloud_sync.sender import BATCHES_PATH, Sender
from footfall.tools.bench.sync_centre import Centre, TimedSession, pct, pg_cpu
from footfall.tools.bench.sync_records import T0, day_outbox, devices, hub_config, make_hub, profile_data

BULK_BATCH = 5000


# -- stages -------------------------------------------------------------------------------------


def stages(db: Database, tmp: Path, n: int, batch_records: int) -> dict[str, float]:
    """Microseconds per profile of each step of one batch, in this process."""
    from footfall.cloud_sync.central import sync_web

    rng = random.Random(11)
    site = "stage-hub"
    with db.connect() as conn:
        secret = auth.add_hub(conn, site)
    conn = make_hub(tmp / "stages.db", {"profile": [(k, profile_data(rng, k, site, T0)) for k in devices(rng, n)]})
    cfg = hub_config(site, tmp / "stages.db", "http://127.0.0.1:1", batch_records, 64 << 20)
    sender = Sender(conn, cfg, secret.encode())
    out: dict[str, float] = {}
    t = time.perf_counter()
    batch = sender.form_batch()
    assert batch is not None
    out["hub: form batch (SQLite, record text, gzip, SQLite)"] = time.perf_counter() - t
    text = gzip.decompress(batch.body)
    t = time.perf_counter()
    gzip.compress(text, compresslevel=6, mtime=0)
    out["   of which gzip level 6"] = time.perf_counter() - t
    t = time.perf_counter()
    signing.sign_headers(secret.encode(), site, "POST", BATCHES_PATH, batch.body)
    out["hub: sign (SHA-256 of the body, HMAC)"] = time.perf_counter() - t
    t = time.perf_counter()
    raw = sync_web._inflate(batch.body, "gzip", 1 << 30)
    out["centre: inflate"] = time.perf_counter() - t
    t = time.perf_counter()
    doc = sync_web._envelope(raw, site, batch.batch_id, 1 << 30)
    out["centre: decode envelope and records"] = time.perf_counter() - t
    t = time.perf_counter()
    plan = validation.plan_records(site, doc["records"])
    out["centre: validate (plan_records)"] = time.perf_counter() - t
    assert plan.result.rejected == 0, plan.result.errors
    t = time.perf_counter()
    res = apply.apply_batch(db, site, doc)
    out["centre: apply (validate again + COPY + upsert + commit)"] = time.perf_counter() - t
    assert res.accepted == batch.records, res
    conn.close()
    return {k: v * 1e6 / batch.records for k, v in out.items()}


# -- baseline and one hub -----------------------------------------------------------------------


def baseline(db: Database, records: list[tuple[str, dict[str, Any]]], site: str) -> float:
    rows = [validation.profile_row(site, key, data) for key, data in records]
    with db.connect() as conn:
        start = time.perf_counter()
        for i in range(0, len(rows), BULK_BATCH):
            profiles.upsert_profiles(conn, rows[i : i + BULK_BATCH])
        return len(rows) / (time.perf_counter() - start)


def one_hub(
    db: Database, centre: Centre, tmp: Path, records: list[tuple[str, dict[str, Any]]], site: str, args: Any
) -> dict[str, dict[str, Any]]:
    """One hub drains ``records`` (new profiles: inserts), then the same devices again a visit
    later (updates: a returning shopper, the usual case)."""
    with db.connect() as c:
        secret = auth.add_hub(c, site)
    conn = make_hub(tmp / f"{site}.db", {"profile": records})
    cfg = hub_config(site, tmp / f"{site}.db", centre.url, args.batch_records, args.batch_bytes)
    out = {}
    for label in ("new", "update"):
        if label == "update":
            later = [(k, d | {"last_seen": d["last_seen"] + 86400, "visits": d["visits"] + 1}) for k, d in records]
            with conn:
                outbox.enqueue_many(conn, "profile", later, now=T0 + 86400)
        session = TimedSession()
        sender = Sender(conn, cfg, secret.encode(), session=session)
        cpu = (time.process_time(), centre.cpu(), pg_cpu(db))
        start = time.perf_counter()
        res = sender.drain(max_attempts=3)
        wall = time.perf_counter() - start
        used = (time.process_time() - cpu[0], centre.cpu() - cpu[1], pg_cpu(db) - cpu[2])
        with db.connect() as c:
            stored = c.scalar("SELECT COUNT(*) FROM profile_stores WHERE store = ?", (site,))
        assert res.ok and res.records == len(records) == stored, (res, stored)
        out[label] = {
            "rate": res.records / wall,
            "wall": wall,
            "batches": res.batches,
            "p50": pct(session.latencies, 0.5),
            "p95": pct(session.latencies, 0.95),
            "cpu": used,
            "n": res.records,
        }
    conn.close()
    return out


# -- a big central database ---------------------------------------------------------------------


def prefill(db: Database, rows: int) -> dict[str, Any]:
    """``rows`` (device, store) profiles over 200 stores (30 % of devices in two stores), each
    device's ``mac_hash`` identifier and two visit events per row: a chain's centre after a
    while. Generated inside PostgreSQL."""
    one = int(rows / 1.3)
    two = rows - one
    cols = "device, store, first_seen, last_seen, visits, dwell_s, dwell_median_s, cluster, segments, updated"
    row = (
        "md5(g::text), 'size-' || lpad((({shift} + g) % 200)::text, 3, '0'), 1.78e9 - random() * 1e7, "
        "1.78e9 + random() * 1e6, 1 + (random() * 20)::int, random() * 9000, random() * 900, 'lunch-time regulars', "
        """'["cluster: lunch-time regulars"]', 1.79e9"""
    )
    start = time.perf_counter()
    with db.connect() as conn:
        for n, shift in ((one, 0), (two, 1)):
            conn.execute(
                f"INSERT INTO profile_stores ({cols}) SELECT {row.format(shift=shift)} FROM generate_series(1, ?) g",
                (n,),
            )
        conn.execute(
            "INSERT INTO identifiers (device, type, value, active, added) "
            "SELECT md5(g::text), 'mac_hash', md5(g::text), 1, 0 FROM generate_series(1, ?) g",
            (one,),
        )
        conn.execute(
            "INSERT INTO profile_events (event_key, device, store, kind, ts, data) "
            "SELECT md5('e' || g), md5((g % ?)::text), 'size-000', 'visit', 1.78e9 - random() * 3e7, '{}' "
            "FROM generate_series(1, ?) g",
            (one, 2 * rows),
        )
        conn.execute("VACUUM ANALYZE profile_stores")
        conn.execute("VACUUM ANALYZE identifiers")
        conn.execute("VACUUM ANALYZE profile_events")
        try:  # write the fill out now, not during the measurements (needs a superuser)
            conn.execute("CHECKPOINT")
        except Exception as exc:
            print(f"(no CHECKPOINT after the fill: {type(exc).__name__}; the first figures include its writes)")
        sizes = {
            t: conn.scalar("SELECT pg_total_relation_size(?::regclass)", (t,))
            for t in ("profile_stores", "identifiers", "profile_events")
        }
    return {"secs": time.perf_counter() - start, "sizes": sizes}


def reads(db: Database) -> dict[str, float]:
    """Seconds of what the team's pages and recounts run over the whole table."""
    from footfall.cloud_sync.central import segments

    out = {}
    with db.connect() as conn:
        for sid, rule in (
            ("regulars", {"field": "visits", "op": ">=", "value": 10}),
            ("lunch-store-7", {"field": "cluster", "op": "=", "value": "lunch-time regulars"}),
        ):
            segments.create_segment(conn, sid, sid, rule, stores=["size-007"] if "store" in sid else None)
            t = time.perf_counter()
            v = segments.recount(conn, sid)
            out[f"recount {sid} ({v.size:,} members)"] = time.perf_counter() - t
        t = time.perf_counter()
        conn.scalar("SELECT COUNT(*) FROM profiles")
        out["COUNT(*) FROM profiles (the per-device roll-up view)"] = time.perf_counter() - t
    return out


# -- load test ----------------------------------------------------------------------------------


def _client(
    hubs: list[tuple[str, str, int]], url: str, tmp: str, args: dict[str, Any], ready: Any, go: Any, out: Any
) -> None:
    """One client process: builds its hubs' outboxes, then on ``go`` syncs them all at once."""
    senders = []
    for site, secret, seed in hubs:
        rng = random.Random(seed)
        path = Path(tmp) / f"{site}.db"
        conn = make_hub(path, day_outbox(rng, site, args["day_profiles"], T0))
        session = TimedSession()
        cfg = hub_config(site, path, url, args["batch_records"], args["batch_bytes"])
        sender = Sender(conn, cfg, secret.encode(), session=session)
        if args["preformed"]:
            sender.form_batch()  # the hub's side of its first batch, done before the start
        senders.append((site, conn, sender, session))
    results: dict[str, Any] = {}
    start = threading.Event()

    def run(site: str, conn: Any, sender: Sender, session: TimedSession) -> None:
        start.wait()
        t = time.perf_counter()
        try:
            res = sender.drain(max_attempts=8)
            err = None
        except Exception as exc:  # reported, never hidden
            res, err = None, f"{type(exc).__name__}: {exc}"
        counters = outbox.counters(conn)
        left = conn.execute("SELECT count(*) FROM sync_outbox").fetchone()[0]
        results[site] = {
            "ok": bool(res and res.ok),
            "error": err,
            "secs": time.perf_counter() - t,
            "sent_records": counters.get("sent_records", 0),
            "sent_batches": counters.get("sent_batches", 0),
            "duplicates": counters.get("duplicate_batches", 0),
            "rejected": counters.get("rejected_records", 0),
            "parked": counters.get("parked_records", 0),
            "left": left,
            "latencies": session.latencies,
            "outcomes": session.outcomes,
        }

    threads = [threading.Thread(target=run, args=s) for s in senders]
    for t in threads:
        t.start()
    ready.wait()
    go.wait()
    cpu0 = time.process_time()
    start.set()
    for t in threads:
        t.join()
    out.put((results, time.process_time() - cpu0))


def load_test(db: Database, centre: Centre, tmp: Path, args: Any, prefix: str, preformed: bool) -> dict[str, Any]:
    sites = [f"{prefix}-{i:03d}" for i in range(args.hubs)]
    with db.connect() as c:
        hubs = [(s, auth.add_hub(c, s), 1000 + i) for i, s in enumerate(sites)]
    ctx = mp.get_context("fork")
    ready = ctx.Barrier(args.client_procs + 1)
    go = ctx.Event()
    out = ctx.Queue()
    conf = {k: getattr(args, k) for k in ("day_profiles", "batch_records", "batch_bytes")} | {"preformed": preformed}
    procs = [
        ctx.Process(target=_client, args=(hubs[i :: args.client_procs], centre.url, str(tmp), conf, ready, go, out))
        for i in range(args.client_procs)
    ]
    for p in procs:
        p.start()
    ready.wait()  # every outbox built
    cpu = (centre.cpu(), pg_cpu(db))
    start = time.perf_counter()
    go.set()
    results: dict[str, Any] = {}
    client_cpu = 0.0
    for _ in procs:
        r, c_cpu = out.get()
        results.update(r)
        client_cpu += c_cpu
    wall = time.perf_counter() - start
    used = (client_cpu, centre.cpu() - cpu[0], pg_cpu(db) - cpu[1])
    for p in procs:
        p.join()
    lat = [x for r in results.values() for x in r["latencies"]]
    outcomes: dict[str, int] = {}
    for r in results.values():
        for k, v in r["outcomes"].items():
            outcomes[k] = outcomes.get(k, 0) + v
    with db.connect() as c:
        applied = dict(c.all("SELECT hub_id, records FROM hubs WHERE hub_id LIKE ?", (prefix + "-%",)))
        profiles = c.scalar("SELECT COUNT(*) FROM profile_stores WHERE store LIKE ?", (prefix + "-%",))
        events = c.scalar("SELECT COUNT(*) FROM profile_events WHERE store LIKE ?", (prefix + "-%",))
    sent = {s: r["sent_records"] for s, r in results.items()}
    return {
        "wall": wall,
        "records": sum(sent.values()),
        "profiles": profiles,
        "events": events,
        "batches": sum(r["sent_batches"] for r in results.values()),
        "p50": pct(lat, 0.5),
        "p95": pct(lat, 0.95),
        "max": max(lat) if lat else float("nan"),
        "outcomes": outcomes,
        "not_ok": sorted(s for s, r in results.items() if not r["ok"]),
        "errors": sorted({r["error"] for r in results.values() if r["error"]}),
        "left": sum(r["left"] for r in results.values()),
        "duplicates": sum(r["duplicates"] for r in results.values()),
        "rejected": sum(r["rejected"] + r["parked"] for r in results.values()),
        "exactly_once": applied == sent,
        "slowest_hub": max(r["secs"] for r in results.values()),
        "cpu": used,
    }
