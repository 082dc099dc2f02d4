"""``footfall o2o ...``: scenarios, runs, reports, POS keys, consent and the reference partner.

Wire with ``register_o2o(sub)`` on the top-level subparsers. Secrets come from the
environment, never from the command line: ``FOOTFALL_PARTNER_KEY`` (partner API key).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import getpass
import json
import logging
import os
import sys
import time
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

log = logging.getLogger(__name__)


def _conn(args: argparse.Namespace):
    from footfall.hub import store

    return store.connect(args.db)


def _quiet(text: str) -> tuple[float, float] | None:
    if text in ("", "none", "off"):
        return None
    a, _, b = text.partition("-")
    return (float(a), float(b))


def _scenario_add(args: argparse.Namespace) -> int:
    from footfall.hub.o2o import scenarios
    from footfall.hub.o2o.coupons import Generator

    kind, value = ("fixed", args.discount_fixed) if args.discount_fixed else ("percent", args.discount_percent)
    try:
        gen = Generator(
            kind=kind, value=value, min_purchase=args.min_purchase, ttl_days=args.ttl_days, end_date=args.end_date,
            stores=[s for s in args.stores.split(",") if s] if args.stores else [], length=args.length,
            charset=args.charset, type=args.type, bindings_limit=args.bindings_limit,
            campaign=args.campaign or args.name,
        )  # fmt: skip
        sc = scenarios.Scenario(
            name=args.name, target=args.target, message=args.message or scenarios.Scenario.message,
            coupon=gen, store_name=args.store_name, interval_s=args.interval_min * 60, cap_days=args.cap_days,
            cap_contacts=args.cap_contacts, quiet_hours=_quiet(args.quiet_hours), timezone=args.timezone,
            control_share=args.control_share, attribution_days=args.attribution_days, price_match=args.price_match,
            price_sms=args.price_sms, margin=args.margin, fixed_cost=args.fixed_cost,
        )  # fmt: skip
        conn = _conn(args)
        sid = scenarios.add(conn, sc, replace=args.replace)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"id": sid, "name": sc.name}))
    return 0


def _scenario_list(args: argparse.Namespace) -> int:
    from footfall.hub.o2o import scenarios

    print(json.dumps(scenarios.list_all(_conn(args)), indent=2))
    return 0


def _scenario_enable(args: argparse.Namespace) -> int:
    from footfall.hub.o2o import scenarios

    try:
        scenarios.set_enabled(_conn(args), args.name, args.enable)
    except KeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def partner_key() -> str:
    """The partner's API key: ``FOOTFALL_PARTNER_KEY``, or the systemd credential
    ``partner-key`` (``LoadCredential=``, footfall-o2o.service), or the file named by
    ``FOOTFALL_PARTNER_KEY_FILE``; empty when none is set (the partner then answers 401)."""
    key = os.environ.get("FOOTFALL_PARTNER_KEY")
    if key:
        return key.strip()
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    for path in (Path(creds) / "partner-key" if creds else None, os.environ.get("FOOTFALL_PARTNER_KEY_FILE")):
        if path and Path(path).is_file():
            return Path(path).read_text().strip()
    return ""


def _client(args: argparse.Namespace):
    from footfall.hub.o2o.partner import PartnerClient, PartnerConfig

    return PartnerClient(
        PartnerConfig(
            url=args.partner_url, api_key=partner_key(), name=args.partner_name,
            connect_timeout_s=args.timeout, read_timeout_s=args.timeout,
        )
    )  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    from footfall.hub.o2o.privacy import PrivacyError
    from footfall.hub.o2o.runner import ExportSettings, run_due

    conn = _conn(args)
    client = _client(args)
    export = ExportSettings(directory=Path(args.export_dir or Path(args.db).resolve().parent / "o2o_exports"))
    while True:
        try:
            results = run_due(
                conn, client, now=args.now, export=export, force=args.force, only=args.scenario,
                actor=f"cli:{getpass.getuser()}",
            )  # fmt: skip
        except PrivacyError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for r in results:
            print(json.dumps(r.as_dict()), flush=True)
        if not args.loop:
            return 0 if all(r.status == "ok" for r in results) else 1
        time.sleep(args.poll_s)


def _period(args: argparse.Namespace) -> tuple[float, float]:
    e = date.fromisoformat(args.end) if args.end else datetime.now(UTC).date()
    s = date.fromisoformat(args.start) if args.start else e - timedelta(days=29)
    t0 = datetime(s.year, s.month, s.day, tzinfo=UTC).timestamp()
    return t0, datetime(e.year, e.month, e.day, tzinfo=UTC).timestamp() + 86400


def _report(args: argparse.Namespace) -> int:
    from footfall.hub.o2o import reports

    t0, t1 = _period(args)
    rows = reports.report(_conn(args), t0, t1, args.scenario)
    sys.stdout.write(reports.to_csv(rows) if args.csv else json.dumps(rows, indent=2) + "\n")
    return 0


def _invoice(args: argparse.Namespace) -> int:
    from footfall.hub.o2o import register, reports
    from footfall.hub.o2o.partner import PartnerError

    t0, t1 = _period(args)
    inv = reports.partner_invoice(_conn(args), t0, t1, args.partner_name)
    if args.reconcile:
        try:
            theirs = _client(args).usage(t0, t1)
        except PartnerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        inv["reconciliation"] = register.reconcile(inv, theirs)
    print(json.dumps(inv, indent=2))
    return 0


def _pos_key(args: argparse.Namespace) -> int:
    from footfall.hub.o2o import pos

    conn = _conn(args)
    if args.action == "create":
        print(pos.create_key(conn, args.store))
    else:
        print(f"revoked {pos.revoke_keys(conn, args.store)} key(s)")
    return 0


def _stop(args: argparse.Namespace) -> int:
    from footfall.hub.o2o import optout, privacy

    conn = _conn(args)
    try:
        if args.action == "add":
            # An opt-out: the person's hashes go everywhere, the segment files still offered included.
            with conn:
                res = optout.forget(conn, [args.subject], reason=args.reason or "opt-out (local)")
            privacy.checkpoint(conn)
            print(json.dumps(asdict(res)))
        else:
            optout.remove_stop(conn, args.subject)
    except (ValueError, privacy.PrivacyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _consent(args: argparse.Namespace) -> int:
    from footfall.hub.o2o import consent

    try:
        consent.set_consent(_conn(args), args.subject, args.channel, args.state, args.category)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _partner_serve(args: argparse.Namespace) -> int:
    from footfall.tools import partner_server

    key = os.environ.get("FOOTFALL_PARTNER_KEY", "")
    if not key:
        print("error: set FOOTFALL_PARTNER_KEY to the API key clients must send", file=sys.stderr)
        return 2
    if args.seed_groundtruth:
        conn = partner_server.connect(args.db)
        print(json.dumps(partner_server.seed_from_groundtruth(conn, args.seed_groundtruth, seed=args.seed)))
        conn.close()
    partner_server.serve(args.db, key, host=args.host, port=args.port, delay_s=args.delay)
    return 0


def register_o2o(sub: argparse._SubParsersAction) -> None:
    o2o = sub.add_parser("o2o", help="O2O retargeting: partner matching, coupons, attribution, ROMI")
    o2o.set_defaults(func=lambda args: o2o.print_help() or 2)
    osub = o2o.add_subparsers(dest="o2o_command", metavar="COMMAND")

    def db(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", default="hub.db", help="hub database (default hub.db)")

    def partner(p: argparse.ArgumentParser) -> None:
        p.add_argument("--partner-url", default="http://127.0.0.1:8600")
        p.add_argument("--partner-name", default="partner")
        p.add_argument("--timeout", type=float, default=10.0, help="partner connect/read timeout, seconds")

    sc = osub.add_parser("scenario", help="add, list, enable or disable scenarios")
    sc.set_defaults(func=lambda args: sc.print_help() or 2)
    scsub = sc.add_subparsers(dest="scenario_command", metavar="COMMAND")
    add = scsub.add_parser("add", help="add (or --replace) a scenario")
    db(add)
    add.add_argument("name")
    add.add_argument("--target", default="short_visits", help="passersby | short_visits | segment:<name>")
    add.add_argument("--message", help="SMS template with {code} {discount} {valid_until} {store}")
    add.add_argument("--store-name", default="our store")
    add.add_argument("--discount-percent", type=float, default=10.0)
    add.add_argument("--discount-fixed", type=float)
    add.add_argument("--min-purchase", type=float, default=0.0)
    add.add_argument("--ttl-days", type=float, default=7.0)
    add.add_argument("--end-date", help="YYYY-MM-DD: coupons end then at the latest")
    add.add_argument("--stores", help="comma-separated store ids where coupons are valid (default all)")
    add.add_argument("--length", type=int, default=10)
    add.add_argument("--charset", default="default", help="default | upper | lower | digits | alnum | <chars>")
    add.add_argument("--type", default="code", choices=("code", "barcode"))
    add.add_argument("--bindings-limit", type=int, default=0, help="max coupons issued (0 = no limit)")
    add.add_argument("--campaign")
    add.add_argument("--interval-min", type=float, default=30.0)
    add.add_argument("--cap-days", type=float, default=7.0)
    add.add_argument("--cap-contacts", type=int, default=1)
    add.add_argument("--quiet-hours", default="21-9", help="local START-END hours, or none")
    add.add_argument("--timezone", default="UTC")
    add.add_argument("--control-share", type=float, default=0.1)
    add.add_argument("--attribution-days", type=float, default=7.0)
    add.add_argument("--price-match", type=float, default=0.0)
    add.add_argument("--price-sms", type=float, default=0.0)
    add.add_argument("--margin", type=float, default=1.0)
    add.add_argument("--fixed-cost", type=float, default=0.0)
    add.add_argument("--replace", action="store_true")
    add.set_defaults(func=_scenario_add)
    ls = scsub.add_parser("list", help="list scenarios")
    db(ls)
    ls.set_defaults(func=_scenario_list)
    for name, flag in (("enable", True), ("disable", False)):
        p = scsub.add_parser(name, help=f"{name} a scenario")
        db(p)
        p.add_argument("name")
        p.set_defaults(func=_scenario_enable, enable=flag)

    run = osub.add_parser("run", help="run due scenarios (partner key in FOOTFALL_PARTNER_KEY)")
    db(run)
    partner(run)
    run.add_argument("--scenario", help="only this scenario")
    run.add_argument("--force", action="store_true", help="run even if not due")
    run.add_argument("--now", type=float, help="pretend it is this UNIX time (replays, demos)")
    run.add_argument("--export-dir", help="segment CSVs (default: o2o_exports next to the db)")
    run.add_argument("--loop", action="store_true", help="keep running due scenarios")
    run.add_argument("--poll-s", type=float, default=60.0)
    run.set_defaults(func=_run)

    rep = osub.add_parser("report", help="per-scenario report (json or --csv)")
    db(rep)
    rep.add_argument("--start", help="first UTC day YYYY-MM-DD")
    rep.add_argument("--end", help="last UTC day, inclusive")
    rep.add_argument("--scenario")
    rep.add_argument("--csv", action="store_true")
    rep.set_defaults(func=_report)

    inv = osub.add_parser("invoice", help="partner invoice summary; --reconcile asks the partner's usage")
    db(inv)
    partner(inv)
    inv.add_argument("--start")
    inv.add_argument("--end")
    inv.add_argument("--reconcile", action="store_true")
    inv.set_defaults(func=_invoice)

    pk = osub.add_parser("pos-key", help="create or revoke a store's POS API key")
    db(pk)
    pk.add_argument("action", choices=("create", "revoke"))
    pk.add_argument("store")
    pk.set_defaults(func=_pos_key)

    st = osub.add_parser(
        "stop", help="opt a MAC/phone MD5 out (purged everywhere, segment files included), or take it off"
    )
    db(st)
    st.add_argument("action", choices=("add", "remove"))
    st.add_argument("subject")
    st.add_argument("--reason", default="")
    st.set_defaults(func=_stop)

    cs = osub.add_parser("consent", help="record consent state for a MAC/phone MD5")
    db(cs)
    cs.add_argument("subject")
    cs.add_argument("--channel", default="sms")
    cs.add_argument("--state", required=True, choices=("granted", "withdrawn", "unsubscribed"))
    cs.add_argument("--category", default="*")
    cs.set_defaults(func=_consent)

    ps = osub.add_parser("partner-serve", help="run the reference telecom partner server")
    ps.add_argument("--db", default="partner.db")
    ps.add_argument("--host", default="127.0.0.1")
    ps.add_argument("--port", type=int, default=8600)
    ps.add_argument("--seed-groundtruth", help="simulator output dir: seed subscribers from its global MACs")
    ps.add_argument("--seed", type=int, default=1)
    ps.add_argument("--delay", type=float, default=0.0, help="slow every answer by this many seconds")
    ps.set_defaults(func=_partner_serve)

    ex = osub.add_parser("exposure", help="attribution of ad exposure to visits (import a log, report)")
    ex.set_defaults(func=lambda args: ex.print_help() or 2)
    exsub = ex.add_subparsers(dest="exposure_command", metavar="COMMAND")
    ei = exsub.add_parser("import", help="import an exposure log: CSV with mac_md5 (or hash) and ts columns")
    db(ei)
    ei.add_argument("--campaign", required=True)
    ei.add_argument("file", help="CSV file, or - for stdin")
    ei.set_defaults(func=_exposure_import)
    er = exsub.add_parser("report", help="exposed-then-visited, matched unexposed baseline, frequency")
    db(er)
    er.add_argument("--campaign", required=True)
    er.add_argument("--window-days", type=float, default=7.0, help="a visit counts this long after exposure")
    er.add_argument("--pre-days", type=float, default=90.0, help="history the baseline is matched on")
    er.set_defaults(func=_exposure_report)


def _exposure_import(args: argparse.Namespace) -> int:
    from footfall.hub.o2o import exposure, privacy

    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8-sig")
        res = exposure.import_exposures(_conn(args), text, args.campaign)
    except (OSError, UnicodeDecodeError, ValueError, csv.Error, privacy.PrivacyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(dataclasses.asdict(res)))
    return 0 if res.accepted or not res.rejected else 1


def _exposure_report(args: argparse.Namespace) -> int:
    from footfall.hub.o2o import exposure, privacy

    try:
        rep = exposure.report(_conn(args), args.campaign, window_days=args.window_days, pre_days=args.pre_days)
    except KeyError as exc:
        print(f"error: {str(exc).strip(chr(34) + chr(39))}", file=sys.stderr)
        return 1
    except privacy.PrivacyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(rep, indent=1))
    return 0


register = register_o2o
