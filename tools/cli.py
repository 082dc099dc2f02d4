"""Subcommands of this part; registered by ``footfall.cli``."""

from __future__ import annotations

import argparse
import importlib
import logging

# Sibling tools that register their own subcommands: (module, function taking ``sub``).
TOOLS = (
    ("footfall.tools.evaluate_cli", "register_evaluate"),
    ("footfall.tools.provision_cli", "register_provision"),
    ("footfall.tools.demo", "register_demo"),
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this part's subcommands to ``footfall``."""
    _register_simulate(sub)
    for module, func in TOOLS:
        # One tool lacking its optional dependencies must not take the others down with it.
        try:
            register_tool = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as exc:
            logging.getLogger(__name__).debug("tool %s not available: %s", module, exc)
            continue
        register_tool(sub)


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
    bench = p.add_argument_group("benchmark capture (instead of a day)")
    bench.add_argument("--frames", type=int, help="write OUT/bench.pcap with this many frames, time-ordered")
    bench.add_argument("--devices", type=int, default=50_000, help="concurrent devices in range for --frames")
    p.set_defaults(func=_run_simulate)


def _run_simulate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from footfall.tools.simulator import make_frames, simulate_day
    from footfall.tools.simulator.frames import write_pcap

    if args.frames is not None:
        if args.frames < 1 or args.devices < 1:
            print("footfall simulate: --frames and --devices must be positive")
            return 2
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        frames = make_frames(args.frames, seed=args.seed, devices=args.devices, randomized_share=args.randomized_share)
        n = write_pcap(out / "bench.pcap", ((round(ts * 1_000_000), f) for ts, f in frames))
        print(f"{n} frames from {args.devices} concurrent devices -> {out / 'bench.pcap'}")
        return 0
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
    except ValueError as exc:  # bad --date/--hours/--tz/--site: say why, no traceback
        print(f"footfall simulate: {exc}")
        return 2
    s = gt["summary"]
    frames = " ".join(f"{k}={v}" for k, v in s["frames"].items())
    print(
        f"{s['unique_people']} people ({s['passersby']} passers-by, {s['visitors']} visitors, {s['staff']} staff, "
        f"{s['fixed']} fixed), frames {frames}, {s['distinct_macs']} distinct MACs -> {args.out}"
    )
    return 0
