"""``footfall demo``: a whole store on one machine, for real.

A private Mosquitto, a simulated fortnight of a shop (two sensors, the last day running up
to now), one agent per sensor replaying its capture through the real publisher (disk
buffer, QoS 1), the hub ingesting from the broker into SQLite, and the dashboard at
http://127.0.0.1:8080 (login ``manager`` / ``footfall-demo``), with the O2O scenarios of seed
004 run a day at a time against the reference telecom partner (``tools/demo_o2o.py``; the
till's redemptions are simulated). Nothing is mocked; only the radio is simulated.

First look: the shop is in the machine's time zone (``--tz`` or ``FOOTFALL_TZ`` to change it)
and is open at the hour the demo starts, so "today" always has visits; the sensors show as
*replayed* (their data is a recorded capture played back once, no live sensor is connected).
Ctrl-C or SIGTERM at any stage stops the private broker too; so does the demo dying outright
(the broker is tied to it with ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import math
import os
import secrets
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

log = logging.getLogger("footfall.demo")

SITE = "demo"
USER, PASSWORD = "manager", "footfall-demo"
SHOP_HOURS = (10, 21)  # the simulated shop's usual opening hours (simulate_day's default)
UTC_ALIASES = ("Etc/UTC", "Etc/UCT", "Etc/Universal", "Etc/Zulu", "UCT", "Universal", "Zulu")


def register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run a demo store: simulator -> agents -> Mosquitto -> hub -> dashboard")
    p.add_argument("--dir", type=Path, default=Path("demo-data"), help="working directory (default ./demo-data)")
    p.add_argument("--days", type=int, default=14, help="simulated days, the last one up to now")
    p.add_argument("--scale", type=float, default=0.5, help="shop size (1.0: ~1,500 passers-by a day)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--tz",
        default=None,
        help="the shop's time zone, e.g. Europe/Paris (default: env FOOTFALL_TZ, else the machine's)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--insecure-http",
        action="store_true",
        help="with a --host other than loopback: serve plain HTTP there anyway (the demo has no certificate)",
    )
    p.add_argument("--no-serve", action="store_true", help="build the store database and exit")
    p.set_defaults(func=cmd_demo)


def machine_tz() -> str:
    """The machine's IANA time zone: ``$TZ``, the ``/etc/localtime`` link, ``/etc/timezone``; else UTC.

    The demo's shop is where the person trying it is: a fixed zone made "today" empty
    whenever the machine's evening was already the shop's tomorrow."""
    candidates = []
    if os.environ.get("TZ"):
        candidates.append(os.environ["TZ"].lstrip(":"))
    with contextlib.suppress(OSError):
        candidates.append(os.readlink("/etc/localtime"))  # e.g. /usr/share/zoneinfo/Europe/Paris
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text().strip())
    for name in candidates:
        if "zoneinfo/" in name:
            name = name.split("zoneinfo/", 1)[1]
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
        # Debian links /etc/localtime to Etc/UTC: the header should read plain "UTC".
        return "UTC" if name in UTC_ALIASES else name
    return "UTC"


def demo_hours(local_now: dt.datetime) -> tuple[int, int]:
    """The shop's opening hours (local), chosen so that it has been open at least an hour by now.

    From 11:00 the usual 10-21 (after closing, today is the whole day). Earlier, an 11-hour day
    that opened up to 5 hours before now: a manager trying the demo at 7:00 sees a morning, not
    an empty page. Just after midnight "today" is only the minutes since (a shop opened at 0:00).
    """
    hour = local_now.hour + local_now.minute / 60
    if hour >= SHOP_HOURS[0] + 1:
        return SHOP_HOURS
    opened = max(0, math.floor(hour) - 5)
    return opened, opened + (SHOP_HOURS[1] - SHOP_HOURS[0])


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
        # The partner hash on, as in a store that runs the O2O scenarios (tools/demo_o2o.py).
        cfg = AgentConfig(site=SITE, sensor=sensor, hash_key_file=str(workdir / "hash.key"), partner_enabled=True,
                          partner_mac_format="colon-upper")  # fmt: skip
        agent = Agent(cfg, publisher.publish)
        agent.process(until(PcapSource(pcap), now))
        agent.finish("end_of_capture")
        if not publisher.flush(120):
            log.warning("%s: broker did not acknowledge everything in time", sensor)
    finally:
        # Short: on an interrupt nobody waits for the last acknowledgements.
        publisher.close(timeout=2.0)
    return agent.visits_sent


def build(workdir: Path, *, days: int, scale: float, seed: int, tz: str, now: float | None = None) -> tuple[Path, dict]:
    """Simulate, replay through agents and broker into the hub database; returns its path.

    Every resource is released on any exception, KeyboardInterrupt included (``cmd_demo``
    turns SIGTERM into one): the broker is stopped and the hub's ingest thread told to stop."""
    from footfall.edge_agent.identity import load_key
    from footfall.hub.config import HubConfig, MqttConfig
    from footfall.hub.ingest import Ingestor
    from footfall.hub.sensors import mark_replayed
    from footfall.tools.broker import Broker
    from footfall.tools.simulator import simulate_day

    workdir.mkdir(parents=True, exist_ok=True)
    load_key(workdir / "hash.key", create=True)
    db = workdir / "hub.db"
    for stale in workdir.glob("hub.db*"):
        stale.unlink()
    for stale in workdir.glob("*-buffer.db*"):
        stale.unlink()

    now = time.time() if now is None else now
    local_now = dt.datetime.fromtimestamp(now, ZoneInfo(tz))
    today = local_now.date()
    start = today - dt.timedelta(days=days - 1)
    opens, closes = demo_hours(local_now)
    hours = f"{opens}-{closes}"
    sim = workdir / "sim"
    print(
        f"simulating {days} days of a shop open {hours} h in {tz} ({start} .. {today} {local_now:%H:%M}) ...",
        flush=True,
    )
    truth = simulate_day(sim, seed=seed, scale=scale, days=days, date=start.isoformat(), hours=hours, site=SITE, tz=tz)
    sensor_ids = [s["id"] for s in truth["sensors"]]

    # The broker dies with this process even on SIGKILL, when no finally block runs.
    with Broker(workdir / "broker", die_with_parent=True) as broker:
        config = HubConfig(
            site=SITE,
            timezone=tz,
            db=str(db),
            sensors=sensor_ids,
            mqtt=MqttConfig(port=broker.port, client_id=f"footfall-hub-demo-{secrets.token_hex(3)}"),
            link_every_s=0,  # linked once, over everything, when the replay is done
            hours=hours,
        )
        ingestor = Ingestor(config)
        thread = threading.Thread(target=ingestor.run, name="hub-ingest", daemon=True)
        thread.start()
        try:
            if not ingestor.ready.wait(15):
                raise RuntimeError("the hub could not subscribe to the demo broker")
            sent = stored = 0
            for sid in sensor_ids:
                print(f"sensor {sid}: replaying its capture through the agent -> MQTT ...", flush=True)
                sent += replay_sensor(sim / f"{sid}.pcap", sid, broker.port, workdir, now)
            deadline = time.monotonic() + 120
            conn = sqlite3.connect(db)
            try:
                while time.monotonic() < deadline:
                    stored = conn.execute("SELECT count(*) FROM sensor_visits").fetchone()[0]
                    if stored >= sent:
                        break
                    time.sleep(0.5)
            finally:
                conn.close()
        finally:
            ingestor.stop()
            thread.join(10)
    print(f"hub stored {stored} of {sent} sensor visits -> {db}", flush=True)
    from footfall.hub import store
    from footfall.hub.link import relink

    conn = store.connect(db)
    try:
        # After the ingest stopped: the agents' own "offline" on closing must not be the last word.
        mark_replayed(conn, SITE, sensor_ids, until=now)
        print("linking devices and estimating people, day by day ...", flush=True)
        result = relink(conn, config, since=0)
        print(
            f"linked randomized MACs over {len(result.days)} days: {result.devices_before} MAC hashes -> "
            f"{result.devices_after} devices ({result.seconds:.0f} s)",
            flush=True,
        )
        seed_segments(conn)
        from footfall.tools.demo_o2o import REDEEMED_SHARE, run_fortnight

        print("O2O: a run a day against the reference telecom partner ...", flush=True)
        o2o = run_fortnight(conn, truth, workdir, tz=tz, days=days, now=now, seed=seed)
        print(
            f"O2O: {o2o['runs']} runs, {o2o['matched']} matched, {o2o['messaged']} SMS coupons, "
            f"{o2o['segment_rows']} to the ad segment; {o2o['redeemed']} redemptions SIMULATED "
            f"({REDEEMED_SHARE:.0%} of coupons: the simulator has no shoppers who react to one)",
            flush=True,
        )
    finally:
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
    from footfall.hub import segment_clusters, segments

    for name, rule in DEMO_SEGMENTS.items():
        segments.create_segment(conn, name, rule)
    result = segment_clusters.run_clustering(conn, lookback_days=14)
    print(f"segments: {', '.join(DEMO_SEGMENTS)}; behaviour clusters: {', '.join(result.names)}", flush=True)


class Stopped(KeyboardInterrupt):
    """SIGTERM/SIGHUP, raised where the main thread is, so every ``finally`` on the way out runs.

    A KeyboardInterrupt so that it goes through the same code paths as Ctrl-C, which
    ``except Exception`` handlers in libraries do not swallow."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop_on_signals() -> None:
    def stop(signum: int, frame: FrameType | None) -> None:
        # Once: a second signal must not cut the cleanup the first one started short.
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)
        raise Stopped(signum)

    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, stop)


def resolve_tz(arg: str | None) -> str:
    name = arg or os.environ.get("FOOTFALL_TZ") or machine_tz()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SystemExit(f"error: unknown time zone {name!r} (an IANA name such as Europe/Paris)") from None
    return name


def cmd_demo(args: argparse.Namespace) -> int:
    from footfall.hub.tls import TransportError, check_transport

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    # Refused before a minute of building, not after: the dashboard's own rule for plain HTTP.
    try:
        check_transport(args.host, None, args.insecure_http)
    except TransportError:
        print(
            f"error: the demo dashboard is plain HTTP (no certificate); on {args.host}, where other machines "
            "reach it, only with --insecure-http (its login then travels in clear text)",
            file=sys.stderr,
        )
        return 2
    tz = resolve_tz(args.tz)
    _stop_on_signals()
    try:
        return _run_demo(args, tz)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        print(f"\ndemo stopped ({signal.Signals(signum).name}); nothing left running", file=sys.stderr, flush=True)
        return 128 + signum


def _run_demo(args: argparse.Namespace, tz: str) -> int:
    from footfall.hub import auth, store

    db, truth = build(args.dir, days=args.days, scale=args.scale, seed=args.seed, tz=tz)
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

    print(
        f"\n  dashboard: http://{args.host}:{args.port}/   login: {USER} / {PASSWORD}   store time: {tz}"
        "   (Ctrl-C stops)\n",
        flush=True,
    )
    os.environ.setdefault("FOOTFALL_TZ", tz)
    # While serving, uvicorn handles SIGINT/SIGTERM itself: a graceful stop, exit status 0.
    # Nothing else is running by then (the broker stopped when the build was done).
    # Plain HTTP on loopback: a certificate from a throwaway CA would greet the first look with
    # the browser's "not private" page, while localhost traffic never leaves the machine.
    run(db, host=args.host, port=args.port, tz=tz, log_level="warning", insecure_http=args.insecure_http)
    return 0
