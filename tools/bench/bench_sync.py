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
import os
import random
import tempfile
from pathlib import Path
from typing import Any

from footfall.cloud_sync.central import schema
from footfall.cloud_sync.central.db import Database
from footfall.cloud_sync.central.testing import postgres_available, throwaway_postgres
from footfall.cloud_sync.config import SyncConfig
from footfall.tools.bench.sync_centre import Centre
from footfall.tools.bench.sync_records import T0, devices, profile_data
from footfall.tools.bench.sync_runs import BULK_BATCH, baseline, load_test, one_hub, prefill, reads, stages

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
