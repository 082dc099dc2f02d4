"""How much a door-count calibration helps on days it was not fitted on
(``footfall evaluate --calibration``).

``footfall calibrate counts`` reports its error after calibration *in-sample* (on the counted
days themselves). This measures it out of sample, on the simulated three-day stores of
``footfall evaluate --metrics``: each store goes through the same pipeline (agents, ingest, the
link job: :func:`evaluate_metrics.link_run`), then for each protocol

- ``a``: count day 1, check days 2 and 3;
- ``b``: count days 1 and 2, check day 3;

the counted days' true hourly counts (visitors by the hour they came in, passers-by by the hour
they arrived: what a door counter and a clicker give) are written as the CSV a store would
export, fitted with the real calibrate code (``read_counts``, ``fit_counts``) and stored
(``store_calibration``); the checked days' visitors and passers-by are read off the dashboard
API (:func:`evaluate_metrics.api_figures`) before and after, against the simulator's truth.

Beside it, the trivial baseline a store gets for free from the same count: the count's own mean
per day taken as every other day's figure. A calibrated hub is only worth its sensors on these
figures if it beats that.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from footfall.tools.evaluate_metrics import api_figures, link_run, truth_figures
from footfall.tools.evaluate_pipeline import HELD_OUT_SEEDS, SimRun, api_client, parse_seeds, scenario, simulate

COUNTED = ("visitors", "passersby")
WITHIN = 0.10  # the bound of docs/metrics.md "How well"


@dataclass(frozen=True)
class Protocol:
    name: str
    label: str
    counted: tuple[int, ...]  # day indexes of the door count
    checked: tuple[int, ...]  # day indexes the calibration is judged on


PROTOCOLS = (
    Protocol("a", "count day 1, check days 2-3", (0,), (1, 2)),
    Protocol("b", "count days 1-2, check day 3", (0, 1), (2,)),
)

# {day index: {UTC hour start (UNIX s): [visitors, passers-by]}}
Hourly = dict[int, dict[int, list[int]]]


# ----------------------------------------------------------------------------- the door count
def hourly_truth(truth: Mapping[str, Any]) -> Hourly:
    """The true hourly door count of every simulated day: visitors by the hour they came in,
    passers-by by the hour they arrived (staff and fixed devices are not counted)."""
    out: Hourly = {i: {} for i in range(len(truth["days"]))}
    for p in truth["people"]:
        # A door counter sees the moment of entry, not the moment the phone was first heard.
        if p["kind"] == "visitor" and p["inside"]:
            t, k = p["inside"][0], 0
        elif p["kind"] == "passerby":
            t, k = p["arrive"], 1
        else:
            continue
        hour = int(t // 3600 * 3600)
        out.setdefault(p["day"], {}).setdefault(hour, [0, 0])[k] += 1
    return out


def door_count_csv(hourly: Hourly, days: Iterable[int]) -> str:
    """The counted days as a counter's hourly export (``start,visitors,passersby``, UTC offsets)."""
    lines = ["start,visitors,passersby"]
    for i in days:
        for hour, (v, p) in sorted(hourly.get(i, {}).items()):
            lines.append(f"{datetime.fromtimestamp(hour, UTC).isoformat()},{v},{p}")
    return "\n".join(lines) + "\n"


def baseline(hourly: Hourly, days: Sequence[int]) -> dict[str, float]:
    """The door count's own mean per day: the figure a store gets by assuming every day is
    like the counted ones, with no sensors at all."""
    out = {}
    for k, name in enumerate(COUNTED):
        totals = [sum(c[k] for c in hourly.get(i, {}).values()) for i in days]
        out[name] = statistics.fmean(totals) if totals else float("nan")
    return out


# ----------------------------------------------------------------------------- one store
@dataclass
class Check:
    """One figure of one checked day under one protocol."""

    seed: int
    held_out: bool
    protocol: str
    day: str
    figure: str
    truth: float
    before: float | None  # the dashboard, uncalibrated
    after: float | None  # the dashboard with the protocol's calibration stored
    baseline: float  # the door count's mean per counted day
    factor: float | None  # None: the fit failed and nothing was stored

    @staticmethod
    def _rel(est: float | None, truth: float) -> float | None:
        return None if est is None or not truth else (est - truth) / truth

    @property
    def error_before(self) -> float | None:
        return self._rel(self.before, self.truth)

    @property
    def error_after(self) -> float | None:
        return self._rel(self.after, self.truth)

    @property
    def error_baseline(self) -> float | None:
        return self._rel(self.baseline, self.truth)


@dataclass
class Fit:
    seed: int
    protocol: str
    factors: dict[str, float]
    warnings: list[str]
    error: str | None = None


def _reader(db: Path, days: Sequence[str]) -> Callable[[str], dict[str, float | None]]:
    """Visitors and passers-by of a day as the dashboard serves them, read at the day's end like
    ``--metrics`` does. One client per day (an API key's name is unique per clock); the API
    caches nothing, so a read after storing a calibration sees it."""
    clients = {}
    for day in days:
        clock = datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() + 86400 - 60
        clients[day] = api_client(db, clock)

    def read(day: str) -> dict[str, float | None]:
        served = api_figures(clients[day], day)
        return {name: served[name]["estimate"] for name in COUNTED}

    return read


def calibrate_run(run: SimRun, workdir: Path) -> tuple[list[Check], list[Fit]]:
    """Every protocol on one simulated multi-day store."""
    from footfall.hub.calibrate import CountsError, clear_calibrations, fit_counts, read_counts, store_calibration

    db, writer = link_run(run, workdir)
    conn, tz = writer.conn, writer.config.tz
    days = [d["date"] for d in run.truth["days"]]
    hourly = hourly_truth(run.truth)
    seed, held = run.scenario.seed, run.scenario.seed in HELD_OUT_SEEDS
    checks: list[Check] = []
    fits: list[Fit] = []
    read = _reader(db, days)
    try:
        before = {i: read(days[i]) for p in PROTOCOLS for i in p.checked}
        for p in PROTOCOLS:
            # Each protocol on its own: a store calibrating for the first time.
            clear_calibrations(conn)
            path = workdir / f"door-{seed}-{p.name}.csv"
            path.write_text(door_count_csv(hourly, p.counted))
            try:
                report = fit_counts(conn, read_counts(path, tz), tz)
            except CountsError as exc:
                # The store would be left uncalibrated: "after" is what it would see, the before.
                fits.append(Fit(seed, p.name, {}, [], str(exc)))
                factors = None
            else:
                store_calibration(conn, report)
                fits.append(Fit(seed, p.name, dict(report["factors"]), list(report["warnings"])))
                factors = report["factors"]
            base = baseline(hourly, p.counted)
            for i in p.checked:
                after = read(days[i]) if factors is not None else before[i]
                truth = truth_figures(run.truth, i)
                for name in COUNTED:
                    fac = None if factors is None else factors.get(name)
                    checks.append(
                        Check(
                            seed,
                            held,
                            p.name,
                            days[i],
                            name,
                            float(truth[name] or 0),
                            before[i][name],
                            after[name],
                            base[name],
                            fac,
                        )
                    )
        clear_calibrations(conn)
    finally:
        conn.close()
    return checks, fits


# ----------------------------------------------------------------------------- reporting
def _pct(e: float | None) -> str:
    return "-" if e is None else f"{100 * e:+.1f}%"


def _n(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def format_seed(checks: Sequence[Check], fits: Sequence[Fit]) -> str:
    first = checks[0] if checks else None
    head = f"{scenario(first.seed).name} ({'held out' if first.held_out else 'tuning'})" if first else "no checks"
    lines = [head]
    for f in fits:
        fac = ", ".join(f"{k} x{v:.3f}" for k, v in f.factors.items()) if f.factors else f"not fitted: {f.error}"
        lines.append(f"  protocol {f.protocol}: {fac}")
    lines.append(
        f"  {'prot':4} {'day':10} {'figure':10} {'truth':>6} {'before':>7} {'error':>7} {'after':>7} {'error':>7}"
        f" {'count mean':>10} {'error':>7}"
    )
    for c in checks:
        lines.append(
            f"  {c.protocol:4} {c.day:10} {c.figure:10} {c.truth:6.0f} {_n(c.before):>7} {_pct(c.error_before):>7}"
            f" {_n(c.after):>7} {_pct(c.error_after):>7} {c.baseline:10.0f} {_pct(c.error_baseline):>7}"
        )
    return "\n".join(lines)


def _stats(errors: Iterable[float | None]) -> tuple[float | None, int, int]:
    """Mean |error|, days within the bound, days."""
    es = [abs(e) for e in errors if e is not None]
    return (statistics.fmean(es) if es else None), sum(e <= WITHIN for e in es), len(es)


def summary(checks: Sequence[Check]) -> list[dict[str, Any]]:
    """Per seed group (tuning, held out), protocol and figure: before, after and the baseline."""
    rows = []
    for held in (False, True):
        for p in PROTOCOLS:
            for name in COUNTED:
                sub = [c for c in checks if c.held_out == held and c.protocol == p.name and c.figure == name]
                if not sub:
                    continue
                row: dict[str, Any] = {
                    "seeds": "held-out" if held else "tuning",
                    "protocol": p.name,
                    "figure": name,
                    "days": len(sub),
                    "stores": len({c.seed for c in sub}),
                }
                for which in ("before", "after", "baseline"):
                    mean, within, n = _stats(getattr(c, f"error_{which}") for c in sub)
                    row[f"mean_abs_{which}"] = mean
                    row[f"within_{which}"] = within
                    row[f"n_{which}"] = n
                rows.append(row)
    return rows


def format_summary(rows: Sequence[Mapping[str, Any]]) -> str:
    def m(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    lines = [
        f"{'seeds':9} {'protocol':30} {'figure':10} {'days':>4} | {'mean |error|: before':>20} {'after':>7}"
        f" {'count mean':>10} | {'within 10 %: before':>19} {'after':>6} {'count mean':>10}"
    ]
    label = {p.name: f"{p.name}: {p.label}" for p in PROTOCOLS}
    for r in rows:
        lines.append(
            f"{r['seeds']:9} {label[r['protocol']]:30} {r['figure']:10} {r['days']:4d} |"
            f" {m(r['mean_abs_before']):>20} {m(r['mean_abs_after']):>7} {m(r['mean_abs_baseline']):>10} |"
            f" {r['within_before']:>13d}/{r['n_before']:<5d} {r['within_after']:>3d}/{r['n_after']:<2d}"
            f" {r['within_baseline']:>7d}/{r['n_baseline']:<2d}"
        )
    return "\n".join(lines)


def evaluate_seeds(
    seeds: Iterable[int], workdir: Path | None = None, progress: Callable[[str], None] | None = None
) -> tuple[list[Check], list[Fit], list[int]]:
    """Every multi-day seed of ``seeds``; returns the checks, the fits and the seeds skipped
    (one simulated day: nothing to check a calibration on)."""
    checks: list[Check] = []
    fits: list[Fit] = []
    skipped: list[int] = []
    with tempfile.TemporaryDirectory(prefix="footfall-calibration-") as tmp:
        base = Path(workdir or tmp)
        base.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            sc = scenario(seed)
            if sc.days < 1 + max(max(p.checked) for p in PROTOCOLS):
                skipped.append(seed)
                continue
            c, f = calibrate_run(simulate(sc, base), base)
            checks += c
            fits += f
            if progress:
                progress(format_seed(c, f))
    return checks, fits, skipped


def cmd_calibration(seeds_text: str, as_json: bool, workdir: str | None) -> int:
    seeds = parse_seeds(seeds_text)
    checks, fits, skipped = evaluate_seeds(seeds, Path(workdir) if workdir else None, None if as_json else print)
    rows = summary(checks)
    if as_json:
        out = {
            "protocols": [asdict(p) for p in PROTOCOLS],
            "checks": [
                asdict(c) | {k: getattr(c, k) for k in ("error_before", "error_after", "error_baseline")}
                for c in checks
            ],
            "fits": [asdict(f) for f in fits],
            "summary": rows,
            "skipped_one_day_seeds": skipped,
        }
        print(json.dumps(out, indent=1))
        return 0
    if skipped:
        print(f"\nskipped (one simulated day, nothing to check): seeds {', '.join(map(str, skipped))}")
    if not checks:
        print("no seed with three simulated days (every fourth seed has three): nothing measured")
        return 0
    print("\n== out of sample: checked days only; 'count mean' = the door count's mean per counted day ==")
    print(format_summary(rows))
    if all(c.error_baseline == 0 for c in checks):
        # Said so it is not read as the count being a better instrument than it is.
        print(
            "note: every checked day has exactly the counted days' number of people: the simulator gives a store"
            " the same daily total every day, so the count's mean is exact here by construction, not by merit"
        )
    return 0
