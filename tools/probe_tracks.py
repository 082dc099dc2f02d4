"""``python -m footfall.tools.probe_tracks``: what the tracker does with a long visit of a randomizing phone.

Each sweep of the estimation pass (``hub/analysis.py``, the pass the figures of people are
computed on) is set against the simulated person who made it. For the randomizing phones of
visitors inside for over ``long_s`` (20 min), each step from one of their sweeps to the next is
one of: the same key; a new device (a birth), split by whether it came within 2 s of the
previous sweep (a piece of the same scan the sweep grouping left apart) or later; a key that is
mostly another person's (a swap: phones of one model inside at once); back to another key of
the same person. Beside it, how far a sweep's signal is from its own phone's running signal
and from that of every other phone of a visitor present (heard in the last 5 min): the only
evidence that tells two phones of one model apart, and inside a shop it hardly does.

This is the measurement behind ``occupancy.chained`` (docs/device-estimation.md, "Phones of one
model inside at once"). Tuning seeds only; held-out seeds are refused.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from footfall.hub.analysis import fit_models
from footfall.hub.derandomize import Linker, SweepDecision
from footfall.hub.link_settings import LinkSettings
from footfall.hub.linkmodel import running_rssi
from footfall.hub.sweeps import rssi_difference
from footfall.tools.evaluate import load_simulation
from footfall.tools.evaluate_pipeline import scenario, simulate, tuning_only

LONG_S = 1200.0  # a long visit: the ones whose dwell the tracker loses
FRAGMENT_S = 2.0  # a birth this soon after the phone's previous sweep is a piece of one scan
PRESENT_S = 300.0  # another phone counts as present if heard this recently


@dataclass
class Probe:
    seed: int
    dwell_scale: float
    visits: int = 0  # long randomizing visits looked at
    steps: Counter[str] = field(default_factory=Counter)
    own_keys: list[int] = field(default_factory=list)  # keys mostly the person's, per visit
    top_share: list[float] = field(default_factory=list)  # share of a visit's sweeps on its main key
    same_db: list[float] = field(default_factory=list)  # sweep vs its own phone's running RSSI
    other_db: list[float] = field(default_factory=list)  # sweep vs another present visitor's


def _owner(d: SweepDecision, truth: Mapping[str, str]) -> str | None:
    return Counter(truth.get(n.device) for n in d.sweep.nodes).most_common(1)[0][0]


def probe(seed: int, dwell_scale: float, work: Path) -> Probe:
    """Simulate the seed's store at ``dwell_scale``, link it as the hub's estimation pass does
    and set each sweep against the truth."""
    run = simulate(replace(scenario(seed), dwell_scale=dwell_scale), work)
    visits, truth, gt = load_simulation(run.directory)
    day = gt["days"][0]
    people = {str(p.get("person", p.get("id"))): p for p in gt["people"] if p.get("day", 0) == 0}
    vs = sorted(
        (v for v in visits if v["device"] in truth and day["open"] <= v["first_seen"] <= day["close"]),
        key=lambda v: (v["first_seen"], v["id"]),
    )

    def is_open(t: float) -> bool:
        return day["open"] <= t <= day["close"]

    settings = LinkSettings()
    model, link_model = fit_models(vs, is_open, settings)
    linker = Linker(settings, inside=lambda sw: model.inside.p_inside(sw.peak), record=True, model=link_model)
    linker.feed(vs)
    return score(seed, dwell_scale, linker.decisions or [], truth, people)


def _long_visitor(p: Mapping[str, Any] | None) -> bool:
    return bool(p and p["kind"] == "visitor" and p.get("inside") and p["inside"][1] - p["inside"][0] > LONG_S)


def score(
    seed: int,
    dwell_scale: float,
    decisions: Sequence[SweepDecision],
    truth: Mapping[str, str],
    people: Mapping[str, Mapping[str, Any]],
) -> Probe:
    out = Probe(seed, dwell_scale)
    decisions = sorted(decisions, key=lambda d: d.sweep.first)
    owners: dict[str, Counter[str | None]] = defaultdict(Counter)
    seen: set[str] = set()
    rows: list[tuple[str | None, str, float, bool]] = []  # person, key, time, born
    pids = [_owner(d, truth) for d in decisions]
    for d, pid in zip(decisions, pids, strict=True):
        owners[d.key][pid] += 1
        rows.append((pid, d.key, d.sweep.first, d.key not in seen))
        seen.add(d.key)
    main = {k: c.most_common(1)[0][0] for k, c in owners.items()}
    by_person: dict[str | None, list[tuple[str | None, str, float, bool]]] = defaultdict(list)
    for r in rows:
        by_person[r[0]].append(r)
    for pid, mine in by_person.items():
        p = people.get(pid or "")
        if not _long_visitor(p):
            continue
        a, b = p["inside"]  # type: ignore[index]
        mine = [r for r in mine if a <= r[2] <= b]
        if len(mine) < 3:
            continue
        out.visits += 1
        out.own_keys.append(len({r[1] for r in mine if main[r[1]] == pid}))
        out.top_share.append(Counter(r[1] for r in mine).most_common(1)[0][1] / len(mine))
        for x, y in zip(mine, mine[1:], strict=False):
            if x[1] == y[1]:
                out.steps["same key"] += 1
            elif y[3]:
                out.steps["new device, within 2 s" if y[2] - x[2] < FRAGMENT_S else "new device, later"] += 1
            elif main[y[1]] == pid:
                out.steps["another key of the same person"] += 1
            else:
                out.steps["a key mostly another person's"] += 1
    _signal(out, decisions, pids, people)
    return out


def _signal(
    out: Probe,
    decisions: Sequence[SweepDecision],
    pids: Sequence[str | None],
    people: Mapping[str, Mapping[str, Any]],
) -> None:
    """The signal distances of :class:`Probe`: each visitor's sweep against the running RSSI of its
    own phone and of every other visitor's phone present, kept as the tracker keeps a track's."""
    ema = LinkSettings().rssi_ema
    running: dict[str, dict[str, float]] = {}
    last: dict[str, float] = {}
    for d, pid in zip(decisions, pids, strict=True):
        sw = d.sweep
        p = people.get(pid or "")
        if pid is None or not p or p["kind"] != "visitor" or not p.get("inside"):
            continue
        if not p["inside"][0] <= sw.first <= p["inside"][1]:
            continue
        if pid in running and sw.first - last[pid] > FRAGMENT_S:
            own = rssi_difference(running[pid], sw.rssi)
            if own is not None:
                out.same_db.append(own)
            for q, acc in running.items():
                if q != pid and sw.first - last[q] < PRESENT_S and people[q]["inside"][1] > sw.first:
                    other = rssi_difference(acc, sw.rssi)
                    if other is not None:
                        out.other_db.append(other)
        running[pid] = running_rssi(running.get(pid), sw.rssi, ema)
        last[pid] = sw.first


def _quartiles(xs: list[float]) -> str:
    if len(xs) < 4:
        return "-"
    q = statistics.quantiles(xs, n=4)
    return f"{q[0]:.1f} / {q[1]:.1f} / {q[2]:.1f} dB"


def report(probes: Sequence[Probe]) -> str:
    lines = []
    for pr in probes:
        total = sum(pr.steps.values()) or 1
        lines.append(
            f"seed {pr.seed}, dwell x{pr.dwell_scale:g}: {pr.visits} randomizing visits over {LONG_S / 60:.0f} min"
        )
        for name, n in pr.steps.most_common():
            lines.append(f"  {name:32} {n:6} ({n / total:.0%})")
        if pr.own_keys:
            lines.append(
                f"  keys mostly the person's, per visit: mean {statistics.mean(pr.own_keys):.2f};"
                f" share of a visit's sweeps on its main key: median {statistics.median(pr.top_share):.2f}"
            )
        lines.append(f"  signal vs own phone (quartiles):           {_quartiles(pr.same_db)}")
        lines.append(f"  signal vs another visitor's phone present: {_quartiles(pr.other_db)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m footfall.tools.probe_tracks", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="1", help="tuning seeds (default 1)")
    p.add_argument("--dwell-scale", type=float, default=3.0, help="visitors' time inside times this (default 3)")
    args = p.parse_args(argv)
    seeds = tuning_only(p, args.seeds)
    probes = []
    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix="footfall-tracks-") as tmp:
            probes.append(probe(seed, args.dwell_scale, Path(tmp)))
    print(report(probes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
