"""``footfall evaluate``: the command line of the evaluations (the linker's scores here and in
``tools/evaluate.py``; the dashboard's figures in ``evaluate_metrics``, live in ``evaluate_live``,
a door-count calibration in ``evaluate_calibration``)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from footfall.tools.evaluate import (
    DEFAULT_CAPTURES,
    SILENCE_GAP_S,
    Scores,
    evaluate_captures,
    evaluate_simulation,
)


def format_scores(title: str, s: Scores) -> str:
    lines = [
        f"{title}",
        f"  visits {s.visits}  true devices {s.true_devices}  naive distinct MACs {s.naive_count}",
        f"  estimated {s.estimated} (low {s.low}, high {s.high}, confidence {s.confidence:.2f})"
        f"  error {s.count_error:+d} ({s.count_error_pct:+.1f}%)",
        f"  {'':12} {'homog':>7} {'compl':>7} {'V':>7} {'ARI':>7}",
    ]
    if s.true_visitors is not None:
        lines.insert(
            3,
            f"  unique visitors: true {s.true_visitors}  estimated {s.est_visitors} ({s.visitor_error_pct:+.1f}%)"
            f"  naive {s.naive_visitors}",
        )
    lines[-1] += f" {'devices':>8}"
    rows = [("naive", s.naive, s.naive_count), ("linker", s.linker, s.estimated)]
    rows += [
        (f"silence {SILENCE_GAP_S:.0f}s", s.silence, s.silence.get("devices")),
        ("  per fp", s.silence_fp, s.silence_fp.get("devices")),
    ]
    for name, m, n in rows:
        if not m:
            continue
        lines.append(
            f"  {name:12} {m['homogeneity']:7.3f} {m['completeness']:7.3f} {m['v_measure']:7.3f} {m['ari']:7.3f} {n:>8}"
        )
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.linking:
        return cmd_linking(args.seeds, args.json, args.workdir)
    if args.metrics or args.live or args.calibration:
        from footfall.tools.evaluate_live import cmd_live
        from footfall.tools.evaluate_metrics import cmd_metrics

        try:
            if args.calibration:
                from footfall.tools.evaluate_calibration import cmd_calibration

                return cmd_calibration(args.seeds, args.json, args.workdir)
            if args.live:
                return cmd_live(args.seeds, args.workdir, args.dwell_scale)
            return cmd_metrics(
                args.seeds,
                args.json,
                args.workdir,
                args.passersby_per_visitor,
                args.dwell_scale,
                args.returning_share,
                args.shops,
                args.dwell_shape,
            )
        except ValueError as exc:
            print(f"footfall evaluate: {exc}", file=sys.stderr)
            return 2
    results: dict[str, Any] = {}
    out: list[str] = []
    try:
        if args.simulation:
            s = evaluate_simulation(Path(args.simulation))
            results["simulation"] = s
            out.append(format_scores(f"simulation {args.simulation}", s))
        else:
            paths = sorted(Path(args.captures).glob("*.pcap"))
            if not paths:
                print(f"footfall evaluate: no .pcap files in {args.captures}", file=sys.stderr)
                return 2
            clocks = ("recorded", "aligned") if args.clock == "both" else (args.clock,)
            for clock in clocks:
                s = evaluate_captures(paths, clock)
                results[f"captures_{clock}"] = s
                out.append(format_scores(f"real captures ({len(paths)} files), clock={clock}", s))
    except (OSError, ValueError) as exc:
        print(f"footfall evaluate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({k: asdict(v) | {"count_error": v.count_error} for k, v in results.items()}, indent=2))
    else:
        print("\n".join(out))
    return 0


def cmd_linking(seeds_text: str, as_json: bool, workdir: str | None) -> int:
    """The linker on simulated stores (the scenarios of ``--metrics``), beside the baselines."""
    import tempfile

    from footfall.tools.evaluate_pipeline import HELD_OUT_SEEDS, parse_seeds, scenario
    from footfall.tools.simulator import simulate_day

    results = {}
    with tempfile.TemporaryDirectory(prefix="footfall-linking-") as tmp:
        base = Path(workdir or tmp)
        for seed in parse_seeds(seeds_text):
            sc = scenario(seed)
            directory = base / f"sim-{seed}"
            if not (directory / "groundtruth.json").exists():
                simulate_day(
                    directory, seed=seed, sensors=sc.sensors, scale=sc.scale, randomized_share=sc.randomized_share,
                    days=sc.days, site="demo",
                )  # fmt: skip
            s = evaluate_simulation(directory)
            label = f"{sc.name} ({'held out' if seed in HELD_OUT_SEEDS else 'tuning'})"
            results[label] = s
            if not as_json:
                print(format_scores(label, s))
    if as_json:
        print(json.dumps({k: asdict(v) | {"count_error": v.count_error} for k, v in results.items()}, indent=2))
    return 0


def register_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score the device estimator and the dashboard figures against ground truth")
    p.add_argument("--captures", default=str(DEFAULT_CAPTURES), help="folder of labelled pcaps (one phone a file)")
    p.add_argument("--clock", choices=("recorded", "aligned", "both"), default="both")
    p.add_argument("--simulation", metavar="DIR", help="a `footfall simulate` output directory instead")
    p.add_argument(
        "--metrics",
        action="store_true",
        help="every dashboard figure on simulated days through the whole pipeline, against the truth",
    )
    p.add_argument(
        "--live",
        action="store_true",
        help="replay a simulated day as it happens, the link job every 15 min: how much settled figures move",
    )
    p.add_argument(
        "--calibration",
        action="store_true",
        help="a door-count calibration on the 3-day simulated stores, checked on days it was not fitted on",
    )
    p.add_argument(
        "--linking", action="store_true", help="the linker on the simulated stores of --metrics, beside the baselines"
    )
    p.add_argument(
        "--seeds", default="held-out", help="with --metrics, --calibration etc.: held-out, tuning, all, 1,11-15"
    )
    p.add_argument("--workdir", help="with --metrics/--calibration: keep simulations and databases here")
    p.add_argument(
        "--passersby-per-visitor",
        type=float,
        metavar="N",
        help="with --metrics: N passers-by to each visitor instead of the scenarios' 5 (capture rate 1 / (1 + N))",
    )
    p.add_argument(
        "--dwell-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="with --metrics or --live: visitors stay X times as long (0.5: a kiosk's short visits; 3: a dealership's)",
    )
    p.add_argument(
        "--dwell-shape",
        default="shop",
        metavar="NAME",
        help="with --metrics: how visits mix short and long ones: shop (default), alike (most browse), "
        "skewed (most look in, a tenth stay an hour)",
    )
    p.add_argument(
        "--returning-share",
        type=float,
        default=0.25,
        metavar="S",
        help="with --metrics: share of a later day's visitors who came on an earlier one (default 0.25)",
    )
    p.add_argument(
        "--shops",
        action="store_true",
        help="with --metrics: each seed another kind of shop (dwell x0.5/1/3, returners 10/25/50 %%, street 2.5/5/10)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)
