"""``python -m footfall.tools.fit_visitors``: fit the visitor weights on the tuning seeds.

``Defaults.tracker_factor``, ``tracker_crowding_exp`` and ``inside_scans_per_min`` in
``hub/estimate_defaults.py`` (how many people a randomizing phone's stay stands for, see
``SiteModel.people``) are chosen here: the tuning days with two or three sensors go through the
real pipeline (agents, ingest, the link job), and the three numbers minimise the squares of
log(truth / estimate) of the day's visitors, truth over all simulated people. It prints the
fit, the spread between days it leaves, and the spread of each store's days when that store is
left out of the fit (``Defaults.spread.visitors``: three numbers fitted on a dozen days
describe those days better than the next). Held-out seeds are refused: they are for measuring
(``footfall evaluate --metrics --seeds held-out``), never for choosing.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from footfall.hub.estimate import DEFAULTS, Defaults, Session, SiteModel, estimate
from footfall.tools.evaluate_metrics import truth_figures
from footfall.tools.evaluate_pipeline import linked_days, tuning_only

PARAMS = ("tracker_factor", "tracker_crowding_exp", "inside_scans_per_min")


@dataclass
class Day:
    seed: int
    day: str
    start: float
    end: float
    sessions: list[Session]
    model: SiteModel
    truth: float  # visitors over all simulated people


def tuning_days(seeds: list[int], work: Path, shops: bool = False) -> list[Day]:
    """Every day of the seeds whose site model tells the shop from the street (2-3 sensors,
    inside model trained), linked as the hub's job links it."""
    out: list[Day] = []
    for ld in linked_days(seeds, work, shops=shops):
        an = ld.analysis
        if an.model.weak:
            continue
        visitors = truth_figures(ld.run.truth, ld.index)["visitors"]
        out.append(Day(ld.seed, ld.date, ld.start, ld.end, an.sessions, an.model, float(visitors or 0)))
    return out


def with_params(p: tuple[float, ...]) -> Defaults:
    return replace(DEFAULTS, **dict(zip(PARAMS, p, strict=True)))


def log_errors(days: list[Day], defaults: Defaults) -> list[float]:
    out = []
    for d in days:
        est = estimate(d.sessions, d.model, [("day", d.start, d.end)], defaults)["day"].visitors.estimate
        out.append(math.log(d.truth / est) if est and d.truth else 10.0)
    return out


def fit(days: list[Day], start: tuple[float, ...]) -> tuple[float, ...]:
    from scipy.optimize import minimize

    def loss(p) -> float:
        if p[0] <= 0 or p[2] <= 0:
            return 1e9
        return sum(e * e for e in log_errors(days, with_params(tuple(p))))

    res = minimize(loss, list(start), method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-7})
    return tuple(float(x) for x in res.x)


def rms(xs: list[float]) -> float:
    return math.sqrt(sum(x * x for x in xs) / len(xs)) if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="tuning", help="tuning seeds only (default: all of them)")
    p.add_argument("--shops", action="store_true", help="each store another kind of shop (evaluate --metrics --shops)")
    args = p.parse_args(argv)
    seeds = tuning_only(p, args.seeds)
    with tempfile.TemporaryDirectory(prefix="footfall-fit-") as tmp:
        days = tuning_days(seeds, Path(tmp), args.shops)
    if len(days) < 4:
        p.error(f"{len(days)} days with 2-3 sensors: too few to fit three numbers")
    current = tuple(getattr(DEFAULTS, k) for k in PARAMS)
    print(f"{len(days)} tuning days with 2-3 sensors; current defaults {dict(zip(PARAMS, current, strict=True))}")
    print(f"  spread of log(truth / estimate) with them: {rms(log_errors(days, DEFAULTS)):.3f}")
    best = fit(days, current)
    print(f"fitted: {', '.join(f'{k} {v:.3f}' for k, v in zip(PARAMS, best, strict=True))}")
    print(f"  spread between the days fitted on: {rms(log_errors(days, with_params(best))):.3f}")
    left_out: list[float] = []
    for seed in sorted({d.seed for d in days}):
        rest = [d for d in days if d.seed != seed]
        mine = [d for d in days if d.seed == seed]
        errs = log_errors(mine, with_params(fit(rest, best)))
        left_out += errs
        print(f"  seed {seed} left out: {', '.join(f'{e:+.3f}' for e in errs)}")
    print(f"  spread of the days left out, a store at a time: {rms(left_out):.3f} (Defaults.spread.visitors)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
