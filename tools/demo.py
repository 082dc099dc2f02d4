"""``footfall demo``: a whole store on one machine, for real.

A private Mosquitto, a simulated fortnight of a shop (two sensors, the last day running up
to now), one agent per sensor replaying its capture through the real publisher (disk
buffer, QoS 1), the hub ingesting from the broker into SQLite, and the dashboard at
http://127.0.0.1:8080 (login ``manager`` / ``footfall-demo``). Nothing is mocked; only the radio is
simulated.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger("footfall.demo")

SITE = "demo"
USER, PASSWORD = "manager", "footfall-demo"


def register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run a demo store: simulator -> agents -> Mosquitto -> hub -> dashboard")
    p.add_argument("--dir", type=Path, default=Path("demo-data"), help="working directory (default ./demo-data)")
    p.add_argument("--days", type=int, default=14, help="simulated days, the last one up to now")
    p.add_argument("--scale", type=float, default=0.5, help="shop size (1.0: ~1,500 passers-by a day)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--tz", default="Europe/Moscow", help="the shop's time zone")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--no-serve", action="store_true", help="build the store database and exit")
    p.set_defaults(func=cmd_demo)


def until(frames: Iterable[tuple[float, bytes]], end: float) -> Iterator[tuple[float, bytes]]:
    """The simulated day runs to closing time; a demo shows it only up to now."""
    for ts, frame in frames:
        if ts > end:
            return
        yield ts, frame


def replay_sensor(pcap: Path, sensor: str, port: int, workdir: Path, now: float) -> int:
    from footfall.edge_agent.agent import Agent
    from footfall.edge_agent.buffer import DiskBuffer
    from footfall.edge_agent.config import AgentConfig
    from footfall.edge_agent.pcapfile import PcapSource
    from footfall.edge_agent.publish import Publisher

    publisher = Publisher(SITE, sensor, "127.0.0.1", port, DiskBuffer(workdir / f"{sensor}-buffer.db")).start()
    try:
        agent = Agent(AgentConfig(site=SITE, sensor=sensor, hash_key_file=str(workdir / "hash.key")), publisher.publish)
        agent.process(until(PcapSource(pcap), now))
        agent.finish("end_of_capture")
        if not publisher.flush(120):
            log.warning("%s: broker did not acknowledge everything in time", sensor)
    finally:
        publisher.close()
    return agent.visits_sent


def build(workdir: Path, *, days: int, scale: float, seed: int, tz: str) -> tuple[Path, dict]:
    """Simulate, replay through agents and broker into the hub database; returns its path."""
    from footfall.edge_agent.identity import load_key
    from footfall.hub.config import HubConfig, MqttConfig
    from footfall.hub.ingest import Ingestor
    from footfall.tools.broker import Broker
    from footfall.tools.simulator import simulate_day

    workdir.mkdir(parents=True, exist_ok=True)
    load_key(workdir / "hash.key", create=True)
    db = workdir / "hub.db"
    for stale in workdir.glob("hub.db*"):
        stale.unlink()
    for stale in workdir.glob("*-buffer.db*"):
        stale.unlink()

    now = time.time()
    from zoneinfo import ZoneInfo

    today = dt.datetime.now(ZoneInfo(tz)).date()
    start = today - dt.timedelta(days=days - 1)
    sim = workdir / "sim"
    print(f"simulating {days} days of a shop ({start} .. {today}) ...", flush=True)
    truth = simulate_day(sim, seed=seed, scale=scale, days=days, date=start.isoformat(), site=SITE, tz=tz)

    with Broker(workdir / "broker") as broker:
        config = HubConfig(
            site=SITE,
            timezone=tz,
            db=str(db),
            sensors=[s["id"] for s in truth["sensors"]],
            mqtt=MqttConfig(port=broker.port, client_id=f"footfall-hub-demo-{secrets.token_hex(3)}"),
            link_every_s=0,  # linked once, over everything, when the replay is done
            hours="10-21",  # the simulated shop's opening hours (simulate_day's default)
        )
        ingestor = Ingestor(config)
        thread = threading.Thread(target=ingestor.run, name="hub-ingest", daemon=True)
        thread.start()
        if not ingestor.ready.wait(15):
            raise RuntimeError("the hub could not subscribe to the demo broker")
        sent = 0
        for s in truth["sensors"]:
            print(f"sensor {s['id']}: replaying its capture through the agent -> MQTT ...", flush=True)
            sent += replay_sensor(sim / f"{s['id']}.pcap", s["id"], broker.port, workdir, now)
        deadline = time.monotonic() + 120
        conn = sqlite3.connect(db)
        while time.monotonic() < deadline:
            stored = conn.execute("SELECT count(*) FROM sensor_visits").fetchone()[0]
            if stored >= sent:
                break
            time.sleep(0.5)
        conn.close()
        ingestor.stop()
        thread.join(10)
    print(f"hub stored {stored} of {sent} sensor visits -> {db}", flush=True)
    from footfall.hub import store
    from footfall.hub.link import relink

    conn = store.connect(db)
    print("linking devices and estimating people, day by day ...", flush=True)
    result = relink(conn, config, since=0)
    print(
        f"linked randomized MACs over {len(result.days)} days: {result.devices_before} MAC hashes -> "
        f"{result.devices_after} devices ({result.seconds:.0f} s)",
        flush=True,
    )
    seed_segments(conn)
    conn.close()
    return db, truth


# The O2O case's two audiences (seed 004): passers-by, and visitors who stayed under 5 minutes.
DEMO_SEGMENTS = {
    "passed by twice this week": {"all": [{"field": "passerby_count_7d", "op": ">=", "value": 2}]},
    "short visits (under 5 min)": {
        "all": [{"field": "last_dwell_s", "op": "<", "value": 300}, {"field": "visit_count_7d", "op": ">=", "value": 1}]
    },
    "regulars": {"all": [{"field": "visit_days", "op": ">=", "value": 3}]},
}


def seed_segments(conn: sqlite3.Connection) -> None:
    from footfall.hub import segments

    for name, rule in DEMO_SEGMENTS.items():
        segments.create_segment(conn, name, rule)
    result = segments.run_clustering(conn, lookback_days=14)
    print(f"segments: {', '.join(DEMO_SEGMENTS)}; behaviour clusters: {', '.join(result.names)}", flush=True)


def cmd_demo(args: argparse.Namespace) -> int:
    from footfall.hub import auth, store

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    db, truth = build(args.dir, days=args.days, scale=args.scale, seed=args.seed, tz=args.tz)
    conn = store.connect(db)
    auth.add_user(conn, USER, PASSWORD, replace=True)
    conn.close()
    s = truth["summary"]
    print(
        f"ground truth: {s['unique_people']} people, {s['visitors']} visitors, {s['passersby']} passers-by, "
        f"{s['distinct_macs']} distinct MACs"
    )
    if args.no_serve:
        return 0
    from footfall.hub.serve import run

    print(f"\n  dashboard: http://{args.host}:{args.port}/   login: {USER} / {PASSWORD}   (Ctrl-C stops)\n", flush=True)
    os.environ.setdefault("FOOTFALL_TZ", args.tz)
    run(db, host=args.host, port=args.port, tz=args.tz, log_level="warning")
    return 0
