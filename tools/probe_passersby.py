"""``python -m footfall.tools.probe_passersby``: a linking-free passers-by count, beside the hub's.

Until 2026-12-06 the hub's passers-by estimate counted the scans of the identity pass's short
stays that are not visits, a third to a half of them visitors' scans, so it did not follow the
street in proportion (docs/metrics.md, "Capture rates other than 1 in 6"; the hub now takes the
visitors' share off, ``PassbyCount``). This probe, a lead tried before that, counts **isolated
scans** instead: a scan at the street-facing sensor that looks outside by the site's inside model
and has no other scan of the same address (a fixed MAC) or fingerprint (a random one) within
``window_s``. A passer-by's phone scans about once while in range; a visitor's scans come every
minute or two. Each is weighed by exp(2 x window x that fingerprint's scan rate within the hour),
for the chance that another phone of the same model hid it. Not in the hub yet: this is the
measurement of the lead, on simulated days of the tuning seeds at several streets, with one
factor per method fitted on the very days printed (in-sample; say so when quoting it). Held-out
seeds are refused.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import statistics
import tempfile
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from footfall.edge_agent.identity import Identifier, parse_mac
from footfall.hub import link
from footfall.hub.analysis import day_bounds
from footfall.hub.sweeps import json_list
from footfall.tools.evaluate import EVAL_KEY
from footfall.tools.evaluate_pipeline import ingest, scenario, simulate, streets_only, tuning_only

MAX_WEIGHT = 5.0  # a scan whose fingerprint is that common says little; cap its weight


@dataclass
class Isolated:
    weighted: float  # isolated scans, each over its chance of surviving other phones' scans
    raw: int
    outside: int  # every outside-looking scan at the street-facing sensor (staff left out)
    by_kind: dict[str, int]  # raw isolated scans by the simulated person's kind (when known)


def scan_identities(conn, start: float, end: float) -> tuple[dict[float, tuple[str, str]], dict[float, str]]:
    """Scan time -> (kind, identity) and scan time -> device hash, from the sensor visits."""
    ident: dict[float, tuple[str, str]] = {}
    device: dict[float, str] = {}
    for dev, randomized, fp, first, offsets in conn.execute(
        "SELECT device, randomized, fingerprint, first_seen, burst_offsets FROM sensor_visits "
        "WHERE first_seen >= ? AND first_seen < ?",
        (start, end),
    ):
        key = ("fp", fp) if randomized else ("mac", dev)
        for off in json_list(offsets) or [0.0]:
            t = round(first + off, 3)
            ident.setdefault(t, key)
            device.setdefault(t, dev)
    return ident, device


def isolated_count(
    conn, an: Any, start: float, stop: float, *, window_s: float = 180.0, kinds: dict[str, str] | None = None
) -> Isolated:
    """The isolated outside scans of [start, stop) in a linked day's analysis (``an``: the link
    job's, staff already found). ``kinds`` maps device hashes to a simulated person's kind."""
    model = an.model
    front = model.front_sensor
    ident, device = scan_identities(conn, start - 3600.0, stop + 3600.0)
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    candidates: list[tuple[float, tuple[str, str]]] = []
    for s in an.identity_sessions:
        for sc in s.scans:
            key = ident.get(round(sc.t, 3))
            if key is None:
                continue
            times[key].append(sc.t)
            if (
                start <= sc.t < stop
                and not s.staff
                and (front is None or front in sc.peak)
                and model.inside.llr(sc.peak) < 0
            ):
                candidates.append((sc.t, key))
    for ts in times.values():
        ts.sort()
    weighted, raw, by_kind = 0.0, 0, defaultdict(int)
    for t, key in candidates:
        ts = times[key]
        if bisect.bisect_right(ts, t + window_s) - bisect.bisect_left(ts, t - window_s) > 1:
            continue
        raw += 1
        if kinds is not None:
            by_kind[kinds.get(device.get(round(t, 3), ""), "unknown")] += 1
        if key[0] == "fp":
            near = bisect.bisect_right(ts, t + 3600.0) - bisect.bisect_left(ts, t - 3600.0) - 1
            weighted += min(math.exp(2 * window_s * near / 7200.0), MAX_WEIGHT)
        else:
            weighted += 1.0
    return Isolated(weighted, raw, len(candidates), dict(by_kind))


def person_kinds(truth: dict[str, Any], day_index: int) -> dict[str, str]:
    ident = Identifier(EVAL_KEY)
    return {
        ident.device_id(parse_mac(m["mac"])): p["kind"]
        for p in truth["people"]
        if p["day"] == day_index
        for m in p["macs"]
    }


def probe(seed: int, street: float, workdir: Path, window_s: float) -> dict[str, Any]:
    sc = replace(scenario(seed), days=1, passersby_per_visitor=street)
    run = simulate(sc, workdir)
    db = workdir / f"probe-{seed}-{street:g}.db"
    writer, _ = ingest(run, db)
    day = run.truth["days"][0]["date"]
    start, stop = day_bounds(day, writer.config.tz)
    # Linked as the hub's job leaves it once the day is over (its analysis is the last day's).
    an = link.relink(writer.conn, writer.config, since=0, until=stop - 1, now=stop + writer.config.settle_s).analysis
    iso = isolated_count(writer.conn, an, start, stop, window_s=window_s, kinds=person_kinds(run.truth, 0))
    est = json.loads(
        writer.conn.execute("SELECT figures FROM estimates WHERE day = ? AND hour = -1", (day,)).fetchone()[0]
    )
    writer.conn.close()
    truth = sum(1 for p in run.truth["people"] if p["day"] == 0 and p["kind"] == "passerby")
    return {"seed": seed, "street": street, "truth": truth, "hub": est["passersby"], "isolated": iso}


def report(rows: list[dict[str, Any]]) -> str:
    def fitted(get) -> tuple[float, list[float]]:
        k = statistics.median(r["truth"] / get(r) for r in rows)
        return k, [math.log(k * get(r) / r["truth"]) for r in rows]

    methods = {
        "hub, as it is": (lambda r: r["hub"], False),
        "hub, one factor": (lambda r: r["hub"], True),
        "isolated, weighted": (lambda r: r["isolated"].weighted, True),
        "isolated, raw": (lambda r: r["isolated"].raw, True),
    }
    lines = [f"{len(rows)} simulated days; factors fitted on these days (in-sample)"]
    for name, (get, fit) in methods.items():
        k, logs = fitted(get) if fit else (1.0, [math.log(get(r) / r["truth"]) for r in rows])
        rms = math.sqrt(sum(x * x for x in logs) / len(logs))
        per = " ".join(
            f"{r['seed']}x{r['street']:g}:{100 * (math.exp(x) - 1):+.0f}%" for r, x in zip(rows, logs, strict=True)
        )
        lines.append(f"  {name:20} factor {k:6.3f}  spread of log {rms:.3f}  {per}")
    for r in rows:
        iso = r["isolated"]
        share = iso.by_kind.get("passerby", 0) / iso.raw if iso.raw else 0.0
        lines.append(
            f"  seed {r['seed']} street {r['street']:g}: truth {r['truth']}, hub {r['hub']:.0f}, isolated "
            f"{iso.raw} ({share:.0%} passers-by) of {iso.outside} outside scans, weighted {iso.weighted:.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m footfall.tools.probe_passersby", description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="1,5,7,10", help="tuning seeds with 2-3 sensors (default 1,5,7,10)")
    ap.add_argument("--streets", default="2.5,5,10", help="passers-by per visitor (default 2.5,5,10)")
    ap.add_argument("--window", type=float, default=180.0, help="seconds without another scan (default 180)")
    args = ap.parse_args(argv)
    seeds = tuning_only(ap, args.seeds)
    streets = streets_only(ap, args.streets)
    if args.window <= 0:
        ap.error("--window must be above 0")
    rows = []
    with tempfile.TemporaryDirectory(prefix="footfall-probe-") as tmp:
        for seed in seeds:
            for street in streets:
                work = Path(tmp) / f"{seed}-{street:g}"
                work.mkdir()
                rows.append(probe(seed, street, work, args.window))
    print(report(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
