"""Latency of every dashboard API call on a busy store's year (5 million visits).

Seeds (or reuses, cached under /tmp) a store database, then calls each endpoint the way the
dashboard does, many times, through the real ASGI app (FastAPI TestClient: routing, auth,
validation, JSON) or, with ``--uvicorn``, over HTTP against a real uvicorn. Prints p50/p95
per endpoint and the ratio of p95 to the p95 of a baseline measured in the same run: an
authenticated ``SELECT 1`` endpoint (``/api/ping``). Target: p95 under 50 ms for each call.

    python -m footfall.tools.bench.bench_api --visits 5000000 --days 365
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import threading
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from footfall.hub import auth, store
from footfall.hub.api import WebSettings, create_app
from footfall.tools.bench.seed_store import seeded


def endpoints(today: str, week_ago: str, month_ago: str, year_ago: str) -> list[tuple[str, str]]:
    """(label, path) of every call the dashboard makes, for the default and longer ranges."""
    t = f"start={today}&end={today}"
    w = f"start={week_ago}&end={today}"
    m = f"start={month_ago}&end={today}"
    y = f"start={year_ago}&end={today}"
    return [
        ("now", "/api/now"),
        ("compare", "/api/compare"),
        ("footfall today/hour", f"/api/footfall?{t}&granularity=hour"),
        ("engagement today", f"/api/engagement?{t}"),
        ("loyalty today", f"/api/loyalty?{t}"),
        ("sensors", "/api/sensors"),
        ("rejects", "/api/rejects"),
        ("footfall 7d/day", f"/api/footfall?{w}&granularity=day"),
        ("engagement 7d", f"/api/engagement?{w}"),
        ("loyalty 7d", f"/api/loyalty?{w}"),
        ("footfall 30d/day", f"/api/footfall?{m}&granularity=day"),
        ("footfall 7d/hour", f"/api/footfall?{w}&granularity=hour"),
        ("engagement 30d", f"/api/engagement?{m}"),
        ("loyalty 30d", f"/api/loyalty?{m}"),
        ("footfall 365d/week", f"/api/footfall?{y}&granularity=week"),
        ("footfall 365d/day", f"/api/footfall?{y}&granularity=day"),
        ("engagement 365d", f"/api/engagement?{y}"),
        ("loyalty 365d", f"/api/loyalty?{y}"),
        ("footfall 365d csv", f"/api/footfall?{y}&granularity=day&format=csv"),
    ]


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=5_000_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--tz", default="Europe/Paris")
    parser.add_argument("--calls", type=int, default=100, help="calls per endpoint")
    parser.add_argument("--uvicorn", action="store_true", help="over HTTP against a real uvicorn")
    parser.add_argument("--db", help="benchmark this store database instead of the seeded cache")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    path = args.db or seeded(args.visits, args.days, tz=args.tz)
    conn = store.connect(path)
    visits = conn.execute("SELECT count(*) FROM visits").fetchone()[0]
    key = auth.create_api_key(conn, f"bench-{time.time_ns()}")
    conn.close()
    print(f"store: {path} ({visits:,} visits over {args.days} days; ready in {time.perf_counter() - t0:.1f} s)")

    settings = WebSettings(tz=args.tz, refresh_interval_s=0)
    app = create_app(path, settings)
    for label in ("catch-up", "steady"):
        started, cpu = time.perf_counter(), time.process_time()
        stats = app.state.refresher.run_once()
        print(
            f"summary refresh, {label} (background, every 15 s): {1000 * (time.perf_counter() - started):.0f} ms "
            f"wall, {1000 * (time.process_time() - cpu):.0f} ms cpu {stats}"
        )

    today = datetime.now(ZoneInfo(args.tz)).date()
    paths = endpoints(
        today.isoformat(),
        (today - timedelta(days=6)).isoformat(),
        (today - timedelta(days=29)).isoformat(),
        (today - timedelta(days=364)).isoformat(),
    )
    headers = {"X-API-Key": key}

    if args.uvicorn:
        import httpx
        import uvicorn

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers)
        mode = "uvicorn over HTTP"
    else:
        from fastapi.testclient import TestClient

        client = TestClient(app, headers=headers)
        client.__enter__()
        mode = "ASGI in process (TestClient)"

    def timed(p: str) -> tuple[list[float], list[float]]:
        """Wall and CPU milliseconds per call. CPU time (this process, all threads; with
        --uvicorn the server runs in this process too) does not count other tenants of a
        shared machine, which wall time does."""
        for _ in range(3):  # warm caches and connections
            r = client.get(p)
            if r.status_code != 200:
                raise SystemExit(f"{p}: HTTP {r.status_code} {r.text[:200]}")
        wall, cpu = [], []
        for _ in range(args.calls):
            s, c = time.perf_counter(), time.process_time()
            client.get(p)
            cpu.append(1000 * (time.process_time() - c))
            wall.append(1000 * (time.perf_counter() - s))
        return wall, cpu

    base, base_cpu = timed("/api/ping")
    base_p50, base_p95 = statistics.median(base), _pct(base, 0.95)
    print(f"mode: {mode}; {args.calls} calls per endpoint; os.getloadavg() = {os.getloadavg()}")
    print(f"{'endpoint':<22} {'p50 ms':>8} {'p95 ms':>8} {'p95/base':>9} {'cpu p50':>8} {'cpu p95':>8}")
    print(
        f"{'baseline /api/ping':<22} {base_p50:8.2f} {base_p95:8.2f} {1.0:9.1f} "
        f"{statistics.median(base_cpu):8.2f} {_pct(base_cpu, 0.95):8.2f}"
    )
    worst = 0.0
    over = []
    for label, p in paths:
        times, cpu = timed(p)
        p50, p95 = statistics.median(times), _pct(times, 0.95)
        worst = max(worst, p95)
        if p95 > 50:
            over.append(label)
        print(
            f"{label:<22} {p50:8.2f} {p95:8.2f} {p95 / base_p95:9.1f} "
            f"{statistics.median(cpu):8.2f} {_pct(cpu, 0.95):8.2f}"
        )
    print(f"worst p95: {worst:.1f} ms; target 50 ms: {'met' if not over else 'MISSED by ' + ', '.join(over)}")
    if args.uvicorn:
        server.should_exit = True
    else:
        client.__exit__(None, None, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
