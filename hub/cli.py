"""``footfall hub ...``: the store hub's subcommands.

Each subcommand is one ``add_<name>(hub_sub)`` function listed in ``COMMANDS``; a new one
(e.g. ``serve``) is a function appended there, nothing else changes.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3

    from footfall.hub.config import HubConfig

log = logging.getLogger(__name__)


def _load_config(args: argparse.Namespace):  # -> HubConfig
    from footfall.hub import config

    cfg = config.load(args.config)
    if getattr(args, "db", None):
        cfg.db = args.db
    return cfg


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", type=Path, help="hub TOML settings (default: defaults + FOOTFALL_HUB_* env)")
    p.add_argument("--db", help="database file (overrides the config's db)")


def _run(args: argparse.Namespace) -> int:
    from footfall.hub.ingest import Ingestor

    cfg = _load_config(args)
    ingestor = Ingestor(cfg)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: ingestor.stop())
    log.warning("hub ingest for site %s: %s:%d -> %s", cfg.site, cfg.mqtt.host, cfg.mqtt.port, cfg.db)
    ingestor.run()
    s = ingestor.stats
    log.warning(
        "stopped: %d received, %d stored, %d duplicates, %d rejected",
        s.received,
        s.stored,
        s.duplicates,
        s.rejected_total,
    )
    return 0


def add_run(hub_sub: argparse._SubParsersAction) -> None:
    p = hub_sub.add_parser("run", help="ingest the site's MQTT messages into the hub database (blocking)")
    _config_args(p)
    p.set_defaults(func=_run)


def _ingest(args: argparse.Namespace) -> int:
    """Store JSON payloads from files (or stdin): one JSON object per line, on ``--topic``."""
    from footfall.hub import store
    from footfall.hub.ingest import ingest_many

    cfg = _load_config(args)
    conn = store.connect(cfg.db)
    sources = args.files or ["-"]
    messages = []
    for src in sources:
        text = sys.stdin.read() if src == "-" else Path(src).read_text()
        messages += [(args.topic, line.encode()) for line in text.splitlines() if line.strip()]
    outcomes = ingest_many(conn, messages, cfg)
    summary: dict[str, int] = {}
    for o in outcomes:
        summary[o] = summary.get(o, 0) + 1
    print(json.dumps(summary, sort_keys=True))
    return 0 if not any(o.startswith("rejected") for o in outcomes) else 1


def add_ingest(hub_sub: argparse._SubParsersAction) -> None:
    p = hub_sub.add_parser("ingest", help="store payloads from files (one JSON per line) without MQTT")
    _config_args(p)
    p.add_argument("--topic", required=True, help="topic the payloads arrived on, e.g. footfall/store/s1/visit")
    p.add_argument("files", nargs="*", help="files of JSON lines (default: stdin)")
    p.set_defaults(func=_ingest)


def _sensors(args: argparse.Namespace) -> int:
    from footfall.hub import roster, store
    from footfall.hub.sensors import sensor_health

    cfg = _load_config(args)
    conn = store.connect(cfg.db)
    if args.admit or args.drop:
        return _admit_or_drop(conn, cfg, args)
    for s in sensor_health(conn, heartbeat_s=cfg.heartbeat_s, site=cfg.site):
        print(json.dumps(asdict(s), sort_keys=True))
    for r in conn.execute("SELECT reason, count, last_at, last_detail FROM ingest_rejects ORDER BY reason"):
        print(
            json.dumps(
                {"rejected": r["reason"], "count": r["count"], "last_at": r["last_at"], "last_detail": r["last_detail"]}
            )
        )
    for q in roster.quarantined(conn):
        print(json.dumps(q, sort_keys=True))
    return 0


def _admit_or_drop(conn: sqlite3.Connection, cfg: HubConfig, args: argparse.Namespace) -> int:
    from footfall import topics
    from footfall.hub import roster
    from footfall.hub.ingest import Writer

    for name in args.admit:
        try:
            topics.check_id(name, "sensor")
            writer = Writer(conn, cfg)
            refused = writer.gate.refuse(name)
            if refused is not None and refused[0] == "revoked":
                # A revoked sensor stays out; its quarantined messages stay for inspection (--drop).
                raise ValueError(refused[1] + "; re-provision it (footfall provision add-sensor) to let it in")
            roster.admit(conn, cfg.site, name)
            outcomes = roster.release(conn, writer, cfg.site, name)
        except ValueError as exc:
            print(f"footfall hub sensors: error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps({"admitted": name, "replayed": sum(outcomes.values()), "outcomes": outcomes}, sort_keys=True))
    for name in args.drop:
        roster.ensure_tables(conn)
        with conn:
            n = conn.execute("DELETE FROM sensor_quarantine WHERE site = ? AND sensor = ?", (cfg.site, name)).rowcount
        print(json.dumps({"dropped": name, "messages": n}))
    return 0


def add_sensors(hub_sub: argparse._SubParsersAction) -> None:
    p = hub_sub.add_parser(
        "sensors",
        help="sensor health, ingest reject counts and quarantined messages, as JSON lines; "
        "--admit lets a refused sensor in",
    )
    _config_args(p)
    p.add_argument(
        "--admit",
        action="append",
        default=[],
        metavar="SENSOR",
        help="accept this sensor from now on (beside hub.toml's sensors, no restart) and ingest the "
        "messages it sent while refused (repeatable)",
    )
    p.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="SENSOR",
        help="delete this sensor's quarantined messages (e.g. a stolen sensor's, once inspected)",
    )
    p.set_defaults(func=_sensors)


def _retention(args: argparse.Namespace) -> int:
    from footfall.hub import retention, store

    cfg = _load_config(args)
    result = retention.apply(store.connect(cfg.db), cfg, now=time.time())
    print(json.dumps(asdict(result), sort_keys=True))
    return 0


def add_retention(hub_sub: argparse._SubParsersAction) -> None:
    p = hub_sub.add_parser("retention", help="roll up and delete data older than the retention window now")
    _config_args(p)
    p.set_defaults(func=_retention)


def _remerge(args: argparse.Namespace) -> int:
    from footfall.hub import devices, merge, store

    cfg = _load_config(args)
    conn = store.connect(cfg.db)
    with conn:
        result = merge.remerge_all(
            conn,
            gap_s=cfg.merge_gap_s,
            tz=cfg.tz,
            estimator=devices.HashEstimator(),
            excluded=devices.excluded_keys(conn),
        )
    print(json.dumps({"visits": result.created}))
    return 0


def add_remerge(hub_sub: argparse._SubParsersAction) -> None:
    p = hub_sub.add_parser("remerge", help="rebuild store visits from sensor visits (after changing merge_gap_s)")
    _config_args(p)
    p.set_defaults(func=_remerge)


def _link(args: argparse.Namespace) -> int:
    import time

    from footfall.hub import link, store

    cfg = _load_config(args)
    conn = store.connect(cfg.db)
    since = 0.0 if args.all else time.time() - args.hours * 3600
    result = link.relink(conn, cfg, since=since)
    print(json.dumps(result.__dict__))
    return 0


def add_link(hub_sub: argparse._SubParsersAction) -> None:
    p = hub_sub.add_parser(
        "link", help="link randomized MACs into devices, rebuild store visits and estimate people (whole days)"
    )
    _config_args(p)
    p.add_argument("--hours", type=float, default=6.0, help="the days touched by the last N hours (default 6)")
    p.add_argument("--all", action="store_true", help="every day with stored visits")
    p.set_defaults(func=_link)


def _occupancy(args: argparse.Namespace) -> int:
    """People present per window (estimated), as CSV: window start (local), UNIX seconds, people."""
    import csv
    from datetime import date, datetime, timedelta
    from datetime import time as dt_time

    from footfall.hub import figures, store

    cfg = _load_config(args)
    tz = cfg.tz
    try:
        start = date.fromisoformat(args.start)
        end = date.fromisoformat(args.end) if args.end else start
    except ValueError as exc:
        print(f"footfall hub occupancy: dates must be YYYY-MM-DD ({exc})", file=sys.stderr)
        return 2
    if end < start:
        print(f"footfall hub occupancy: --end {end} is before --start {start}", file=sys.stderr)
        return 2
    if args.window < 60 or args.window % 60:
        print("footfall hub occupancy: --window must be a multiple of 60 seconds", file=sys.stderr)
        return 2
    conn = store.connect(cfg.db, readonly=True)
    lo = datetime.combine(start, dt_time(), tz).timestamp()
    hi = datetime.combine(end + timedelta(days=1), dt_time(), tz).timestamp()
    rows = figures.occupancy(conn, lo, hi, args.window)
    out = csv.writer(sys.stdout)
    out.writerow(["start_local", "start_unix", "people"])
    for r in rows:
        local = datetime.fromtimestamp(r["start"], tz).strftime("%Y-%m-%d %H:%M")
        out.writerow([local, r["start"], "" if r["people"] is None else r["people"]])
    return 0


def add_occupancy(hub_sub: argparse._SubParsersAction) -> None:
    p = hub_sub.add_parser("occupancy", help="people present per window (estimated), as CSV")
    _config_args(p)
    p.add_argument("--start", required=True, help="first local day, YYYY-MM-DD")
    p.add_argument("--end", help="last local day, inclusive (default: --start)")
    p.add_argument("--window", type=int, default=600, help="window length in seconds (default 600)")
    p.set_defaults(func=_occupancy)


def _segment_add(args: argparse.Namespace) -> int:
    from footfall.hub import segment_rules, segments, store

    cfg = _load_config(args)
    conn = store.connect(cfg.db)
    try:
        segments.create_segment(
            conn, args.name, json.loads(args.rule), dynamic=not args.static, lookback_days=args.lookback_days
        )
    except (segment_rules.RuleError, json.JSONDecodeError) as exc:
        print(f"footfall hub segment: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"segment": args.name, "members": len(segments.segment_members(conn, args.name))}))
    return 0


def _segment_list(args: argparse.Namespace) -> int:
    from footfall.hub import segments, store

    conn = store.connect(_load_config(args).db)
    for seg in segments.list_segments(conn):
        print(json.dumps(seg, default=str))
    return 0


def _segment_refresh(args: argparse.Namespace) -> int:
    from footfall.hub import segments, store

    conn = store.connect(_load_config(args).db)
    print(json.dumps(segments.refresh_segments(conn)))
    return 0


def _cluster(args: argparse.Namespace) -> int:
    from footfall.hub import segment_clusters, store

    conn = store.connect(_load_config(args).db)
    result = segment_clusters.run_clustering(conn, lookback_days=args.lookback_days)
    sizes = [result.labels.count(i) for i in range(result.k)]
    print(
        json.dumps(
            {"k": result.k, "criterion": result.criterion, "clusters": dict(zip(result.names, sizes, strict=True))}
        )
    )
    return 0


def add_segments(hub_sub: argparse._SubParsersAction) -> None:
    seg = hub_sub.add_parser("segment", help="rule-based segments (what coupons, partners and sync consume)")
    seg_sub = seg.add_subparsers(dest="segment_command", metavar="ACTION")
    seg.set_defaults(func=lambda args: seg.print_help() or 2)
    p = seg_sub.add_parser("add", help="create a segment from a JSON rule and evaluate it")
    _config_args(p)
    p.add_argument("name")
    p.add_argument(
        "rule",
        help='JSON, e.g. \'{"all": [{"field": "last_dwell_s", "op": "<", "value": 300}, '
        '{"field": "passerby_count_7d", "op": ">=", "value": 2}]}\'',
    )
    p.add_argument("--static", action="store_true", help="evaluate once (default: re-evaluated, dynamic)")
    p.add_argument("--lookback-days", type=float, default=30.0)
    p.set_defaults(func=_segment_add)
    p = seg_sub.add_parser("list", help="segments with sizes and definitions, as JSON lines")
    _config_args(p)
    p.set_defaults(func=_segment_list)
    p = seg_sub.add_parser("refresh", help="re-evaluate dynamic segments and record every size now")
    _config_args(p)
    p.set_defaults(func=_segment_refresh)
    p = hub_sub.add_parser("cluster", help="cluster visitors by behaviour (k by silhouette) into segments")
    _config_args(p)
    p.add_argument("--lookback-days", type=float, default=30.0)
    p.set_defaults(func=_cluster)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_run,
    add_ingest,
    add_sensors,
    add_retention,
    add_remerge,
    add_link,
    add_occupancy,
    add_segments,
]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``footfall hub <command>`` for every entry of ``COMMANDS``."""
    hub = sub.add_parser("hub", help="the store hub: ingest, storage, metrics, dashboard")
    hub_sub = hub.add_subparsers(dest="hub_command", metavar="COMMAND")
    hub.set_defaults(func=lambda args: hub.print_help() or 2)
    for add in COMMANDS:
        add(hub_sub)
    # The web half (dashboard, API, logins) registers its own commands.
    from footfall.hub.serve import register_web

    register_web(hub_sub)
    # O2O retargeting is a top-level command: marketing runs it, not the store's IT.
    from footfall.hub.o2o.cli import register_o2o

    register_o2o(sub)
