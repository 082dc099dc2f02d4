"""People present per window against the truth, for ``footfall evaluate --metrics``.

The hub's occupancy (``hub/figures.py``, from the link job's per-minute estimate) and two naive
counts of the same windows (distinct MACs heard; distinct MACs heard at or above the agents'
inside threshold), each set against the simulated visitors inside, time-averaged per window.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

OCCUPANCY_WINDOW_S = 600


def truth_occupancy(truth: dict[str, Any], day_index: int, window_s: int = OCCUPANCY_WINDOW_S) -> dict[int, float]:
    """Visitors inside, time-averaged per window (UTC window start -> people)."""
    day = truth["days"][day_index]
    lo, hi = day["capture"]
    start = int(lo // window_s * window_s)
    out = {t: 0.0 for t in range(start, int(hi) + 1, window_s)}
    for p in truth["people"]:
        if p["day"] != day_index or p["kind"] != "visitor" or not p["inside"]:
            continue
        a, b = p["inside"]
        t = int(a // window_s * window_s)
        while t < b:
            overlap = min(b, t + window_s) - max(a, t)
            if overlap > 0 and t in out:
                out[t] += overlap / window_s
            t += window_s
    return out


def occupancy_scores(conn: Any, run: Any, day_index: int) -> dict[str, float]:
    """MAE (all windows, occupied windows) and Pearson of people present per window against the
    truth: the hub's estimate and the naive counts of the same windows (distinct MACs heard;
    distinct MACs heard at or above the agents' inside threshold)."""
    from footfall.edge_agent.visit_settings import VisitSettings
    from footfall.hub import figures

    truth = truth_occupancy(run.truth, day_index)
    keys = sorted(truth)
    lo, hi = keys[0], keys[-1] + OCCUPANCY_WINDOW_S
    est = {r["start"]: r["people"] or 0.0 for r in figures.occupancy(conn, lo, hi, OCCUPANCY_WINDOW_S)}
    macs: dict[int, set[str]] = {k: set() for k in keys}
    strong: dict[int, set[str]] = {k: set() for k in keys}
    threshold = VisitSettings().inside_rssi
    for v in run.visits:
        w = int(v["first_seen"] // OCCUPANCY_WINDOW_S * OCCUPANCY_WINDOW_S)
        while w <= v["last_seen"]:
            if w in macs:
                macs[w].add(v["device"])
                if (v["rssi_max"] if v["rssi_max"] is not None else -999) >= threshold:
                    strong[w].add(v["device"])
            w += OCCUPANCY_WINDOW_S
    out = occupancy_errors(keys, truth, est)
    for name, counts in (("macs", macs), ("strong_macs", strong)):
        for k, v in occupancy_errors(keys, truth, {w: float(len(x)) for w, x in counts.items()}).items():
            out[f"{name}_{k}"] = v
    return out


def occupancy_errors(keys: list[int], truth: dict[int, float], est: dict[int, float]) -> dict[str, float]:
    t = [truth[k] for k in keys]
    e = [float(est.get(k, 0.0)) for k in keys]
    occupied = [i for i, x in enumerate(t) if x >= 0.5]
    out = {"mae": sum(abs(a - b) for a, b in zip(t, e, strict=True)) / len(keys) if keys else math.nan}
    out["mae_occupied"] = sum(abs(t[i] - e[i]) for i in occupied) / len(occupied) if occupied else math.nan
    out["pearson"] = _pearson(t, e)
    return out


def _pearson(a: list[float], b: list[float]) -> float:
    if len(a) < 2:
        return math.nan
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    sa = math.sqrt(sum((x - ma) ** 2 for x in a))
    sb = math.sqrt(sum((x - mb) ** 2 for x in b))
    if not sa or not sb:
        return math.nan
    return sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True)) / (sa * sb)
