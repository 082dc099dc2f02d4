"""``footfall agent ...``: run the sensor agent live, or replay a capture file through it."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from footfall import schema

log = logging.getLogger("footfall.agent")


def register(sub: argparse._SubParsersAction) -> None:
    agent = sub.add_parser("agent", help="the sensor agent: capture probe requests, publish visits")
    asub = agent.add_subparsers(dest="agent_command", metavar="ACTION")

    run = asub.add_parser("run", help="run live from the configured capture source")
    run.add_argument("--config", required=True, help="agent TOML file")
    run.set_defaults(func=cmd_run)

    replay = asub.add_parser("replay", help="replay pcap/pcapng files through the agent")
    replay.add_argument("pcaps", nargs="+", help="capture files (radiotap)")
    replay.add_argument("--config", help="agent TOML file (the options below override it)")
    replay.add_argument("--site", help="site id")
    replay.add_argument("--sensor", help="sensor id")
    replay.add_argument("--broker", help="HOST:PORT of the MQTT broker")
    replay.add_argument("--hash-key-file", help="file holding the site's hex hash key (created if absent)")
    replay.add_argument("--buffer", help="disk buffer path (default: a temporary file)")
    replay.add_argument("--realtime", action="store_true", help="replay at the capture's original pace")
    replay.add_argument("--stdout", action="store_true", help="print messages as JSON lines instead of MQTT")
    replay.add_argument("--partner-format", help="enable partner hashes in this MAC normal form")
    replay.add_argument("--flush-timeout", type=float, default=60.0, help="seconds to wait for delivery")
    replay.set_defaults(func=cmd_replay)

    agent.set_defaults(func=lambda args: agent.print_help() or 2)

    cal = sub.add_parser("calibrate", help="measure the inside/outside signal threshold on site")
    cal.add_argument("--source", help="live source (iface:mon0): prompts you through the two walks")
    cal.add_argument("--seconds", type=float, default=90.0, help="length of each walk, live")
    cal.add_argument("--inside", help="capture file of the inside walk")
    cal.add_argument("--outside", help="capture file of the outside walk")
    cal.set_defaults(func=cmd_calibrate)
    # ``footfall calibrate counts``: the hub's estimates against a door count. Optional, so every
    # ``footfall calibrate --source/--inside/--outside`` above works as before.
    cal.usage = (
        "footfall calibrate [--source SOURCE [--seconds S] | --inside FILE --outside FILE]\n"
        "       footfall calibrate counts --truth CSV [--config HUB_TOML | --db HUB_DB] [--tz TZ] [--dry-run] [--json]"
    )
    modes = cal.add_subparsers(dest="calibrate_mode", metavar="MODE")
    counts = modes.add_parser(
        "counts",
        help="on the hub: fit the visitor / passer-by estimates to a door count (docs/calibration.md)",
        description="Fit the hub's estimates of visitors and passers-by to a real count (a door counter's "
        "export or a manual count, CSV) and store the factors the dashboard applies. See docs/calibration.md.",
    )
    counts.add_argument("--truth", metavar="CSV", help="the count: start (or time), optional end, visitors, passersby")
    counts.add_argument("--config", "-c", help="hub TOML settings (database, time zone)")
    counts.add_argument("--db", help="hub database (overrides the config's)")
    counts.add_argument("--tz", help="the store's time zone, e.g. Europe/Paris (default: config, env FOOTFALL_TZ, UTC)")
    counts.add_argument("--dry-run", action="store_true", help="fit and report, store nothing")
    counts.add_argument("--json", action="store_true", help="print the report as JSON")
    counts.add_argument("--show", action="store_true", help="print the calibration in force")
    counts.add_argument("--undo", action="store_true", help="remove the latest calibration (the previous one applies)")
    counts.add_argument("--clear", action="store_true", help="remove every calibration (back to the defaults)")
    counts.set_defaults(func=cmd_calibrate_counts)


def _load_config(args: argparse.Namespace) -> Any:
    from footfall.edge_agent.config import AgentConfig, ConfigError

    try:
        if getattr(args, "config", None):
            cfg = AgentConfig.load(args.config)
        else:
            if not (args.site and args.sensor):
                raise ConfigError("give --config, or --site and --sensor")
            cfg = AgentConfig(site=args.site, sensor=args.sensor)
        if getattr(args, "site", None):
            cfg.site = args.site
        if getattr(args, "sensor", None):
            cfg.sensor = args.sensor
        cfg.__post_init__()
    except ConfigError as exc:
        raise SystemExit(f"footfall agent: {exc}") from None
    return cfg


def open_publisher(cfg: Any) -> Any:
    """A store-and-forward publisher for this agent's config."""
    from footfall import __version__
    from footfall.edge_agent.buffer import DiskBuffer
    from footfall.edge_agent.publish import Publisher, TLSOptions

    buffer = DiskBuffer(cfg.buffer_path, max_bytes=cfg.buffer_max_bytes)
    m = cfg.mqtt
    tls = None
    if m.ca_certs or m.certfile:
        tls = TLSOptions(ca_certs=m.ca_certs, certfile=m.certfile, keyfile=m.keyfile, insecure=m.tls_insecure)
    return Publisher(
        cfg.site,
        cfg.sensor,
        m.host,
        m.port,
        buffer,
        username=m.username,
        password=m.password(),
        tls=tls,
        keepalive=m.keepalive,
        version=__version__,
    ).start()


def _stdout_sink(kind: str, payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"kind": kind, **payload}, separators=(",", ":")) + "\n")


# replay's exit status when it ran to the end but lost data on the way (docs/agent.md)
EXIT_LOSS = 3


def cmd_replay(args: argparse.Namespace) -> int:
    from footfall.edge_agent.agent import Agent
    from footfall.edge_agent.capture import DECODABLE_LINKTYPES
    from footfall.edge_agent.config import ConfigError
    from footfall.edge_agent.identity import load_key
    from footfall.edge_agent.pcapfile import PcapError, PcapSource

    # Every file is checked before the first is replayed: a bad one in the list stops the replay
    # with one line before anything was published, not with a traceback half-way.
    sources = []
    for path in args.pcaps:
        try:
            source = PcapSource(path, realtime=args.realtime)
            source.require_linktype(DECODABLE_LINKTYPES)
        except PcapError as exc:
            print(f"footfall agent: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"footfall agent: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        sources.append(source)

    cfg = _load_config(args)
    if args.broker:
        host, _, port = args.broker.rpartition(":")
        cfg.mqtt.host, cfg.mqtt.port = host or "127.0.0.1", int(port)
    if args.partner_format:
        cfg.partner_enabled, cfg.partner_mac_format = True, args.partner_format
    if args.hash_key_file:
        load_key(args.hash_key_file, create=True)
        cfg.hash_key_file = args.hash_key_file
    elif not (cfg.hash_key_file or os.environ.get("FOOTFALL_HASH_KEY")):
        raise SystemExit("footfall agent: no hash key: give --hash-key-file or set FOOTFALL_HASH_KEY")
    tmpdir = None
    if args.buffer:
        cfg.buffer_path = args.buffer
    elif not args.config:
        tmpdir = tempfile.TemporaryDirectory(prefix="footfall-agent-")
        cfg.buffer_path = str(Path(tmpdir.name) / "buffer.db")

    publisher = None
    if args.stdout:
        sink = _stdout_sink
    else:
        publisher = open_publisher(cfg)
        sink = publisher.publish
    aged = _AgedVisits(sink)
    try:
        agent = Agent(cfg, aged.sink, backlog=_backlog(publisher))
    except ConfigError as exc:
        raise SystemExit(f"footfall agent: {exc}") from None
    # the buffer's drop counts live in its file: a --config buffer may have some from before
    dropped_before = _dropped_visits(publisher)
    damage = {"bad_records": 0, "skipped_bytes": 0, "truncated": 0}
    delivered = True
    try:
        for source in sources:
            agent.process(source)
            for key in damage:
                damage[key] += source.stats.get(key, 0)
        agent.finish("end_of_capture")
        stats = dict(agent.parser.stats)
        log.info("replayed %d frames: %s; %d visits", agent.frames, stats, agent.visits_sent)
        if publisher is not None and not publisher.flush(args.flush_timeout):
            log.error("broker did not acknowledge everything within %.0fs; the rest stays buffered", args.flush_timeout)
            delivered = False
        dropped = _dropped_visits(publisher) - dropped_before
    finally:
        if publisher is not None:
            publisher.close()
        if tmpdir is not None:
            tmpdir.cleanup()
    if aged.count:
        print(aged.hint(agent.visits_sent), file=sys.stderr)
    print(_replay_summary(agent, stats, damage, dropped), file=sys.stderr)
    if not delivered:
        return 1
    return EXIT_LOSS if dropped or damage["bad_records"] or damage["truncated"] else 0


def _dropped_visits(publisher: Any) -> int:
    """Visits the disk buffer has dropped for space, ever (0 without a buffer: --stdout)."""
    return 0 if publisher is None else int(publisher.buffer.stats().get("dropped_visits", 0))


def _replay_summary(agent: Any, stats: dict[str, int], damage: dict[str, int], dropped: int) -> str:
    """replay's last line: what was read, and everything lost on the way (the exit status too).

    Up to "N visits" it reads as it always did (scripts take the count after the last ", ")."""
    line = (
        f"{agent.frames} frames, {stats.get('ok', 0)} probe requests "
        f"({agent.tracker.duplicates} repeats of one transmission), {agent.visits_sent} visits; "
        f"{dropped} visits dropped by the full disk buffer"
    )
    if damage["bad_records"]:
        line += f"; {damage['bad_records']} corrupt records rejected ({damage['skipped_bytes']} bytes skipped)"
    if damage["truncated"]:
        line += f"; {damage['truncated']} truncated files (last record cut short)"
    return line


class _AgedVisits:
    """Counts the replayed visits that a hub with the default retention rejects as expired.

    Replaying an old capture is the usual way to see that: the hub acknowledges such visits
    (a redelivery would be just as old), counts them under ``expired`` and stores nothing.
    """

    def __init__(self, sink: Any) -> None:
        # The hub's default and its cutoff rule, from the schema both sides share: a sensor does
        # not carry the hub's code.
        self._sink = sink
        self.raw_days = schema.DEFAULT_RAW_RETENTION_DAYS
        self.cutoff = schema.retention_cutoff(time.time(), self.raw_days)
        self.count = 0

    def sink(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "visit" and payload["first_seen"] < self.cutoff:
            self.count += 1
        self._sink(kind, payload)

    def hint(self, visits: int) -> str:
        return (
            f"{self.count} of {visits} visits are older than {self.raw_days} days: a hub with the default "
            f"retention (retention.raw_days = {self.raw_days}) rejects them as expired; raise it to keep them"
        )


def _backlog(publisher: Any) -> Any:
    if publisher is None:
        return None

    def backlog() -> tuple[int, int]:
        s = publisher.stats()
        return int(s.get("backlog", 0)), int(s.get("dropped", 0))

    return backlog


def cmd_run(args: argparse.Namespace) -> int:
    # First: a module missing on a slimmed-down Python (OpenWrt) must stop us with one line, not
    # kill the MQTT thread later while the process stays up (edge_agent/preflight.py).
    from footfall.edge_agent import preflight

    preflight.require()
    from footfall.edge_agent.agent import Agent
    from footfall.edge_agent.capture import open_source
    from footfall.edge_agent.config import ConfigError
    from footfall.edge_agent.connection import Watchdog
    from footfall.edge_agent.interfaces import CaptureError

    cfg = _load_config(args)
    if not cfg.source:
        raise SystemExit("footfall agent: [capture] source is not set")
    publisher = open_publisher(cfg)
    try:
        agent = Agent(cfg, publisher.publish, backlog=_backlog(publisher), link=publisher.stats)
    except ConfigError as exc:
        publisher.close()
        raise SystemExit(f"footfall agent: {exc}") from None
    publisher.subscribe_config(agent.apply_config)
    # Opt-outs must hold from the first frame: the saved hub config is in force already (Agent);
    # a reachable broker gets a few seconds to deliver a newer retained one before capture opens.
    if not publisher.wait_config(cfg.mqtt.config_wait_s):
        log.info("no config from the broker within %.0f s; capturing with the saved one", cfg.mqtt.config_wait_s)
    hopper = None
    try:
        source = open_source(cfg.source, realtime=cfg.realtime)
    except CaptureError as exc:
        publisher.close()
        raise SystemExit(f"footfall agent: {exc}") from None
    if cfg.channels and cfg.source.startswith(("iface:", "scapy:")):
        from footfall.edge_agent.channels import ChannelHopper

        hopper = ChannelHopper(cfg.source.split(":", 1)[1], channels=tuple(cfg.channels), dwell_s=cfg.dwell_s)
        hopper.start()

    def stop(signum: int, frame: object) -> None:
        log.info("signal %d: stopping", signum)
        agent.stop()
        source.close()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # A dead MQTT loop (publisher.dead logs why) ends the run with status 1: the service manager
    # restarts the agent, and what was buffered is sent by the next run.
    watchdog = Watchdog(lambda: publisher.dead, lambda: (agent.stop(), source.close())).start()
    try:
        agent.run_live(source)
    finally:
        watchdog.stop()
        if hopper is not None:
            hopper.stop()
        if watchdog.reason is None:
            publisher.flush(5.0)
        publisher.close()
    return 1 if watchdog.reason is not None else 0


def cmd_calibrate_counts(args: argparse.Namespace) -> int:
    # Hub code, imported here: a sensor installs without the hub's extras.
    try:
        from footfall.hub.calibrate import main
    except ImportError as exc:
        print(
            f"footfall calibrate counts: needs the hub (pip install 'footfall[hub]'; run it on the hub): {exc}",
            file=sys.stderr,
        )
        return 1
    return main(args)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from footfall.edge_agent.calibrate import CalibrationError, propose, rssi_by_fingerprint, timed
    from footfall.edge_agent.pcapfile import PcapError, PcapSource

    try:
        if args.inside and args.outside:
            inside = rssi_by_fingerprint(PcapSource(args.inside))
            outside = rssi_by_fingerprint(PcapSource(args.outside))
        elif args.source:
            from footfall.edge_agent.capture import open_source
            from footfall.edge_agent.interfaces import CaptureError

            try:
                source = open_source(args.source)
            except CaptureError as exc:
                raise SystemExit(f"footfall calibrate: {exc}") from None
            frames = iter(source)
            input(
                "1/2 Open the Wi-Fi settings page on your phone and keep it open.\n"
                f"    Walk along the inside edges of the shop for {args.seconds:.0f} s. Press Enter to start..."
            )
            inside = rssi_by_fingerprint(timed(frames, args.seconds))
            input(f"2/2 Now walk on the pavement outside the window for {args.seconds:.0f} s. Press Enter to start...")
            outside = rssi_by_fingerprint(timed(frames, args.seconds))
            source.close()
        else:
            raise SystemExit("footfall calibrate: give --source for a live walk, or --inside and --outside files")
        result = propose(inside, outside)
    except (CalibrationError, PcapError, OSError) as exc:
        print(f"footfall calibrate: {exc}", file=sys.stderr)
        return 1
    print(result.report())
    return 0
