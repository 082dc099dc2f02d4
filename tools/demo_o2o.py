"""The demo's O2O fortnight (seed 004): two scenarios run against the reference partner.

The demo's agents compute the partner hash (MD5 of the MAC in the partner's normal form) for
phones with a real MAC; the reference telecom partner (``tools/partner_server.py``, served over
HTTP on a free port for the length of the build) knows most of them, as the seed's 84 % match
rate says. Every simulated day at 20:00 store time the runner takes that day's passers-by and
short visitors, matches them, sends SMS coupons where the partner may message and puts the
rest in the ad-platform segment. The simulator has no shoppers who react to a coupon, so the
demo **simulates redemptions** (a quarter of the coupons, redeemed at the till one to four days
later, receipts of 1,500-6,000): the O2O page's ROMI shows how it is computed, not a result.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

REDEEMED_SHARE = 0.25


@contextlib.contextmanager
def partner_served(db: Path, truth: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """The reference partner on a free loopback port, seeded from the simulated phones."""
    import uvicorn

    from footfall.tools import partner_server

    conn = partner_server.connect(db)
    partner_server.seed_from_groundtruth(conn, truth, seed=3, others=200)
    conn.close()
    key = secrets.token_urlsafe(16)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(partner_server.create_app(db, key), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            raise RuntimeError("the reference partner did not start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", key
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def run_fortnight(
    conn: sqlite3.Connection, truth: dict[str, Any], workdir: Path, *, tz: str, days: int, now: float, seed: int = 7
) -> dict[str, Any]:
    """Scenarios, a run per simulated day, simulated redemptions; returns the totals printed."""
    from footfall.hub.o2o import coupons, runner, scenarios
    from footfall.hub.o2o.partner import PartnerClient, PartnerConfig

    zone = ZoneInfo(tz)
    today = dt.datetime.fromtimestamp(now, zone).date()
    first = today - dt.timedelta(days=days - 1)
    created = dt.datetime.combine(first, dt.time(9), tzinfo=zone).timestamp()
    common = dict(timezone=tz, quiet_hours=(21.0, 9.0), price_match=1.0, price_sms=2.5, fixed_cost=500.0)
    for sc in (
        scenarios.Scenario(name="short visits", target="short_visits", store_name="the demo shop",
                           coupon=coupons.Generator(kind="percent", value=15, min_purchase=1000), **common),
        scenarios.Scenario(name="passers-by", target="passersby", store_name="the demo shop",
                           coupon=coupons.Generator(kind="fixed", value=300, min_purchase=1500), **common),
    ):  # fmt: skip
        scenarios.add(conn, sc, now=created, replace=True)
    rng = random.Random(seed)
    totals = {"runs": 0, "matched": 0, "messaged": 0, "segment_rows": 0, "redeemed": 0}
    with partner_served(workdir / "partner.db", truth) as (url, key):
        client = PartnerClient(PartnerConfig(url=url, api_key=key, name="reference partner"))
        export = runner.ExportSettings(directory=workdir / "o2o_exports")
        for i in range(days):
            day = first + dt.timedelta(days=i)
            at = min(dt.datetime.combine(day, dt.time(20), tzinfo=zone).timestamp(), now)
            for r in runner.run_due(conn, client, now=at, export=export, force=True, actor="demo"):
                totals["runs"] += 1
                for k in ("matched", "messaged", "segment_rows"):
                    totals[k] += int(r.counts.get(k, 0))
    for code, issued in conn.execute("SELECT code, issued_at FROM o2o_coupons ORDER BY code").fetchall():
        when = issued + rng.uniform(1, 4) * 86400
        if rng.random() < REDEEMED_SHARE and when < now:
            with contextlib.suppress(coupons.CouponError):
                amount = round(rng.uniform(1500, 6000), -1)
                coupons.redeem(conn, code, "demo", amount, receipt_id=f"D{rng.randrange(10**6)}", now=when)
                totals["redeemed"] += 1
    return totals
