"""Subcommands of this part; registered by ``footfall.cli``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this part's subcommands to ``footfall``."""
    _register_simulate(sub)


def _register_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="write a seeded, realistic shop day as sensor pcaps + groundtruth.json",
        description="Simulate passers-by, visitors, staff and fixed devices around a shop; one pcap per sensor.",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sensors", type=int, default=2, help="number of sensors (s1 entrance, s2 back, ...)")
    p.add_argument("--date", default="2026-11-02", help="first day, YYYY-MM-DD")
    p.add_argument("--hours", default="10-21", help="opening hours, local time, e.g. 10-21 or 9:30-20")
    p.add_argument("--tz", default="UTC", help="time zone of the opening hours (IANA name)")
    p.add_argument("--scale", type=float, default=1.0, help="people multiplier (1.0: ~1500 passers-by, ~300 visitors)")
    p.add_argument("--randomized-share", type=float, default=0.8, help="share of phones with random MACs")
    p.add_argument("--days", type=int, default=1, help="consecutive days (returning customers across days)")
    p.add_argument("--site", default="demo")
    p.set_defaults(func=_run_simulate)


def _run_simulate(args: argparse.Namespace) -> int:
    from footfall.tools.simulator import simulate_day

    try:
        gt = simulate_day(
            args.out,
            seed=args.seed,
            sensors=args.sensors,
            date=args.date,
            hours=args.hours,
            scale=args.scale,
            randomized_share=args.randomized_share,
            days=args.days,
            site=args.site,
            tz=args.tz,
        )
    except (ValueError, KeyError) as exc:  # bad --date/--hours/--tz/--site: say why, no traceback
        print(f"footfall simulate: {exc}")
        return 2
    s = gt["summary"]
    frames = " ".join(f"{k}={v}" for k, v in s["frames"].items())
    print(
        f"{s['unique_people']} people ({s['passersby']} passers-by, {s['visitors']} visitors, {s['staff']} staff, "
        f"{s['fixed']} fixed), frames {frames}, {s['distinct_macs']} distinct MACs -> {args.out}"
    )
    return 0
