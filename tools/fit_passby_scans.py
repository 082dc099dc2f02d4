"""``python -m footfall.tools.fit_passby_scans``: fit the passers-by scan model of
``hub/passby_scans.py`` on the tuning stores with two or three sensors (``--one-sensor``: with
one), each at three streets.

Each simulated day runs through the real agent, ingest and link job; every outside-looking scan
at the street-facing sensor is labelled a passer-by's or not by the simulator's truth, and a
logistic regression on the hub's own features (``passby_scans.features``) and their pairwise
products is fitted on all of them. The factor of each kind of site (two sensors, three) is
exp(mean log(true passers-by / summed probabilities)) over its days. Before writing, every
store is left out of the fit in turn and its days estimated: the spreads of log(truth /
estimate) it prints, of this count, of the hub's count and of their geometric mean (what the
hub shows), are the model spreads of docs/metrics.md. Held-out seeds are refused.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from footfall.hub import link, passby_scans
from footfall.hub.analysis import day_bounds
from footfall.hub.estimate import counted_stays
from footfall.hub.estimate_defaults import DEFAULTS
from footfall.hub.passby_scans import FEATURES
from footfall.tools.evaluate_pipeline import TUNING_SEEDS, ingest, scenario, simulate, streets_only, tuning_only
from footfall.tools.probe_passersby import person_kinds, scan_identities

C = 0.1  # the regression's inverse regularization: 66 columns (10 features, their squares and products)


@dataclass
class Day:
    seed: int
    street: float
    sensors: int
    truth: int  # passers-by, all of them
    hub: float  # the hub's count as it stands (with this model's mean, if it has one)
    x: np.ndarray
    y: np.ndarray


def day(seed: int, street: float) -> Day:
    with tempfile.TemporaryDirectory(prefix="footfall-fit-pbs-") as tmp:
        work = Path(tmp)
        sc = replace(scenario(seed), days=1, passersby_per_visitor=street)
        run = simulate(sc, work)
        writer, _ = ingest(run, work / "fit.db")
        date = run.truth["days"][0]["date"]
        start, stop = day_bounds(date, writer.config.tz)
        now = stop + writer.config.settle_s
        an = link.relink(writer.conn, writer.config, since=0, until=stop - 1, now=now).analysis
        _, device = scan_identities(writer.conn, start - 3600.0, stop + 3600.0)
        est = json.loads(
            writer.conn.execute("SELECT figures FROM estimates WHERE day = ? AND hour = -1", (date,)).fetchone()[0]
        )
        writer.conn.close()
    kinds = person_kinds(run.truth, 0)
    nb = passby_scans.Neighbours.of(an.identity_sessions, an.model)
    counted = counted_stays(an.identity_sessions, start, stop, None, DEFAULTS)
    tracks = counted_stays([s for s in an.identity_sessions if s.in_track], start, stop, None, DEFAULTS, staff=True)
    cands = passby_scans.candidates(counted + tracks, nb, tracks=True)
    x = passby_scans.features(cands, nb, passby_scans.street_vs_shop(counted, nb))
    y = np.asarray([kinds.get(device.get(round(sc.t, 3), ""), "") == "passerby" for sc in cands], dtype=int)
    truth = sum(1 for p in run.truth["people"] if p["day"] == 0 and p["kind"] == "passerby")
    stays = est.get("passersby_counts", {}).get("stays", est["passersby"])
    return Day(seed, street, sc.sensors, truth, float(stays), x, y)


def fit(days: list[Day]) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    x = np.vstack([d.x for d in days])
    y = np.concatenate([d.y for d in days])
    return make_pipeline(
        StandardScaler(), PolynomialFeatures(2), StandardScaler(), LogisticRegression(max_iter=3000, C=C)
    ).fit(x, y)


def export(pipe: Any, factors: dict[str, float], source: str, x: np.ndarray) -> passby_scans.ScanModel:
    s1, poly, s2, lr = (step for _, step in pipe.steps)
    return passby_scans.ScanModel(
        tuple(float(v) for v in s1.mean_),
        tuple(float(v) for v in s1.scale_),
        tuple(tuple(int(e) for e in p) for p in poly.powers_),
        tuple(float(v) for v in s2.mean_),
        tuple(float(v) for v in s2.scale_),
        tuple(float(v) for v in lr.coef_[0]),
        float(lr.intercept_[0]),
        factors,
        tuple(float(v) for v in x.min(axis=0)),
        tuple(float(v) for v in x.max(axis=0)),
        source,
        tracks=True,
    )


def _kind(d: Day) -> str:
    return passby_scans.site_kind(d.sensors)


def factors_of(model: passby_scans.ScanModel, days: list[Day]) -> dict[str, float]:
    out = {}
    for kind in ("1", "2", "3"):
        mine = [d for d in days if _kind(d) == kind]
        if mine:
            out[kind] = math.exp(
                statistics.mean(math.log(d.truth / max(model.probabilities(d.x).sum(), 1e-9)) for d in mine)
            )
    return out


def left_out(days: list[Day], source: str) -> tuple[str, dict[str, float]]:
    """Each store left out of the fit in turn: spreads of log(truth / estimate) per kind of site
    (the report, and the scan count's spread of each kind)."""
    est: dict[int, float] = {}
    for seed in sorted({d.seed for d in days}):
        rest = [d for d in days if d.seed != seed]
        model = export(fit(rest), {}, source, np.vstack([d.x for d in rest]))
        model = replace(model, factors=factors_of(model, rest))
        for i, d in enumerate(days):
            if d.seed == seed:
                est[i] = model.factor(d.sensors) * model.probabilities(d.x).sum()
    lines = ["each store left out of the fit in turn: spread of log(truth / estimate), mean |error|"]
    spreads: dict[str, float] = {}
    for kind in ("1", "2", "3", "all"):
        idx = [i for i, d in enumerate(days) if kind in ("all", _kind(d))]
        if not idx:
            continue
        for name, get in (
            ("scan count", lambda i: est[i]),
            ("hub's count", lambda i: days[i].hub),
            ("geometric mean", lambda i: math.sqrt(est[i] * days[i].hub)),
        ):
            logs = [math.log(max(get(i), 1e-9) / days[i].truth) for i in idx]
            rms = math.sqrt(statistics.mean(x * x for x in logs))
            mae = statistics.mean(abs(math.exp(x) - 1) for x in logs)
            lines.append(f"  {kind:>3} sensors, {len(idx)} days, {name:15} spread {rms:.3f}  mean |error| {mae:.1%}")
            if name == "scan count":
                spreads[kind] = rms
    return "\n".join(lines), spreads


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m footfall.tools.fit_passby_scans", description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", help="tuning seeds (default: every tuning seed of the kind)")
    ap.add_argument(
        "--one-sensor",
        action="store_true",
        help="fit the one-sensor model (its count is the figure alone) instead of the 2-3 sensor one",
    )
    ap.add_argument("--streets", default="2.5,5,10", help="passers-by per visitor (default 2.5,5,10)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument(
        "--write",
        type=Path,
        help=f"write the model here (the hub's: {passby_scans.DEFAULT_PATH}, {passby_scans.ONE_SENSOR_PATH})",
    )
    args = ap.parse_args(argv)

    def mine(s: int) -> bool:
        return (scenario(s).sensors == 1) == args.one_sensor

    seeds = [s for s in tuning_only(ap, args.seeds or ",".join(map(str, TUNING_SEEDS))) if mine(s)]
    if len(seeds) < 2:
        ap.error("at least two tuning stores of that kind of site: each is left out of the fit in turn")
    streets = streets_only(ap, args.streets)
    jobs = [(s, st) for s in seeds for st in streets]
    with ProcessPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        days = list(pool.map(day, *zip(*jobs, strict=True)))
    if args.one_sensor:
        # No street-vs-shop ratio with one sensor (passby_scans.ScanModel.street_vs_shop).
        for d in days:
            d.x[:, FEATURES.index("street_vs_shop")] = 0.0
    source = f"fit_passby_scans: seeds {','.join(map(str, seeds))} at streets {args.streets}"
    report, spreads = left_out(days, source)
    print(report)
    model = export(fit(days), {}, source, np.vstack([d.x for d in days]))
    model = replace(model, factors=factors_of(model, days))
    if args.one_sensor:
        # One sensor's stays' count does not follow the street (docs/metrics.md): this count alone.
        model = replace(model, combine="alone", spread=round(spreads["1"], 3), street_vs_shop=False)
    print("factors", json.dumps(model.factors))
    if args.write:
        args.write.write_text(json.dumps(model.to_dict(), indent=1) + "\n")
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
