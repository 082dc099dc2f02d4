"""``python -m footfall.tools.fit_occupancy``: fit the occupancy factor on the tuning seeds.

``Defaults.occupancy_factor`` (and ``occupancy_factor_weak`` for one-sensor sites) scale the
people present per minute (``hub/occupancy.py``) so that a day's person-minutes match the truth's:
the visitors' time inside, summed over all simulated visitors. The tuning days go through the
real pipeline (agents, ingest, the link job) and each factor is exp(mean log(truth / estimate))
of the day's person-minutes, truth over all simulated people; printed with the spread between
days it leaves and, beside it, the day's visitors times their mean dwell (the dashboard's two
estimates) against the same truth. Held-out seeds are refused: they are for measuring
(``footfall evaluate --metrics --seeds held-out``), never for choosing.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from footfall.hub.estimate import DEFAULTS, estimate
from footfall.hub.occupancy import per_minute
from footfall.tools.evaluate_pipeline import linked_days, tuning_only


@dataclass
class Day:
    seed: int
    day: str
    weak: bool
    person_minutes: float  # the occupancy's, without the factor
    visitors_x_dwell: float  # the day's visitors times their mean dwell, both estimated (minutes)
    truth: float  # the visitors' time inside, summed (minutes)


def tuning_days(seeds: list[int], work: Path, shops: bool = False) -> list[Day]:
    out: list[Day] = []
    for ld in linked_days(seeds, work, shops=shops):
        an, start, end = ld.analysis, ld.start, ld.end
        # Without the factor: what it multiplies.
        plain = sum(per_minute(an.sessions, an.model, start, end).values()) / _factor(an.model.weak)
        e = estimate(an.sessions, an.model, [("day", start, end)], pass_sessions=an.identity_sessions)["day"]
        vd = (e.visitors.estimate or 0.0) * (e.mean_dwell_s.estimate or 0.0) / 60.0
        truth = sum(
            (p["inside"][1] - p["inside"][0]) / 60.0
            for p in ld.run.truth["people"]
            if p["kind"] == "visitor" and p["day"] == ld.index and p["inside"]
        )
        out.append(Day(ld.seed, ld.date, an.model.weak, plain, vd, truth))
    return out


def _factor(weak: bool) -> float:
    return DEFAULTS.occupancy_factor_weak if weak else DEFAULTS.occupancy_factor


def _spread(logs: list[float]) -> float:
    return math.sqrt(sum(x * x for x in logs) / len(logs)) if logs else float("nan")


def report(days: list[Day]) -> list[str]:
    lines = []
    classes = ((False, "two sensors or more", "occupancy_factor"), (True, "one sensor", "occupancy_factor_weak"))
    for weak, label, name in classes:
        mine = [d for d in days if d.weak == weak and d.truth > 0 and d.person_minutes > 0]
        if not mine:
            lines.append(f"{label}: no days")
            continue
        logs = [math.log(d.truth / d.person_minutes) for d in mine]
        k = math.exp(sum(logs) / len(logs))
        lines.append(f"{label}: {len(mine)} days; fitted {name} {k:.3f} (now {getattr(DEFAULTS, name):g})")
        lines.append(f"  person-minutes without it: {100 * (1 / k - 1):+.1f} % on average, spread {_spread(logs):.3f}")
        lines.append(f"  with it, spread between days {_spread([x - math.log(k) for x in logs]):.3f}")
        vd = [math.log(d.visitors_x_dwell / d.truth) for d in mine if d.visitors_x_dwell > 0]
        mean_vd = 100 * (math.exp(sum(vd) / len(vd)) - 1) if vd else float("nan")
        lines.append(f"  beside it, visitors x mean dwell: {mean_vd:+.1f} % on average, spread {_spread(vd):.3f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m footfall.tools.fit_occupancy", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="tuning", help="tuning seeds only (default: all of them)")
    p.add_argument("--shops", action="store_true", help="each store another kind of shop (evaluate --metrics --shops)")
    args = p.parse_args(argv)
    seeds = tuning_only(p, args.seeds)
    with tempfile.TemporaryDirectory(prefix="footfall-fit-") as tmp:
        days = tuning_days(seeds, Path(tmp), args.shops)
    print("\n".join(report(days)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
