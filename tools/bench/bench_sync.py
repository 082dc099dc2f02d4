"""Hub -> centre sync end to end: real hub outboxes (SQLite), the real sender (JSON, gzip, HMAC),
real HTTP to ``footfall central serve`` (a separate process, ``--workers N``), into a throwaway
PostgreSQL.

Four measurements, all in one run:

- **stages**: one batch of realistic profiles taken through each step in this process, in
  microseconds per profile: the hub forming it (SQLite read, record text, gzip, SQLite
  write), signing, and the centre's inflate, decode (envelope and records), validation and the
  database apply. Where the time goes.
- **baseline**: the bulk-upsert path alone (``profiles.upsert_profiles`` on already validated
  rows, COPY + one ``INSERT ... ON CONFLICT``), as ``bench_central.py`` measures it.
- **one hub**: one hub drains ``--profiles`` new profiles through ``Sender.drain`` over HTTP,
  then the same devices again a visit later (updates). Printed as profiles/s and as a ratio
  against the baseline.
- **load test**: ``--hubs`` simulated hubs sync a realistic day's outbox each (profiles,
  visit events, segment changes, the closed day, store health) at once: ``--client-procs``
  processes, one thread per hub, each with its own hub database, secret and HTTP session.
  Printed: records/s and profiles/s over the whole run, p50/p95/max batch latency (POST to
  answer), errors by kind, and the exactly-once check (every record a hub counted as sent
  was applied once: the centre's per-hub record counts equal the hubs' ``sent_records``).
  Run twice: with the hubs forming their batches inside the timed run (their CPU is this
  machine's too), and with each hub's first batch formed before the start (the centre's
  share alone).
- with ``--size N``: the centre is first filled with N profile rows (and 2N events), so all
  of the above runs against a big database, followed by the team's reads over it (segment
  recounts, the ``profiles`` roll-up): the figures for when one PostgreSQL stops being enough.

CPU seconds of the client, the centre's processes and the PostgreSQL backends are read from
``/proc`` to say which part would need more cores. The client, the centre and PostgreSQL
share the machine, so the figures are a floor for a centre on its own hardware. Usage::

    .venv/bin/python -m footfall.tools.bench.bench_sync            # ~1 minute
    .venv/bin/python -m footfall.tools.bench.bench_sync --profiles 100000 --hubs 200 --workers 2
    .venv/bin/python -m footfall.tools.bench.bench_sync --size 6000000 --skip-load   # ~13 minutes
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import multiprocessing as mp
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from footfall.cloud_sync import outbox, signing
from footfall.cloud_sync.central import apply, auth, profiles, schema, validation
from footfall.cloud_sync.central.db import Database
from footfall.cloud_sync.central.testing import free_port, postgres_available, throwaway_postgres
from footfall.cloud_sync.config import SyncConfig
from footfall.cloud_sync.sender import BATCHES_PATH, Sender
from footfall.hub import store

CLUSTERS = ("lunch-time regulars", "quick look-ins under 5 min", "weekend browsers", "evening shoppers")
RULES = ("loyal", "short stay", "lapsed")
ZONES = ("entrance", "floor", "fitting", "checkout")
T0 = 1_790_000_000.0
BULK_BATCH = 5000


# -- realistic hub records ---------------------------------------------------------------------


def profile_data(rng: random.Random, device: str, site: str, now: float) -> dict[str, Any]:
    """A profile exactly as the hub builds it (``cloud_sync/profiles.py``): stats, segment memberships
    (a cluster, sometimes rules) and, for about 4 % of devices, the phone hash the partner
    shared with its consent (``consent_source: partner``), or a consent given at the hub."""
    visits = 1 if rng.random() < 0.55 else rng.randint(2, 40)
    first = now - rng.uniform(0, 120 * 86400)
    last = first if visits == 1 else min(now, first + rng.uniform(3600, 60 * 86400))
    dwells = [rng.uniform(60, 1800) for _ in range(min(visits, 8))]
    total = sum(dwells) * visits / len(dwells)
    segs = [("cluster: " + rng.choice(CLUSTERS), "cluster", round(first + 86400, 3))]
    if rng.random() < 0.35:
        segs.append((rng.choice(RULES), "rule", round(last, 3)))
    segs.sort()
    data: dict[str, Any] = {
        "device": device,
        "site": site,
        "randomized": rng.random() < 0.6,
        "first_seen": round(first, 3),
        "last_seen": round(last, 3),
        "visits": visits,
        "dwell_total_s": round(total, 1),
        "dwell_mean_s": round(total / visits, 1),
        "dwell_median_s": round(statistics.median(dwells), 1),
        "cluster": segs[0][0].removeprefix("cluster: ") if segs[0][1] == "cluster" else None,
        "segments": [{"name": n, "kind": k, "since": s} for n, k, s in segs],
        "partner_hash": None,
    }
    r = rng.random()
    if r < 0.03:  # matched by the partner, who shared the phone hash with its consent
        data["phone_md5"] = hashlib.md5(device.encode()).hexdigest()
        data["consent_source"] = "partner"
        data["consent_granted"] = round(last, 3)
    elif r < 0.04:  # consent given at the hub (loyalty sign-up): the partner's MAC hash goes too
        data["partner_hash"] = hashlib.md5(device[::-1].encode()).hexdigest()
        data["phone_md5"] = hashlib.md5(device.encode()).hexdigest()
        data["consent_granted"] = round(last - 3600, 3)
    return data


def devices(rng: random.Random, n: int) -> list[str]:
    return [rng.randbytes(16).hex() for _ in range(n)]


def day_outbox(rng: random.Random, site: str, n_profiles: int, now: float) -> dict[str, list[tuple[str, Any]]]:
    """A store's day as the outbox holds it after ``enqueue_changes``: the profiles of every
    device seen (or changed) that day, the visitor visits as events (about 40 % of devices are
    visitors), segment entries, the closed day and the sensors' health."""
    day = time.strftime("%Y-%m-%d", time.gmtime(now - 86400))
    keys = devices(rng, n_profiles)
    profiles = [(k, profile_data(rng, k, site, now)) for k in keys]
    events = []
    for k, _ in profiles:
        if rng.random() < 0.4:
            start = now - rng.uniform(3600, 86400)
            dwell = round(rng.uniform(60, 1800), 1)
            events.append(
                (
                    f"visit:{k}:{start!r}",
                    {
                        "type": "visit",
                        "device": k,
                        "ts": start,
                        "last_seen": start + dwell,
                        "dwell_s": dwell,
                        "zone": rng.choice(ZONES),
                    },
                )  # fmt: skip
            )
    changes = []
    for k, p in profiles[: n_profiles // 25]:
        seg = p["segments"][-1]
        changes.append(
            (
                f"{seg['name']}|{k}|enter|{seg['since']}",
                {
                    "segment": seg["name"],
                    "segment_kind": seg["kind"],
                    "device": k,
                    "change": "enter",
                    "ts": seg["since"],
                },
            )  # fmt: skip
        )
    visitors = len(events)
    sensors = {f"s{i}": {"messages": rng.randint(5000, 50000), "first": now - 86400, "last": now} for i in (1, 2, 3)}
    daily = {
        "site": site,
        "day": day,
        "visitors": visitors,
        "passersby": n_profiles - visitors,
        "capture_rate": round(visitors / n_profiles, 4),
        "visits": visitors,
        "dwell_total_s": round(sum(e[1]["dwell_s"] for e in events), 1),
        "dwell_mean_s": 600.0,
        "dwell_median_s": 480.0,
        "sensor_health": {"sensors_reporting": 3, "sensors": sensors},
    }
    health = {
        "site": site,
        "ts": now,
        "sensors_total": 3,
        "sensors_stale": 0,
        "sensors_failing": 0,
        "sensors": {s: {"state": "online", "stale": False, "backlog": 0, "version": "1.4"} for s in sensors},
    }
    return {
        "profile": profiles,
        "event": events,
        "segment_change": changes,
        "daily_aggregate": [(f"{site}|{day}", daily)],
        "health": [(site, health)],
    }


def make_hub(path: Path, items: dict[str, list[tuple[str, Any]]]) -> Any:
    conn = store.connect(path)
    with conn:
        for kind, rows in items.items():
            outbox.enqueue_many(conn, kind, rows, now=T0)
    return conn


def hub_config(site: str, db: Path, url: str, batch_records: int, batch_bytes: int) -> SyncConfig:
    return SyncConfig(
        site=site,
        db=str(db),
        url=url,
        allow_http=True,
        batch_records=batch_records,
        batch_bytes=batch_bytes,
        read_timeout_s=120.0,
        backoff_base_s=0.5,
        backoff_cap_s=5.0,
        fleet_report=False,
    )


class TimedSession(requests.Session):
    """A real session that notes how long each batch POST took and how it ended."""

    def __init__(self) -> None:
        super().__init__()
        self.latencies: list[float] = []
        self.outcomes: dict[str, int] = {}

    def request(self, method: str, url: str, *args: Any, **kw: Any) -> requests.Response:  # type: ignore[override]
        if not url.endswith(BATCHES_PATH):
            return super().request(method, url, *args, **kw)
        start = time.perf_counter()
        try:
            resp = super().request(method, url, *args, **kw)
        except requests.RequestException as exc:
            name = type(exc).__name__
            self.outcomes[name] = self.outcomes.get(name, 0) + 1
            raise
        self.latencies.append(time.perf_counter() - start)
        self.outcomes[str(resp.status_code)] = self.outcomes.get(str(resp.status_code), 0) + 1
        return resp


# -- the centre in its own process(es) ----------------------------------------------------------


class Centre:
    def __init__(self, db_url: str, workers: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "footfall", "central", "serve", "--db", db_url, "--port", str(self.port)]
        cmd += ["--log-level", "warning"] + (["--workers", str(workers)] if workers != 1 else [])
        self.proc = subprocess.Popen(cmd)
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("the central service did not start")
            time.sleep(0.1)
        time.sleep(0.5 if workers == 1 else 2.0)  # every worker up

    def pids(self) -> list[int]:
        out = [self.proc.pid]
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop()
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    kids = [int(k) for k in (task / "children").read_text().split()]
                except OSError:
                    continue
                out += kids
                todo += kids
        return out

    def cpu(self) -> float:
        return sum(proc_cpu(p) for p in self.pids())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pg_cpu(db: Database) -> float:
    """CPU seconds used so far by the PostgreSQL server on this host: the postmaster with its
    reaped children (backends that have exited) plus its live children. Includes whatever
    else uses that server meanwhile."""
    with db.connect() as conn:
        backend = conn.scalar("SELECT pg_backend_pid()")
    try:
        postmaster = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
        fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError):
        return float("nan")  # not on this host
    total = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{postmaster}/task").glob("*"):
        try:
            total += sum(proc_cpu(int(k)) for k in (task / "children").read_text().split())
        except OSError:
            continue
    return total


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


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


# -- main ---------------------------------------------------------------------------------------


def report_load(r: dict[str, Any]) -> None:
    print(
        f"  {r['records']:,} records ({r['profiles']:,} profiles, {r['events']:,} events) in "
        f"{r['batches']} batches, {r['wall']:.1f} s: {r['records'] / r['wall']:,.0f} records/s, "
        f"{r['profiles'] / r['wall']:,.0f} profiles/s"
    )
    print(
        f"  batch latency p50 {r['p50'] * 1000:,.0f} ms, p95 {r['p95'] * 1000:,.0f} ms, "
        f"max {r['max'] * 1000:,.0f} ms; slowest hub done after {r['slowest_hub']:.1f} s"
    )
    answers = ", ".join(f"{k}: {v}" for k, v in sorted(r["outcomes"].items()))
    errors = sum(v for k, v in r["outcomes"].items() if k != "200")
    print(
        f"  answers {answers}; errors {errors}; hubs not done {len(r['not_ok'])}; rows left in "
        f"outboxes {r['left']}; duplicate batches {r['duplicates']}; rejected {r['rejected']}"
    )
    for e in r["errors"][:5]:
        print(f"  error: {e}")
    print(f"  exactly once (centre's per-hub records == hubs' sent records): {r['exactly_once']}")
    print(cpu_line("load test", r["cpu"], r["records"], r["wall"]).replace("per profile", "per record"))


def cpu_line(label: str, used: tuple[float, float, float], n: int, wall: float) -> str:
    client, centre, pg = used
    per = [1e6 * x / n for x in used]
    return (
        f"  CPU {label}: client {client:.1f}s, centre {centre:.1f}s, PostgreSQL backends {pg:.1f}s "
        f"= {per[0]:.0f} + {per[1]:.0f} + {per[2]:.0f} us per profile; "
        f"{(client + centre + pg) / wall:.2f} of {os.cpu_count()} cores busy"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="hub -> centre sync end to end over HTTP into PostgreSQL")
    p.add_argument("--profiles", type=int, default=100_000, help="profiles one hub drains")
    p.add_argument("--hubs", type=int, default=200, help="simulated hubs syncing at once")
    p.add_argument("--day-profiles", type=int, default=1500, help="profiles in each hub's day (plus its events)")
    p.add_argument("--client-procs", type=int, default=2, help="processes the simulated hubs run in")
    p.add_argument("--workers", type=int, default=2, help="footfall central serve --workers")
    p.add_argument("--batch-records", type=int, default=SyncConfig.batch_records)
    p.add_argument("--batch-bytes", type=int, default=SyncConfig.batch_bytes)
    p.add_argument("--skip-load", action="store_true", help="only the stages, the baseline and one hub")
    p.add_argument("--size", type=int, default=0, help="first fill the centre with this many profile rows")
    p.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin URL")
    args = p.parse_args(argv)
    if not postgres_available(args.pg):
        print("PostgreSQL not reachable: nothing measured")
        return 1
    rng = random.Random(5)
    records = [(k, profile_data(rng, k, "one-hub", T0)) for k in devices(rng, args.profiles)]
    with throwaway_postgres(args.pg, prefix="footfall_bench") as url, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        db = Database(url)
        schema.init(db)
        with db.connect() as c:
            pg_version = c.scalar("SHOW server_version")
        if args.size:
            filled = prefill(db, args.size)
            sizes = ", ".join(f"{t} {b / 2**30:.2f} GiB" for t, b in filled["sizes"].items())
            print(f"prefilled {args.size:,} profile rows, {2 * args.size:,} events in {filled['secs']:.0f} s: {sizes}")
        print(
            f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; PostgreSQL {pg_version} on the "
            f"same host; centre: {args.workers} worker process(es); hub batches of {args.batch_records} records / "
            f"{args.batch_bytes:,} bytes"
        )
        print("\nstages of one batch, in this process (us per profile):")
        for label, us in stages(db, tmp, min(args.batch_records, 5000), args.batch_records).items():
            print(f"  {label:<58}{us:>7.1f}")
        # Devices of its own, so both measurements insert new profiles and new identifiers.
        other = random.Random(6)
        base = baseline(db, [(k, profile_data(other, k, "bulk", T0)) for k in devices(other, args.profiles)], "bulk")
        print(f"\nbaseline, bulk upsert only ({BULK_BATCH} per call, inserts): {base:,.0f} profiles/s")
        centre = Centre(url, args.workers)
        try:
            for label, one in one_hub(db, centre, tmp, records, "one-hub", args).items():
                print(
                    f"one hub, {one['n']:,} {label} profiles end to end over HTTP: {one['rate']:,.0f} profiles/s "
                    f"({one['wall']:.1f} s, {one['batches']} batches, batch latency p50 {one['p50'] * 1000:.0f} ms "
                    f"p95 {one['p95'] * 1000:.0f} ms); end to end / bulk upsert {one['rate'] / base:.2f}x"
                )
                print(cpu_line(f"one hub, {label}", one["cpu"], one["n"], one["wall"]))
            if not args.skip_load:
                for prefix, preformed, what in (
                    ("hub", False, "each hub forms its batches in the timed run (its CPU is this machine's)"),
                    ("pre", True, "each hub formed its first batch before the start (the centre's share only)"),
                ):
                    print(
                        f"\nload test: {args.hubs} hubs at once, {args.day_profiles} profiles each plus their day's "
                        f"events, {args.client_procs} client processes; {what}"
                    )
                    report_load(load_test(db, centre, tmp, args, prefix, preformed))
            if args.size:
                print(f"\nreads over {args.size:,} profile rows:")
                for label, secs in reads(db).items():
                    print(f"  {label:<58}{secs:>7.2f} s")
        finally:
            centre.stop()
            db.close()
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
