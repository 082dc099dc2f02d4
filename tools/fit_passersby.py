"""``python -m footfall.tools.fit_passersby``: fit the passers-by count on the tuning seeds.

``Defaults.passby_two_sensors`` and ``passby_more_sensors`` (``PassbyCount``: a passer-by's scans,
a visitor's scans, the crowding exponent; ``SiteModel.passersby``) are chosen here, each on the
tuning stores of its kind (two sensors; three). The stores are simulated at several streets
(default 2.5, 5 and 10 passers-by a visitor: a shop's street is not known beforehand) and go
through the real pipeline (agents, ingest, the link job). For every day the scans the estimate
counts (:func:`hub.passby_stays.passing_scans`) are split on the simulator's truth, scan by scan,
into the passers-by's and the visitors'. The three numbers of a kind minimise the squares of
log(truth / estimate) over its street-days (the visitors' share searched from 0 to 1 scan a
visitor, the crowding exponent from -1 to 1, the level exp(mean log) at each). Printed beside
them: the visitors' share of the count as the truth split measures it (taking all of it off
adds the visitors' day-to-day noise to the figure), the spread of log(truth / estimate) with
each store left out of the fit in turn (``PassbyCount.spread`` of each kind, pooled
``Defaults.spread.passersby``), the bias at each street
and by sensors, and the same for variants and for the count as it was before 2026-12-06 (every
street-facing scan, nothing taken off, one factor): the baseline. Held-out seeds are refused:
they are for measuring (``footfall evaluate --metrics --seeds held-out``), never for choosing.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from footfall.hub.estimate import DEFAULTS, counted_stays, estimate
from footfall.hub.passby_stays import passing_scan_weights
from footfall.hub.site_model import crowding_factor
from footfall.tools.evaluate_pipeline import linked_days, scenario, streets_only, tuning_only
from footfall.tools.probe_passersby import person_kinds, scan_identities


@dataclass
class Day:
    seed: int
    street: float
    day: str
    truth: int  # passers-by over all simulated people
    visitors: float  # the day's visitors, estimated
    scans: float  # the count the estimate divides (outside-looking scans)
    all_scans: float  # every street-facing scan, as before 2026-12-06 (the baseline)
    by_kind: dict[str, float]  # ``scans`` split by the simulated person's kind
    sensors: int = 2
    crowding: float = 0.0  # the site model's phones present per open minute


def tuning_days(seeds: list[int], streets: list[float], work: Path) -> list[Day]:
    """The days of the seeds whose site model tells the shop from the street, at each street."""
    out: list[Day] = []
    seeds = [s for s in seeds if scenario(s).sensors >= 2]
    for street in streets:
        for ld in linked_days(seeds, work, street=street):
            an = ld.analysis
            if an.model.weak:
                continue
            counted = counted_stays(an.identity_sessions, ld.start, ld.end, None, DEFAULTS)
            _, device = scan_identities(ld.conn, ld.start - 3600.0, ld.end + 3600.0)
            kinds = person_kinds(ld.run.truth, ld.index)
            by_kind: dict[str, float] = {}
            for sc, w in passing_scan_weights(counted, an.model):
                kind = kinds.get(device.get(round(sc.t, 3), ""), "unknown")
                by_kind[kind] = by_kind.get(kind, 0.0) + w
            everything = sum(w for _, w in passing_scan_weights(counted, an.model, outside_only=False))
            e = estimate(an.sessions, an.model, [("day", ld.start, ld.end)], pass_sessions=an.identity_sessions)
            truth = sum(1 for p in ld.run.truth["people"] if p["day"] == ld.index and p["kind"] == "passerby")
            out.append(
                Day(
                    ld.seed,
                    street,
                    ld.date,
                    truth,
                    e["day"].visitors.estimate or 0.0,
                    sum(by_kind.values()),
                    everything,
                    by_kind,
                    len(an.model.inside.sensors),
                    an.model.crowding,
                )
            )
    return out


def visitor_scans(days: list[Day]) -> float:
    """The visitors' scans in the count per estimated visitor, over all days (sum over sum)."""
    v = sum(d.visitors for d in days)
    return sum(d.by_kind.get("visitor", 0.0) for d in days) / v if v else 0.0


BETAS = [i / 100 for i in range(0, 101)]
CROWDING_EXPS = sorted((i / 20 for i in range(-20, 21)), key=abs)  # ties: the smallest


@dataclass(frozen=True)
class Fit:
    visitor_scans: float  # PassbyCount.visitor_scans
    level: float  # passers-by per net scan at the reference crowding
    crowding_exp: float = 0.0

    def estimate(self, d: Day) -> float:
        crowd = crowding_factor(d.crowding, self.crowding_exp)  # as SiteModel.passersby_factor has it
        return self.level * max(d.scans - self.visitor_scans * d.visitors, 1e-9) * crowd

    def logs(self, days: list[Day]) -> list[float]:
        return [math.log(d.truth / self.estimate(d)) for d in days]


def fit(days: list[Day], exps: list[float] | None = None, betas: list[float] | None = None) -> Fit:
    """Least squares of log(truth / estimate) over all days: the share (and the crowding
    exponent, when several are given) searched, the level exp(mean log) at each."""
    best: tuple[float, Fit] | None = None
    for e in exps or [0.0]:
        for beta in BETAS if betas is None else betas:
            if any(d.scans - beta * d.visitors <= 0 for d in days):
                break
            trial = Fit(beta, 1.0, e)
            level = math.exp(statistics.mean(trial.logs(days)))
            f = Fit(beta, level, e)
            err = sum(x * x for x in f.logs(days))
            if best is None or err < best[0]:
                best = (err, f)
    assert best is not None
    return best[1]


def left_out(days: list[Day], fitter: Callable[[list[Day]], Fit] = fit) -> list[tuple[Day, float]]:
    """log(truth / estimate) of each day with its store left out of the fit."""
    out = []
    for seed in sorted({d.seed for d in days}):
        f = fitter([d for d in days if d.seed != seed])
        mine = [d for d in days if d.seed == seed]
        out += list(zip(mine, f.logs(mine), strict=True))
    return out


def _baseline_logs(days: list[Day]) -> list[tuple[Day, float]]:
    """Every street-facing scan, one factor (the count before 2026-12-06), each store left out:
    the same fit on ``all_scans`` with nothing taken off."""
    return left_out([replace(d, scans=d.all_scans) for d in days], lambda ds: fit(ds, betas=[0.0]))


def _rms(xs: list[float]) -> float:
    return math.sqrt(sum(x * x for x in xs) / len(xs)) if xs else float("nan")


def _by(logs: list[tuple[Day, float]], key: Callable[[Day], Any], label: str) -> str:
    groups = sorted({key(d) for d, _ in logs})
    return f"{label} " + " ".join(
        f"{g:g}: {100 * (math.exp(-statistics.mean(x for d, x in logs if key(d) == g)) - 1):+.0f} % "
        f"({_rms([x for d, x in logs if key(d) == g]):.2f})"
        for g in groups
    )


def _summary(name: str, logs: list[tuple[Day, float]]) -> list[str]:
    within = sum(abs(math.exp(-x) - 1) <= 0.10 for _, x in logs)
    mae = statistics.mean(abs(math.exp(-x) - 1) for _, x in logs)
    return [
        f"  {name}: spread {_rms([x for _, x in logs]):.3f}, mean |error| {100 * mae:.1f} %, "
        f"within 10 % {within}/{len(logs)}",
        "    bias (spread) by " + _by(logs, lambda d: d.street, "street"),
        "    by " + _by(logs, lambda d: d.sensors, "sensors"),
    ]


CLASSES = (
    ("two sensors", "passby_two_sensors", lambda d: d.sensors == 2),
    ("three or more", "passby_more_sensors", lambda d: d.sensors >= 3),
)


def _fitted(name: str, days: list[Day]) -> list[str]:
    f = fit(days, CROWDING_EXPS)
    now = getattr(DEFAULTS, name)
    return [
        f"  {name}: PassbyCount(scans={1.0 / f.level / DEFAULTS.probing_share:.3f}, "
        f"visitor_scans={f.visitor_scans:.2f}, crowding_exp={f.crowding_exp:.2f}) (now {now.scans:g}, "
        f"{now.visitor_scans:g}, {now.crowding_exp:g})",
    ]


def report(days: list[Day]) -> list[str]:
    """What the fit finds on ``days``, class by class (two sensors; three or more), each store left
    out of the fit in turn, beside the variants and the baseline."""
    days = [d for d in days if d.truth > 0 and d.visitors > 0]
    if not days:
        return ["no days with two sensors or more"]
    lines = [
        f"{len(days)} street-days, {len({d.seed for d in days})} stores with two sensors or more "
        f"(streets {', '.join(f'{s:g}' for s in sorted({d.street for d in days}))})"
    ]
    ours: list[tuple[Day, float]] = []
    measured_logs: list[tuple[Day, float]] = []
    plain: list[tuple[Day, float]] = []
    for label, name, member in CLASSES:
        mine = [d for d in days if member(d)]
        if not mine:
            continue
        measured = visitor_scans(mine)
        per_pb = sum(d.by_kind.get("passerby", 0.0) for d in mine) / sum(d.truth for d in mine)
        per_v = [d.by_kind.get("visitor", 0.0) / d.visitors for d in mine]
        lines += [
            f"{label}: {len(mine)} street-days, {len({d.seed for d in mine})} stores; split on the truth: "
            f"{per_pb:.3f} counted scans a passer-by, {measured:.3f} an estimated visitor "
            f"(day to day {min(per_v):.2f}-{max(per_v):.2f})",
            *_fitted(name, mine),
        ]
        if len({d.seed for d in mine}) > 1:
            ours += left_out(mine, lambda ds: fit(ds, CROWDING_EXPS))
            plain += left_out(mine)
            measured_logs += left_out(mine, lambda ds, m=measured: fit(ds, betas=[m]))
    lines.append("each store left out of the fit in turn:")
    if ours:
        lines += _summary("this count (the fit above)", ours)
        lines += _summary("without the crowding exponent", plain)
        lines += _summary("the visitors' share as measured, level fitted", measured_logs)
        lines += _summary("one fit for both classes, no crowding", left_out(days))
    lines += _summary("baseline: every street-facing scan, one factor", _baseline_logs(days))
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m footfall.tools.fit_passersby", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="tuning", help="tuning seeds only (default: those with 2-3 sensors)")
    p.add_argument("--streets", default="2.5,5,10", help="passers-by a visitor (default 2.5,5,10)")
    args = p.parse_args(argv)
    seeds = tuning_only(p, args.seeds)
    streets = streets_only(p, args.streets)
    with tempfile.TemporaryDirectory(prefix="footfall-fit-") as tmp:
        days = tuning_days(seeds, streets, Path(tmp))
    print("\n".join(report(days)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
