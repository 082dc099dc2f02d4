"""Subcommands of this part; registered by ``footfall.cli``.

``footfall sync ...`` is the hub's side (``sync_cli.py``); ``footfall central ...`` is the
central service (:func:`register_central`). Heavy imports happen inside the commands, so
``footfall --help`` stays fast and a hub without the central extras still gets ``sync``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from footfall.cli import read_password


def register(sub: argparse._SubParsersAction) -> None:
    """Add this part's subcommands to ``footfall``."""
    from footfall.cloud_sync.sync_cli import register_sync

    register_sync(sub)
    register_central(sub)


def _config(args: argparse.Namespace):  # -> CentralConfig
    from footfall.cloud_sync.central import config

    cfg = config.load(args.config)
    if getattr(args, "db", None):
        cfg.db = args.db
    return cfg


def _db(args: argparse.Namespace):  # -> Database
    from footfall.cloud_sync.central import schema
    from footfall.cloud_sync.central.db import Database

    db = Database(_config(args).db)
    schema.init(db)
    return db


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", type=Path, help="central TOML settings (default: defaults + FOOTFALL_CENTRAL_*)")
    p.add_argument("--db", help="database: a SQLite path or postgresql://... (overrides the config)")


def _stores(text: str | None) -> list[str] | None:
    if not text or text.strip() == "*":
        return None
    return [s.strip() for s in text.split(",") if s.strip()]


CONFIG_ENV = "FOOTFALL_CENTRAL_CONFIG"


def _serve(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from footfall.cloud_sync.central.app import create_app

    cfg = _config(args)
    host = args.host or cfg.host
    port = args.port or cfg.port
    if args.workers <= 1:
        uvicorn.run(create_app(cfg), host=host, port=port, log_level=args.log_level, proxy_headers=False)
        return 0
    # Several processes on one port (uvicorn's supervisor): each builds its own app from the
    # same settings, handed on through the environment. Everything they share (nonces, batch
    # ids, sessions, pushback cursors) is in the database; /metrics counters are per process.
    if args.config:
        os.environ[CONFIG_ENV] = str(Path(args.config).resolve())
    if args.db:
        os.environ["FOOTFALL_CENTRAL_DB"] = args.db
    uvicorn.run(
        "footfall.cloud_sync.cli:worker_app",
        factory=True,
        workers=args.workers,
        host=host,
        port=port,
        log_level=args.log_level,
        proxy_headers=False,
    )
    return 0


def worker_app():  # -> FastAPI
    """The app of one ``footfall central serve --workers N`` process."""
    import os

    from footfall.cloud_sync.central import config
    from footfall.cloud_sync.central.app import create_app

    return create_app(config.load(os.environ.get(CONFIG_ENV) or None))


def _hub_add(args: argparse.Namespace) -> int:
    from footfall.cloud_sync.central import auth

    with _db(args).connect() as conn:
        try:
            secret = auth.add_hub(conn, args.hub_id, name=args.name or "", rotate=args.rotate)
        except auth.AuthError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"hub {args.hub_id} registered; its signing secret (shown once, put it in the hub's secret file):")
    print(secret)
    return 0


def _user_add(args: argparse.Namespace) -> int:
    from footfall.cloud_sync.central import auth

    with _db(args).connect() as conn:
        try:
            auth.add_user(
                conn,
                args.name,
                read_password(args.password_stdin),
                role=args.role,
                stores=_stores(args.stores),
                replace=args.replace,
            )
        except auth.AuthError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"user {args.name} ({args.role}, stores {args.stores or '*'}) saved")
    return 0


def _apikey_create(args: argparse.Namespace) -> int:
    from footfall.cloud_sync.central import auth

    with _db(args).connect() as conn:
        try:
            key = auth.create_api_key(conn, args.name, role=args.role, stores=_stores(args.stores))
        except auth.AuthError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(key)
    return 0


def _segment_add(args: argparse.Namespace) -> int:
    from footfall.cloud_sync.central import segments

    rule_text = Path(args.rule[1:]).read_text() if args.rule.startswith("@") else args.rule
    with _db(args).connect() as conn:
        try:
            segments.create_segment(
                conn, args.id, args.name or args.id, json.loads(rule_text), stores=_stores(args.stores)
            )
        except (ValueError, segments.RuleError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"segment {args.id} created")
    return 0


def _segment_recount(args: argparse.Namespace) -> int:
    from footfall.cloud_sync.central import segments

    with _db(args).connect() as conn:
        try:
            v = segments.recount(conn, args.id)
        except KeyError:
            print(f"error: no segment {args.id!r}", file=sys.stderr)
            return 1
    print(json.dumps({"segment": v.segment_id, "version": v.version, "size": v.size, "delta": v.delta}))
    return 0


def _export(args: argparse.Namespace) -> int:
    from footfall.cloud_sync.central import cdp, export, segments

    cfg = _config(args)
    db = _db(args)
    with db.connect() as conn:
        seg = segments.get_segment(conn, args.segment)
        if seg is None:
            print(f"error: no segment {args.segment!r}", file=sys.stderr)
            return 1
        try:
            if args.format == "msisdn":
                result = export.supplier_csv(
                    conn, args.segment, args.out or ".", version=args.version, max_bytes=args.max_bytes
                )
                for w in result.warnings:
                    print(f"warning: {w}", file=sys.stderr)
                for f in result.files:
                    print(f)
                return 0
            if args.format == "cdp":
                target = cfg.cdp.get(args.connector)
                if target is None:
                    print(f"error: no [cdp.{args.connector}] in the config", file=sys.stderr)
                    return 1
                r = cdp.push_segment(conn, args.segment, target, version=args.version, stores=seg["stores"])
                print(json.dumps({"export_id": r.export_id, "sent": r.sent, "batches": r.batches}))
                return 0
            text = export.generic(conn, args.segment, args.format, version=args.version, stores=seg["stores"])
        except KeyError as exc:
            print(f"error: {exc.args[0]} (run footfall central segment recount first)", file=sys.stderr)
            return 1
        except cdp.CdpError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _retention(args: argparse.Namespace) -> int:
    from footfall.cloud_sync.central import consent

    cfg = _config(args)
    with _db(args).connect() as conn:
        print(json.dumps(consent.enforce_retention(conn, cfg.retention), sort_keys=True))
    return 0


def register_central(sub: argparse._SubParsersAction) -> None:
    """Add ``footfall central``: the chain's central service."""
    p = sub.add_parser("central", help="the chain's central service: profiles, segments, exports, consent")
    actions = p.add_subparsers(dest="central_command", metavar="ACTION")

    s = actions.add_parser("serve", help="run the central service (uvicorn)")
    _common(s)
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--log-level", default="info")
    s.add_argument(
        "--workers", type=int, default=1, help="service processes on the port (hub batches are CPU-bound: ~cores)"
    )
    s.set_defaults(func=_serve)

    hub = actions.add_parser("hub", help="store hubs allowed to sync").add_subparsers(dest="hub_cmd", metavar="ACTION")
    h = hub.add_parser("add", help="register a hub and print its signing secret once")
    _common(h)
    h.add_argument("hub_id", help="the hub's site id")
    h.add_argument("--name", help="display name")
    h.add_argument("--rotate", action="store_true", help="replace the secret of an existing hub")
    h.set_defaults(func=_hub_add)

    user = actions.add_parser("user", help="marketing-team logins").add_subparsers(dest="user_cmd", metavar="ACTION")
    u = user.add_parser("add", help="create a login (or --replace it)")
    _common(u)
    u.add_argument("name")
    u.add_argument("--role", choices=("readonly", "marketing", "admin"), default="readonly")
    u.add_argument("--stores", help="comma-separated store ids this user sees (default: the whole chain)")
    u.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    u.add_argument("--replace", action="store_true")
    u.set_defaults(func=_user_add)

    keys = actions.add_parser("apikey", help="API keys").add_subparsers(dest="key_cmd", metavar="ACTION")
    k = keys.add_parser("create", help="create an API key (printed once)")
    _common(k)
    k.add_argument("name")
    k.add_argument("--role", choices=("readonly", "marketing", "admin"), default="readonly")
    k.add_argument("--stores")
    k.set_defaults(func=_apikey_create)

    seg = actions.add_parser("segment", help="cross-store segments").add_subparsers(dest="seg_cmd", metavar="ACTION")
    sa = seg.add_parser("add", help="create a rule segment")
    _common(sa)
    sa.add_argument("id")
    sa.add_argument("--rule", required=True, help="JSON rule, or @file.json")
    sa.add_argument("--name")
    sa.add_argument("--stores")
    sa.set_defaults(func=_segment_add)
    sr = seg.add_parser("recount", help="recount a segment into a new version")
    _common(sr)
    sr.add_argument("id")
    sr.set_defaults(func=_segment_recount)

    e = actions.add_parser("export", help="export a segment version (latest by default)")
    _common(e)
    e.add_argument("segment")
    e.add_argument("--format", choices=("msisdn", "csv", "json", "cdp"), default="msisdn")
    e.add_argument("--out", help="directory (msisdn) or file (csv/json); default: . / stdout")
    e.add_argument("--version", type=int)
    e.add_argument("--max-bytes", type=int, default=99_000_000, help="msisdn: split files above this size")
    e.add_argument("--connector", default="main", help="cdp: which [cdp.NAME] of the config")
    e.set_defaults(func=_export)

    r = actions.add_parser("retention", help="delete events and profiles past their retention")
    _common(r)
    r.set_defaults(func=_retention)
