"""``python -m footfall.tools.probe_returning --seeds 4,8,44,52``: who the return rate follows.

The return rate is measured on the visitors the hub can follow across days
(``hub/returning.py``): phones with a fixed address, and randomizing phones by the networks they
ask for. This sets what the link job decided, store day by store day, against the simulated
people: how many randomizing phones it followed by their networks and how many of those were
not visitors at all, how many of them were returners and how many of those it found, and how
many of its matches were somebody else. Beside them, the day's return rate from fixed addresses
alone, with the networks, and the truth. The stores are the scenarios' (every fourth seed has
three days); docs/metrics.md, "Randomizing phones followed by their networks", quotes it.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from footfall.hub import returning
from footfall.tools.evaluate import EVAL_KEY, hash_key_env
from footfall.tools.evaluate_metrics import truth_figures
from footfall.tools.evaluate_pipeline import linked_days, parse_seeds


@dataclass
class DayProbe:
    seed: int
    index: int
    fixed: int = 0  # followed visitors with a fixed address
    fixed_back: int = 0
    networks: int = 0  # followed by their networks
    networks_back: int = 0
    not_visitors: int = 0  # followed by their networks, but the person walked past
    returners: int = 0  # followed by their networks and truly returning (later days)
    found: int = 0  # ... whose earlier visit was found
    false_matches: int = 0  # matched an earlier day's signature of somebody else or a newcomer
    truth: float | None = None

    def rate(self, with_networks: bool) -> float | None:
        n = self.fixed + (self.networks if with_networks else 0)
        back = self.fixed_back + (self.networks_back if with_networks else 0)
        return back / n if n and self.index else None


def device_people(truth: Mapping[str, Any], day_index: int) -> dict[str, str]:
    """Device id (as the agents' payloads carry it) -> person, for one simulated day."""
    from footfall.edge_agent.agent import Agent
    from footfall.edge_agent.config import AgentConfig

    with hash_key_env(EVAL_KEY):
        agent = Agent(AgentConfig(site="demo", sensor="probe"), lambda *_: None)
    out = {}
    for p in truth["people"]:
        if p.get("day", 0) == day_index:
            for m in p["macs"]:
                out[agent.identifier.device_id(bytes.fromhex(m["mac"].replace(":", "")))] = str(p["person"])
    return out


def probe(seeds: list[int], work: Path) -> list[DayProbe]:
    out: list[DayProbe] = []
    history: dict[int, tuple[set[str], dict[str, str]]] = {}  # seed -> (fixed keys, signature -> person)
    for ld in linked_days(seeds, work):
        people = {str(p["person"]): p for p in ld.run.truth["people"] if p.get("day", 0) == ld.index}
        owner_of = device_people(ld.run.truth, ld.index)
        an = ld.analysis
        fixed = returning.followed_fixed(an, ld.start, ld.end)
        followed, heard = returning.followed_networks(an, ld.start, ld.end)
        scans = returning.network_scans(an.decisions, ld.start, ld.end)
        owners = {
            sig: Counter(owner_of.get(n.device) for d in ds for n in d.sweep.nodes).most_common(1)[0][0]
            for sig, ds in scans.items()
        }
        seen_fixed, seen_nets = history.setdefault(ld.seed, (set(), {}))
        day = DayProbe(ld.seed, ld.index, truth=truth_figures(ld.run.truth, ld.index)["return_rate"])
        day.fixed, day.fixed_back = len(fixed), sum(k in seen_fixed for k in fixed)
        day.networks = len(followed)
        for sig in followed:
            person = people.get(owners.get(sig) or "")
            if person is None or person["kind"] != "visitor":
                day.not_visitors += 1
            back = sig in seen_nets
            day.networks_back += back
            if ld.index and person is not None and person["returning"]:
                day.returners += 1
                day.found += back and seen_nets[sig] == owners[sig]
            elif back:
                day.false_matches += 1
        out.append(day)
        seen_fixed.update(fixed)
        seen_nets.update({sig: owners[sig] for sig in heard})
    return out


def report(days: list[DayProbe]) -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    lines = [
        "seed day | fixed (back) | networks (back) not-visitors returners found false | "
        "rate: fixed / with networks / truth"
    ]
    for d in days:
        lines.append(
            f"{d.seed:4} {d.index:3} | {d.fixed:5} ({d.fixed_back:3}) | {d.networks:5} ({d.networks_back:3}) "
            f"{d.not_visitors:5} {d.returners:5} {d.found:5} {d.false_matches:5} | "
            f"{pct(d.rate(False))} / {pct(d.rate(True))} / {pct(d.truth)}"
        )
    later = [d for d in days if d.index and d.truth is not None]
    tot = {k: sum(getattr(d, k) for d in days) for k in ("networks", "not_visitors", "false_matches")}
    ret = {k: sum(getattr(d, k) for d in later) for k in ("returners", "found")}
    lines.append(
        f"followed by networks {tot['networks']}, not visitors {tot['not_visitors']}; returners among them "
        f"{ret['returners']}, found {ret['found']}; false matches {tot['false_matches']}"
    )
    for with_networks in (False, True):
        errs = [abs(r - d.truth) for d in later if (r := d.rate(with_networks)) is not None and d.truth is not None]
        if errs:
            name = "with networks" if with_networks else "fixed addresses"
            lines.append(
                f"return rate, {name}: mean |error| {100 * sum(errs) / len(errs):.1f} pt over {len(errs)} days "
                f"(within 5 pt {sum(e <= 0.05 for e in errs)})"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m footfall.tools.probe_returning", description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="4,8,44,52", help="stores to probe (three-day ones say most): 4,8,44,52")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        print(report(probe(parse_seeds(args.seeds), Path(tmp))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
