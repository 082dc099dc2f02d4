"""Run the dashboard and API with uvicorn, and the CLI wiring of the web side of the hub.

``register_web(hub_sub)`` adds, under ``footfall hub``:

    serve               the dashboard + API (uvicorn): HTTPS with --certfile, plain HTTP on loopback
                        (or with --insecure-http)
    seed                write a realistic seeded store database (demo, benchmarks)
    user add NAME       create a store-manager login (or --replace its password)
    apikey create NAME  create an API key for a machine client (printed once)
    apikey revoke NAME
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from footfall.cli import read_password

if TYPE_CHECKING:
    from footfall.hub.config import WebConfig
    from footfall.hub.monitor import MonitorSources

log = logging.getLogger(__name__)
DEFAULT_DB = os.environ.get("FOOTFALL_HUB_DB", "hub.db")
DEFAULT_TZ = os.environ.get("FOOTFALL_TZ", "UTC")


def run(
    db_path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    tz: str = DEFAULT_TZ,
    secure_cookie: bool = False,
    refresh_interval_s: float = 15.0,
    stale_after_s: float = 180.0,
    log_level: str = "info",
    monitor_sources: MonitorSources | None = None,
    certfile: str | Path | None = None,
    keyfile: str | Path | None = None,
    insecure_http: bool = False,
) -> None:
    """Serve the dashboard until interrupted: HTTPS with ``certfile``, else plain HTTP on loopback
    only unless ``insecure_http`` (``footfall.hub.tls``); raises ``TransportError`` otherwise."""
    import uvicorn

    from footfall.hub import tls
    from footfall.hub.api import WebSettings, create_app

    scheme = tls.check_transport(host, str(certfile) if certfile else None, insecure_http)
    # Built before the app: a missing or mismatched file stops us here, with its name.
    context = tls.server_context(certfile, keyfile) if scheme == "https" else None
    settings = WebSettings(
        tz=tz,
        secure_cookie=secure_cookie,
        refresh_interval_s=refresh_interval_s,
        stale_after_s=stale_after_s,
        monitor_sources=monitor_sources,
    )
    app = create_app(db_path, settings)
    if scheme == "http" and not tls.is_loopback(host):
        log.warning("plain HTTP on %s:%d (--insecure-http): logins travel in clear text", host, port)
    elif scheme == "http":
        log.info("serving the dashboard as plain HTTP on %s:%d, loopback only (a TLS proxy in front?)", host, port)
    # One worker: the summary refresher and the login rate limiter live in this process.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        proxy_headers=False,
        ssl_certfile=str(certfile) if context else None,
        ssl_keyfile=str(keyfile) if context and keyfile else None,
    )
    config.load()
    if context is not None:
        # uvicorn's own context keeps its default cipher list ("TLSv1": CBC and SHA-1 suites
        # too); ours has the TLS 1.2 floor and ECDHE+AEAD only. Swapped in after load(), since
        # the server reads config.ssl when it binds.
        config.ssl = context
    uvicorn.Server(config).run()


def _resolve(args: argparse.Namespace) -> tuple[str, str, float, MonitorSources | None]:
    """Database, time zone, sensor staleness and what /metrics watches: flags first, then the
    hub's TOML config (``--config``, the same file ``footfall hub run`` reads), then env and defaults."""
    db, tz, stale, sources = args.db, args.tz, 180.0, None
    if getattr(args, "config", None) is not None:
        from footfall.hub import config
        from footfall.hub.monitor import MonitorSources

        cfg = config.load(args.config)
        db = db or cfg.db
        tz = tz or cfg.timezone
        # Three missed heartbeats make a sensor stale.
        stale = 3 * cfg.heartbeat_s
        # The roster and certificate files, so /metrics shows a sensor that never connected.
        sources = MonitorSources.from_config(cfg)
    return db or DEFAULT_DB, tz or DEFAULT_TZ, stale, sources


def _listen(args: argparse.Namespace) -> WebConfig:
    """Where and how to listen: flags first, then the ``[web]`` table of ``--config``, then defaults."""
    from footfall.hub.config import WebConfig

    web = WebConfig()
    if getattr(args, "config", None) is not None:
        from footfall.hub import config

        web = config.load(args.config).web
    return WebConfig(
        host=getattr(args, "host", None) or web.host,
        port=getattr(args, "port", None) or web.port,
        certfile=getattr(args, "certfile", None) or web.certfile,
        keyfile=getattr(args, "keyfile", None) or web.keyfile,
        insecure_http=getattr(args, "insecure_http", False) or web.insecure_http,
    )


def _serve(args: argparse.Namespace) -> int:
    from footfall.hub.tls import TransportError

    db, tz, stale, sources = _resolve(args)
    web = _listen(args)
    if web.keyfile and not web.certfile:
        print("error: --keyfile needs --certfile", file=sys.stderr)
        return 2
    if sources is not None and web.certfile:
        # An expired dashboard certificate locks the manager out of the browser: watched too.
        sources = dataclasses.replace(sources, certs=(*sources.certs, ("dashboard", Path(web.certfile))))
    try:
        run(
            db,
            host=web.host,
            port=web.port,
            tz=tz,
            secure_cookie=args.secure_cookie,
            refresh_interval_s=args.refresh,
            stale_after_s=stale,
            log_level="debug" if getattr(args, "verbose", 0) > 1 else "info",
            monitor_sources=sources,
            certfile=web.certfile or None,
            keyfile=web.keyfile or None,
            insecure_http=web.insecure_http,
        )
    except TransportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _seed(args: argparse.Namespace) -> int:
    from footfall.tools.bench.seed_store import build

    path = build(Path(args.db), args.visits, args.days, tz=args.tz, seed=args.seed)
    print(f"seeded {path} with about {args.visits} visits over {args.days} days")
    return 0


def _user_add(args: argparse.Namespace) -> int:
    from footfall.hub import auth, store

    conn = store.connect(args.db)
    try:
        auth.add_user(conn, args.name, read_password(args.password_stdin), replace=args.replace)
    except auth.AuthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    print(f"user {args.name} saved")
    return 0


def _apikey_create(args: argparse.Namespace) -> int:
    from footfall.hub import auth, store

    conn = store.connect(args.db)
    try:
        key = auth.create_api_key(conn, args.name)
    except auth.AuthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    print(key)
    print("Store this key now: the hub keeps only its hash and cannot show it again.", file=sys.stderr)
    return 0


def _apikey_revoke(args: argparse.Namespace) -> int:
    from footfall.hub import auth, store

    conn = store.connect(args.db)
    try:
        done = auth.revoke_api_key(conn, args.name)
    finally:
        conn.close()
    print(f"key {args.name} revoked" if done else f"no active key named {args.name}")
    return 0 if done else 1


def register_web(sub: argparse._SubParsersAction) -> None:
    """Add the web commands to the ``footfall hub`` subparsers action ``sub``."""

    def db_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", default=DEFAULT_DB, help=f"hub database (default {DEFAULT_DB}; env FOOTFALL_HUB_DB)")

    p = sub.add_parser("serve", help="serve the store dashboard and its API")
    p.add_argument("--config", "-c", type=Path, help="hub TOML settings (db, timezone, heartbeat)")
    p.add_argument("--db", help=f"hub database (default: config, env FOOTFALL_HUB_DB, {DEFAULT_DB})")
    p.add_argument("--host", help="address to listen on (default: config [web], 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: config [web], 8080)")
    p.add_argument("--certfile", help="serve HTTPS with this PEM certificate (footfall provision dashboard-cert)")
    p.add_argument("--keyfile", help="its PEM private key (default: in --certfile)")
    p.add_argument(
        "--insecure-http",
        action="store_true",
        help="allow plain HTTP on a non-loopback address (logins and personal data in clear text)",
    )
    p.add_argument("--tz", help="the store's time zone, e.g. Europe/Paris (default: config, env FOOTFALL_TZ, UTC)")
    p.add_argument(
        "--secure-cookie",
        action="store_true",
        help="always mark the session cookie Secure (automatic over HTTPS and behind a trusted HTTPS proxy)",
    )
    p.add_argument("--refresh", type=float, default=15.0, help="seconds between summary refreshes (default 15)")
    p.set_defaults(func=_serve)

    p = sub.add_parser("seed", help="write a realistic seeded store database (demo, benchmarks)")
    db_arg(p)
    p.add_argument("--visits", type=int, default=200_000)
    p.add_argument("--days", type=int, default=90)
    p.add_argument("--tz", default=DEFAULT_TZ)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=_seed)

    user = sub.add_parser("user", help="store-manager logins").add_subparsers(dest="user_command", metavar="ACTION")
    p = user.add_parser("add", help="create a login (asks for the password)")
    db_arg(p)
    p.add_argument("name")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--replace", action="store_true", help="set a new password for an existing user")
    p.set_defaults(func=_user_add)

    key = sub.add_parser("apikey", help="API keys for machine clients").add_subparsers(
        dest="apikey_command", metavar="ACTION"
    )
    p = key.add_parser("create", help="create a key and print it once")
    db_arg(p)
    p.add_argument("name")
    p.set_defaults(func=_apikey_create)
    p = key.add_parser("revoke", help="revoke a key")
    db_arg(p)
    p.add_argument("name")
    p.set_defaults(func=_apikey_revoke)
